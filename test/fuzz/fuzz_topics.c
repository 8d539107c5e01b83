/*
 * Fuzz target: topic filters. Input: a comma list of filters NUL a topic
 * (the rest, any bytes). eh_topics_parse must accept exactly the lists
 * whose items the reference validator accepts, and eh_topic_match must
 * agree with a straightforward level-by-level reference matcher. The list
 * also goes through eh_filter_events_parse, which must not crash.
 */
#include <string.h>

#include "eh_filter.h"
#include "fuzz.h"

/* The next level of s[0..len) starting at *at: its bounds, and whether
 * there is one. */
static int next_level(const char *s, size_t len, size_t *at, size_t *b, size_t *e)
{
	if (*at > len)
		return 0;
	*b = *at;
	while (*at < len && s[*at] != '/')
		(*at)++;
	*e = *at;
	(*at)++;
	return 1;
}

static int ref_valid(const char *f, size_t len)
{
	size_t at = 0, b, e;

	if (!len)
		return 0;
	while (next_level(f, len, &at, &b, &e)) {
		for (size_t i = b; i < e; i++) {
			if ((f[i] == '+' || f[i] == '#') && e - b != 1)
				return 0;
		}
		if (e - b == 1 && f[b] == '#' && e != len)
			return 0;
	}
	return 1;
}

static int ref_match(const char *f, size_t flen, const char *t, size_t tlen)
{
	size_t fa = 0, ta = 0, fb, fe, tb, te;

	if (tlen && t[0] == '$' && flen && (f[0] == '+' || f[0] == '#'))
		return 0;
	for (;;) {
		int fl = next_level(f, flen, &fa, &fb, &fe);
		int tl = next_level(t, tlen, &ta, &tb, &te);

		if (fl && fe - fb == 1 && f[fb] == '#')
			return 1;
		if (!fl || !tl)
			return !fl && !tl;
		if (fe - fb == 1 && f[fb] == '+')
			continue;
		if (fe - fb != te - tb || memcmp(f + fb, t + tb, fe - fb))
			return 0;
	}
}

struct list_state {
	int valid;
	size_t items;
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	const char *topic;
	size_t tlen, topic_len;
	struct eh_topics topics;
	char err[512];
	uint32_t mask;

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	tlen = strlen(text);
	topic = text + (tlen < size ? tlen + 1 : size);
	topic_len = (size_t)(text + size - topic);

	eh_filter_events_parse(text, &mask, err, sizeof(err));

	if (!eh_topics_parse(&topics, text, err, sizeof(err))) {
		int any = 0;

		FUZZ_CHECK(topics.count > 0);
		for (size_t i = 0; i < topics.count; i++) {
			const char *f = topics.filters[i];
			int want = ref_match(f, strlen(f), topic, topic_len);

			FUZZ_CHECK(ref_valid(f, strlen(f)));
			FUZZ_CHECK(eh_topic_filter_valid(f));
			FUZZ_CHECK(eh_topic_match(f, topic, topic_len) == want);
			any |= want;
		}
		FUZZ_CHECK(eh_topics_match(&topics, topic, topic_len) == any);
		eh_topics_free(&topics);
	} else {
		FUZZ_CHECK(err[0]);
		FUZZ_CHECK(topics.count == 0);
	}
	/* The whole first string as one filter. */
	FUZZ_CHECK(eh_topic_filter_valid(text) == ref_valid(text, tlen));
	if (ref_valid(text, tlen))
		FUZZ_CHECK(eh_topic_match(text, topic, topic_len) == ref_match(text, tlen, topic, topic_len));
	free(text);
	return 0;
}
