/*
 * eh_http_util: the pure parts of the HTTP sink, kept apart so that unit
 * tests reach them without a network: Standard Webhooks signing, the
 * signing secret's encoding, Retry-After parsing, the status policy and
 * the redaction of URLs for logs. Nothing here allocates except where
 * stated, and every function may run on any thread.
 */
#ifndef EH_HTTP_UTIL_H
#define EH_HTTP_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* What a response status means for the batch that was sent. */
enum eh_http_verdict {
	EH_HTTP_DELIVERED = 0, /* 2xx */
	EH_HTTP_RETRY,         /* 408, 429, 5xx: the peer may recover */
	EH_HTTP_REJECTED,      /* anything else (other 4xx, 3xx, 1xx): sending again cannot help */
	EH_HTTP_TOO_LARGE      /* 413: this body is too large; a smaller one may be taken */
};
enum eh_http_verdict eh_http_verdict(long status);

/* Length of the signature header value for one key: "v1," + base64 of 32 bytes. */
#define EH_HTTP_SIGNATURE_LEN (3 + 44)

/* Writes the Standard Webhooks signature "v1,<base64 HMAC-SHA256(key,
 * id.timestamp.body)>" into out (EH_HTTP_SIGNATURE_LEN + 1 bytes).
 * Returns 0, or -1 if the HMAC could not be computed. */
int eh_http_sign(const unsigned char *key, size_t keylen, const char *id, int64_t timestamp,
		 const char *body, size_t bodylen, char *out);

/* Decodes standard base64 (padding optional, no whitespace) into out, which
 * has room for len * 3 / 4 + 3 bytes. Returns the decoded length or -1. */
long eh_http_base64_decode(const char *in, size_t len, unsigned char *out);

/* Turns the signing secret file's text into the HMAC key: "whsec_<base64>"
 * (the Standard Webhooks form) is base64-decoded, anything else is used
 * as raw bytes. Returns a malloc'ed key and sets *keylen, or NULL when a
 * whsec_ value is not valid base64 or decodes to nothing (or on OOM). */
unsigned char *eh_http_secret_key(const char *text, size_t *keylen);

/* Parses a Retry-After value: delay-seconds or an HTTP-date (IMF-fixdate,
 * RFC 850 or asctime), relative to now_wall_ms (Unix ms). Returns the delay
 * in ms (0 for a date in the past), or -1 when the value is neither.
 * Delays are capped at one day so a hostile peer cannot park the sink.
 * Dates need libcurl loaded (eh_curl_load). */
int64_t eh_http_retry_after_ms(const char *value, int64_t now_wall_ms);

/* Copies url into out (outlen bytes) without what may be secret: user
 * information is replaced by "***@" and a query or fragment by "?...".
 * Always NUL-terminates. */
void eh_http_redact_url(const char *url, char *out, size_t outlen);

/* Overwrites with '*' every occurrence of secret (secretlen bytes) in
 * text (len bytes), and a tail of text that is the start of secret (the
 * text may have been cut there). For quoting a peer's answer in a log line
 * when the peer might echo what it was sent. Does nothing when secretlen
 * is 0. */
void eh_http_mask(char *text, size_t len, const void *secret, size_t secretlen);

/* Masks (as eh_http_mask) in text (len bytes) every form in which a peer
 * may echo the URL's secrets: the raw user information userinfo ("user:pw"
 * as written in the URL), base64 of "user:password" (the Basic
 * Authorization curl sends), the password, the user name and the raw query
 * (without '?') with each of its values, raw and percent-decoded. user and
 * password are the decoded forms; any argument may be NULL. The user name
 * and query values shorter than EH_HTTP_MASK_MIN bytes are left alone: they
 * are not secrets, and masking "2" would blank every 2 of the answer.
 * Returns 0, or -1 on out of memory (then the text must not be logged). */
#define EH_HTTP_MASK_MIN 4
int eh_http_mask_url_secrets(char *text, size_t len, const char *userinfo, const char *user, const char *password,
			     const char *query);

/* Writes the start of a peer's answer (text, len bytes) into out (outlen
 * bytes, at least 1) so that a log line can quote it safely, by the rule of
 * eh_logtext_escape (eh_logtext.h): valid UTF-8 kept; a backslash doubled;
 * TAB, LF, CR as \t, \n, \r; other control characters (C0, DEL, C1),
 * U+2028, U+2029 and every byte that is not valid UTF-8 as \xNN. With cut
 * (the text is the start of a longer answer) a character cut at the end is
 * dropped rather than escaped. Output stops at a character or escape
 * boundary when out is full; it is always NUL-terminated. Returns the
 * length written. */
size_t eh_http_log_text(const char *text, size_t len, int cut, char *out, size_t outlen);

/* Checks at start what libcurl would only find out at the first request
 * (and then retry for the whole budget): each file given is a regular file;
 * ca_file holds at least one PEM certificate; cert holds a PEM certificate
 * and, with key or (key NULL) in cert itself, an unencrypted PEM private key
 * that matches it. NULL paths are skipped. Returns 0, or -1 with err naming
 * the option (plugin_opt_http_ca_file, _client_cert, _client_key). Runs on
 * the broker thread; leaves OpenSSL's error queue empty. */
int eh_http_check_tls_files(const char *ca_file, const char *cert, const char *key, char *err, size_t errlen);

/* Checks a configured header "Name: value": a token name, a colon, no CR,
 * LF or NUL anywhere. Returns 0 (and sets *namelen), -1 when malformed, or
 * -2 when the value is empty or only blanks: libcurl reads "Name:" as
 * "remove this header", so it would not be sent (and would remove one of
 * curl's own, such as User-Agent). */
#define EH_HTTP_HEADER_EMPTY (-2)
int eh_http_header_check(const char *header, size_t *namelen);

#endif
