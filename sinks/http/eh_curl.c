#include "http/eh_curl.h"

#include <dlfcn.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

struct eh_curl eh_curl;

static bool tried;
static char failure[512];

static int load(char *err, size_t errlen)
{
	/* Local: the broker's other plugins keep their own libcurl symbols,
	 * if they have any. */
	void *lib = dlopen(EH_CURL_SONAME, RTLD_NOW | RTLD_LOCAL);
	void *sym;

	if (!lib) {
		snprintf(err, errlen, "cannot load libcurl (%s); the http sink needs it: install libcurl4 "
			 "(Debian, Ubuntu) or libcurl (Fedora, RHEL)", dlerror());
		return -1;
	}
#define EH_CURL_LOOKUP(name)                                                                                    \
	if (!(sym = dlsym(lib, "curl_" #name))) {                                                              \
		snprintf(err, errlen, "the libcurl found (%s) has no curl_" #name ": the http sink needs libcurl " \
			 "7.85 or later", EH_CURL_SONAME);                                                      \
		dlclose(lib);                                                                                  \
		return -1;                                                                                     \
	}                                                                                                      \
	eh_curl.name = (__typeof__(eh_curl.name))sym;
	EH_CURL_FUNCTIONS(EH_CURL_LOOKUP)
#undef EH_CURL_LOOKUP
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
