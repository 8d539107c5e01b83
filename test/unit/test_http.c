/* The HTTP sink's pure helpers: signing, secrets, Retry-After, status
 * policy, URL redaction and header checks. */
#include <stdlib.h>
#include <string.h>

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
	ck_assert_int_eq(eh_http_verdict(413), EH_HTTP_REJECTED);
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
	ck_assert_int_eq(eh_http_header_check("X-Empty:", &n), 0);
	ck_assert_int_eq(eh_http_header_check("no colon", &n), -1);
	ck_assert_int_eq(eh_http_header_check(": v", &n), -1);
	ck_assert_int_eq(eh_http_header_check("Bad Name: v", &n), -1);
	ck_assert_int_eq(eh_http_header_check("X: a\r\nInjected: b", &n), -1);
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
	tcase_add_test(tc, status_policy);
	tcase_add_test(tc, url_redaction);
	tcase_add_test(tc, header_check);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(http_suite)
