/*
 * HTTP sink: POSTs events to a webhook with libcurl.
 *
 * One curl easy handle inside one multi handle per sink, made on the sink
 * thread in open and reused for every request, so the connection (and its
 * TLS session) is kept alive between batches. The multi handle exists only
 * so that a request in flight can be abandoned at the shutdown deadline:
 * deliver drives the transfer in steps of at most POLL_STEP_MS and checks
 * the deadline between steps.
 *
 * One request at a time: deliver answers for its batch before the runner
 * hands over the next one, which is what keeps events in capture order
 * without any bookkeeping here. The runner owns batching, backoff with
 * jitter and the give-up budget; this file turns a batch into one request
 * and the response into OK (2xx, or another status that no retry can
 * change: those events are counted failed) or RETRY (408, 429, 5xx,
 * transport errors, with Retry-After). A 413 (Payload Too Large) is the one
 * refusal that depends on the request rather than on each event: the batch
 * is sent again in halves, so only an event that is too large alone is
 * failed and the events around it are delivered. That leaves failed events
 * between delivered ones, which the runner's "done from the front" cannot
 * say, so the sink counts delivered and failed itself (EH_SINK_ASYNC_ACK;
 * OK still means delivered here, never merely handed over).
 *
 * Secrets are never logged; logged URLs go through eh_http_redact_url and
 * quoted responses through the masks of response_text. The bearer token and
 * signing key files are read at create on the broker thread and again on
 * SIGHUP on the sink thread. Header values and the URL (with its user
 * information) are fixed until restart: Mosquitto 2.0 does not hand plugin
 * options over again on reload.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <mosquitto.h>

#include "eh_sinks.h"
#include "eh_version.h"
#include "http/eh_curl.h"
#include "http/eh_http_util.h"

#define POLL_STEP_MS 100
#define RESPONSE_KEEP 200 /* bytes of a response body quoted in a log line */
/* A line eh_sink_log passes on whole: EH_LOG_LEN (512, eh_core.h) less the
 * "<sink>: " the core puts in front. A longer one is cut at a byte, maybe
 * inside a character, so the quoted response is fitted to what is left. */
#define LOG_LINE_MAX 500
#define URL_LOG_LEN 512
#define STATUS_BITS 1000

enum http_format { FORMAT_JSON, FORMAT_CLOUDEVENTS };

struct http_sink {
	struct eh_sink *sink;
	const struct eh_node *node;

	/* fixed after create */
	char *url; /* as given to curl: without user information */
	char url_log[URL_LOG_LEN];
	/* The URL's user information, given to curl apart (CURLOPT_USERNAME,
	 * CURLOPT_PASSWORD), and the forms a peer may echo: the decoded user
	 * and password, the raw "user:password" text and the raw query. */
	char *user, *password, *userinfo, *query;
	char **headers; /* "Name: value", as configured */
	size_t nheaders;
	char *token_path, *secret_path;
	char *ca_file, *client_cert, *client_key;
	bool insecure;
	long timeout_ms, connect_timeout_ms;
	enum http_format format;
	enum eh_json_framing framing;
	bool array; /* batch_max > 1: the body is a batch even for one event */

	/* secrets; replaced on reload (sink thread) */
	char *token;
	unsigned char *key;
	size_t keylen;

	/* sink thread only */
	CURLM *multi;
	CURL *easy;
	struct eh_buf body;
	char retry_after[64];
	char response[RESPONSE_KEEP];
	size_t response_len;
	bool response_cut; /* the body went on past RESPONSE_KEEP */
	char errbuf[CURL_ERROR_SIZE];
	bool failing;
	long fail_key; /* status, or -curl code, of the last logged failure */
	unsigned char rejected_logged[STATUS_BITS / 8];
	uint64_t too_large_logged; /* events refused alone with 413 (eh_sink_log_due) */
	bool split_logged;         /* a 413 batch was split, said once */
	/* The part of a split batch that failed transiently: its first
	 * event's number and its size. The retry sends that same request
	 * again (same body, same webhook-id) before the rest. */
	uint64_t retry_number;
	size_t retry_n;
};

static const struct eh_option http_options[] = {
	{ "http_url", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "Enables the HTTP sink: events are POSTed to this http:// or https:// URL. User information "
	  "(user:password@, reserved characters percent-encoded) is sent as Basic authentication. User "
	  "information and the query are never logged." },
	{ "http_header", EH_OPT_STRING, NULL, 0, 0, NULL, EH_OPT_REPEAT | EH_OPT_SECRET,
	  "An extra request header, \"Name: value\"; repeat the option for more. Values are treated as "
	  "secrets (never logged), are fixed until restart (not re-read on SIGHUP) and must not be "
	  "empty. Content-Type, Content-Length, Transfer-Encoding and the webhook-* signature headers "
	  "are set by the sink and cannot be given." },
	{ "http_bearer_token_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "File holding a token sent as \"Authorization: Bearer <token>\" (trailing newlines removed). "
	  "Read at start and again on SIGHUP; never logged." },
	{ "http_timeout_ms", EH_OPT_INT, "10000", 100, 600000, NULL, 0,
	  "Longest time one request may take, connection included; then it is retried." },
	{ "http_connect_timeout_ms", EH_OPT_INT, "5000", 100, 600000, NULL, 0,
	  "Longest time to establish a connection (TCP and TLS); then the request is retried." },
	{ "http_concurrency", EH_OPT_INT, "1", 1, 1, NULL, 0,
	  "Requests in flight at most. Only 1 is supported: a request is answered before the next batch "
	  "is sent, which keeps every client's events in order; use http_batch_max for throughput." },
	{ "http_batch_max", EH_OPT_INT, "1", 1, 10000, NULL, 0,
	  "Events per request at most. 1: the body is one JSON object. More: a JSON array (or NDJSON "
	  "lines with http_batch_format ndjson), even when fewer events are queued." },
	{ "http_batch_linger_ms", EH_OPT_INT, "0", 0, 60000, NULL, 0,
	  "How long to wait for a batch to fill before sending a partial one. 0: send what is queued." },
	{ "http_batch_format", EH_OPT_ENUM, "json", 0, 0, "json|ndjson", 0,
	  "Body of a batch (http_batch_max > 1): a JSON array (application/json, or "
	  "application/cloudevents-batch+json) or newline-delimited objects (application/x-ndjson; "
	  "not with http_format cloudevents)." },
	{ "http_format", EH_OPT_ENUM, "json", 0, 0, "json|cloudevents", 0,
	  "json: the event objects of docs/events.md. cloudevents: CloudEvents 1.0 structured mode "
	  "(application/cloudevents+json), the event object as data." },
	{ "http_retry_initial_ms", EH_OPT_INT, "500", 1, 3600000, NULL, 0,
	  "First delay before a failed request is retried; it doubles per attempt, with jitter." },
	{ "http_retry_max_ms", EH_OPT_INT, "30000", 1, 3600000, NULL, 0,
	  "Longest delay between two attempts (a longer Retry-After from the server is honoured)." },
	{ "http_retry_max_elapsed_ms", EH_OPT_INT, "600000", -1, 86400000, NULL, 0,
	  "Time after the first failure of a batch when it is given up (dropped, counted failed) and "
	  "the next one is tried. No delay reaches past it: a Retry-After longer than what is left gives "
	  "the batch up at once. 0: no retry. -1: retry forever (the ring still bounds memory)." },
	{ "http_ca_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "PEM file of the CA certificates that verify the server; default: the system's CA store." },
	{ "http_client_cert", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "PEM client certificate for mutual TLS (may also hold the key)." },
	{ "http_client_key", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "PEM private key of http_client_cert, when not in the same file. Must not be encrypted." },
	{ "http_tls_insecure", EH_OPT_BOOL, "false", 0, 0, NULL, 0,
	  "Do not verify the server's certificate and host name. For tests only; logged as a warning "
	  "at start." },
	{ "http_signing_secret_file", EH_OPT_STRING, NULL, 0, 0, NULL, 0,
	  "File holding the Standard Webhooks signing secret: \"whsec_<base64>\" (the key is the decoded "
	  "bytes) or any other text (the key is those bytes). Each request then carries webhook-id, "
	  "webhook-timestamp and webhook-signature. Read at start and again on SIGHUP." },
	EH_SINK_FILTER_OPTIONS("http"),
	{ NULL, 0, NULL, 0, 0, NULL, 0, NULL },
};

/* ---- small helpers ---- */

static void free_secret(void *p, size_t len)
{
	/* explicit_bzero: a memset right before free is dead to the
	 * optimiser, and -O2 drops it. */
	if (p)
		explicit_bzero(p, len);
	free(p);
}

static bool status_logged(struct http_sink *h, long status)
{
	unsigned i;

	if (status < 0 || status >= STATUS_BITS)
		status = 0;
	i = (unsigned)status;
	if (h->rejected_logged[i / 8] & (1u << (i % 8)))
		return true;
	h->rejected_logged[i / 8] |= (unsigned char)(1u << (i % 8));
	return false;
}

/* The response body quoted for a log line: our secrets masked (a server,
 * or a proxy's error page, may echo the request it got, Authorization and
 * the configured headers included), then made safe for a log line by
 * eh_http_log_text, in at most outlen bytes. */
static const char *response_text(struct http_sink *h, char *out, size_t outlen)
{
	char *r = h->response;
	size_t n = h->response_len;

	if (h->token)
		eh_http_mask(r, n, h->token, strlen(h->token));
	if (h->key)
		eh_http_mask(r, n, h->key, h->keylen);
	for (size_t i = 0; i < h->nheaders; i++) {
		const char *v = strchr(h->headers[i], ':') + 1;

		v += strspn(v, " \t");
		eh_http_mask(r, n, v, strlen(v));
	}
	/* The query and the user information, which url_log hides too, in
	 * every form a server may echo them (Basic credentials, decoded). */
	if (eh_http_mask_url_secrets(r, n, h->userinfo, h->user, h->password, h->query))
		return "(not shown: out of memory)";
	eh_http_log_text(r, n, h->response_cut, out, outlen);
	return out;
}

/* ---- secrets ---- */

static int load_token(struct http_sink *h, char **out, char *err, size_t errlen)
{
	*out = NULL;
	if (!h->token_path)
		return 0;
	*out = eh_read_secret_file("http_bearer_token_file", h->token_path, err, errlen);
	if (!*out)
		return -1;
	if (strpbrk(*out, "\r\n")) {
		char shown[EH_QUOTE_LEN];

		snprintf(err, errlen, "plugin_opt_http_bearer_token_file: '%s' holds more than one line",
			 eh_quote(shown, sizeof(shown), h->token_path));
		free_secret(*out, strlen(*out));
		*out = NULL;
		return -1;
	}
	return 0;
}

static int load_key(struct http_sink *h, unsigned char **key, size_t *keylen, char *err, size_t errlen)
{
	char *text;

	*key = NULL;
	*keylen = 0;
	if (!h->secret_path)
		return 0;
	text = eh_read_secret_file("http_signing_secret_file", h->secret_path, err, errlen);
	if (!text)
		return -1;
	*key = eh_http_secret_key(text, keylen);
	free_secret(text, strlen(text));
	if (!*key) {
		char shown[EH_QUOTE_LEN];

		snprintf(err, errlen,
			 "plugin_opt_http_signing_secret_file: '%s' starts with whsec_ but the rest is not base64",
			 eh_quote(shown, sizeof(shown), h->secret_path));
		return -1;
	}
	return 0;
}

/* ---- close (sink thread), create / destroy (broker thread) ---- */

/* curl's connections and its wake-up socket pair are descriptors the sink
 * thread opened. */
static void http_close(void *ctx)
{
	struct http_sink *h = ctx;

	if (h->easy) {
		if (h->multi)
			eh_curl.multi_remove_handle(h->multi, h->easy);
		eh_curl.easy_cleanup(h->easy);
		h->easy = NULL;
	}
	if (h->multi)
		eh_curl.multi_cleanup(h->multi);
	h->multi = NULL;
}

static void http_destroy(void *ctx)
{
	struct http_sink *h = ctx;

	if (!h)
		return;
	/* No curl handle is left: the sink thread made them (http_open) and
	 * closed them (http_close) in its own descriptor table, which this
	 * thread must not touch; a sink whose thread was abandoned at stop
	 * is never destroyed. */
	free(h->url);
	if (h->user)
		free_secret(h->user, strlen(h->user));
	if (h->password)
		free_secret(h->password, strlen(h->password));
	if (h->userinfo)
		free_secret(h->userinfo, strlen(h->userinfo));
	free(h->query);
	for (size_t i = 0; i < h->nheaders; i++)
		free_secret(h->headers[i], strlen(h->headers[i]));
	free(h->headers);
	free(h->token_path);
	free(h->secret_path);
	free(h->ca_file);
	free(h->client_cert);
	free(h->client_key);
	if (h->token)
		free_secret(h->token, strlen(h->token));
	free_secret(h->key, h->keylen);
	eh_buf_free(&h->body);
	free(h);
}

/* The part of a URL curl refused that may be shown: the scheme. The rest
 * may hold a password with a reserved character in it ("pa/ss", "p@ss"),
 * which is exactly what makes such a URL fail to parse. */
static void invalid_url(const char *url, const char *why, char *err, size_t errlen)
{
	size_t n = strspn(url, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+-.");

	if (n > 16 || strncmp(url + n, "://", 3))
		n = 0;
	snprintf(err, errlen, "plugin_opt_http_url: '%.*s%s***' is not a valid URL (%s; the rest is not shown%s)",
		 (int)n, url, n ? "://" : "", why,
		 strchr(url, '@') ? ": in a user name or password, write : / ? # @ and % as %XX" : "");
}

static char *url_part(CURLU *u, CURLUPart part, unsigned flags, CURLUcode *uc)
{
	char *v = NULL;

	*uc = eh_curl.url_get(u, part, &v, flags);
	return *uc == CURLUE_OK ? v : NULL;
}

/* Checks http_url and takes it apart: the URL for curl without its user
 * information (so nothing built from it, url_log included, can show the
 * password), the user and password for CURLOPT_USERNAME/PASSWORD, and what
 * response_text has to mask. Parsing only: CURLU never touches the network. */
static int parse_url(struct http_sink *h, const char *url, char *err, size_t errlen)
{
	CURLU *u = eh_curl.url();
	char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL, *ruser = NULL, *rpassword = NULL;
	char *query = NULL, *stripped = NULL;
	char shown[URL_LOG_LEN - 4]; /* room for "***@" */
	CURLUcode uc;
	int rc = -1;

	if (!u) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	uc = eh_curl.url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME);
	if (uc == CURLUE_OK)
		scheme = url_part(u, CURLUPART_SCHEME, 0, &uc);
	if (uc == CURLUE_OK)
		host = url_part(u, CURLUPART_HOST, 0, &uc);
	if (uc != CURLUE_OK || !host || !*host) {
		invalid_url(url, uc != CURLUE_OK ? eh_curl.url_strerror(uc) : "no host name", err, errlen);
		goto out;
	}
	/* The scheme is checked by hand so the error names what is allowed. */
	if (strcasecmp(scheme, "http") && strcasecmp(scheme, "https")) {
		snprintf(err, errlen, "plugin_opt_http_url: scheme '%s' is not supported (use http:// or https://)",
			 scheme);
		goto out;
	}
	ruser = url_part(u, CURLUPART_USER, 0, &uc);
	if (ruser) {
		user = url_part(u, CURLUPART_USER, CURLU_URLDECODE, &uc);
		if (!user)
			goto undecodable;
		rpassword = url_part(u, CURLUPART_PASSWORD, 0, &uc);
		if (rpassword) {
			password = url_part(u, CURLUPART_PASSWORD, CURLU_URLDECODE, &uc);
			if (!password)
				goto undecodable;
		}
		if (eh_curl.url_set(u, CURLUPART_USER, NULL, 0) != CURLUE_OK
		    || eh_curl.url_set(u, CURLUPART_PASSWORD, NULL, 0) != CURLUE_OK)
			goto oom;
	}
	query = url_part(u, CURLUPART_QUERY, 0, &uc);
	stripped = url_part(u, CURLUPART_URL, 0, &uc);
	if (!stripped)
		goto oom;
	h->url = strdup(stripped);
	h->query = query ? strdup(query) : NULL;
	if (user) {
		size_t n = strlen(ruser) + (rpassword ? strlen(rpassword) + 1 : 0) + 1;

		h->user = strdup(user);
		h->password = password ? strdup(password) : NULL;
		h->userinfo = malloc(n);
		if (h->userinfo)
			snprintf(h->userinfo, n, "%s%s%s", ruser, rpassword ? ":" : "", rpassword ? rpassword : "");
	}
	if (!h->url || (query && !h->query) || (user && (!h->user || !h->userinfo || (password && !h->password))))
		goto oom;
	eh_http_redact_url(h->url, shown, sizeof(shown));
	if (user) {
		const char *sep = strstr(shown, "://");
		size_t at = sep ? (size_t)(sep - shown) + 3 : 0;

		memcpy(h->url_log, shown, at);
		memcpy(h->url_log + at, "***@", 4);
		memcpy(h->url_log + at + 4, shown + at, strlen(shown + at) + 1);
	} else {
		snprintf(h->url_log, sizeof(h->url_log), "%s", shown);
	}
	rc = 0;
	goto out;
undecodable:
	snprintf(err, errlen, "plugin_opt_http_url: the user information cannot be decoded (%%00 or a control "
			      "character)");
	goto out;
oom:
	snprintf(err, errlen, "out of memory");
out:
	eh_curl.free(scheme);
	eh_curl.free(host);
	if (user)
		free_secret(user, strlen(user));
	if (password)
		free_secret(password, strlen(password));
	if (ruser)
		free_secret(ruser, strlen(ruser));
	if (rpassword)
		free_secret(rpassword, strlen(rpassword));
	eh_curl.free(query);
	eh_curl.free(stripped);
	eh_curl.url_cleanup(u);
	return rc;
}

struct header_ctx {
	struct http_sink *h;
	char *err;
	size_t errlen;
};

static int add_header(void *arg, const char *key, const char *value)
{
	static const char *const reserved[] = { "content-type", "content-length", "transfer-encoding",
						"webhook-id", "webhook-timestamp", "webhook-signature" };
	struct header_ctx *c = arg;
	struct http_sink *h = c->h;
	size_t namelen;
	char **grown;
	int check;

	(void)key;
	check = eh_http_header_check(value, &namelen);
	if (check == EH_HTTP_HEADER_EMPTY) {
		snprintf(c->err, c->errlen,
			 "plugin_opt_http_header: header %zu (%.*s) has an empty value, which libcurl would take as "
			 "\"remove this header\"",
			 h->nheaders + 1, (int)namelen, value);
		return -1;
	}
	if (check) {
		snprintf(c->err, c->errlen,
			 "plugin_opt_http_header: header %zu is not \"Name: value\" (a token name, no line breaks)",
			 h->nheaders + 1);
		return -1;
	}
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		if (strlen(reserved[i]) == namelen && !strncasecmp(value, reserved[i], namelen)) {
			snprintf(c->err, c->errlen, "plugin_opt_http_header: %s is set by the sink", reserved[i]);
			return -1;
		}
	}
	if (h->token_path && namelen == 13 && !strncasecmp(value, "authorization", 13)) {
		snprintf(c->err, c->errlen,
			 "plugin_opt_http_header: Authorization conflicts with plugin_opt_http_bearer_token_file");
		return -1;
	}
	grown = realloc(h->headers, (h->nheaders + 1) * sizeof(*grown));
	if (!grown)
		goto oom;
	h->headers = grown;
	h->headers[h->nheaders] = strdup(value);
	if (!h->headers[h->nheaders])
		goto oom;
	h->nheaders++;
	return 0;
oom:
	snprintf(c->err, c->errlen, "out of memory");
	return -1;
}

static char *dup_opt(const struct eh_config *cfg, const char *key, bool *oom)
{
	const char *v = eh_config_get(cfg, key);
	char *copy;

	if (!v)
		return NULL;
	copy = strdup(v);
	if (!copy)
		*oom = true;
	return copy;
}

static int http_create(const struct eh_sink_env *env, void **ctx, char *err, size_t errlen)
{
	/* curl_global_init is not thread-safe: once, here, on the broker thread,
	 * before any http sink thread exists (with a block of ours per listener,
	 * other sinks' threads may run, and none of them calls libcurl). Never
	 * undone: curl_global_cleanup is no safer, and the process may hold
	 * other curl users. */
	static bool curl_ready;
	const struct eh_config *cfg = env->config;
	struct http_sink *h = calloc(1, sizeof(*h));
	struct header_ctx hc = { h, err, errlen };
	bool oom = false;
	long long batch_max;
	bool ndjson;
	char loaded[512];

	*ctx = h;
	if (!h) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (eh_curl_load(loaded, sizeof(loaded))) {
		snprintf(err, errlen, "plugin_opt_http_url: %s", loaded);
		return -1;
	}
	if (!curl_ready) {
		if (eh_curl.global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
			snprintf(err, errlen, "plugin_opt_http_url: libcurl could not be initialised");
			return -1;
		}
		curl_ready = true;
	}
	h->sink = env->sink;
	h->node = env->node;
	h->token_path = dup_opt(cfg, "http_bearer_token_file", &oom);
	h->secret_path = dup_opt(cfg, "http_signing_secret_file", &oom);
	h->ca_file = dup_opt(cfg, "http_ca_file", &oom);
	h->client_cert = dup_opt(cfg, "http_client_cert", &oom);
	h->client_key = dup_opt(cfg, "http_client_key", &oom);
	if (oom) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (parse_url(h, eh_config_get(cfg, "http_url"), err, errlen))
		return -1;
	if (eh_config_each(cfg, "http_header", add_header, &hc))
		return -1;
	if (load_token(h, &h->token, err, errlen) || load_key(h, &h->key, &h->keylen, err, errlen))
		return -1;
	if (h->client_key && !h->client_cert) {
		snprintf(err, errlen, "plugin_opt_http_client_key: given without plugin_opt_http_client_cert");
		return -1;
	}
	if (eh_http_check_tls_files(h->ca_file, h->client_cert, h->client_key, err, errlen))
		return -1;
	h->insecure = eh_config_bool(cfg, "http_tls_insecure");
	h->timeout_ms = (long)eh_config_int(cfg, "http_timeout_ms");
	h->connect_timeout_ms = (long)eh_config_int(cfg, "http_connect_timeout_ms");
	h->format = strcmp(eh_config_get(cfg, "http_format"), "cloudevents") ? FORMAT_JSON : FORMAT_CLOUDEVENTS;
	ndjson = !strcmp(eh_config_get(cfg, "http_batch_format"), "ndjson");
	batch_max = eh_config_int(cfg, "http_batch_max");
	h->array = batch_max > 1;
	h->framing = ndjson ? EH_JSON_NDJSON : h->array ? EH_JSON_ARRAY : EH_JSON_SINGLE;
	if (ndjson && h->format == FORMAT_CLOUDEVENTS) {
		snprintf(err, errlen, "plugin_opt_http_batch_format: ndjson is not a CloudEvents batch format; "
				      "use json with http_format cloudevents");
		return -1;
	}
	if (eh_config_int(cfg, "http_retry_max_ms") < eh_config_int(cfg, "http_retry_initial_ms")) {
		snprintf(err, errlen, "plugin_opt_http_retry_max_ms: smaller than plugin_opt_http_retry_initial_ms");
		return -1;
	}
	if (h->insecure)
		eh_sink_log(h->sink, MOSQ_LOG_WARNING,
			    "plugin_opt_http_tls_insecure is on: the server's certificate is NOT verified");
	if (!strncasecmp(h->url, "http:", 5) && (h->token || h->nheaders || h->user))
		eh_sink_log(h->sink, MOSQ_LOG_NOTICE, "credentials are sent to %s without TLS", h->url_log);
	eh_sink_set_batching(env->sink, (size_t)batch_max, eh_config_int(cfg, "http_batch_linger_ms"));
	eh_sink_set_retry(env->sink, eh_config_int(cfg, "http_retry_initial_ms"), eh_config_int(cfg, "http_retry_max_ms"),
			  eh_config_int(cfg, "http_retry_max_elapsed_ms"));
	/* curl's handles, its connections and its resolver's threads are
	 * made, used and closed by the sink thread only (http_open,
	 * http_close). */
	eh_sink_set_own_files(env->sink);
	return 0;
}

/* ---- the sink thread ---- */

static size_t on_header(char *data, size_t size, size_t n, void *arg)
{
	struct http_sink *h = arg;
	size_t len = size * n;

	if (len > 12 && !strncasecmp(data, "retry-after:", 12)) {
		size_t vlen = len - 12;

		if (vlen >= sizeof(h->retry_after))
			vlen = sizeof(h->retry_after) - 1;
		memcpy(h->retry_after, data + 12, vlen);
		h->retry_after[vlen] = '\0';
	}
	return len;
}

static size_t on_body(char *data, size_t size, size_t n, void *arg)
{
	struct http_sink *h = arg;
	size_t len = size * n, room = RESPONSE_KEEP - h->response_len;
	size_t k = len < room ? len : room;

	/* Keep the start for the log; read and discard the rest so the
	 * connection stays usable. */
	memcpy(h->response + h->response_len, data, k);
	h->response_len += k;
	if (k < len)
		h->response_cut = true;
	return len;
}

static int http_open(void *ctx)
{
	struct http_sink *h = ctx;
	CURL *e;
	int rc = 0;

	if (h->easy)
		return 0;
	if (!h->multi)
		h->multi = eh_curl.multi_init();
	if (!h->multi)
		return -1;
	e = eh_curl.easy_init();
	if (!e)
		return -1;
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_URL, h->url);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_POST, 1L);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_TIMEOUT_MS, h->timeout_ms);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, h->connect_timeout_ms);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_USERAGENT, "mosquitto-eventhook/" EH_VERSION);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_HEADERDATA, h);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_WRITEDATA, h);
	rc |= (int)eh_curl.easy_setopt(e, CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	if (h->ca_file)
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_CAINFO, h->ca_file);
	if (h->client_cert)
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_SSLCERT, h->client_cert);
	if (h->client_key)
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_SSLKEY, h->client_key);
	if (h->user)
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_USERNAME, h->user);
	if (h->password)
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_PASSWORD, h->password);
	if (h->insecure) {
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		rc |= (int)eh_curl.easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (rc) {
		eh_sink_log(h->sink, MOSQ_LOG_WARNING, "this libcurl lacks an option the sink needs");
		eh_curl.easy_cleanup(e);
		return -1;
	}
	/* With the threaded resolver, ending a transfer that is still resolving
	 * (curl's own connect timeout, or perform() abandoning it at the
	 * shutdown deadline) joins the getaddrinfo thread, which waits for the
	 * system resolver: up to its full timeout (30 s and more) when the DNS
	 * server never answers. Quick exit detaches that thread instead, so
	 * both deadlines hold; the thread lives on until getaddrinfo returns.
	 * The build needs 7.87 headers (Debian 12 has 7.88); a libcurl older
	 * than that at run time only costs that wait, so it is worth a
	 * warning, not a sink that cannot open. */
	if (eh_curl.easy_setopt(e, CURLOPT_QUICK_EXIT, 1L) != CURLE_OK)
		eh_sink_log(h->sink, MOSQ_LOG_WARNING,
			    "this libcurl has no CURLOPT_QUICK_EXIT (7.87): a DNS server that never answers can "
			    "hold up retries and shutdown for the resolver's own timeout");
	/* A detached resolver thread runs libcurl's code until getaddrinfo
	 * returns, possibly after the broker unloaded the plugin: libcurl stays
	 * mapped all the same, since eh_curl_load never closes it. */
	h->easy = e;
	return 0;
}

static int build_body(struct http_sink *h, const struct eh_event *evs, size_t n)
{
	h->body.len = 0;
	if (eh_json_batch_begin(&h->body, h->framing))
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (eh_json_batch_add(&h->body, h->framing, i == 0, &evs[i], h->node, h->format == FORMAT_CLOUDEVENTS))
			return -1;
	}
	if (eh_json_batch_end(&h->body, h->framing))
		return -1;
	if (!h->body.data && eh_buf_append(&h->body, "", 0))
		return -1;
	return 0;
}

static const char *content_type(const struct http_sink *h)
{
	if (h->format == FORMAT_CLOUDEVENTS)
		return h->array ? "Content-Type: application/cloudevents-batch+json"
				: "Content-Type: application/cloudevents+json";
	return h->framing == EH_JSON_NDJSON ? "Content-Type: application/x-ndjson" : "Content-Type: application/json";
}

static struct curl_slist *add_line(struct curl_slist *list, const char *line, bool *failed)
{
	struct curl_slist *next;

	if (*failed)
		return list;
	next = eh_curl.slist_append(list, line);
	if (!next)
		*failed = true;
	return next ? next : list;
}

/* The request headers for this body; NULL on out of memory. The message id
 * is the first event's id (with the count for a batch): a retry of the same
 * batch repeats it, so receivers can deduplicate by webhook-id. */
static struct curl_slist *build_headers(struct http_sink *h, const struct eh_event *evs, size_t n)
{
	struct curl_slist *list = NULL;
	bool failed = false;
	char line[256];

	list = add_line(list, content_type(h), &failed);
	/* No "Expect: 100-continue" round trip for large bodies. */
	list = add_line(list, "Expect:", &failed);
	for (size_t i = 0; i < h->nheaders; i++)
		list = add_line(list, h->headers[i], &failed);
	if (h->token) {
		size_t n = strlen(h->token) + 32;
		char *auth = malloc(n);

		if (!auth) {
			failed = true;
		} else {
			snprintf(auth, n, "Authorization: Bearer %s", h->token);
			list = add_line(list, auth, &failed);
			free_secret(auth, n);
		}
	}
	if (h->key) {
		char id[EH_ID_LEN + 32], sig[EH_HTTP_SIGNATURE_LEN + 1];
		int64_t ts = eh_wall_ms() / 1000;

		eh_json_format_id(h->node, evs[0].number, id);
		if (h->array)
			snprintf(id + EH_ID_LEN, sizeof(id) - EH_ID_LEN, ".%zu", n);
		if (eh_http_sign(h->key, h->keylen, id, ts, h->body.data, h->body.len, sig)) {
			failed = true;
		} else {
			snprintf(line, sizeof(line), "webhook-id: %s", id);
			list = add_line(list, line, &failed);
			snprintf(line, sizeof(line), "webhook-timestamp: %" PRId64, ts);
			list = add_line(list, line, &failed);
			snprintf(line, sizeof(line), "webhook-signature: %s", sig);
			list = add_line(list, line, &failed);
		}
	}
	if (failed) {
		eh_curl.slist_free_all(list);
		return NULL;
	}
	return list;
}

/* Runs the transfer on the multi handle until it ends or the shutdown
 * deadline passes. Returns the transfer's result, or -1 when abandoned. */
static int perform(struct http_sink *h)
{
	int running = 1;
	CURLcode result = CURLE_OK;
	CURLMsg *msg;
	int left;

	if (eh_curl.multi_add_handle(h->multi, h->easy) != CURLM_OK)
		return CURLE_OUT_OF_MEMORY;
	for (;;) {
		int64_t deadline, wait = POLL_STEP_MS;

		if (eh_curl.multi_perform(h->multi, &running) != CURLM_OK) {
			result = CURLE_OUT_OF_MEMORY;
			break;
		}
		if (!running)
			break;
		deadline = eh_sink_deadline_ms(h->sink);
		if (deadline != INT64_MAX) {
			int64_t now = eh_now_ms();

			if (now >= deadline) {
				eh_curl.multi_remove_handle(h->multi, h->easy);
				return -1;
			}
			if (deadline - now < wait)
				wait = deadline - now;
		}
		eh_curl.multi_poll(h->multi, NULL, 0, (int)wait, NULL);
	}
	while ((msg = eh_curl.multi_info_read(h->multi, &left)))
		if (msg->msg == CURLMSG_DONE && msg->easy_handle == h->easy)
			result = msg->data.result;
	eh_curl.multi_remove_handle(h->multi, h->easy);
	return (int)result;
}

static void log_retry(struct http_sink *h, long key, const char *what)
{
	if (h->failing && h->fail_key == key)
		return;
	h->failing = true;
	h->fail_key = key;
	eh_sink_log(h->sink, MOSQ_LOG_WARNING, "%s from %s; retrying", what, h->url_log);
}

/* What one request settled. */
enum post_rc {
	POST_SETTLED,  /* delivered (2xx) or refused for good: counted, b->done past it */
	POST_RETRY,    /* transient failure, or abandoned at the shutdown deadline */
	POST_TOO_LARGE /* 413: nothing counted; a smaller body may be taken */
};

/* One request for the n events of b from index from, which are the first
 * ones b->done has not passed yet. */
static enum post_rc post(struct http_sink *h, struct eh_batch *b, size_t from, size_t n)
{
	const struct eh_event *evs = b->events + from;
	struct curl_slist *headers;
	long status = 0;
	int result;
	char what[CURL_ERROR_SIZE + 64];

	if (!h->easy && http_open(h)) {
		log_retry(h, -CURLE_OUT_OF_MEMORY, "cannot set up libcurl");
		return POST_RETRY;
	}
	if (build_body(h, evs, n) || !(headers = build_headers(h, evs, n))) {
		log_retry(h, -CURLE_OUT_OF_MEMORY, "out of memory building the request");
		return POST_RETRY;
	}
	eh_curl.easy_setopt(h->easy, CURLOPT_HTTPHEADER, headers);
	eh_curl.easy_setopt(h->easy, CURLOPT_POSTFIELDS, h->body.data);
	eh_curl.easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)h->body.len);
	h->retry_after[0] = '\0';
	h->response_len = 0;
	h->response_cut = false;
	h->errbuf[0] = '\0';
	result = perform(h);
	eh_curl.easy_setopt(h->easy, CURLOPT_HTTPHEADER, NULL);
	eh_curl.slist_free_all(headers);
	if (result < 0)
		return POST_RETRY; /* abandoned at the shutdown deadline */
	if (result != CURLE_OK) {
		snprintf(what, sizeof(what), "%s", h->errbuf[0] ? h->errbuf : eh_curl.easy_strerror((CURLcode)result));
		log_retry(h, -(long)result, what);
		return POST_RETRY;
	}
	eh_curl.easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
	switch (eh_http_verdict(status)) {
	case EH_HTTP_DELIVERED:
		if (h->failing)
			eh_sink_log(h->sink, MOSQ_LOG_NOTICE, "delivering to %s again", h->url_log);
		h->failing = false;
		eh_sink_count(h->sink, n, 0);
		b->done += n;
		return POST_SETTLED;
	case EH_HTTP_RETRY:
		/* The runner weighs it against what is left of the budget. */
		if (h->retry_after[0])
			b->retry_after_ms = eh_http_retry_after_ms(h->retry_after, eh_wall_ms());
		snprintf(what, sizeof(what), "HTTP %ld", status);
		log_retry(h, status, what);
		return POST_RETRY;
	case EH_HTTP_TOO_LARGE:
		h->failing = false;
		return POST_TOO_LARGE;
	case EH_HTTP_REJECTED:
	default:
		if (!status_logged(h, status)) {
			char line[LOG_LINE_MAX], quoted[LOG_LINE_MAX];
			int used = snprintf(line, sizeof(line),
					    "HTTP %ld from %s: %zu event(s) dropped; further %ld responses are counted, "
					    "not logged. Response: ",
					    status, h->url_log, n, status);

			if (used > 0 && (size_t)used < sizeof(line) - 1)
				eh_sink_log(h->sink, MOSQ_LOG_ERR, "%s%s", line,
					    response_text(h, quoted, sizeof(line) - (size_t)used));
			else
				eh_sink_log(h->sink, MOSQ_LOG_ERR, "%s", line);
		}
		h->failing = false;
		eh_sink_count(h->sink, 0, n);
		b->done += n;
		return POST_SETTLED;
	}
}

/* Sends the n events of b from index from. A body refused with 413 is sent
 * again in halves, the first half first, so events keep their order: a
 * batch that is too large only as a whole is delivered in parts, and an
 * event refused even alone (a large payload over the server's limit) is
 * counted failed while the events around it are delivered. Sending it
 * again can never help, and holding it would hold every later event. At
 * most about 2 log2(n) requests find one such event. Returns OK when all n
 * are settled, RETRY when a request failed transiently (b->done says how
 * far it got). */
static enum eh_deliver_rc send_range(struct http_sink *h, struct eh_batch *b, size_t from, size_t n)
{
	size_t half;

	/* Past the shutdown deadline no further part is started: what is
	 * left is counted left, not sent and then abandoned. */
	if (eh_now_ms() >= eh_sink_deadline_ms(h->sink))
		return EH_DELIVER_RETRY;
	switch (post(h, b, from, n)) {
	case POST_SETTLED:
		return EH_DELIVER_OK;
	case POST_RETRY:
		h->retry_number = b->events[from].number;
		h->retry_n = n;
		return EH_DELIVER_RETRY;
	case POST_TOO_LARGE:
		break;
	}
	if (n == 1) {
		if (eh_sink_log_due(&h->too_large_logged))
			eh_sink_log(h->sink, MOSQ_LOG_ERR,
				    "event seq %llu (%zu bytes) refused with HTTP 413 by %s even when sent alone; "
				    "counted failed",
				    (unsigned long long)b->events[from].seq, h->body.len, h->url_log);
		eh_sink_count(h->sink, 0, 1);
		b->done++;
		return EH_DELIVER_OK;
	}
	if (!h->split_logged)
		eh_sink_log(h->sink, MOSQ_LOG_NOTICE,
			    "HTTP 413 from %s for a body of %zu bytes (%zu events): sending it again in parts "
			    "(said once; a lower http_batch_max avoids it)",
			    h->url_log, h->body.len, n);
	h->split_logged = true;
	half = n / 2;
	if (send_range(h, b, from, half) != EH_DELIVER_OK)
		return EH_DELIVER_RETRY;
	return send_range(h, b, from + half, n - half);
}

static enum eh_deliver_rc http_deliver(void *ctx, struct eh_batch *b)
{
	struct http_sink *h = ctx;
	size_t first = b->count;

	b->done = 0;
	/* A receiver that deduplicates by webhook-id must see a retried
	 * request again, not its events inside a larger one. */
	if (h->retry_n && h->retry_n < b->count && b->events[0].number == h->retry_number)
		first = h->retry_n;
	h->retry_n = 0;
	if (send_range(h, b, 0, first) != EH_DELIVER_OK)
		return EH_DELIVER_RETRY;
	return first < b->count ? send_range(h, b, first, b->count - first) : EH_DELIVER_OK;
}

static void http_reload(void *ctx)
{
	struct http_sink *h = ctx;
	char err[512];
	char *token;
	unsigned char *key;
	size_t keylen;

	if (load_token(h, &token, err, sizeof(err))) {
		eh_sink_log(h->sink, MOSQ_LOG_WARNING, "%s; keeping the previous token", err);
	} else if (token) {
		free_secret(h->token, h->token ? strlen(h->token) : 0);
		h->token = token;
	}
	if (load_key(h, &key, &keylen, err, sizeof(err))) {
		eh_sink_log(h->sink, MOSQ_LOG_WARNING, "%s; keeping the previous signing secret", err);
	} else if (key) {
		free_secret(h->key, h->keylen);
		h->key = key;
		h->keylen = keylen;
	}
}

const struct eh_sink_ops eh_sink_http_ops = {
	.name = "http",
	.enable_key = "http_url",
	.options = http_options,
	.title = "HTTP sink",
	.flags = EH_SINK_ASYNC_ACK,
	.create = http_create,
	.open = http_open,
	.close = http_close,
	.deliver = http_deliver,
	.reload = http_reload,
	.destroy = http_destroy,
};
