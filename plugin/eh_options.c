/*
 * eh_options: strict parsing of plugin_opt_ keys against the option tables.
 */
#include "eh_options.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const struct eh_option *find_option(const struct eh_option_group *groups, size_t ngroups, const char *key)
{
	for (size_t g = 0; g < ngroups; g++) {
		for (const struct eh_option *o = groups[g].options; o && o->key; o++) {
			if (o->flags & EH_OPT_PREFIX) {
				size_t n = strlen(o->key);

				if (!strncmp(key, o->key, n) && key[n])
					return o;
			} else if (!strcmp(key, o->key)) {
				return o;
			}
		}
	}
	return NULL;
}

int eh_parse_bool(const char *s)
{
	static const char *const yes[] = { "true", "yes", "on", "1" };
	static const char *const no[] = { "false", "no", "off", "0" };

	for (size_t i = 0; i < 4; i++) {
		if (!strcasecmp(s, yes[i]))
			return 1;
		if (!strcasecmp(s, no[i]))
			return 0;
	}
	return -1;
}

int eh_parse_int(const char *s, long long min, long long max, long long *out)
{
	char *end;
	long long v;

	if (!s || !*s || isspace((unsigned char)*s))
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

int eh_list_each(const char *list, int (*fn)(void *arg, const char *item, size_t len), void *arg)
{
	const char *p = list;

	for (;;) {
		const char *end = strchr(p, ',');
		const char *b = p, *e = end ? end : p + strlen(p);
		int rc;

		while (b < e && isspace((unsigned char)*b))
			b++;
		while (e > b && isspace((unsigned char)e[-1]))
			e--;
		if (e == b)
			return -1;
		rc = fn(arg, b, (size_t)(e - b));
		if (rc)
			return rc;
		if (!end)
			return 0;
		p = end + 1;
	}
}

/* What eh_quote_n and eh_quote_key append; EH_QUOTE_LEN must hold the
 * escaped bytes, both tails with a size_t of 20 digits, and the NUL. */
#define QUOTE_CUT_TAIL "...(%zu bytes)"
#define QUOTE_KEY_TAIL "\\t<and %zu more bytes, not shown>"
_Static_assert(EH_QUOTE_MAX * EH_LOGTEXT_GROWTH + (sizeof(QUOTE_CUT_TAIL) - 4 + 20)
			       + (sizeof(QUOTE_KEY_TAIL) - 4 + 20) + 1
		       <= EH_QUOTE_LEN,
	       "EH_QUOTE_LEN cannot hold the worst case");

/* Appends tail to the quote in buf when it fits whole: a cut tail could
 * end in a lone backslash, or in a number that says something false. */
static void append_tail(char *buf, size_t cap, size_t o, const char *tail)
{
	size_t n = strlen(tail);

	if (n < cap - o)
		memcpy(buf + o, tail, n + 1);
}

const char *eh_quote(char *buf, size_t cap, const char *s)
{
	return eh_quote_n(buf, cap, s, strlen(s));
}

const char *eh_quote_key(char *buf, size_t cap, const char *key)
{
	size_t len = strlen(key), head = strcspn(key, "\t");
	char tail[sizeof(QUOTE_KEY_TAIL) + 20];

	eh_quote_n(buf, cap, key, head);
	if (!cap || head == len)
		return buf;
	if (head + 1 == len)
		snprintf(tail, sizeof(tail), "\\t");
	else
		snprintf(tail, sizeof(tail), QUOTE_KEY_TAIL, len - head - 1);
	append_tail(buf, cap, strlen(buf), tail);
	return buf;
}

const char *eh_quote_n(char *buf, size_t cap, const char *s, size_t len)
{
	char tail[sizeof(QUOTE_CUT_TAIL) + 20];
	size_t shown, o = eh_logtext_escape(buf, cap, s, len, EH_QUOTE_MAX, &shown);

	if (cap && shown < len) {
		snprintf(tail, sizeof(tail), QUOTE_CUT_TAIL, len);
		append_tail(buf, cap, o, tail);
	}
	return buf;
}

static size_t trimmed_len(const char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t'))
		n--;
	return n;
}

static int count_item(void *arg, const char *item, size_t len)
{
	(void)item;
	(void)len;
	(*(size_t *)arg)++;
	return 0;
}

static int choice_ok(const char *choices, const char *v)
{
	size_t n = strlen(v);

	for (const char *p = choices; *p;) {
		const char *bar = strchr(p, '|');
		size_t len = bar ? (size_t)(bar - p) : strlen(p);

		if (len == n && !strncmp(p, v, n))
			return 1;
		if (!bar)
			break;
		p = bar + 1;
	}
	return 0;
}

/* key: as eh_quote shows it. */
static int check_value(const struct eh_option *o, const char *key, const char *value, char *err, size_t errlen)
{
	long long iv;
	size_t items = 0;
	char shown[EH_QUOTE_LEN];
	/* What the messages quote: a secret is named by its key only. */
	const char *v = (o->flags & EH_OPT_SECRET) ? "(secret)" : eh_quote(shown, sizeof(shown), value);

	switch (o->type) {
	case EH_OPT_INT:
		if (eh_parse_int(value, o->min, o->max, &iv)) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' is not a whole number from %lld to %lld", key, v,
				 o->min, o->max);
			return -1;
		}
		return 0;
	case EH_OPT_BOOL:
		if (eh_parse_bool(value) < 0) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' is not a boolean (true/false, yes/no, on/off, 1/0)",
				 key, v);
			return -1;
		}
		return 0;
	case EH_OPT_ENUM:
		if (!choice_ok(o->choices, value)) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' is not one of %s", key, v, o->choices);
			return -1;
		}
		return 0;
	case EH_OPT_LIST:
		if (eh_list_each(value, count_item, &items)) {
			snprintf(err, errlen, "plugin_opt_%s: '%s' is not a comma-separated list of non-empty items",
				 key, v);
			return -1;
		}
		return 0;
	case EH_OPT_STRING:
	default:
		if (!*value) {
			snprintf(err, errlen, "plugin_opt_%s: the value is empty", key);
			return -1;
		}
		return 0;
	}
}

int eh_config_parse(struct eh_config *cfg, const struct eh_option_group *groups, size_t ngroups,
		    const struct eh_kv *kv, size_t count, char *err, size_t errlen)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->groups = groups;
	cfg->ngroups = ngroups;
	if (!count)
		return 0;
	cfg->entries = calloc(count, sizeof(*cfg->entries));
	if (!cfg->entries) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < count; i++) {
		const char *key = kv[i].key ? kv[i].key : "";
		const char *value = kv[i].value ? kv[i].value : "";
		const struct eh_option *o;
		struct eh_config_entry *e;
		char shown[EH_QUOTE_LEN];

		eh_quote_key(shown, sizeof(shown), key);
		/* Before the lookup: "kafka.sasl.password<TAB>secret" would
		 * match the kafka. prefix and reach librdkafka, and its error,
		 * with the secret inside the key. */
		if (strchr(key, '\t')) {
			snprintf(err, errlen, "plugin_opt_%s: the key holds a tab: separate key and value with a space",
				 shown);
			return -1;
		}
		o = find_option(groups, ngroups, key);
		if (!o) {
			snprintf(err, errlen, "plugin_opt_%s: unknown option (see docs/configuration.md or "
				 "mosquitto-eventhook(7) for the accepted keys)", shown);
			return -1;
		}
		if (!(o->flags & (EH_OPT_REPEAT | EH_OPT_PREFIX))) {
			for (size_t k = 0; k < cfg->count; k++) {
				if (cfg->entries[k].opt == o) {
					snprintf(err, errlen, "plugin_opt_%s: given more than once", shown);
					return -1;
				}
			}
		} else if (o->flags & EH_OPT_PREFIX) {
			for (size_t k = 0; k < cfg->count; k++) {
				if (!strcmp(cfg->entries[k].key, key)) {
					snprintf(err, errlen, "plugin_opt_%s: given more than once", shown);
					return -1;
				}
			}
		}
		e = &cfg->entries[cfg->count];
		e->opt = o;
		e->key = strdup(key);
		/* The same rule for every type: a blank nobody can see must not
		 * name a different file or topic while it stops a number. */
		e->value = strndup(value, trimmed_len(value));
		cfg->count++;
		if (!e->key || !e->value) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
		if (check_value(o, shown, e->value, err, errlen))
			return -1;
	}
	return 0;
}

void eh_config_free(struct eh_config *cfg)
{
	for (size_t i = 0; i < cfg->count; i++) {
		free(cfg->entries[i].key);
		if (cfg->entries[i].value && (cfg->entries[i].opt->flags & EH_OPT_SECRET))
			explicit_bzero(cfg->entries[i].value, strlen(cfg->entries[i].value));
		free(cfg->entries[i].value);
	}
	free(cfg->entries);
	cfg->entries = NULL;
	cfg->count = 0;
}

const char *eh_config_get(const struct eh_config *cfg, const char *key)
{
	const struct eh_option *o;

	for (size_t i = 0; i < cfg->count; i++) {
		if (!strcmp(cfg->entries[i].key, key))
			return cfg->entries[i].value;
	}
	o = find_option(cfg->groups, cfg->ngroups, key);
	return o ? o->def : NULL;
}

bool eh_config_isset(const struct eh_config *cfg, const char *key)
{
	for (size_t i = 0; i < cfg->count; i++) {
		if (!strcmp(cfg->entries[i].key, key))
			return true;
	}
	return false;
}

long long eh_config_int(const struct eh_config *cfg, const char *key)
{
	const char *v = eh_config_get(cfg, key);
	long long out = 0;

	if (v && eh_parse_int(v, -0x7FFFFFFFFFFFFFFFLL, 0x7FFFFFFFFFFFFFFFLL, &out))
		out = 0;
	return out;
}

bool eh_config_bool(const struct eh_config *cfg, const char *key)
{
	const char *v = eh_config_get(cfg, key);

	return v && eh_parse_bool(v) == 1;
}

int eh_config_each(const struct eh_config *cfg, const char *key,
		   int (*fn)(void *arg, const char *key, const char *value), void *arg)
{
	size_t n = strlen(key);

	for (size_t i = 0; i < cfg->count; i++) {
		const struct eh_config_entry *e = &cfg->entries[i];
		int match = (e->opt->flags & EH_OPT_PREFIX) ? !strncmp(e->key, key, n) : !strcmp(e->key, key);

		if (match) {
			int rc = fn(arg, e->key, e->value);

			if (rc)
				return rc;
		}
	}
	return 0;
}

static const char *type_name(const struct eh_option *o)
{
	switch (o->type) {
	case EH_OPT_INT:
		return "integer";
	case EH_OPT_BOOL:
		return "boolean";
	case EH_OPT_ENUM:
		return "one of";
	case EH_OPT_LIST:
		return "comma list";
	default:
		return "string";
	}
}

/* Markdown table cell text: GFM splits cells at every unescaped '|', even
 * inside a code span, so each one is escaped. */
static void md_cell(FILE *out, const char *s)
{
	for (; *s; s++) {
		if (*s == '|')
			fputc('\\', out);
		fputc(*s, out);
	}
}

void eh_options_write_markdown(FILE *out, const struct eh_option_group *groups, size_t ngroups)
{
	for (size_t g = 0; g < ngroups; g++) {
		fprintf(out, "### %s\n\n", groups[g].title);
		fprintf(out, "| key | type | default | description |\n|---|---|---|---|\n");
		for (const struct eh_option *o = groups[g].options; o && o->key; o++) {
			fprintf(out, "| `plugin_opt_%s%s` | %s", o->key, (o->flags & EH_OPT_PREFIX) ? "<property>" : "",
				type_name(o));
			if (o->type == EH_OPT_ENUM) {
				fputs(" `", out);
				md_cell(out, o->choices);
				fputc('`', out);
			}
			if (o->type == EH_OPT_INT)
				fprintf(out, " %lld..%lld", o->min, o->max);
			if (o->flags & EH_OPT_REPEAT)
				fprintf(out, ", repeatable");
			fprintf(out, " | %s", o->def ? "`" : "");
			md_cell(out, o->def ? (*o->def ? o->def : "\"\"") : "unset");
			fprintf(out, "%s | ", o->def ? "`" : "");
			md_cell(out, o->help);
			fprintf(out, " |\n");
		}
		fprintf(out, "\n");
	}
}

static void man_text(FILE *out, const char *s)
{
	/* roff: a backslash must be doubled and a leading dot or quote escaped. */
	int bol = 1;

	for (; *s; s++) {
		if (bol && (*s == '.' || *s == '\''))
			fputs("\\&", out);
		if (*s == '\\')
			fputs("\\e", out);
		else if (*s == '`')
			continue;
		else
			fputc(*s, out);
		bol = *s == '\n';
	}
}

void eh_options_write_man(FILE *out, const struct eh_option_group *groups, size_t ngroups)
{
	for (size_t g = 0; g < ngroups; g++) {
		fprintf(out, ".SS ");
		man_text(out, groups[g].title);
		fprintf(out, "\n");
		for (const struct eh_option *o = groups[g].options; o && o->key; o++) {
			fprintf(out, ".TP\n.B plugin_opt_");
			man_text(out, o->key);
			fprintf(out, "%s\n", (o->flags & EH_OPT_PREFIX) ? "<property>" : "");
			fprintf(out, "(%s", type_name(o));
			if (o->type == EH_OPT_ENUM) {
				fprintf(out, " ");
				man_text(out, o->choices);
			}
			if (o->type == EH_OPT_INT)
				fprintf(out, " %lld to %lld", o->min, o->max);
			fprintf(out, "; default ");
			man_text(out, o->def ? (*o->def ? o->def : "empty") : "unset");
			fprintf(out, ")\n");
			man_text(out, o->help);
			fprintf(out, "\n");
		}
	}
}
