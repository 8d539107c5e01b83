/*
 * Fuzz target: eh_template_parse and eh_template_render. Input: template
 * text NUL client id NUL username (the rest). Invariants: a refusal has a
 * message; rendering returns the same length for every capacity, always
 * terminates within the capacity, truncates to a prefix of the full text,
 * and in topic mode the client values cannot add a level separator or a
 * wildcard: the output has exactly the '/', '+' and '#' of the literals.
 */
#include <string.h>

#include "eh_template.h"
#include "fuzz.h"

static size_t count_special(const char *s, size_t n)
{
	size_t c = 0;

	for (size_t i = 0; i < n; i++)
		c += s[i] == '/' || s[i] == '+' || s[i] == '#';
	return c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	const char *cid, *user;
	size_t tlen, cid_len, user_len;
	struct eh_template t;
	struct eh_node node;
	struct eh_event ev;
	char err[512], *full = NULL, small[16];

	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	tlen = strlen(text);
	cid = text + (tlen < size ? tlen + 1 : size);
	cid_len = (size_t)(text + size - cid);
	user = memchr(cid, '\0', cid_len);
	if (user) {
		cid_len = (size_t)(user - cid);
		user++;
		user_len = (size_t)(text + size - user);
	} else {
		user = NULL;
		user_len = 0;
	}
	FUZZ_CHECK(eh_node_init(&node, "node/1", 1, NULL, 0) == 0);
	memset(&ev, 0, sizeof(ev));
	ev.type = (uint8_t)(size % EH_EV_COUNT);
	ev.seq = size * 7919u;
	ev.f[EH_F_CLIENTID] = (struct eh_bytes){ cid_len ? cid : NULL, (uint32_t)cid_len };
	ev.f[EH_F_USERNAME] = (struct eh_bytes){ user, (uint32_t)user_len };

	err[0] = '\0';
	if (eh_template_parse(&t, text, err, sizeof(err))) {
		FUZZ_CHECK(err[0]);
		FUZZ_CHECK(t.count == 0 && !t.parts);
		free(text);
		return 0;
	}
	for (int mode = EH_TEMPLATE_TOPIC; mode <= EH_TEMPLATE_RAW; mode++) {
		size_t n = eh_template_render(&t, &ev, &node, mode, NULL, 0);

		full = malloc(n + 1);
		FUZZ_CHECK(full);
		FUZZ_CHECK(eh_template_render(&t, &ev, &node, mode, full, n + 1) == n);
		FUZZ_CHECK(full[n] == '\0');
		for (size_t cap = 1; cap <= sizeof(small); cap++) {
			memset(small, 'Z', sizeof(small));
			FUZZ_CHECK(eh_template_render(&t, &ev, &node, mode, small, cap) == n);
			FUZZ_CHECK(small[cap - 1 < n ? cap - 1 : n] == '\0');
			FUZZ_CHECK(!memcmp(small, full, cap - 1 < n ? cap - 1 : n));
			if (cap < sizeof(small))
				FUZZ_CHECK(small[cap] == 'Z');
		}
		if (mode == EH_TEMPLATE_TOPIC) {
			size_t lit = 0;

			for (size_t i = 0; i < t.count; i++) {
				if (t.parts[i].field < 0)
					lit += count_special(t.parts[i].text, t.parts[i].len);
			}
			FUZZ_CHECK(count_special(full, n) == lit);
			FUZZ_CHECK(!memchr(full, '\0', n));
		}
		free(full);
	}
	eh_template_free(&t);
	free(text);
	return 0;
}
