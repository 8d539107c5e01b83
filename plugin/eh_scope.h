/*
 * eh_scope: what the broker's own configuration says about the security of
 * this plugin instance's scope. On Mosquitto 2.0 a plugin that registers an
 * authentication or ACL callback, even one that always defers, changes the
 * broker's answers when no other provider is in the scope (see
 * docs/capture.md). The capture code asks this module which providers exist
 * and registers only where observing is provably neutral.
 *
 * Read at plugin init and again at each reload, on the broker thread (the
 * broker itself is reading the same files at those moments).
 */
#ifndef EH_SCOPE_H
#define EH_SCOPE_H

#include <stdbool.h>
#include <stddef.h>

struct eh_scope_info {
	bool known;            /* the configuration was read and understood */
	char why[512];         /* when !known: what stopped us */
	char path[4096];       /* the configuration file read */
	int read_errno;        /* when that file itself could not be read: why (errno), else 0 */
	bool per_listener;
	bool allow_anonymous;
	bool password_file;
	bool acl_file;
	bool dynsec;           /* the dynamic-security plugin is loaded */
	bool legacy_plugin;    /* a v2-v4 plugin is loaded (always an ACL provider) */
	bool legacy_auth;      /* ... and one exports mosquitto_auth_unpwd_check */
	bool unknown_plugin;   /* another v5 plugin whose callbacks we cannot know */
	bool plugin_before;    /* another plugin is loaded before ours in the list Mosquitto 2.1
	                          calls ours from (global, or this listener's) */
	bool sole_plugin;      /* ours is the broker's only plugin, loaded once: no other code
	                          in the process can share a library's global threads with us */
};

/* Learns the scope of the index-th initialisation of this plugin (0 for
 * the first; per listener settings run one per listener). override is
 * plugin_opt_config_file or NULL; self is the path of our own .so. */
void eh_scope_learn(struct eh_scope_info *out, const char *override, const char *self, int index);

/* Same as eh_scope_learn, from a configuration file given directly (tests). */
void eh_scope_learn_file(struct eh_scope_info *out, const char *path, const char *self, int index);

/* One plugin_opt_ (or auth_opt_) line, as the broker passes it on: key
 * without its prefix, value with its trailing blanks. */
struct eh_scope_opt {
	char *key;
	char *value;
};

/* Why Mosquitto 2.0.11 refuses an option line at start (src/conf.c). */
enum eh_scope_refusal {
	EH_SCOPE_NO_KEY,    /* nothing after the prefix */
	EH_SCOPE_SHORT_KEY, /* a key of 1 or 2 bytes */
	EH_SCOPE_NO_VALUE,  /* nothing but blanks after the key (or no space) */
	EH_SCOPE_NO_VALUE_AT_END, /* no space, and the file ends without a
				     newline: the broker then reads on past
				     the line into what its buffer held
				     before, which may pass for a value */
};

/* An option line of the block that the broker refuses (or, at the end of
 * a file, may misread) at start. It reads option lines only then (on
 * SIGHUP it skips them), so such a line shows only at the next restart. */
struct eh_scope_refused {
	char *file; /* the file holding the line, as the broker opens it */
	int line;   /* from 1, in that file */
	char *word; /* the line's first word (prefix and key) as written; a key
		       holding a tab holds what follows it, maybe a secret:
		       show it with eh_quote_key only */
	enum eh_scope_refusal why;
};

struct eh_scope_opts {
	struct eh_scope_opt *items;
	size_t count;
	struct eh_scope_refused *refused; /* in file order, none of them in items */
	size_t nrefused;
};

/* The option lines of the index-th plugin line naming self in the
 * configuration at path, read as Mosquitto 2.0 reads them: they follow
 * their plugin line in the same file, up to the next plugin line; the key
 * ends at the first space and the value is the rest of the line after
 * spaces and tabs. A line the broker would refuse (a key under 3 bytes, no
 * value) goes to refused instead of items. Other plugins are not looked
 * at. Returns 0 with out filled (free it with eh_scope_opts_free), or -1
 * with why. Broker thread, at init and reload only. */
int eh_scope_plugin_opts(struct eh_scope_opts *out, const char *path, const char *self, int index, char *why,
			 size_t whylen);
void eh_scope_opts_free(struct eh_scope_opts *opts);

#endif
