#!/bin/sh
# The plugin exports exactly the three Mosquitto entry points.
set -e
got=$(nm -D --defined-only "$1" | awk '$2 ~ /^[TDBRW]$/ {print $3}' | sort | tr '\n' ' ')
want="mosquitto_plugin_cleanup mosquitto_plugin_init mosquitto_plugin_version "
if [ "$got" != "$want" ]; then
	echo "exports: expected '$want', got '$got'" >&2
	exit 1
fi
echo "exports: ok ($want)"
