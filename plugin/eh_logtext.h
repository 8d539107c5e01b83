/*
 * eh_logtext: untrusted bytes (option values, topics and client strings,
 * file paths, a peer's answer) made safe to put in a broker log line.
 */
#ifndef EH_LOGTEXT_H
#define EH_LOGTEXT_H

#include <stddef.h>

/* Writes the len bytes at s (no NUL needed) into out (cap bytes) so that
 * a log line can quote them: the output is valid UTF-8 with nothing a
 * terminal or a log viewer acts on, and it can be read back unambiguously.
 * Any thread; no allocation.
 *
 * The rule, per character of s:
 *   \                          becomes \\ (so that the escapes below
 *                              cannot be forged by the text itself)
 *   TAB, LF, CR                become \t, \n, \r
 *   other C0 controls, DEL     become \xNN
 *   C1 controls (U+0080..U+009F, a terminal's CSI among them) and
 *   U+2028, U+2029 (line breaks to some log viewers)
 *                              become \xNN per byte of their UTF-8 form
 *   a byte that does not start a valid UTF-8 character (stray
 *   continuation, truncated sequence, overlong form, surrogate, above
 *   U+10FFFF)                  becomes \xNN, and the next byte is judged
 *                              on its own
 *   any other valid UTF-8      is kept as it is.
 * NN is two upper-case hex digits.
 *
 * Only characters that end within the first max bytes of s are written
 * (max may exceed len): a valid character that straddles max is left out
 * whole, never cut. Writing also stops, between two characters, when the
 * next one and the NUL would not fit in out. out is always NUL-terminated
 * when cap > 0; with cap 0 nothing is written.
 *
 * Returns the length written (without the NUL); *shown, when not NULL,
 * gets how many bytes of s that output stands for (less than len when the
 * text was cut at max or at cap). */
size_t eh_logtext_escape(char *out, size_t cap, const char *s, size_t len, size_t max, size_t *shown);

/* Bytes eh_logtext_escape writes at most per byte of s (a byte of an
 * escaped character as \xNN), for sizing out: n bytes of text always fit
 * in n * EH_LOGTEXT_GROWTH + 1 bytes. */
#define EH_LOGTEXT_GROWTH 4

#endif
