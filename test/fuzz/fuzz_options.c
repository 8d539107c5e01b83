/*
 * Fuzz target: eh_config_parse against the real option tables with
 * arbitrary keys and values. Input: key NUL value NUL key NUL value ...
 * Invariants: a refusal names a key; an acceptance makes every given key
 * set, answers the first given value, and every typed value re-validates.
 */
#include <string.h>

#include "eh_core.h"
#include "fuzz.h"

#define MAX_KV 32

static int count_cb(void *arg, const char *key, const char *value)
{
	(void)key;
	(void)value;
	(*(size_t *)arg)++;
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct eh_option_group groups[EH_SINKS_MAX + 1];
	static size_t ngroups;
	char *text = malloc(size + 2);
	struct eh_kv kv[MAX_KV];
	size_t n = 0, at = 0;
	struct eh_config cfg;
	char err[1024];

	if (!ngroups)
		ngroups = eh_core_option_groups(groups, EH_SINKS_MAX + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	text[size + 1] = '\0';
	/* Pairs of NUL-terminated strings; a missing value is "". */
	while (at < size && n < MAX_KV) {
		kv[n].key = text + at;
		at += strlen(text + at) + 1;
		kv[n].value = text + (at <= size ? at : size + 1);
		if (at <= size)
			at += strlen(text + at) + 1;
		n++;
	}
	err[0] = '\0';
	if (eh_config_parse(&cfg, groups, ngroups, kv, n, err, sizeof(err))) {
		FUZZ_CHECK(!strncmp(err, "plugin_opt_", 11) || !strcmp(err, "out of memory"));
	} else {
		FUZZ_CHECK(cfg.count == n);
		for (size_t i = 0; i < n; i++) {
			const struct eh_option *o = cfg.entries[i].opt;
			const char *first = NULL;
			long long v;

			FUZZ_CHECK(eh_config_isset(&cfg, kv[i].key));
			for (size_t k = 0; k < n && !first; k++) {
				if (!strcmp(kv[k].key, kv[i].key))
					first = kv[k].value;
			}
			FUZZ_CHECK(first && !strcmp(eh_config_get(&cfg, kv[i].key), first));
			switch (o->type) {
			case EH_OPT_INT:
				FUZZ_CHECK(eh_parse_int(kv[i].value, o->min, o->max, &v) == 0);
				FUZZ_CHECK(eh_config_int(&cfg, kv[i].key) == v || strcmp(first, kv[i].value));
				break;
			case EH_OPT_BOOL:
				FUZZ_CHECK(eh_parse_bool(kv[i].value) >= 0);
				break;
			case EH_OPT_STRING:
				FUZZ_CHECK(kv[i].value[0]);
				break;
			default:
				break;
			}
			if (o->flags & (EH_OPT_REPEAT | EH_OPT_PREFIX)) {
				size_t c = 0;

				eh_config_each(&cfg, (o->flags & EH_OPT_PREFIX) ? o->key : kv[i].key, count_cb, &c);
				FUZZ_CHECK(c >= 1);
			}
		}
	}
	eh_config_free(&cfg);
	free(text);
	return 0;
}
