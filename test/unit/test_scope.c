/*
 * eh_scope: the mosquitto.conf reader, on files written to a temporary
 * directory. Covers local-only mode, allow_anonymous defaults, built-in
 * providers, plugin classification, include_dir and per-listener scopes.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "eh_scope.h"
#include "unit.h"

static char dir[256];
static char self[512];

static void write_file(const char *name, const char *text)
{
	char path[768];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

static void rm_tree(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *e;

	if (!d) {
		unlink(path);
		return;
	}
	while ((e = readdir(d))) {
		char sub[1024];

		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
			continue;
		snprintf(sub, sizeof(sub), "%s/%s", path, e->d_name);
		rm_tree(sub);
	}
	closedir(d);
	rmdir(path);
}

static void setup(void)
{
	strcpy(dir, "/tmp/eh_scope_XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	/* Our own plugin object: any existing file works for realpath. */
	snprintf(self, sizeof(self), "%s/mosquitto_eventhook.so", dir);
	write_file("mosquitto_eventhook.so", "not really a shared object\n");
}

static void teardown(void)
{
	rm_tree(dir);
}

/* Writes text as main.conf and learns instance index from it. */
static struct eh_scope_info learn(const char *text, int index)
{
	struct eh_scope_info info;
	char path[768];

	write_file("main.conf", text);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	eh_scope_learn_file(&info, path, self, index);
	return info;
}

static char conf[8192];

/* Returns tmpl with every SELF replaced by our plugin's path. */
static const char *CONF(const char *tmpl)
{
	char *at = conf;
	const char *p = tmpl;

	while (*p) {
		if (!strncmp(p, "SELF", 4)) {
			at += sprintf(at, "%s", self);
			p += 4;
		} else {
			*at++ = *p++;
		}
	}
	*at = '\0';
	return conf;
}

START_TEST(scope_local_only)
{
	struct eh_scope_info i = learn("# Debian's stock file has no listener\n"
				       "pid_file /run/mosquitto/mosquitto.pid\n"
				       "persistence true\n", 0);

	ck_assert(i.known);
	ck_assert(!i.per_listener);
	ck_assert(i.allow_anonymous);
	ck_assert(!i.password_file && !i.acl_file && !i.dynsec && !i.legacy_plugin && !i.unknown_plugin);
	ck_assert_ptr_nonnull(strstr(i.path, "main.conf"));

	/* Local-only mode forces anonymous access on, whatever the file. */
	i = learn("allow_anonymous false\n", 0);
	ck_assert(i.known);
	ck_assert(i.allow_anonymous);
	/* An empty file is local-only too. */
	i = learn("", 0);
	ck_assert(i.known);
	ck_assert(i.allow_anonymous);
}
END_TEST

START_TEST(scope_listener_defaults)
{
	struct eh_scope_info i;

	/* A listener makes unset allow_anonymous false. */
	i = learn("listener 1883\n", 0);
	ck_assert(i.known);
	ck_assert(!i.allow_anonymous);
	/* port and bind_address count as a listener. (-p on the command
	 * line does not end local-only mode, so the reader ignores it;
	 * test_transparency's test_j proves that against the broker.) */
	i = learn("port 1883\n", 0);
	ck_assert(!i.allow_anonymous);
	i = learn("bind_address 127.0.0.1\n", 0);
	ck_assert(!i.allow_anonymous);
	i = learn("persistence false\n", 0);
	ck_assert(i.allow_anonymous);
	/* A boolean is the first word; the rest of the line is ignored. */
	i = learn("listener 1883\nallow_anonymous true # for the demo\n", 0);
	ck_assert(i.allow_anonymous);
	i = learn("listener 1883\nallow_anonymous truely\n", 0);
	ck_assert(!i.allow_anonymous);
	/* Explicit values, with odd spacing and case. */
	i = learn("listener 1883\n  allow_anonymous\t true  \n", 0);
	ck_assert(i.allow_anonymous);
	i = learn("listener 1883\nallow_anonymous TRUE\n", 0);
	ck_assert(i.allow_anonymous);
	i = learn("allow_anonymous true\nlistener 1883\n", 0);
	ck_assert(i.allow_anonymous);
	i = learn("listener 1883\nallow_anonymous false\n", 0);
	ck_assert(!i.allow_anonymous);
	/* The last line wins. */
	i = learn("listener 1883\nallow_anonymous true\nallow_anonymous false\n", 0);
	ck_assert(!i.allow_anonymous);
	/* Comments are not directives. */
	i = learn("listener 1883\n#allow_anonymous true\n   # allow_anonymous true\n", 0);
	ck_assert(!i.allow_anonymous);
}
END_TEST

START_TEST(scope_builtin_files)
{
	struct eh_scope_info i;

	i = learn("listener 1883\npassword_file /etc/mosquitto/passwd\n", 0);
	ck_assert(i.known);
	ck_assert(i.password_file);
	ck_assert(!i.acl_file);
	i = learn("listener 1883\nacl_file /etc/mosquitto/acl\n", 0);
	ck_assert(!i.password_file);
	ck_assert(i.acl_file);
	i = learn("listener 1883\n#password_file x\nacl_filex y\n", 0);
	ck_assert(!i.password_file);
	ck_assert(!i.acl_file);
}
END_TEST

START_TEST(scope_plugins)
{
	struct eh_scope_info i;

	/* Ourselves only. */
	i = learn(CONF("listener 1883\nplugin SELF\n"), 0);
	ck_assert(i.known);
	ck_assert(!i.dynsec && !i.legacy_plugin && !i.unknown_plugin);
	ck_assert(i.sole_plugin);
	i = learn(CONF("per_listener_settings true\nlistener 1883\nplugin SELF\nlistener 8883\n"), 0);
	ck_assert(i.known && i.sole_plugin);
	/* Ourselves through another spelling of the same path. */
	snprintf(conf, sizeof(conf), "listener 1883\nplugin %s/./mosquitto_eventhook.so\n", dir);
	i = learn(conf, 0);
	ck_assert(!i.dynsec && !i.legacy_plugin && !i.unknown_plugin);
	/* The dynamic-security plugin. */
	i = learn(CONF("listener 1883\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
		       "plugin SELF\n"), 0);
	ck_assert(i.dynsec);
	ck_assert(!i.legacy_plugin && !i.unknown_plugin);
	ck_assert(!i.sole_plugin);
	/* Another v5 plugin we cannot know. */
	i = learn(CONF("listener 1883\nplugin SELF\nplugin /opt/other/auth.so\n"), 0);
	ck_assert(i.unknown_plugin);
	ck_assert(!i.dynsec && !i.legacy_plugin);
	ck_assert(!i.sole_plugin);
	/* auth_plugin is the same directive as plugin in 2.0: what a plugin
	 * is comes from its exports, and one that cannot be loaded to look is
	 * unknown (we then observe less). */
	i = learn(CONF("listener 1883\nauth_plugin /opt/old/auth-plug.so\nplugin SELF\n"), 0);
	ck_assert(i.unknown_plugin);
	ck_assert(!i.dynsec && !i.legacy_plugin);
	i = learn(CONF("listener 1883\nauth_plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
		       "plugin SELF\n"), 0);
	ck_assert(i.dynsec);
	ck_assert(!i.legacy_plugin && !i.unknown_plugin);
	/* Another copy with our file name elsewhere is not us (realpath
	 * of both exists and differs). */
	mkdir(strcat(strcpy(conf, dir), "/other"), 0700);
	write_file("other/mosquitto_eventhook.so", "x");
	snprintf(conf, sizeof(conf), "listener 1883\nplugin %s\nplugin %s/other/mosquitto_eventhook.so\n", self,
		 dir);
	i = learn(conf, 0);
	ck_assert(i.unknown_plugin);
}
END_TEST

START_TEST(scope_include_dir)
{
	struct eh_scope_info i;
	char sub[512];

	snprintf(sub, sizeof(sub), "%s/conf.d", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	/* Sorted by name: 10 before 20, so 20's line wins. Files not
	 * ending in .conf are skipped. */
	write_file("conf.d/20-anon.conf", "allow_anonymous false\n");
	write_file("conf.d/10-anon.conf", "allow_anonymous true\npassword_file /x\n");
	write_file("conf.d/30-acl.conf.disabled", "acl_file /y\n");
	write_file("conf.d/README", "acl_file /y\n");
	write_file("conf.d/.conf", "acl_file /y\n");
	snprintf(conf, sizeof(conf), "listener 1883\ninclude_dir %s\n", sub);
	i = learn(conf, 0);
	ck_assert(i.known);
	ck_assert(!i.allow_anonymous);
	ck_assert(i.password_file);
	ck_assert(!i.acl_file);

	/* The broker's order ignores case first: a.conf before B.conf
	 * (strcmp would put B first), and B before b. */
	write_file("conf.d/B.conf", "allow_anonymous false\n");
	write_file("conf.d/a.conf", "allow_anonymous true\n");
	i = learn(conf, 0);
	ck_assert(!i.allow_anonymous);
	write_file("conf.d/b.conf", "allow_anonymous true\n");
	i = learn(conf, 0);
	ck_assert(i.allow_anonymous);
	unlink(strcat(strcpy(conf, sub), "/a.conf"));
	unlink(strcat(strcpy(conf, sub), "/B.conf"));
	unlink(strcat(strcpy(conf, sub), "/b.conf"));

	/* include_dir inside an included file is ignored, as the broker
	 * does. */
	ck_assert_int_eq(mkdir(strcat(strcpy(conf, sub), "/nested"), 0700), 0);
	write_file("conf.d/nested/x.conf", "acl_file /z\n");
	snprintf(conf, sizeof(conf), "include_dir %s/nested\n", sub);
	write_file("conf.d/40-include.conf", conf);
	snprintf(conf, sizeof(conf), "listener 1883\ninclude_dir %s\n", sub);
	i = learn(conf, 0);
	ck_assert(i.known);
	ck_assert(!i.acl_file);

	/* A missing include_dir makes the result unknown. */
	snprintf(conf, sizeof(conf), "listener 1883\ninclude_dir %s/missing\n", dir);
	i = learn(conf, 0);
	ck_assert(!i.known);
	ck_assert_ptr_nonnull(strstr(i.why, "include_dir"));
}
END_TEST

START_TEST(scope_per_listener)
{
	struct eh_scope_info i;
	const char *text = CONF("per_listener_settings true\n"
				"listener 1883\n"
				"allow_anonymous true\n"
				"plugin SELF\n"
				"listener 8883\n"
				"password_file /etc/mosquitto/passwd\n"
				"acl_file /etc/mosquitto/acl\n"
				"plugin SELF\n");
	char copy[8192];

	snprintf(copy, sizeof(copy), "%s", text);
	i = learn(copy, 0);
	ck_assert(i.known);
	ck_assert(i.per_listener);
	/* two instances of ours: each is not the only plugin */
	ck_assert(!i.sole_plugin);
	ck_assert(i.allow_anonymous);
	ck_assert(!i.password_file && !i.acl_file);
	i = learn(copy, 1);
	ck_assert(i.known);
	ck_assert(!i.allow_anonymous);
	ck_assert(i.password_file && i.acl_file);
	/* A third instance has no plugin line: unknown, with a reason. */
	i = learn(copy, 2);
	ck_assert(!i.known);
	ck_assert_ptr_nonnull(strstr(i.why, "listener"));

	/* A provider in another listener answers only there: listener 1883
	 * has none (counting it would make us defer where nobody answers). */
	i = learn(CONF("per_listener_settings true\n"
		       "listener 1883\nplugin SELF\n"
		       "listener 8883\nplugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"), 0);
	ck_assert(i.known);
	ck_assert(!i.dynsec && !i.unknown_plugin);
	/* A plugin we cannot know counts everywhere: we then observe less. */
	i = learn(CONF("per_listener_settings true\n"
		       "listener 1883\nplugin SELF\n"
		       "listener 8883\nplugin /opt/other/unknown.so\n"), 0);
	ck_assert(i.known);
	ck_assert(i.unknown_plugin);

	/* Lines before any listener belong to the default listener, which
	 * 2.0.11 appends after the others: its instance starts last. */
	snprintf(copy, sizeof(copy), "%s", CONF("per_listener_settings true\nport 1884\npassword_file /d\n"
					       "plugin SELF\nlistener 1883\nallow_anonymous true\nplugin SELF\n"));
	i = learn(copy, 0);
	ck_assert(i.known);
	ck_assert(i.allow_anonymous && !i.password_file);
	i = learn(copy, 1);
	ck_assert(i.known);
	ck_assert(!i.allow_anonymous && i.password_file);

	/* Without per_listener_settings the settings are global, whatever
	 * listener they follow. */
	i = learn(CONF("listener 1883\nplugin SELF\nlistener 8883\npassword_file /p\nallow_anonymous true\n"), 0);
	ck_assert(i.known);
	ck_assert(!i.per_listener);
	ck_assert(i.password_file);
	ck_assert(i.allow_anonymous);
}
END_TEST

/* Mosquitto 2.1 calls the ACL callbacks of one list in the order of the
 * configuration: global plugins (and every plugin line without
 * per_listener_settings) in one list, each listener's in another. */
START_TEST(scope_plugin_before_ours)
{
	struct eh_scope_info i;
	char copy[8192];

	i = learn(CONF("listener 1883\nplugin SELF\n"), 0);
	ck_assert(i.known && !i.plugin_before);
	/* After us: fine. Before us: not. */
	i = learn(CONF("listener 1883\nglobal_plugin SELF\nglobal_plugin /opt/other/auth.so\n"), 0);
	ck_assert(i.known && !i.plugin_before);
	i = learn(CONF("listener 1883\nglobal_plugin /usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so\n"
		       "global_plugin SELF\n"), 0);
	ck_assert(i.known && i.plugin_before);
	/* Without per_listener_settings, plugin and global_plugin lines share
	 * the global list, whichever listener they follow. */
	i = learn(CONF("listener 1883\nplugin /opt/other/auth.so\nlistener 8883\nglobal_plugin SELF\n"), 0);
	ck_assert(i.plugin_before);
	/* With it, a listener's plugin line is in that listener's list: a
	 * plugin of another listener, or a global one, is not before ours
	 * there (2.1 combines the lists' answers correctly). */
	snprintf(copy, sizeof(copy), "%s",
		 CONF("per_listener_settings true\n"
		      "global_plugin /opt/other/global.so\n"
		      "listener 1883\nplugin /opt/other/auth.so\n"
		      "listener 8883\nplugin SELF\n"
		      "listener 8884\nplugin /opt/other/auth.so\nplugin SELF\n"));
	i = learn(copy, 0);
	ck_assert(i.known && !i.plugin_before);
	i = learn(copy, 1);
	ck_assert(i.known && i.plugin_before);
	/* A global plugin line with per_listener_settings is in the global
	 * list even inside a listener block. */
	i = learn(CONF("per_listener_settings true\nlistener 1883\nplugin /opt/other/auth.so\n"
		       "global_plugin SELF\n"), 0);
	ck_assert(i.known && !i.plugin_before);
	i = learn(CONF("per_listener_settings true\nglobal_plugin /opt/other/auth.so\nlistener 1883\n"
		       "global_plugin SELF\n"), 0);
	ck_assert(i.known && i.plugin_before);
	/* No line names us: any other plugin may come first. */
	i = learn("listener 1883\nglobal_plugin /opt/elsewhere/eventhook.so\nglobal_plugin /opt/other/auth.so\n", 0);
	ck_assert(i.known && i.plugin_before);
	i = learn("listener 1883\n", 0);
	ck_assert(i.known && !i.plugin_before);
}
END_TEST

START_TEST(scope_unreadable)
{
	struct eh_scope_info i;
	char path[768];

	snprintf(path, sizeof(path), "%s/does-not-exist.conf", dir);
	eh_scope_learn_file(&i, path, self, 0);
	ck_assert(!i.known);
	ck_assert_ptr_nonnull(strstr(i.why, "cannot read"));
	ck_assert_ptr_nonnull(strstr(i.why, "does-not-exist.conf"));
	ck_assert_int_eq(i.read_errno, ENOENT);
	/* A directory is not a readable configuration file either. */
	eh_scope_learn_file(&i, dir, self, 0);
	ck_assert(!i.known);
	ck_assert(i.why[0]);
	ck_assert_int_eq(i.read_errno, EISDIR);
	/* An include_dir that cannot be read is not the main file failing. */
	write_file("inc.conf", "include_dir /nonexistent-eh-dir\n");
	snprintf(path, sizeof(path), "%s/inc.conf", dir);
	eh_scope_learn_file(&i, path, self, 0);
	ck_assert(!i.known);
	ck_assert_int_eq(i.read_errno, 0);
}
END_TEST

/* The override path of eh_scope_learn reads the given file. */
START_TEST(scope_learn_override)
{
	struct eh_scope_info i;
	char path[768];

	write_file("o.conf", "listener 1\npassword_file /p\n");
	snprintf(path, sizeof(path), "%s/o.conf", dir);
	eh_scope_learn(&i, path, self, 0);
	ck_assert(i.known);
	ck_assert(i.password_file);
	ck_assert(!i.allow_anonymous);
}
END_TEST

/* Reads the option lines of our index-th plugin line from text; returns
 * them as "key=value|" pairs (value brackets show the blanks kept), then
 * the lines the broker would refuse as "!file:line:word:why|" (file
 * without its directory; why 0 no key, 1 short key, 2 no value, 3 no
 * value at the end of the file without a newline). */
static const char *opts_of(const char *text, int index)
{
	static char out[2048];
	struct eh_scope_opts o;
	char path[768], why[512] = "";
	size_t n = 0;

	write_file("main.conf", text);
	snprintf(path, sizeof(path), "%s/main.conf", dir);
	if (eh_scope_plugin_opts(&o, path, self, index, why, sizeof(why))) {
		snprintf(out, sizeof(out), "error: %s", why);
		return out;
	}
	out[0] = '\0';
	for (size_t i = 0; i < o.count; i++)
		n += (size_t)snprintf(out + n, sizeof(out) - n, "%s=[%s]|", o.items[i].key, o.items[i].value);
	for (size_t i = 0; i < o.nrefused; i++) {
		const char *base = strrchr(o.refused[i].file, '/');

		n += (size_t)snprintf(out + n, sizeof(out) - n, "!%s:%d:%s:%d|", base ? base + 1 : o.refused[i].file,
				      o.refused[i].line, o.refused[i].word, (int)o.refused[i].why);
	}
	eh_scope_opts_free(&o);
	return out;
}

START_TEST(scope_plugin_opts)
{
	char sub[512];

	/* Split as the broker splits: the key ends at a space, leading
	 * spaces and tabs of the value go, trailing blanks stay. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\n# plugin_opt_x 1\n"
				      "plugin_opt_file_path /x.jsonl \n  plugin_opt_events \t client.*\r\n"
				      "plugin_opt_queue_size\t 1024\nauth_opt_node_id n\nplugin_opt_novalue\n"), 0),
			 "file_path=[/x.jsonl ]|events=[client.*]|queue_size\t=[1024]|node_id=[n]|"
			 "!main.conf:8:plugin_opt_novalue:2|");
	/* Another plugin line ends our block; a listener line does not. */
	ck_assert_str_eq(opts_of(CONF("plugin_opt_before 0\nplugin SELF\nplugin_opt_key_a 1\nlistener 2\n"
				      "plugin_opt_key_b 2\nplugin /usr/lib/other.so\nplugin_opt_key_c 3\n"), 0),
			 "key_a=[1]|key_b=[2]|");
	/* Per listener: the index-th plugin line naming us. */
	ck_assert_str_eq(opts_of(CONF("per_listener_settings true\nlistener 1\nplugin SELF\nplugin_opt_key_a 1\n"
				      "listener 2\nplugin SELF\nplugin_opt_key_a 2\n"), 1),
			 "key_a=[2]|");
	/* ... and the default listener's block (lines before any listener)
	 * is the last instance's: 2.0.11 starts it after the others. */
	ck_assert_str_eq(opts_of(CONF("per_listener_settings true\nplugin SELF\nplugin_opt_key_a 0\nlistener 1\n"
				      "plugin SELF\nplugin_opt_key_a 1\nlistener 2\nplugin SELF\nplugin_opt_key_a 2\n"), 0),
			 "key_a=[1]|");
	ck_assert_str_eq(opts_of(CONF("per_listener_settings true\nplugin SELF\nplugin_opt_key_a 0\nlistener 1\n"
				      "plugin SELF\nplugin_opt_key_a 1\nlistener 2\nplugin SELF\nplugin_opt_key_a 2\n"), 2),
			 "key_a=[0]|");
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\n"), 0), "");
	ck_assert_ptr_nonnull(strstr(opts_of(CONF("listener 1\nplugin SELF\n"), 1), "error: no plugin line 2"));
	ck_assert_ptr_nonnull(strstr(opts_of("listener 1\n", 0), "error: no plugin line 1"));

	/* The current plugin is per file: an included file's option lines
	 * are not ours, and ours resume after the include_dir line. */
	snprintf(sub, sizeof(sub), "%s/conf.d", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	write_file("conf.d/10.conf", "plugin_opt_inc 1\n");
	snprintf(conf, sizeof(conf), "listener 1\nplugin %s\nplugin_opt_key_a 1\ninclude_dir %s\nplugin_opt_key_b 2\n", self,
		 sub);
	ck_assert_str_eq(opts_of(conf, 0), "key_a=[1]|key_b=[2]|");
}
END_TEST

/* The lines of our block that Mosquitto 2.0.11 refuses at start
 * (conf.c): the word after the prefix, up to the first space, under 3
 * bytes; nothing but blanks after it. They are not options. */
START_TEST(scope_plugin_opts_refused)
{
	char sub[512];

	/* No value, whatever blanks follow; leading spaces are skipped as
	 * the broker's strtok skips them; auth_opt_ is the same. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_a_1\nplugin_opt_a_2 \n"
				      "plugin_opt_a_3 \t \r\n   plugin_opt_a_4\nauth_opt_a_5\nplugin_opt_okay 1\n"), 0),
			 "okay=[1]|!main.conf:3:plugin_opt_a_1:2|!main.conf:4:plugin_opt_a_2:2|"
			 "!main.conf:5:plugin_opt_a_3:2|!main.conf:6:plugin_opt_a_4:2|!main.conf:7:auth_opt_a_5:2|");
	/* A key ends at a space only: after a tab the rest is key. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_pw\tS3cr3t\n"
				      "plugin_opt_pw\tS3cr3t more\n"), 0),
			 "pw\tS3cr3t=[more]|!main.conf:3:plugin_opt_pw\tS3cr3t:2|");
	/* Keys of 0 to 2 bytes, with or without a value; 3 is enough, and
	 * a tab counts as a byte of the key. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_\nplugin_opt_ x\nplugin_opt_ab 1\n"
				      "auth_opt_a 1\nplugin_opt_abc 1\nplugin_opt_\tab 1\n"), 0),
			 "abc=[1]|\tab=[1]|!main.conf:3:plugin_opt_:0|!main.conf:4:plugin_opt_:0|"
			 "!main.conf:5:plugin_opt_ab:1|!main.conf:6:auth_opt_a:1|");
	/* A last line without a newline: with no space in it, the broker
	 * reads on past its end, into what its buffer held before; a blank
	 * or a carriage return there ends the word as a newline does. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_node_id"), 0),
			 "!main.conf:3:plugin_opt_node_id:3|");
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_node_id\tS3cr3t"), 0),
			 "!main.conf:3:plugin_opt_node_id\tS3cr3t:3|");
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_node_id "), 0),
			 "!main.conf:3:plugin_opt_node_id:2|");
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_node_id\r"), 0),
			 "!main.conf:3:plugin_opt_node_id:2|");
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\nplugin_opt_ab"), 0), "!main.conf:3:plugin_opt_ab:1|");
	/* Comments, a tab before the word (to the broker not an option line
	 * at all) and blank lines are not option lines, but are counted. */
	ck_assert_str_eq(opts_of(CONF("listener 1\nplugin SELF\n#plugin_opt_node_id\n  # plugin_opt_node_id\n\n"
				      "\tplugin_opt_node_id\n\r\nplugin_opt_node_id\n"), 0),
			 "!main.conf:8:plugin_opt_node_id:2|");
	/* Outside our block: before it, after another plugin line, in an
	 * included file without its own plugin line. */
	snprintf(sub, sizeof(sub), "%s/conf.d", dir);
	ck_assert_int_eq(mkdir(sub, 0700), 0);
	write_file("conf.d/10.conf", "plugin_opt_inc\n");
	snprintf(conf, sizeof(conf), "plugin_opt_before\nlistener 1\nplugin %s\nplugin_opt_key_a 1\ninclude_dir %s\n"
		 "plugin_opt_key_b\nplugin /usr/lib/other.so\nplugin_opt_other\n", self, sub);
	ck_assert_str_eq(opts_of(conf, 0), "key_a=[1]|!main.conf:6:plugin_opt_key_b:2|");
	/* In an included file that loads us: that file and its line. */
	snprintf(conf, sizeof(conf), "# ours\nplugin %s\nplugin_opt_key_a 1\n\nplugin_opt_key_b\n", self);
	write_file("conf.d/20.conf", conf);
	snprintf(conf, sizeof(conf), "listener 1\ninclude_dir %s\nplugin_opt_after\n", sub);
	ck_assert_str_eq(opts_of(conf, 0), "key_a=[1]|!20.conf:5:plugin_opt_key_b:2|");
	/* Per listener: only the instance's own block. */
	ck_assert_str_eq(opts_of(CONF("per_listener_settings true\nlistener 1\nplugin SELF\nplugin_opt_key_a\n"
				      "listener 2\nplugin SELF\nplugin_opt_key_b\n"), 1),
			 "!main.conf:7:plugin_opt_key_b:2|");
}
END_TEST

static Suite *scope_suite(void)
{
	Suite *s = suite_create("scope");
	TCase *tc = tcase_create("conf");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, scope_local_only);
	tcase_add_test(tc, scope_listener_defaults);
	tcase_add_test(tc, scope_builtin_files);
	tcase_add_test(tc, scope_plugins);
	tcase_add_test(tc, scope_include_dir);
	tcase_add_test(tc, scope_per_listener);
	tcase_add_test(tc, scope_plugin_before_ours);
	tcase_add_test(tc, scope_unreadable);
	tcase_add_test(tc, scope_learn_override);
	tcase_add_test(tc, scope_plugin_opts);
	tcase_add_test(tc, scope_plugin_opts_refused);
	suite_add_tcase(s, tc);
	return s;
}
EH_UNIT_SUITE(scope_suite)
