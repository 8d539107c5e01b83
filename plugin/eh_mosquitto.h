/*
 * eh_mosquitto: the broker's plugin API headers, for 2.0 and 2.1 alike.
 *
 * 2.0 declares the plugin API in three headers, and before 2.0.13
 * mosquitto_plugin.h does not include mosquitto_broker.h. 2.1 moved them
 * under mosquitto/ and its mosquitto.h includes all of them; the old names
 * remain only as forwarding headers that emit a #warning, which -Werror
 * turns into a failed build. Include this instead of any of them.
 *
 * LIBMOSQUITTO_VERSION_NUMBER (2000011 on Debian 12, 2001000 in 2.1) picks
 * the branch. It says which headers we compiled against, not which broker
 * loads us: eh_capture still probes the broker at run time.
 */
#ifndef EH_MOSQUITTO_H
#define EH_MOSQUITTO_H

#include <mosquitto.h>

#ifndef LIBMOSQUITTO_VERSION_NUMBER
#error "mosquitto.h did not define LIBMOSQUITTO_VERSION_NUMBER: not a Mosquitto 2.x header"
#endif

#if LIBMOSQUITTO_VERSION_NUMBER >= 2001000
#if defined(__has_include)
#if !__has_include(<mosquitto/broker.h>)
#error "mosquitto.h says 2.1 or later but <mosquitto/broker.h> is missing: mixed header trees in the include path"
#endif
#endif
#define EH_HAVE_21 1
#else
#include <mosquitto_broker.h>
#include <mosquitto_plugin.h>
#define EH_HAVE_21 0
#endif

#endif
