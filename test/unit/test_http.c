/* The HTTP sink's pure helpers: signing, secrets, Retry-After, status
 * policy, URL redaction and header checks. */
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

#include "http/eh_curl.h"
#include "http/eh_http_util.h"
#include "unit.h"

/* The example of the Standard Webhooks specification (svix's test vector). */
START_TEST(sign_standard_webhooks_vector)
{
	size_t keylen = 0;
	unsigned char *key = eh_http_secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", &keylen);
	const char *body = "{\"test\": 2432232314}";
	char sig[EH_HTTP_SIGNATURE_LEN + 1];

	ck_assert_ptr_nonnull(key);
	ck_assert_uint_eq(keylen, 24);
	ck_assert_int_eq(eh_http_sign(key, keylen, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body), sig), 0);
	ck_assert_str_eq(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
	free(key);
}
END_TEST

START_TEST(sign_raw_secret_and_empty_body)
{
	size_t keylen = 0;
	unsigned char *key = eh_http_secret_key("raw secret", &keylen);
	char sig[EH_HTTP_SIGNATURE_LEN + 1];

	ck_assert_ptr_nonnull(key);
	ck_assert_uint_eq(keylen, 10);
	ck_assert_mem_eq(key, "raw secret", 10);
	/* Python: base64(hmac.new(b"raw secret", b"id.1.", sha256).digest()) */
	ck_assert_int_eq(eh_http_sign(key, keylen, "id", 1, "", 0, sig), 0);
	ck_assert_str_eq(sig, "v1,aAGVwTonMNHCjkVjpQSSyfAcxyIkMqwsvHOtsicyltE=");
	free(key);
}
END_TEST

START_TEST(secret_rejects_bad_whsec)
{
	size_t keylen = 99;

	ck_assert_ptr_null(eh_http_secret_key("whsec_", &keylen));
	ck_assert_ptr_null(eh_http_secret_key("whsec_not*base64", &keylen));
	ck_assert_ptr_null(eh_http_secret_key("whsec_A", &keylen));
}
END_TEST

START_TEST(base64_decode_forms)
{
	unsigned char out[16];

	ck_assert_int_eq(eh_http_base64_decode("", 0, out), 0);
	ck_assert_int_eq(eh_http_base64_decode("Zg==", 4, out), 1);
	ck_assert_int_eq(out[0], 'f');
	ck_assert_int_eq(eh_http_base64_decode("Zm8", 3, out), 2); /* padding optional */
	ck_assert_mem_eq(out, "fo", 2);
	ck_assert_int_eq(eh_http_base64_decode("Zm9vYmFy", 8, out), 6);
	ck_assert_mem_eq(out, "foobar", 6);
	ck_assert_int_eq(eh_http_base64_decode("Zm 9", 4, out), -1);
}
END_TEST

START_TEST(retry_after_seconds)
{
	char err[512];

	/* (a value that is not a number is tried as a date, with libcurl) */
	ck_assert_msg(eh_curl_load(err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(eh_http_retry_after_ms("0", 0), 0);
	ck_assert_int_eq(eh_http_retry_after_ms(" 2\r\n", 0), 2000);
	ck_assert_int_eq(eh_http_retry_after_ms("120", 0), 120000);
	/* capped at one day, however large */
	ck_assert_int_eq(eh_http_retry_after_ms("99999999999999999999999", 0), 86400000);
	ck_assert_int_eq(eh_http_retry_after_ms("-1", 0), -1);
	ck_assert_int_eq(eh_http_retry_after_ms("1.5", 0), -1);
	ck_assert_int_eq(eh_http_retry_after_ms("", 0), -1);
	ck_assert_int_eq(eh_http_retry_after_ms("soon", 0), -1);
}
END_TEST

START_TEST(retry_after_dates)
{
	const int64_t now = 1700000000000LL; /* Tue, 14 Nov 2023 22:13:20 GMT */
	char err[512];

	ck_assert_msg(eh_curl_load(err, sizeof(err)) == 0, "%s", err);
	ck_assert_int_eq(eh_http_retry_after_ms("Tue, 14 Nov 2023 22:13:25 GMT", now), 5000);
	ck_assert_int_eq(eh_http_retry_after_ms(" Tue, 14 Nov 2023 22:13:25 GMT\r\n", now + 500), 4500);
	ck_assert_int_eq(eh_http_retry_after_ms("Tuesday, 14-Nov-23 22:13:30 GMT", now), 10000); /* RFC 850 */
	ck_assert_int_eq(eh_http_retry_after_ms("Tue Nov 14 22:13:21 2023", now), 1000);        /* asctime */
	ck_assert_int_eq(eh_http_retry_after_ms("Tue, 14 Nov 2023 22:00:00 GMT", now), 0);      /* past */
	ck_assert_int_eq(eh_http_retry_after_ms("Sat, 14 Nov 2043 22:00:00 GMT", now), 86400000);
}
END_TEST

START_TEST(status_policy)
{
	ck_assert_int_eq(eh_http_verdict(200), EH_HTTP_DELIVERED);
	ck_assert_int_eq(eh_http_verdict(204), EH_HTTP_DELIVERED);
	ck_assert_int_eq(eh_http_verdict(299), EH_HTTP_DELIVERED);
	ck_assert_int_eq(eh_http_verdict(408), EH_HTTP_RETRY);
	ck_assert_int_eq(eh_http_verdict(429), EH_HTTP_RETRY);
	ck_assert_int_eq(eh_http_verdict(500), EH_HTTP_RETRY);
	ck_assert_int_eq(eh_http_verdict(503), EH_HTTP_RETRY);
	ck_assert_int_eq(eh_http_verdict(599), EH_HTTP_RETRY);
	ck_assert_int_eq(eh_http_verdict(400), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(401), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(404), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(413), EH_HTTP_TOO_LARGE);
	ck_assert_int_eq(eh_http_verdict(412), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(414), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(301), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(100), EH_HTTP_REJECTED);
	ck_assert_int_eq(eh_http_verdict(0), EH_HTTP_REJECTED);
}
END_TEST

START_TEST(url_redaction)
{
	char out[128];

	eh_http_redact_url("https://hooks.example.com/a/b", out, sizeof(out));
	ck_assert_str_eq(out, "https://hooks.example.com/a/b");
	eh_http_redact_url("https://user:pw@hooks.example.com:8443/a?token=s3cret#x", out, sizeof(out));
	ck_assert_str_eq(out, "https://***@hooks.example.com:8443/a?...");
	eh_http_redact_url("http://h?k=v", out, sizeof(out));
	ck_assert_str_eq(out, "http://h?...");
	/* an @ in the path is not user information */
	eh_http_redact_url("http://h/p@q", out, sizeof(out));
	ck_assert_str_eq(out, "http://h/p@q");
	eh_http_redact_url("http://user:pw@h/p", out, 12);
	ck_assert_str_eq(out, "http://***@");
}
END_TEST

START_TEST(header_check)
{
	size_t n = 0;

	ck_assert_int_eq(eh_http_header_check("X-Api-Key: abc", &n), 0);
	ck_assert_uint_eq(n, 9);
	/* curl would remove such a header instead of sending it */
	ck_assert_int_eq(eh_http_header_check("X-Empty:", &n), EH_HTTP_HEADER_EMPTY);
	ck_assert_uint_eq(n, 7);
	ck_assert_int_eq(eh_http_header_check("User-Agent: \t ", &n), EH_HTTP_HEADER_EMPTY);
	ck_assert_int_eq(eh_http_header_check("X:v", &n), 0);
	ck_assert_int_eq(eh_http_header_check("no colon", &n), -1);
	ck_assert_int_eq(eh_http_header_check(": v", &n), -1);
	ck_assert_int_eq(eh_http_header_check("Bad Name: v", &n), -1);
	ck_assert_int_eq(eh_http_header_check("X: a\r\nInjected: b", &n), -1);
}
END_TEST

START_TEST(mask_secrets)
{
	char text[64];

	strcpy(text, "echo: Bearer tok123 and tok123!");
	eh_http_mask(text, strlen(text), "tok123", 6);
	ck_assert_str_eq(text, "echo: Bearer ****** and ******!");
	/* cut at the end of the kept response */
	strcpy(text, "sent tok1");
	eh_http_mask(text, strlen(text), "tok123", 6);
	ck_assert_str_eq(text, "sent ****");
	/* overlapping starts, and nothing to mask */
	strcpy(text, "ttok123");
	eh_http_mask(text, strlen(text), "tok123", 6);
	ck_assert_str_eq(text, "t******");
	strcpy(text, "nothing here");
	eh_http_mask(text, strlen(text), "tok123", 6);
	ck_assert_str_eq(text, "nothing here");
	eh_http_mask(text, strlen(text), "", 0);
	ck_assert_str_eq(text, "nothing here");
}
END_TEST

/* Masks in a copy of text and returns it (static buffer). */
static const char *masked_url(const char *text, const char *userinfo, const char *user, const char *password,
			      const char *query)
{
	static char buf[256];
	size_t n = strlen(text);

	ck_assert_uint_lt(n, sizeof(buf));
	memcpy(buf, text, n + 1);
	ck_assert_int_eq(eh_http_mask_url_secrets(buf, n, userinfo, user, password, query), 0);
	return buf;
}

START_TEST(mask_url_credentials)
{
	/* base64("alice:S3c/ret@Pw"), as curl sends it for Basic auth */
	ck_assert_str_eq(masked_url("Authorization: Basic YWxpY2U6UzNjL3JldEBQdw==", "alice:S3c%2Fret%40Pw", "alice",
				    "S3c/ret@Pw", NULL),
			 "Authorization: Basic ************************");
	/* decoded and raw forms, and the user name */
	ck_assert_str_eq(masked_url("pw S3c/ret@Pw raw alice:S3c%2Fret%40Pw user alice", "alice:S3c%2Fret%40Pw", "alice",
				    "S3c/ret@Pw", NULL),
			 "pw ********** raw ******************** user *****");
	/* a user without a password: Basic of "bob1:" */
	ck_assert_str_eq(masked_url("Basic Ym9iMTo= bob1", "bob1", "bob1", NULL, NULL), "Basic ******** ****");
	/* no user, a password ("http://:secret@host"): curl sends Basic of ":pwpass" */
	ck_assert_str_eq(masked_url("Authorization: Basic OnB3cGFzcw== pwpass", ":pwpass", "", "pwpass", NULL),
			 "Authorization: Basic ************ ******");
	/* a short user name is not a secret; a short password is */
	ck_assert_str_eq(masked_url("bob x7 bob.", "bob:x7", "bob", "x7", NULL), "bob ** bob.");
	/* a short user name alone, or a short query, masks nothing */
	ck_assert_str_eq(masked_url("label: about a tab", "ab", "ab", NULL, NULL), "label: about a tab");
	ck_assert_str_eq(masked_url("xx: hex? x marks", NULL, NULL, NULL, "x"), "xx: hex? x marks");
	/* nothing to mask */
	ck_assert_str_eq(masked_url("plain text", NULL, NULL, NULL, NULL), "plain text");
}
END_TEST

START_TEST(mask_url_query_values)
{
	const char *q = "api_key=k-12345%2B6789&v=2&sig=a+b+c+d;flag&tok=%41BCD";

	/* the whole query, each value raw, %-decoded, '+' as space; short
	 * values (v=2) left alone */
	ck_assert_str_eq(masked_url("GET /h?api_key=k-12345%2B6789&v=2&sig=a+b+c+d;flag&tok=%41BCD", NULL, NULL, NULL, q),
			 "GET /h?" "******************************************************");
	ck_assert_str_eq(masked_url("bad key k-12345%2B6789 / k-12345+6789, v 2", NULL, NULL, NULL, q),
			 "bad key ************** / ************, v 2");
	ck_assert_str_eq(masked_url("sig a+b+c+d or a b c d; flag; ABCD %41BCD", NULL, NULL, NULL, q),
			 "sig ******* or *******; ****; **** ******");
	/* form-decoding reads a raw '+' as a space but %2B as a '+' */
	ck_assert_str_eq(masked_url("echo a b+cd", NULL, NULL, NULL, "k=a+b%2Bcd"), "echo ******");
	/* an empty query, a value cut at the end of the kept text */
	ck_assert_str_eq(masked_url("k-123", NULL, NULL, NULL, ""), "k-123");
	ck_assert_str_eq(masked_url("echo: k-123", NULL, NULL, NULL, "key=k-12345"), "echo: *****");
}
END_TEST

static const char *log_text(const char *text, size_t len, int cut, size_t outlen)
{
	static char out[1024];

	ck_assert_uint_le(outlen, sizeof(out));
	eh_http_log_text(text, len, cut, out, outlen);
	return out;
}

START_TEST(log_text_escapes)
{
	/* The audit's body: C0, DEL, invalid bytes, C1 (raw and as UTF-8) and
	 * U+2028 escaped; valid UTF-8 kept. */
	static const char body[] = "\x1b[31mred\xff\xfe\xc3(\x00nul\x07" "bell\x85\xc2\x9b"
				   "2J\xe2\x80\xa8" "end \xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xe2\x80\xa9\x7f.";

	ck_assert_str_eq(log_text(body, sizeof(body) - 1, 0, 1024),
			 "\\x1B[31mred\\xFF\\xFE\\xC3(\\x00nul\\x07bell\\x85\\xC2\\x9B2J\\xE2\\x80\\xA8end "
			 "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\xE2\\x80\\xA9\\x7F.");
	/* overlong, surrogate, above U+10FFFF: not valid, so escaped */
	ck_assert_str_eq(log_text("\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80", 11, 0, 1024),
			 "\\xC0\\xAF \\xED\\xA0\\x80 \\xF4\\x90\\x80\\x80");
	/* a backslash doubled, so that an answer cannot forge an escape */
	ck_assert_str_eq(log_text("{\"p\":\"C:\\\\x1b\"}\r\n\t", 18, 0, 1024), "{\"p\":\"C:\\\\\\\\x1b\"}\\r\\n\\t");
	ck_assert_str_eq(log_text("", 0, 0, 1), "");
}
END_TEST

START_TEST(log_text_cuts_at_boundaries)
{
	char body[200];

	/* 199 x 'a' and the first byte of an e-acute, cut there: dropped. */
	memset(body, 'a', 199);
	body[199] = (char)0xc3;
	ck_assert_uint_eq(strlen(log_text(body, 200, 1, 1024)), 199);
	/* the same at the real end of an answer is an invalid byte */
	ck_assert_str_eq(log_text(body, 200, 0, 1024) + 199, "\\xC3");
	/* two of the three bytes of a euro sign, and three of four of an emoji */
	ck_assert_str_eq(log_text("x\xe2\x82", 3, 1, 1024), "x");
	ck_assert_str_eq(log_text("x\xf0\x9f\x98", 4, 1, 1024), "x");
	ck_assert_str_eq(log_text("x\xe2\x82\xac", 4, 1, 1024), "x\xe2\x82\xac");
	/* a full output stops before a character or an escape, never inside */
	ck_assert_str_eq(log_text("ab\xe2\x82\xac", 5, 0, 5), "ab");
	ck_assert_str_eq(log_text("ab\xe2\x82\xac", 5, 0, 6), "ab\xe2\x82\xac");
	ck_assert_str_eq(log_text("ab\xff", 3, 0, 6), "ab");
	ck_assert_str_eq(log_text("ab\xff", 3, 0, 7), "ab\\xFF");
}
END_TEST

/* libcurl is not linked (nor is it into the plugin, which links the same
 * libraries): it is there only once the loader ran, with every function the
 * sink calls. */
START_TEST(curl_loaded_on_demand)
{
	char err[512];
	void *fns[sizeof(eh_curl) / sizeof(void *)];

	/* (with CK_FORK=no an earlier test of this process loaded it) */
	if (!eh_curl.getdate)
		ck_assert_ptr_null(dlopen(EH_CURL_SONAME, RTLD_NOW | RTLD_NOLOAD));
	ck_assert_msg(eh_curl_load(err, sizeof(err)) == 0, "%s", err);
	ck_assert_msg(eh_curl_load(err, sizeof(err)) == 0, "%s", err);
	ck_assert_ptr_nonnull(dlopen(EH_CURL_SONAME, RTLD_NOW | RTLD_NOLOAD));
	memcpy(fns, &eh_curl, sizeof(fns));
	for (size_t i = 0; i < sizeof(fns) / sizeof(fns[0]); i++)
		ck_assert_msg(fns[i] != NULL, "function %zu of the table is not loaded", i);
	ck_assert_int_eq(eh_curl.getdate("Tue, 14 Nov 2023 22:13:20 GMT", NULL), 1700000000);
}
END_TEST

static Suite *http_suite(void)
{
	Suite *s = suite_create("http");
	TCase *tc = tcase_create("helpers");

	tcase_add_test(tc, sign_standard_webhooks_vector);
	tcase_add_test(tc, sign_raw_secret_and_empty_body);
	tcase_add_test(tc, secret_rejects_bad_whsec);
	tcase_add_test(tc, base64_decode_forms);
	tcase_add_test(tc, retry_after_seconds);
	tcase_add_test(tc, retry_after_dates);
	tcase_add_test(tc, curl_loaded_on_demand);
	tcase_add_test(tc, status_policy);
	tcase_add_test(tc, url_redaction);
	tcase_add_test(tc, header_check);
	tcase_add_test(tc, mask_secrets);
	tcase_add_test(tc, mask_url_credentials);
	tcase_add_test(tc, mask_url_query_values);
	tcase_add_test(tc, log_text_escapes);
	tcase_add_test(tc, log_text_cuts_at_boundaries);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(http_suite)
