/*
 * eh_optwatch: Mosquitto 2.0 does not re-initialise plugins at SIGHUP, so a
 * changed plugin_opt_ line is silently not applied, and a bad one shows
 * only at the next restart. At reload, compare our plugin block in the
 * configuration file with the running options and say so, and name the
 * lines of the block the broker itself will refuse at that restart (it
 * checks option lines only at start). Start and reload only: the file is
 * read again, never on the hot path.
 */
#include "eh_optwatch.h"

#include <stdlib.h>
#include <string.h>

#include "eh_mosquitto.h"
#include "eh_scope.h"

/* raw as Mosquitto passes it equals stored, the value eh_config_parse kept
 * (trailing blanks dropped). */
static bool same_value(const char *raw, const char *stored)
{
	size_t n = strlen(stored);

	if (strncmp(raw, stored, n))
		return false;
	for (raw += n; *raw; raw++) {
		if (*raw != ' ' && *raw != '\t')
			return false;
	}
	return true;
}

static bool opts_match_config(const struct eh_scope_opts *o, const struct eh_config *cfg)
{
	if (o->count != cfg->count)
		return false;
	for (size_t i = 0; i < o->count; i++) {
		if (strcmp(o->items[i].key, cfg->entries[i].key)
		    || !same_value(o->items[i].value, cfg->entries[i].value))
			return false;
	}
	return true;
}

/* Whether key's values, in order, are the same in the running config and
 * in the lines read now. */
static bool key_unchanged(const struct eh_config *cfg, const struct eh_scope_opts *now, const char *key,
			  bool *in_cfg, bool *in_now)
{
	size_t i = 0, j = 0;
	bool same = true;

	*in_cfg = *in_now = false;
	for (;;) {
		while (i < cfg->count && strcmp(cfg->entries[i].key, key))
			i++;
		while (j < now->count && strcmp(now->items[j].key, key))
			j++;
		*in_cfg |= i < cfg->count;
		*in_now |= j < now->count;
		if (i == cfg->count || j == now->count)
			return same && i == cfg->count && j == now->count;
		same &= same_value(now->items[j].value, cfg->entries[i].value);
		i++;
		j++;
	}
}

/* Adds key to one of the three lists (0 changed, 1 added, 2 removed). */
static void list_key(char lists[3][512], size_t used[3], int which, const char *key)
{
	char shown[EH_QUOTE_LEN];
	size_t cap = sizeof(lists[which]);

	if (used[which] >= cap - 1)
		return;
	used[which] += (size_t)snprintf(lists[which] + used[which], cap - used[which], "%s%s",
					used[which] ? ", " : "", eh_quote_key(shown, sizeof(shown), key));
	if (used[which] >= cap - 1)
		snprintf(lists[which] + cap - 5, 5, "...");
}

/* Whether a refused line of opts names key. A tab does not end the word
 * for the broker, but it does for the user who typed it in place of a
 * space: the key is what comes before it. */
static bool refused_key(const struct eh_scope_opts *opts, const char *key)
{
	for (size_t i = 0; i < opts->nrefused; i++) {
		const char *word = opts->refused[i].word;
		size_t prefix = strncmp(word, "auth_opt_", 9) ? 11 : 9;
		size_t len = strcspn(word + prefix, "\t");

		if (len == strlen(key) && !memcmp(word + prefix, key, len))
			return true;
	}
	return false;
}

/* One line of the block the broker will refuse (or may misread) at its
 * next start. The word is quoted as a key (nothing after a tab shown), and
 * no value is. */
static void log_refused(const struct eh_scope_refused *r)
{
	char file[EH_QUOTE_LEN], word[EH_QUOTE_LEN];
	const char *what = "the broker will refuse to start with this line at the next restart";
	const char *why = "no value";

	if (r->why == EH_SCOPE_NO_KEY)
		why = "no key";
	else if (r->why == EH_SCOPE_SHORT_KEY)
		why = "Mosquitto needs a key of at least 3 bytes";
	else if (strchr(r->word, '\t'))
		why = "no value (a tab does not end the key: separate key and value with a space)";
	if (r->why == EH_SCOPE_NO_VALUE_AT_END)
		what = "this line has no value and ends its file without a newline: at the next restart Mosquitto "
		       "2.0.11 refuses to start or takes what its line buffer held before for the value";
	mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: %s (Mosquitto checks plugin_opt_ lines only at start): "
			     "'%s' line %d: %s: %s", what, eh_quote(file, sizeof(file), r->file), r->line,
			     eh_quote_key(word, sizeof(word), r->word), why);
}

void eh_optwatch_report(const struct eh_config *cfg, const char *path, const char *self, int index)
{
	struct eh_scope_opts now;
	char why[512], lists[3][512] = { "", "", "" }, shown[EH_QUOTE_LEN];
	size_t used[3] = { 0, 0, 0 };
	struct eh_kv *kv;

	if (eh_scope_plugin_opts(&now, path, self, index, why, sizeof(why)))
		return;
	kv = calloc(now.count ? now.count : 1, sizeof(*kv));
	if (!kv) {
		eh_scope_opts_free(&now);
		return;
	}
	for (size_t pass = 0; pass < 2; pass++) {
		size_t n = pass ? now.count : cfg->count;

		for (size_t i = 0; i < n; i++) {
			const char *key = pass ? now.items[i].key : cfg->entries[i].key;
			bool seen = false, in_cfg, in_now;

			/* Each key once, at its first appearance. */
			for (size_t k = 0; k < i && !seen; k++)
				seen = !strcmp(key, pass ? now.items[k].key : cfg->entries[k].key);
			for (size_t k = 0; pass && k < cfg->count && !seen; k++)
				seen = !strcmp(key, cfg->entries[k].key);
			if (seen || key_unchanged(cfg, &now, key, &in_cfg, &in_now))
				continue;
			/* A key whose line lost its value is not removed: that
			 * line is named below, as one the broker refuses. */
			if (!in_now && refused_key(&now, key))
				continue;
			list_key(lists, used, !in_now ? 2 : !in_cfg ? 1 : 0, key);
		}
	}
	if (used[0] || used[1] || used[2])
		/* The reason first: the broker cuts a line at about 1000
		 * bytes, and the lists can be long. */
		mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: changed plugin_opt_ lines take effect at the next "
				     "restart (Mosquitto 2.0 does not re-initialise plugins on SIGHUP); in '%s'%s%s%s%s%s%s",
				     eh_quote(shown, sizeof(shown), path), used[0] ? "; changed: " : "",
				     lists[0], used[1] ? "; added: " : "", lists[1], used[2] ? "; removed: " : "",
				     lists[2]);
	/* The option checks, one changed key at a time so that every bad one
	 * is named (a whole-set parse stops at the first). */
	for (size_t i = 0; i < now.count; i++) {
		const char *key = now.items[i].key;
		bool seen = false, in_cfg, in_now;
		struct eh_config scratch;
		size_t n = 0;

		for (size_t k = 0; k < i && !seen; k++)
			seen = !strcmp(key, now.items[k].key);
		if (seen || key_unchanged(cfg, &now, key, &in_cfg, &in_now))
			continue;
		for (size_t k = i; k < now.count; k++) {
			if (!strcmp(key, now.items[k].key))
				kv[n++] = (struct eh_kv){ now.items[k].key, now.items[k].value };
		}
		if (eh_config_parse(&scratch, cfg->groups, cfg->ngroups, kv, n, why, sizeof(why)))
			mosquitto_log_printf(MOSQ_LOG_WARNING, "eventhook: the changed options would stop the "
					     "broker at the next restart: %s", why);
		eh_config_free(&scratch);
	}
	for (size_t i = 0; i < now.nrefused; i++)
		log_refused(&now.refused[i]);
	free(kv);
	eh_scope_opts_free(&now);
}

bool eh_optwatch_matches(const struct eh_config *cfg, const char *path, const char *self, int index)
{
	struct eh_scope_opts opts;
	char why[512];
	bool same;

	if (eh_scope_plugin_opts(&opts, path, self, index, why, sizeof(why)))
		return false;
	same = opts_match_config(&opts, cfg);
	eh_scope_opts_free(&opts);
	return same;
}
