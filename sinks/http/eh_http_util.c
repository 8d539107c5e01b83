/*
 * eh_http_util: see eh_http_util.h. HMAC-SHA256 comes from OpenSSL's
 * libcrypto (linked; Mosquitto links it too); HTTP dates are parsed by
 * curl_getdate, a pure function that needs no curl_global_init (but needs
 * libcurl loaded: eh_curl_load).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "eh_json.h"
#include "eh_logtext.h"
#include "eh_options.h"
#include "http/eh_curl.h"
#include "http/eh_http_util.h"

#define DAY_MS (24LL * 3600 * 1000)

enum eh_http_verdict eh_http_verdict(long status)
{
	if (status >= 200 && status <= 299)
		return EH_HTTP_DELIVERED;
	if (status == 408 || status == 429 || (status >= 500 && status <= 599))
		return EH_HTTP_RETRY;
	if (status == 413)
		return EH_HTTP_TOO_LARGE;
	return EH_HTTP_REJECTED;
}

int eh_http_sign(const unsigned char *key, size_t keylen, const char *id, int64_t timestamp,
		 const char *body, size_t bodylen, char *out)
{
	unsigned char mac[EVP_MAX_MD_SIZE];
	char prefix[128];
	int plen = snprintf(prefix, sizeof(prefix), "%s.%" PRId64 ".", id, timestamp);
	EVP_MAC *hmac = NULL;
	EVP_MAC_CTX *ctx = NULL;
	OSSL_PARAM params[2];
	size_t outl = 0;
	int rc = -1;

	if (plen < 0 || (size_t)plen >= sizeof(prefix))
		return -1;
	/* The EVP_MAC interface signs the message in pieces, so the body is
	 * never copied to prepend "id.timestamp.". */
	hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (!hmac)
		goto out;
	ctx = EVP_MAC_CTX_new(hmac);
	if (!ctx)
		goto out;
	params[0] = OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_init(ctx, key, keylen, params) || !EVP_MAC_update(ctx, (const unsigned char *)prefix, (size_t)plen)
	    || !EVP_MAC_update(ctx, (const unsigned char *)body, bodylen)
	    || !EVP_MAC_final(ctx, mac, &outl, sizeof(mac)) || outl != 32)
		goto out;
	memcpy(out, "v1,", 3);
	eh_base64_encode(mac, outl, out + 3);
	rc = 0;
out:
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(hmac);
	return rc;
}

static int b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

long eh_http_base64_decode(const char *in, size_t len, unsigned char *out)
{
	uint32_t acc = 0;
	int bits = 0;
	long n = 0;

	while (len && in[len - 1] == '=')
		len--;
	if (len % 4 == 1)
		return -1;
	for (size_t i = 0; i < len; i++) {
		int v = b64_value((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[n++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return n;
}

unsigned char *eh_http_secret_key(const char *text, size_t *keylen)
{
	size_t len = strlen(text);
	unsigned char *key;

	if (strncmp(text, "whsec_", 6) == 0) {
		long n;

		key = malloc((len - 6) * 3 / 4 + 3);
		if (!key)
			return NULL;
		n = eh_http_base64_decode(text + 6, len - 6, key);
		if (n <= 0) {
			free(key);
			return NULL;
		}
		*keylen = (size_t)n;
		return key;
	}
	if (!len)
		return NULL;
	key = malloc(len);
	if (!key)
		return NULL;
	memcpy(key, text, len);
	*keylen = len;
	return key;
}

int64_t eh_http_retry_after_ms(const char *value, int64_t now_wall_ms)
{
	const char *p = value, *end;
	time_t when;
	int64_t ms;

	while (*p == ' ' || *p == '\t')
		p++;
	end = p + strlen(p);
	while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
		end--;
	if (end == p)
		return -1;
	if (isdigit((unsigned char)*p)) {
		int64_t secs = 0;

		for (const char *q = p; q < end; q++) {
			if (!isdigit((unsigned char)*q))
				return -1;
			if (secs < DAY_MS / 1000)
				secs = secs * 10 + (*q - '0');
		}
		ms = secs * 1000;
		return ms > DAY_MS ? DAY_MS : ms;
	}
	{
		char buf[64];
		size_t n = (size_t)(end - p);

		if (n >= sizeof(buf))
			return -1;
		memcpy(buf, p, n);
		buf[n] = '\0';
		when = eh_curl.getdate(buf, NULL);
	}
	if (when == (time_t)-1)
		return -1;
	ms = (int64_t)when * 1000 - now_wall_ms;
	if (ms < 0)
		return 0;
	return ms > DAY_MS ? DAY_MS : ms;
}

void eh_http_redact_url(const char *url, char *out, size_t outlen)
{
	const char *scheme_end = strstr(url, "://");
	const char *host = scheme_end ? scheme_end + 3 : url;
	const char *auth_end = host + strcspn(host, "/?#");
	const char *at = memchr(host, '@', (size_t)(auth_end - host));
	const char *tail;
	size_t pathlen;

	if (!outlen)
		return;
	tail = at ? at + 1 : host;
	pathlen = strcspn(tail, "?#");
	snprintf(out, outlen, "%.*s%s%.*s%s", (int)(host - url), url, at ? "***@" : "", (int)pathlen, tail,
		 tail[pathlen] ? "?..." : "");
}

void eh_http_mask(char *text, size_t len, const void *secret, size_t secretlen)
{
	const char *sec = secret;

	if (!secretlen)
		return;
	for (size_t i = 0; i < len; i++) {
		size_t n = len - i < secretlen ? len - i : secretlen;

		/* A whole occurrence, or a cut one at the very end. */
		if (text[i] == sec[0] && !memcmp(text + i, sec, n)) {
			memset(text + i, '*', n);
			i += n - 1;
		}
	}
}

static int hex_value(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = (unsigned char)tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Masks a query value as written and as a server would decode it: %XX
 * decoded, and, when that differs, form-decoded too (a raw '+' read as a
 * space, while a %2B stays a '+'). */
static int mask_value(char *text, size_t len, const char *v, size_t vlen)
{
	char *dec, *form;
	size_t n = 0;
	bool plus = false;

	if (vlen < EH_HTTP_MASK_MIN)
		return 0;
	eh_http_mask(text, len, v, vlen);
	dec = malloc(2 * vlen);
	if (!dec)
		return -1;
	form = dec + vlen;
	for (size_t i = 0; i < vlen; i++) {
		if (v[i] == '%' && i + 2 < vlen && hex_value((unsigned char)v[i + 1]) >= 0
		    && hex_value((unsigned char)v[i + 2]) >= 0) {
			dec[n] = form[n] = (char)(hex_value((unsigned char)v[i + 1]) * 16
						  + hex_value((unsigned char)v[i + 2]));
			i += 2;
		} else {
			plus |= v[i] == '+';
			dec[n] = v[i];
			form[n] = v[i] == '+' ? ' ' : v[i];
		}
		n++;
	}
	if (n >= EH_HTTP_MASK_MIN && (n != vlen || memcmp(dec, v, n)))
		eh_http_mask(text, len, dec, n);
	if (plus && n >= EH_HTTP_MASK_MIN)
		eh_http_mask(text, len, form, n);
	explicit_bzero(dec, 2 * vlen);
	free(dec);
	return 0;
}

int eh_http_mask_url_secrets(char *text, size_t len, const char *userinfo, const char *user, const char *password,
			     const char *query)
{
	/* Longest forms first: once a whole form is masked, its parts found
	 * inside it are already stars. */
	/* curl sends Basic for "http://:secret@host" too: an empty user
	 * still carries a password. */
	if ((user && *user) || (password && *password)) {
		size_t ulen = user ? strlen(user) : 0, plen = password ? strlen(password) : 0;
		char *plain = malloc(ulen + 1 + plen + 1), *b64;

		if (!plain)
			return -1;
		if (ulen)
			memcpy(plain, user, ulen);
		plain[ulen] = ':';
		memcpy(plain + ulen + 1, password ? password : "", plen);
		b64 = malloc(eh_base64_len(ulen + 1 + plen) + 1);
		if (b64) {
			eh_base64_encode(plain, ulen + 1 + plen, b64);
			eh_http_mask(text, len, b64, strlen(b64));
			explicit_bzero(b64, strlen(b64));
		}
		explicit_bzero(plain, ulen + 1 + plen);
		free(plain);
		if (!b64)
			return -1;
		free(b64);
	}
	/* Under EH_HTTP_MASK_MIN bytes a user name or query is no secret,
	 * and masking it would blank every such letter in the answer (the
	 * password is masked above whatever its length). */
	if (userinfo && strlen(userinfo) >= EH_HTTP_MASK_MIN)
		eh_http_mask(text, len, userinfo, strlen(userinfo));
	if (query && *query) {
		if (strlen(query) >= EH_HTTP_MASK_MIN)
			eh_http_mask(text, len, query, strlen(query));
		for (const char *p = query; *p;) {
			size_t plen = strcspn(p, "&;");
			const char *eq = memchr(p, '=', plen);
			const char *v = eq ? eq + 1 : p;

			if (mask_value(text, len, v, plen - (size_t)(v - p)))
				return -1;
			p += plen;
			if (*p)
				p++;
		}
	}
	if (password)
		eh_http_mask(text, len, password, strlen(password));
	if (user && strlen(user) >= EH_HTTP_MASK_MIN)
		eh_http_mask(text, len, user, strlen(user));
	return 0;
}

/* The length of text without a multi-byte character that its end cuts
 * short (a lead byte followed by fewer continuation bytes than it needs). */
static size_t without_cut_character(const unsigned char *t, size_t len)
{
	for (size_t k = 1; k <= 3 && k <= len; k++) {
		unsigned char c = t[len - k];

		if ((c & 0xC0) == 0x80)
			continue;
		if (c >= 0xC0 && (size_t)(c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2) > k)
			return len - k;
		break;
	}
	return len;
}

size_t eh_http_log_text(const char *text, size_t len, int cut, char *out, size_t outlen)
{
	if (cut)
		len = without_cut_character((const unsigned char *)text, len);
	return eh_logtext_escape(out, outlen, text, len, len, NULL);
}

/* Never asks for a passphrase: OpenSSL's default would prompt on the
 * broker's terminal. An encrypted key then simply fails to load. */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return -1;
}

static FILE *open_regular(const char *option, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "re");
	char shown[EH_QUOTE_LEN];
	struct stat st;

	if (!f) {
		int saved = errno;

		snprintf(err, errlen, "plugin_opt_%s: cannot read '%s': %s", option,
			 eh_quote(shown, sizeof(shown), path), strerror(saved));
		return NULL;
	}
	/* fopen succeeds on a directory; reading it would then fail in curl. */
	if (fstat(fileno(f), &st) || !S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "plugin_opt_%s: '%s' is not a regular file", option,
			 eh_quote(shown, sizeof(shown), path));
		fclose(f);
		return NULL;
	}
	return f;
}

static X509 *read_cert(const char *option, const char *path, char *err, size_t errlen)
{
	FILE *f = open_regular(option, path, err, errlen);
	char shown[EH_QUOTE_LEN];
	X509 *x;

	if (!f)
		return NULL;
	x = PEM_read_X509_AUX(f, NULL, no_passphrase, NULL);
	if (!x) {
		snprintf(err, errlen, "plugin_opt_%s: '%s' holds no PEM certificate", option,
			 eh_quote(shown, sizeof(shown), path));
	} else {
		/* curl loads every certificate of a CA bundle or a chain, and
		 * one damaged block fails them all: read the rest too. Only the
		 * end of the file may stop the loop. */
		X509 *more;
		unsigned long e;

		ERR_clear_error();
		while ((more = PEM_read_X509(f, NULL, no_passphrase, NULL)))
			X509_free(more);
		e = ERR_peek_last_error();
		if (ERR_GET_LIB(e) != ERR_LIB_PEM || ERR_GET_REASON(e) != PEM_R_NO_START_LINE) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' holds a certificate that cannot be read after the "
				 "first one: %s", option, eh_quote(shown, sizeof(shown), path),
				 ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "unknown error");
			X509_free(x);
			x = NULL;
		}
	}
	fclose(f);
	return x;
}

int eh_http_check_tls_files(const char *ca_file, const char *cert, const char *key, char *err, size_t errlen)
{
	char shown[EH_QUOTE_LEN];
	X509 *x = NULL;
	EVP_PKEY *pkey = NULL;
	int rc = -1;

	if (ca_file) {
		x = read_cert("http_ca_file", ca_file, err, errlen);
		if (!x)
			goto out;
		X509_free(x);
		x = NULL;
	}
	if (cert) {
		const char *option = key ? "http_client_key" : "http_client_cert";
		FILE *f;

		x = read_cert("http_client_cert", cert, err, errlen);
		if (!x)
			goto out;
		/* Without http_client_key curl takes the key from the
		 * certificate file; PEM reading skips the other blocks. */
		f = open_regular(option, key ? key : cert, err, errlen);
		if (!f)
			goto out;
		pkey = PEM_read_PrivateKey(f, NULL, no_passphrase, NULL);
		fclose(f);
		if (!pkey) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' holds no unencrypted PEM private key%s", option,
				 eh_quote(shown, sizeof(shown), key ? key : cert),
				 key ? "" : " (give it with plugin_opt_http_client_key)");
			goto out;
		}
		if (X509_check_private_key(x, pkey) != 1) {
			char shown2[EH_QUOTE_LEN];

			snprintf(err, errlen, "plugin_opt_%s: the key in '%s' does not match the certificate in '%s'",
				 option, eh_quote(shown, sizeof(shown), key ? key : cert),
				 eh_quote(shown2, sizeof(shown2), cert));
			goto out;
		}
	}
	rc = 0;
out:
	X509_free(x);
	EVP_PKEY_free(pkey);
	/* The queue is per thread and this is the broker's thread: a stale
	 * error there could be taken for a TLS client's by its own SSL
	 * calls. */
	ERR_clear_error();
	return rc;
}

int eh_http_header_check(const char *header, size_t *namelen)
{
	static const char token_extra[] = "!#$%&'*+-.^_`|~";
	size_t n = 0;

	while (header[n] && header[n] != ':') {
		unsigned char c = (unsigned char)header[n];

		if (!isalnum(c) && !strchr(token_extra, c))
			return -1;
		n++;
	}
	if (!n || header[n] != ':')
		return -1;
	for (const char *p = header; *p; p++)
		if (*p == '\r' || *p == '\n')
			return -1;
	*namelen = n;
	if (!header[n + 1 + strspn(header + n + 1, " \t")])
		return EH_HTTP_HEADER_EMPTY;
	return 0;
}
