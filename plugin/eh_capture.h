/*
 * eh_capture: the broker callbacks. Turns what Mosquitto lets a plugin see
 * into exact events without changing any answer the broker gives (see
 * docs/capture.md). Broker thread only.
 */
#ifndef EH_CAPTURE_H
#define EH_CAPTURE_H

#include "eh_core.h"

/* plugin init: learns the scope, registers the callbacks. index is the
 * how-many-th initialisation of this .so in the process (per listener
 * settings initialise once per listener). Returns 0 or -1 (logged). */
int eh_capture_init(struct eh_core *core, int index);
/* plugin cleanup: emits broker_shutdown for connected clients, unregisters,
 * frees. */
void eh_capture_cleanup(struct eh_core *core);

#endif
