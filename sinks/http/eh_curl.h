/*
 * eh_curl: libcurl, loaded by the first http sink that is created rather
 * than linked into the plugin. libcurl brings about twenty libraries with
 * it (GnuTLS, OpenLDAP, libssh2, librtmp, nghttp2, ...), and their mere
 * presence in the broker's process costs its thread about 1 % CPU per
 * publish (docs/performance.md, "What loading libcurl costs"): a broker
 * without an http sink should not pay it.
 *
 * The sink calls libcurl through the table eh_curl, filled once by
 * eh_curl_load on the broker thread before any sink thread starts (thread
 * creation publishes it to them). The library stays loaded for the life of
 * the process: curl_global_cleanup is not safe to call, so neither is
 * unloading what curl_global_init set up.
 */
#ifndef EH_CURL_H
#define EH_CURL_H

#include <stddef.h>

#include <curl/curl.h>

/* The soname of the libcurl the headers belong to (4 since 2006). */
#define EH_CURL_SONAME "libcurl.so.4"
/* The oldest libcurl the sink works with: CURLOPT_PROTOCOLS_STR (7.85). */
#define EH_CURL_MIN_VERSION 0x075500
#define EH_CURL_MIN_VERSION_TEXT "7.85"

/* Every libcurl function the http sink calls, without the curl_ prefix. */
#define EH_CURL_FUNCTIONS(X) \
	X(global_init) X(easy_init) X(easy_setopt) X(easy_getinfo) X(easy_cleanup) X(easy_strerror) \
	X(multi_init) X(multi_add_handle) X(multi_remove_handle) X(multi_perform) X(multi_poll) \
	X(multi_info_read) X(multi_cleanup) X(slist_append) X(slist_free_all) X(url) X(url_set) \
	X(url_get) X(url_cleanup) X(url_strerror) X(free) X(getdate) X(version_info)

struct eh_curl {
#define EH_CURL_FIELD(name) __typeof__(curl_##name) *name;
	EH_CURL_FUNCTIONS(EH_CURL_FIELD)
#undef EH_CURL_FIELD
};

extern struct eh_curl eh_curl;

/* Loads libcurl and fills eh_curl, once; later calls return what the first
 * did. 0, or -1 with a message in err that names the library and what to
 * install. Broker thread (or a test's) only. */
int eh_curl_load(char *err, size_t errlen);

#endif
