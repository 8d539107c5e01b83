#!/bin/sh
# Writes the conf.d snippet /etc/mosquitto/conf.d/eventhook.conf to standard
# output, with the plugin path of the distribution filled in.
#   sh packaging/gen_snippet.sh PLUGIN_PATH DOCDIR
set -eu
[ $# -eq 2 ] || { echo "usage: gen_snippet.sh PLUGIN_PATH DOCDIR" >&2; exit 2; }
sed -e "s|@PLUGIN@|$1|" -e "s|@DOCDIR@|$2|" "$(dirname "$0")/eventhook.conf.in"
