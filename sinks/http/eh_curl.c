/*
 * eh_curl: see eh_curl.h.
 */
#include "http/eh_curl.h"

#include <dlfcn.h>
#include <link.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct eh_curl eh_curl;

static bool tried;
static char failure[512];

#define EH_CURL_INSTALL "install libcurl4 (Debian, Ubuntu) or libcurl (Fedora, RHEL)"

/* Where the dynamic loader found it, for the messages. */
static const char *found_at(void *lib)
{
	struct link_map *map = NULL;

	return dlinfo(lib, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name && *map->l_name ? map->l_name
											  : EH_CURL_SONAME;
}

static int load(char *err, size_t errlen)
{
	/* Local: curl's symbols are not offered to what the broker loads
	 * later; it is the same library, and the same global state, as any
	 * other user of libcurl.so.4 in the process. */
	void *lib = dlopen(EH_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	const curl_version_info_data *info;
	void *sym;

	if (!lib) {
		snprintf(err, errlen, "cannot load libcurl (%s); the http sink needs it: " EH_CURL_INSTALL, dlerror());
		return -1;
	}
#define EH_CURL_LOOKUP(name)                                                                               \
	if (!(sym = dlsym(lib, "curl_" #name))) {                                                         \
		snprintf(err, errlen, "the libcurl found (%s) has no curl_" #name ": the http sink needs "   \
			 "libcurl " EH_CURL_MIN_VERSION_TEXT " or later: " EH_CURL_INSTALL, found_at(lib)); \
		dlclose(lib);                                                                             \
		return -1;                                                                                \
	}                                                                                                 \
	eh_curl.name = (__typeof__(eh_curl.name))sym;
	EH_CURL_FUNCTIONS(EH_CURL_LOOKUP)
#undef EH_CURL_LOOKUP
	info = eh_curl.version_info(CURLVERSION_NOW);
	if (!info || info->version_num < EH_CURL_MIN_VERSION) {
		snprintf(err, errlen, "the libcurl found (%s) is version %s: the http sink needs "
			 EH_CURL_MIN_VERSION_TEXT " or later: " EH_CURL_INSTALL, found_at(lib),
			 info && info->version ? info->version : "unknown");
		dlclose(lib);
		return -1;
	}
	return 0;
}

int eh_curl_load(char *err, size_t errlen)
{
	if (!tried) {
		tried = true;
		if (load(failure, sizeof(failure))) {
			/* A table half filled is never used. */
			memset(&eh_curl, 0, sizeof(eh_curl));
			if (!failure[0])
				snprintf(failure, sizeof(failure), "cannot load libcurl");
		}
	}
	if (failure[0]) {
		snprintf(err, errlen, "%s", failure);
		return -1;
	}
	return 0;
}
