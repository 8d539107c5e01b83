/*
 * eh_filter: event masks and topic filters.
 */
#include "eh_filter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eh_event.h"
#include "eh_options.h"

struct mask_arg {
	uint32_t mask;
	char *err;
	size_t errlen;
};

static int add_pattern(void *arg, const char *item, size_t len)
{
	char shown[EH_QUOTE_LEN];
	struct mask_arg *m = arg;
	int t;

	if (len == 1 && item[0] == '*') {
		m->mask |= EH_EV_MASK_ALL;
		return 0;
	}
	if (len >= 2 && item[len - 1] == '*' && item[len - 2] == '.') {
		uint32_t found = 0;

		for (t = 0; t < EH_EV_COUNT; t++) {
			const char *name = eh_event_type_name((unsigned)t);

			if (strlen(name) > len - 1 && !strncmp(name, item, len - 1))
				found |= EH_EV_BIT(t);
		}
		if (found) {
			m->mask |= found;
			return 0;
		}
	} else if ((t = eh_event_type_from_name(item, len)) >= 0) {
		m->mask |= EH_EV_BIT(t);
		return 0;
	}
	snprintf(m->err, m->errlen, "'%s' is not an event type or pattern (client.connect, client.connected, "
		 "client.connect_failed, client.disconnected, client.subscribe, client.unsubscribe, "
		 "client.authz_denied, message.publish, client.*, message.*, *)",
		 eh_quote_n(shown, sizeof(shown), item, len));
	return -1;
}

int eh_filter_events_parse(const char *list, uint32_t *mask, char *err, size_t errlen)
{
	struct mask_arg m = { 0, err, errlen };
	int rc;

	/* Cleared first: an empty item is detected by err staying empty. */
	err[0] = '\0';
	rc = eh_list_each(list, add_pattern, &m);

	if (rc == -1 && !err[0]) {
		char shown[EH_QUOTE_LEN];

		snprintf(err, errlen, "'%s' has an empty item", eh_quote(shown, sizeof(shown), list));
	}
	if (rc)
		return -1;
	*mask = m.mask;
	return 0;
}

bool eh_topic_filter_valid(const char *f)
{
	size_t n = strlen(f);

	if (!n)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (f[i] == '+') {
			if ((i > 0 && f[i - 1] != '/') || (i + 1 < n && f[i + 1] != '/'))
				return false;
		} else if (f[i] == '#') {
			if ((i > 0 && f[i - 1] != '/') || i + 1 != n)
				return false;
		}
	}
	return true;
}

struct topics_arg {
	struct eh_topics *t;
	char *err;
	size_t errlen;
};

static int add_topic(void *arg, const char *item, size_t len)
{
	struct topics_arg *a = arg;
	char *f = strndup(item, len);
	char **grown;

	if (!f)
		return -1;
	if (!eh_topic_filter_valid(f)) {
		char shown[EH_QUOTE_LEN];

		snprintf(a->err, a->errlen, "'%s' is not a valid MQTT topic filter", eh_quote(shown, sizeof(shown), f));
		free(f);
		return -1;
	}
	grown = realloc(a->t->filters, (a->t->count + 1) * sizeof(*grown));
	if (!grown) {
		free(f);
		return -1;
	}
	a->t->filters = grown;
	a->t->filters[a->t->count++] = f;
	return 0;
}

int eh_topics_parse(struct eh_topics *t, const char *list, char *err, size_t errlen)
{
	struct topics_arg a = { t, err, errlen };

	memset(t, 0, sizeof(*t));
	if (!list)
		return 0;
	err[0] = '\0';
	if (eh_list_each(list, add_topic, &a)) {
		char shown[EH_QUOTE_LEN];

		if (!err[0])
			snprintf(err, errlen, "'%s' is not a comma list of topic filters",
				 eh_quote(shown, sizeof(shown), list));
		eh_topics_free(t);
		return -1;
	}
	return 0;
}

void eh_topics_free(struct eh_topics *t)
{
	for (size_t i = 0; i < t->count; i++)
		free(t->filters[i]);
	free(t->filters);
	t->filters = NULL;
	t->count = 0;
}

bool eh_topic_match(const char *filter, const char *topic, size_t len)
{
	const char *f = filter;
	size_t i = 0;

	if (len && topic[0] == '$' && (f[0] == '+' || f[0] == '#'))
		return false;
	for (;;) {
		if (*f == '#')
			return true;
		if (*f == '+') {
			/* One whole level of the topic, possibly empty. */
			while (i < len && topic[i] != '/')
				i++;
			f++;
		} else {
			while (*f && *f != '/' && i < len && topic[i] != '/') {
				if (*f != topic[i])
					return false;
				f++;
				i++;
			}
			if (*f && *f != '/')
				return false;
			if (i < len && topic[i] != '/')
				return false;
		}
		/* Both at a level end. */
		if (!*f)
			return i == len;
		/* f at '/' */
		if (i == len) {
			/* "a/#" matches "a" */
			return f[1] == '#' && f[2] == '\0';
		}
		f++;
		i++;
	}
}

bool eh_topics_match(const struct eh_topics *t, const char *topic, size_t len)
{
	if (!t->count)
		return true;
	for (size_t i = 0; i < t->count; i++) {
		if (eh_topic_match(t->filters[i], topic, len))
			return true;
	}
	return false;
}
