/*
 * eh_optwatch: tells the admin at SIGHUP which plugin_opt_ lines of our
 * plugin block changed in the configuration file; they take effect only at
 * the next restart.
 */
#ifndef EH_OPTWATCH_H
#define EH_OPTWATCH_H

#include <stdbool.h>

#include "eh_options.h"

/* Whether our block in path (self: our .so; index: the listener's, or -1)
 * reads exactly as cfg, which the broker gave us. Only then are later
 * reports trustworthy. */
bool eh_optwatch_matches(const struct eh_config *cfg, const char *path, const char *self, int index);
/* Logs one warning naming changed, added and removed keys, one per
 * changed key its checks would refuse, and one per line of the block the
 * broker itself would refuse (or may misread) at start: file, line number,
 * key. */
void eh_optwatch_report(const struct eh_config *cfg, const char *path, const char *self, int index);

#endif
