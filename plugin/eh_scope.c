/*
 * eh_scope: a small reader of mosquitto.conf that mirrors the broker's rules
 * for the few directives that decide who provides authentication and ACLs:
 * per_listener_settings, listener/port, allow_anonymous, password_file,
 * acl_file, plugin, auth_plugin and include_dir (honoured only in the main
 * file, *.conf sorted by name). Anything it cannot read makes the result
 * unknown, and the capture code then observes less rather than guess.
 */
#include "eh_scope.h"

#include <ctype.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MAX_SCOPES 64

struct scope {
	int allow_anonymous; /* -1 unset */
	bool password_file, acl_file, dynsec, legacy, legacy_auth, unknown, ours;
};

struct parse {
	bool per_listener;
	bool has_listener;
	int cur; /* scope index; 0 is the default listener / global */
	int nscopes;
	struct scope s[MAX_SCOPES];
	int our_scopes[MAX_SCOPES]; /* scope of the k-th plugin line naming us */
	bool our_after[MAX_SCOPES]; /* ... and whether another plugin precedes it in its 2.1 list */
	int nours;
	/* Mosquitto 2.1 keeps one callback list for global plugins (and for
	 * every plugin without per_listener_settings) and one per listener,
	 * in the order of the configuration: whether a plugin line was seen
	 * in each so far. */
	bool other_global, other_listener[MAX_SCOPES];
	bool other_any; /* a plugin line not naming us, anywhere */
	bool global_dynsec, global_legacy, global_legacy_auth, global_unknown;
	const char *self;
	int read_errno; /* the main file could not be read */
	/* eh_scope_plugin_opts: collect the option lines of our index-th
	 * plugin line, and classify no other plugin. */
	bool opts_only;
	int opts_index;
	int ours_seen;        /* plugin lines naming us so far, uncapped */
	bool in_our_block;    /* the current file's last plugin line is the one */
	const char *file;     /* the file being read, and its line being parsed */
	int lineno;
	struct eh_scope_opts *opts;
	char why[512];
	bool failed;
};

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static bool same_object(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (realpath(a, ra) && realpath(b, rb))
		return !strcmp(ra, rb);
	return !strcmp(base_name(a), base_name(b));
}

static struct scope *cur(struct parse *p)
{
	return &p->s[p->per_listener ? p->cur : 0];
}

static int parse_file(struct parse *p, const char *path, bool main_file);

/* Which plugin line naming us (k-th in file order) the broker initialises
 * index-th, or -1. With per_listener_settings, 2.0.11 appends the default
 * listener, which holds the lines before any listener line, after all the
 * others (config__parse_args) and initialises plugins in listener order. */
static int line_of_init(const struct parse *p, int index)
{
	int n = 0;

	if (!p->per_listener)
		return index;
	for (int pass = 0; pass < 2; pass++) {
		for (int k = 0; k < p->nours; k++) {
			if ((p->our_scopes[k] == 0) == (pass == 1) && n++ == index)
				return k;
		}
	}
	return -1;
}

/* The broker's include_dir order (2.0.11 conf_includedir.c): by letters
 * ignoring case, then by case, comparing chars as it does (signed, and
 * toupper only changes ASCII letters in its C locale). Files named alike
 * but for case must come in its order: later lines override earlier ones,
 * and our plugin block is found by counting plugin lines. */
static int upper_ascii(char c)
{
	return c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c;
}

static int cmp_str(const void *a, const void *b)
{
	const char *s1 = *(char *const *)a, *s2 = *(char *const *)b;

	for (; s1[0] && s2[0]; s1++, s2++) {
		if (upper_ascii(s1[0]) != upper_ascii(s2[0]))
			return upper_ascii(s1[0]) - upper_ascii(s2[0]);
		if (s1[0] != s2[0])
			return s1[0] - s2[0];
	}
	return s1[0] - s2[0];
}

static int include_dir(struct parse *p, const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	char **names = NULL;
	size_t n = 0;
	int rc = 0;

	if (!d) {
		snprintf(p->why, sizeof(p->why), "cannot read include_dir '%s': %s", dir, strerror(errno));
		return -1;
	}
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		char **grown;

		if (len < 6 || strcmp(e->d_name + len - 5, ".conf"))
			continue;
		grown = realloc(names, (n + 1) * sizeof(*names));
		if (!grown) {
			rc = -1;
			break;
		}
		names = grown;
		names[n] = malloc(strlen(dir) + len + 2);
		if (!names[n]) {
			rc = -1;
			break;
		}
		sprintf(names[n], "%s/%s", dir, e->d_name);
		n++;
	}
	closedir(d);
	if (!rc)
		qsort(names, n, sizeof(*names), cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (!rc)
			rc = parse_file(p, names[i], false);
		free(names[i]);
	}
	free(names);
	return rc;
}

enum plugin_kind { KIND_UNKNOWN, KIND_DYNSEC, KIND_LEGACY, KIND_LEGACY_AUTH };

/* What another plugin is, from the symbols it exports. The broker loads
 * every plugin anyway; looking at one here only runs its constructors early.
 * In 2.0 `plugin` and `auth_plugin` are the same directive, so the line
 * says nothing: the exported version function does. */
static enum plugin_kind classify(const char *path)
{
	void *h = dlopen(path, RTLD_LAZY | RTLD_LOCAL);
	enum plugin_kind kind = KIND_UNKNOWN;

	if (!h)
		return KIND_UNKNOWN;
	if (dlsym(h, "mosquitto_plugin_version")) {
		if (strstr(base_name(path), "mosquitto_dynamic_security"))
			kind = KIND_DYNSEC;
	} else if (dlsym(h, "mosquitto_auth_plugin_version")) {
		kind = dlsym(h, "mosquitto_auth_unpwd_check") ? KIND_LEGACY_AUTH : KIND_LEGACY;
	}
	dlclose(h);
	return kind;
}

static void plugin_line(struct parse *p, const char *path, bool global)
{
	struct scope *s = cur(p);
	bool *other = global || !p->per_listener ? &p->other_global : &p->other_listener[p->cur];

	/* Every plugin line starts a new block of option lines. */
	p->in_our_block = false;
	if (p->self && same_object(path, p->self)) {
		p->in_our_block = p->ours_seen++ == p->opts_index;
		s->ours = true;
		if (p->nours < MAX_SCOPES) {
			p->our_after[p->nours] = *other;
			p->our_scopes[p->nours++] = p->per_listener ? p->cur : 0;
		}
		return;
	}
	*other = true;
	p->other_any = true;
	if (p->opts_only)
		return;
	switch (classify(path)) {
	case KIND_DYNSEC:
		s->dynsec = true;
		p->global_dynsec = true;
		break;
	case KIND_LEGACY_AUTH:
		s->legacy_auth = true;
		p->global_legacy_auth = true;
		/* it is an ACL provider too */
		__attribute__((fallthrough));
	case KIND_LEGACY:
		s->legacy = true;
		p->global_legacy = true;
		break;
	default:
		s->unknown = true;
		p->global_unknown = true;
		break;
	}
}

/* Keeps a line of our block the broker refuses at start. */
static int refuse(struct parse *p, const char *word, enum eh_scope_refusal why)
{
	struct eh_scope_opts *o = p->opts;
	struct eh_scope_refused *grown = realloc(o->refused, (o->nrefused + 1) * sizeof(*grown));

	if (!grown)
		goto oom;
	o->refused = grown;
	grown[o->nrefused] = (struct eh_scope_refused){ strdup(p->file), p->lineno, strdup(word), why };
	o->nrefused++;
	if (!grown[o->nrefused - 1].file || !grown[o->nrefused - 1].word)
		goto oom;
	return 0;
oom:
	snprintf(p->why, sizeof(p->why), "out of memory");
	return -1;
}

/* An option line of our block, split and judged as mosquitto 2.0.11's
 * conf.c does at start: the first word ends at a space only (a tab stays
 * in it), must be at least 3 bytes longer than its prefix, and needs
 * something but spaces and tabs after it. (With no space at all the broker
 * reads on one byte past the word's end: where a newline was, an empty
 * string; on a last line without one, whatever its buffer held before.) */
static int option_line(struct parse *p, char *line)
{
	char *word, *key, *value, *end = line + strlen(line);
	struct eh_scope_opt *grown;
	bool ended = false;

	while (end > line && (end[-1] == '\n' || end[-1] == '\r')) {
		*--end = '\0';
		ended = true;
	}
	while (*line == ' ')
		line++;
	word = line;
	if (!strncmp(word, "plugin_opt_", 11))
		key = word + 11;
	else if (!strncmp(word, "auth_opt_", 9))
		key = word + 9;
	else
		return 0;
	value = strchr(key, ' ');
	if (value)
		*value++ = '\0';
	if (strlen(key) < 3)
		return refuse(p, word, *key ? EH_SCOPE_SHORT_KEY : EH_SCOPE_NO_KEY);
	while (value && (*value == ' ' || *value == '\t'))
		value++;
	if (!value || !*value)
		return refuse(p, word, value || ended ? EH_SCOPE_NO_VALUE : EH_SCOPE_NO_VALUE_AT_END);
	grown = realloc(p->opts->items, (p->opts->count + 1) * sizeof(*grown));
	if (!grown)
		goto oom;
	p->opts->items = grown;
	grown[p->opts->count].key = strdup(key);
	grown[p->opts->count].value = strdup(value);
	p->opts->count++;
	if (!grown[p->opts->count - 1].key || !grown[p->opts->count - 1].value)
		goto oom;
	return 0;
oom:
	snprintf(p->why, sizeof(p->why), "out of memory");
	return -1;
}

static int parse_line(struct parse *p, char *line, bool main_file)
{
	char *key = line, *val, *word_end;
	bool bool_true;

	if (p->opts_only && p->in_our_block) {
		const char *k = line;

		while (*k == ' ')
			k++;
		if (!strncmp(k, "plugin_opt_", 11) || !strncmp(k, "auth_opt_", 9))
			return option_line(p, line);
	}

	while (isspace((unsigned char)*key))
		key++;
	if (!*key || *key == '#')
		return 0;
	val = key;
	while (*val && !isspace((unsigned char)*val))
		val++;
	if (*val)
		*val++ = '\0';
	while (isspace((unsigned char)*val))
		val++;
	for (char *e = val + strlen(val); e > val && isspace((unsigned char)e[-1]); e--)
		e[-1] = '\0';

	/* Like the broker, a boolean is the first word after the key; the
	 * rest of the line (a trailing comment, say) is ignored. */
	word_end = val;
	while (*word_end && !isspace((unsigned char)*word_end))
		word_end++;
	bool_true = (size_t)(word_end - val) == 4 && !strncasecmp(val, "true", 4);

	if (!strcmp(key, "per_listener_settings")) {
		p->per_listener = bool_true;
	} else if (!strcmp(key, "listener")) {
		p->has_listener = true;
		if (p->nscopes < MAX_SCOPES) {
			p->cur = p->nscopes++;
			p->s[p->cur].allow_anonymous = -1;
		} else {
			snprintf(p->why, sizeof(p->why), "more than %d listeners", MAX_SCOPES - 1);
			return -1;
		}
	} else if (!strcmp(key, "port") || !strcmp(key, "bind_address")) {
		/* Like listener, these end local-only mode; -p on the command
		 * line does not (mosquitto 2.0 conf.c). */
		p->has_listener = true;
	} else if (!strcmp(key, "allow_anonymous")) {
		cur(p)->allow_anonymous = bool_true;
	} else if (!strcmp(key, "password_file")) {
		cur(p)->password_file = true;
	} else if (!strcmp(key, "acl_file")) {
		cur(p)->acl_file = true;
	} else if (!strcmp(key, "plugin") || !strcmp(key, "auth_plugin")) {
		plugin_line(p, val, false);
	} else if (!strcmp(key, "include_dir") && main_file) {
		return include_dir(p, val);
	} else if (!strcmp(key, "global_plugin")) {
		plugin_line(p, val, true);
	}
	return 0;
}

static int parse_file(struct parse *p, const char *path, bool main_file)
{
	FILE *f = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	int rc = 0;
	/* Mosquitto's current plugin is per file: an included file starts
	 * without one, and the including file's is back after it. */
	bool outer_block = p->in_our_block;
	const char *outer_file = p->file;
	int outer_lineno = p->lineno;

	p->in_our_block = false;
	p->file = path;
	p->lineno = 0;

	if (!f) {
		p->in_our_block = outer_block;
		p->file = outer_file;
		p->lineno = outer_lineno;
		if (main_file)
			p->read_errno = errno;
		snprintf(p->why, sizeof(p->why), "cannot read '%s': %s", path, strerror(errno));
		return -1;
	}
	while (!rc && getline(&line, &cap, f) >= 0) {
		p->lineno++;
		rc = parse_line(p, line, main_file);
	}
	/* A read error (EISDIR, EIO) is not the end of the file: what was
	 * not read may have said anything. */
	if (!rc && ferror(f)) {
		if (main_file)
			p->read_errno = errno;
		snprintf(p->why, sizeof(p->why), "cannot read '%s': %s", path, strerror(errno));
		rc = -1;
	}
	free(line);
	fclose(f);
	p->in_our_block = outer_block;
	p->file = outer_file;
	p->lineno = outer_lineno;
	return rc;
}

void eh_scope_learn_file(struct eh_scope_info *out, const char *path, const char *self, int index)
{
	struct parse *p = calloc(1, sizeof(*p));
	struct scope *s;
	int at, line;

	memset(out, 0, sizeof(*out));
	snprintf(out->path, sizeof(out->path), "%s", path);
	if (!p) {
		snprintf(out->why, sizeof(out->why), "out of memory");
		return;
	}
	p->self = self;
	p->nscopes = 1;
	for (int i = 0; i < MAX_SCOPES; i++)
		p->s[i].allow_anonymous = -1;
	if (parse_file(p, path, true)) {
		snprintf(out->why, sizeof(out->why), "%s", p->why);
		out->read_errno = p->read_errno;
		free(p);
		return;
	}
	at = 0;
	line = line_of_init(p, index);
	if (p->per_listener) {
		if (line < 0) {
			snprintf(out->why, sizeof(out->why), "cannot tell which listener plugin instance %d belongs to",
				 index);
			free(p);
			return;
		}
		at = p->our_scopes[line];
	}
	s = &p->s[at];
	out->known = true;
	out->per_listener = p->per_listener;
	/* Local-only mode (no listener, port or bind_address line) forces
	 * anonymous access on, even over an explicit allow_anonymous false. */
	out->allow_anonymous = s->allow_anonymous < 0 ? !p->has_listener : s->allow_anonymous == 1;
	if (!p->has_listener)
		out->allow_anonymous = true;
	out->password_file = s->password_file;
	out->acl_file = s->acl_file;
	/* With per-listener settings a plugin answers only for the listener
	 * whose block loads it, so a provider counts only in its own scope
	 * (counting it elsewhere would make us defer where nobody answers).
	 * A plugin we cannot know counts everywhere: that only makes us
	 * observe less. */
	out->dynsec = p->per_listener ? s->dynsec : p->global_dynsec;
	out->legacy_plugin = p->per_listener ? s->legacy : p->global_legacy;
	out->legacy_auth = p->per_listener ? s->legacy_auth : p->global_legacy_auth;
	out->unknown_plugin = p->global_unknown;
	/* With per-listener settings line is ours (checked above). When no
	 * line names us (a path we cannot match), any other plugin may come
	 * first. */
	out->plugin_before = p->nours > 0 ? p->our_after[p->per_listener ? line : 0]
					  : p->global_dynsec || p->global_legacy || p->global_unknown;
	out->sole_plugin = p->ours_seen == 1 && !p->other_any;
	free(p);
}

/* Reads the -c file from the broker's command line, made absolute against
 * the broker's working directory. (-p does not change the security rules,
 * so nothing else on the command line matters.) *count is how many -c it
 * has: Mosquitto 2.0 reads each in turn into one configuration, so with
 * more than one the last file alone is not the configuration. */
static int cmdline_config(char *path, size_t cap, int *count)
{
	FILE *f = fopen("/proc/self/cmdline", "re");
	char buf[8192], cwd[PATH_MAX];
	const char *prev = NULL, *conf = NULL;
	size_t n;
	ssize_t len;

	path[0] = '\0';
	*count = 0;
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
		const char *arg = buf + i;

		if (prev && (!strcmp(prev, "-c") || !strcmp(prev, "--config-file"))) {
			conf = arg;
			(*count)++;
		}
		prev = arg;
	}
	if (!conf)
		return -1;
	if (conf[0] == '/') {
		snprintf(path, cap, "%s", conf);
		return 0;
	}
	len = readlink("/proc/self/cwd", cwd, sizeof(cwd) - 1);
	if (len < 0)
		return -1;
	cwd[len] = '\0';
	if ((size_t)snprintf(path, cap, "%s/", cwd) >= cap || strlen(path) + strlen(conf) >= cap)
		return -1;
	strcat(path, conf);
	return 0;
}

void eh_scope_learn(struct eh_scope_info *out, const char *override, const char *self, int index)
{
	char path[4096];
	int count = 0;

	if (override) {
		snprintf(path, sizeof(path), "%s", override);
	} else if (cmdline_config(path, sizeof(path), &count)) {
		memset(out, 0, sizeof(*out));
		snprintf(out->why, sizeof(out->why), "cannot find the broker's -c configuration file in "
			 "/proc/self/cmdline (set plugin_opt_config_file)");
		return;
	} else if (count > 1) {
		memset(out, 0, sizeof(*out));
		snprintf(out->why, sizeof(out->why), "the broker was started with %d -c configuration files, which it "
			 "reads into one configuration; eventhook reads one (set plugin_opt_config_file to a file "
			 "holding the whole configuration)", count);
		return;
	}
	eh_scope_learn_file(out, path, self, index);
	/* A file the admin named may not be all the broker read: never take
	 * it as proof that no other plugin shares the process. */
	if (override)
		out->sole_plugin = false;
}

/* One reading of path collecting the option lines of the line-th plugin
 * line naming us (file order); *p_out keeps what else it learnt. */
static int read_block(struct parse **p_out, struct eh_scope_opts *out, const char *path, const char *self, int line)
{
	struct parse *p = calloc(1, sizeof(*p));

	*p_out = p;
	memset(out, 0, sizeof(*out));
	if (!p)
		return -1;
	p->self = self;
	p->nscopes = 1;
	p->opts_only = true;
	p->opts_index = line;
	p->opts = out;
	return parse_file(p, path, true);
}

int eh_scope_plugin_opts(struct eh_scope_opts *out, const char *path, const char *self, int index, char *why,
			 size_t whylen)
{
	struct parse *p;
	int rc = read_block(&p, out, path, self, index), line;

	/* The index-th instance reads the block of the line the broker
	 * initialised index-th: with per_listener_settings not always the
	 * index-th line (line_of_init), and then the file is read again. */
	if (!rc && (line = line_of_init(p, index)) >= 0 && line != index) {
		eh_scope_opts_free(out);
		free(p);
		rc = read_block(&p, out, path, self, line);
	}
	if (!p) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	if (!rc && p->ours_seen <= index) {
		snprintf(p->why, sizeof(p->why), "no plugin line %d for this plugin in '%s'", index + 1, path);
		rc = -1;
	}
	if (rc) {
		snprintf(why, whylen, "%s", p->why);
		eh_scope_opts_free(out);
	}
	free(p);
	return rc;
}

/* A value, or a key that holds one after a tab: wiped before it is freed. */
static void free_wiped(char *s)
{
	if (s)
		explicit_bzero(s, strlen(s));
	free(s);
}

void eh_scope_opts_free(struct eh_scope_opts *opts)
{
	for (size_t i = 0; i < opts->count; i++) {
		free_wiped(opts->items[i].key);
		free_wiped(opts->items[i].value);
	}
	for (size_t i = 0; i < opts->nrefused; i++) {
		free(opts->refused[i].file);
		free_wiped(opts->refused[i].word);
	}
	free(opts->items);
	free(opts->refused);
	memset(opts, 0, sizeof(*opts));
}
