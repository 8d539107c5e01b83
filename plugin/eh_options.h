/*
 * eh_options: every plugin_opt_ key is declared once, in a table with its
 * type, default, range and description. The same tables drive parsing
 * (strict: unknown keys, duplicates and bad values are errors naming the
 * key), defaults, and the generated configuration reference and man page.
 */
#ifndef EH_OPTIONS_H
#define EH_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "eh_logtext.h"

enum eh_opt_type { EH_OPT_STRING, EH_OPT_INT, EH_OPT_BOOL, EH_OPT_ENUM, EH_OPT_LIST };

#define EH_OPT_REPEAT 0x1u /* may be given more than once; values kept in order */
#define EH_OPT_PREFIX 0x2u /* key is a prefix ("kafka."): any key starting with it */
#define EH_OPT_SECRET 0x4u /* value never logged or echoed in an error */

struct eh_option {
	const char *key;     /* without plugin_opt_; NULL ends a table */
	enum eh_opt_type type;
	const char *def;     /* default as text; NULL: unset */
	long long min, max;  /* EH_OPT_INT range, inclusive */
	const char *choices; /* EH_OPT_ENUM: "a|b|c" */
	unsigned flags;
	const char *help;    /* one or more sentences for the reference */
};

/* A named table: the core's, or one sink's. */
struct eh_option_group {
	const char *name;  /* "general", "file", "http", ... */
	const char *title; /* section heading in the reference */
	const struct eh_option *options;
};

struct eh_kv {
	const char *key;
	const char *value;
};

struct eh_config_entry {
	const struct eh_option *opt;
	char *key;
	char *value;
};

/* Parsed and validated options; owns copies of every key and value. */
struct eh_config {
	struct eh_config_entry *entries;
	size_t count;
	const struct eh_option_group *groups;
	size_t ngroups;
};

/* Validates kv against the groups and copies it into cfg. Trailing spaces
 * and tabs of every value are dropped first (Mosquitto passes them
 * through). Returns 0, or -1 with a message naming the key in err. cfg is
 * always safe to free. */
int eh_config_parse(struct eh_config *cfg, const struct eh_option_group *groups, size_t ngroups,
		    const struct eh_kv *kv, size_t count, char *err, size_t errlen);
void eh_config_free(struct eh_config *cfg);

/* The value given for key, else its default, else NULL. */
const char *eh_config_get(const struct eh_config *cfg, const char *key);
/* True when key was given in the configuration (not just defaulted). */
bool eh_config_isset(const struct eh_config *cfg, const char *key);
/* Typed getters for validated keys; the default applies when unset. */
long long eh_config_int(const struct eh_config *cfg, const char *key);
bool eh_config_bool(const struct eh_config *cfg, const char *key);
/* Calls fn for each given value of a repeatable key, or for each key under
 * a prefix option (key is the full key), in configuration order. Stops and
 * returns fn's value when it is not 0. */
int eh_config_each(const struct eh_config *cfg, const char *key,
		   int (*fn)(void *arg, const char *key, const char *value), void *arg);

/* Bytes of a key or value an error message quotes at most. The broker
 * cuts a log line at about 1000 bytes: a longer quote would push the
 * reason, which follows it, out of the line. */
#define EH_QUOTE_MAX 100
/* Room eh_quote and eh_quote_key need: every quoted byte escaped as \xNN
 * (EH_LOGTEXT_GROWTH bytes), the "...(N bytes)" and "\t<and N more bytes, not
 * shown>" tails with N of any size, and the NUL (eh_options.c checks the
 * sum at compile time). */
#define EH_QUOTE_LEN (EH_QUOTE_MAX * EH_LOGTEXT_GROWTH + 96)
/* s as an error or warning message shows it, into buf (EH_QUOTE_LEN
 * bytes), escaped by eh_logtext_escape so that nothing in it is invisible,
 * acts on a terminal or forges an escape: a backslash doubled, TAB, LF and
 * CR as \t, \n, \r, other control characters (C0, DEL, C1), U+2028,
 * U+2029 and every byte that is not valid UTF-8 as \xNN. A string longer
 * than EH_QUOTE_MAX bytes is cut (never inside a character) and followed
 * by "...(N bytes)", N its length. A smaller buf cuts the quote earlier,
 * between two characters; the tail is then added only if it fits whole.
 * buf is always NUL-terminated (when cap > 0). Any thread. Returns buf. */
const char *eh_quote(char *buf, size_t cap, const char *s);
/* The same for the len bytes at s (no NUL needed). */
const char *eh_quote_n(char *buf, size_t cap, const char *s, size_t len);
/* A plugin_opt_ key as messages show it: Mosquitto ends a key only at a
 * space, so "key<TAB>value" arrives as one key whose tail is a value,
 * maybe a secret: only the part before a tab is quoted, then "\t<and N
 * more bytes, not shown>" (or "\t" alone when nothing follows it). */
const char *eh_quote_key(char *buf, size_t cap, const char *key);

/* Splits a comma list into trimmed items; calls fn per item. Empty items are
 * an error (-1). Returns fn's first non-zero value, or 0. */
int eh_list_each(const char *list, int (*fn)(void *arg, const char *item, size_t len), void *arg);

/* Parses a boolean word: true/false, yes/no, on/off, 1/0. -1 if none. */
int eh_parse_bool(const char *s);
/* Parses a whole decimal integer within [min, max]. Returns 0 or -1. */
int eh_parse_int(const char *s, long long min, long long max, long long *out);

/* The reference, from the tables: Markdown and man(7) (roff) bodies. */
void eh_options_write_markdown(FILE *out, const struct eh_option_group *groups, size_t ngroups);
void eh_options_write_man(FILE *out, const struct eh_option_group *groups, size_t ngroups);

#endif
