/*
 * eh_template: parse once, render many times without allocation.
 */
#include "eh_template.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_options.h"

enum { PH_EVENT, PH_NODE, PH_CLIENTID, PH_USERNAME, PH_SEQ, PH_COUNT };
static const char *const ph_names[PH_COUNT] = { "event", "node", "clientid", "username", "seq" };

bool eh_template_uses(const struct eh_template *t, const char *name)
{
	for (size_t i = 0; i < t->count; i++)
		if (t->parts[i].field >= 0 && !strcmp(ph_names[t->parts[i].field], name))
			return true;
	return false;
}

static int add_part(struct eh_template *t, int field, const char *text, size_t len)
{
	struct eh_template_part *grown = realloc(t->parts, (t->count + 1) * sizeof(*grown));

	if (!grown)
		return -1;
	t->parts = grown;
	grown[t->count].field = field;
	grown[t->count].text = NULL;
	grown[t->count].len = len;
	if (field < 0) {
		grown[t->count].text = strndup(text, len);
		if (!grown[t->count].text)
			return -1;
	}
	t->count++;
	return 0;
}

int eh_template_parse(struct eh_template *t, const char *text, char *err, size_t errlen)
{
	const char *p = text;
	char shown[EH_QUOTE_LEN], ph[EH_QUOTE_LEN];

	eh_quote(shown, sizeof(shown), text);
	memset(t, 0, sizeof(*t));
	while (*p) {
		const char *open = strchr(p, '{');
		const char *close;
		int field = -1;

		if (!open) {
			/* A '}' in the trailing text is as unbalanced as one
			 * before a placeholder. */
			if (strchr(p, '}')) {
				snprintf(err, errlen, "'}' without '{' in template '%s'", shown);
				goto fail;
			}
			if (add_part(t, -1, p, strlen(p)))
				goto oom;
			break;
		}
		if (strchr(p, '}') && strchr(p, '}') < open) {
			snprintf(err, errlen, "'}' without '{' in template '%s'", shown);
			goto fail;
		}
		if (open > p && add_part(t, -1, p, (size_t)(open - p)))
			goto oom;
		close = strchr(open, '}');
		if (!close) {
			snprintf(err, errlen, "'{' without '}' in template '%s'", shown);
			goto fail;
		}
		for (int i = 0; i < PH_COUNT; i++) {
			if (strlen(ph_names[i]) == (size_t)(close - open - 1)
			    && !strncmp(open + 1, ph_names[i], (size_t)(close - open - 1)))
				field = i;
		}
		if (field < 0) {
			snprintf(err, errlen, "unknown placeholder '%s' in template '%s' (known: {event} {node} "
				 "{clientid} {username} {seq})",
				 eh_quote_n(ph, sizeof(ph), open, (size_t)(close - open + 1)), shown);
			goto fail;
		}
		if (add_part(t, field, NULL, 0))
			goto oom;
		p = close + 1;
	}
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
fail:
	eh_template_free(t);
	return -1;
}

void eh_template_free(struct eh_template *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->parts[i].text);
	free(t->parts);
	t->parts = NULL;
	t->count = 0;
}

int eh_template_check_topic(const struct eh_template *t, const char *option, const char *text, char *err,
			    size_t errlen)
{
	size_t fixed = 0;

	for (size_t i = 0; i < t->count; i++) {
		const struct eh_template_part *p = &t->parts[i];

		if (p->field != -1)
			continue;
		if (eh_utf8_valid_prefix(p->text, p->len) != p->len) {
			snprintf(err, errlen, "plugin_opt_%s: the template is not valid UTF-8; MQTT topic names must be",
				 option);
			return -1;
		}
		for (size_t j = 0; j < p->len; j++) {
			unsigned char c = (unsigned char)p->text[j];

			if (c == '+' || c == '#') {
				char shown[EH_QUOTE_LEN];

				snprintf(err, errlen, "plugin_opt_%s: '%s' holds '%c'; an MQTT topic name may hold no "
					 "wildcard", option, eh_quote(shown, sizeof(shown), text), c);
				return -1;
			}
			if (c < 0x20 || c == 0x7F) {
				snprintf(err, errlen, "plugin_opt_%s: the template holds the control character 0x%02X; an "
					 "MQTT topic name should hold none", option, c);
				return -1;
			}
		}
		fixed += p->len;
	}
	if (fixed > EH_TOPIC_MAX) {
		snprintf(err, errlen, "plugin_opt_%s: the template's own text is %zu bytes; an MQTT topic name is at "
			 "most %d", option, fixed, EH_TOPIC_MAX);
		return -1;
	}
	return 0;
}

struct out {
	char *buf;
	size_t cap, len;
};

static void put(struct out *o, const char *s, size_t n)
{
	/* An absent value (no username) is NULL with length 0: memcpy must
	 * not see the NULL even for zero bytes. */
	if (o->len < o->cap && n) {
		size_t room = o->cap - o->len;

		memcpy(o->buf + o->len, s, n < room ? n : room);
	}
	o->len += n;
}

static void put_safe(struct out *o, const char *s, size_t n)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t i = 0;

	while (i < n) {
		size_t ok = eh_utf8_valid_prefix(s + i, n - i);
		size_t j;

		for (j = i; j < i + ok; j++) {
			unsigned char c = (unsigned char)s[j];

			if (c < 0x20 || c == 0x7F || c == '/' || c == '+' || c == '#' || c == '%') {
				char esc[3] = { '%', hex[c >> 4], hex[c & 15] };

				put(o, esc, 3);
			} else {
				put(o, s + j, 1);
			}
		}
		i += ok;
		if (i < n) {
			unsigned char c = (unsigned char)s[i];
			char esc[3] = { '%', hex[c >> 4], hex[c & 15] };

			put(o, esc, 3);
			i++;
		}
	}
}

size_t eh_template_render(const struct eh_template *t, const struct eh_event *ev, const struct eh_node *node,
			  enum eh_template_mode mode, char *buf, size_t cap)
{
	struct out o = { buf, cap, 0 };
	char num[24];

	for (size_t i = 0; i < t->count; i++) {
		const struct eh_template_part *p = &t->parts[i];
		const char *s = NULL;
		size_t n = 0;
		int client = 0;

		switch (p->field) {
		case -1:
			put(&o, p->text, p->len);
			continue;
		case PH_EVENT:
			s = eh_event_type_name(ev->type);
			n = strlen(s);
			break;
		case PH_NODE:
			s = node->name;
			n = strlen(s);
			client = 1;
			break;
		case PH_CLIENTID:
			s = ev->f[EH_F_CLIENTID].ptr;
			n = ev->f[EH_F_CLIENTID].len;
			client = 1;
			break;
		case PH_USERNAME:
			s = ev->f[EH_F_USERNAME].ptr;
			n = ev->f[EH_F_USERNAME].len;
			client = 1;
			break;
		case PH_SEQ:
			n = (size_t)snprintf(num, sizeof(num), "%" PRIu64, ev->seq);
			s = num;
			break;
		default:
			break;
		}
		if (mode == EH_TEMPLATE_TOPIC && client) {
			if (o.len == 0 && n && s[0] == '$') {
				put(&o, "%24", 3);
				s++;
				n--;
			}
			put_safe(&o, s, n);
		} else
			put(&o, s, n);
	}
	if (cap)
		buf[o.len < cap ? o.len : cap - 1] = '\0';
	return o.len;
}

const char *eh_template_topic_unfit(size_t len)
{
	if (len == 0)
		return "empty";
	if (len > EH_TOPIC_MAX)
		return "longer than 65535 bytes";
	return NULL;
}
