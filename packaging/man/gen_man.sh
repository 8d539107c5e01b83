#!/bin/sh
# Writes the man page mosquitto-eventhook(7) to standard output.
#
#   sh packaging/man/gen_man.sh build/eh_optdoc PLUGIN_PATH
#
# The OPTIONS section is the output of `eh_optdoc --man`, generated from the
# same option tables as docs/configuration.md, so the page cannot drift from
# what the parser accepts. The EVENTS section comes from events.txt beside
# this script. PLUGIN_PATH is where the package installs the plugin (it
# differs between Debian and Fedora). The date is SOURCE_DATE_EPOCH when set
# (dpkg-buildpackage sets it from the changelog), so builds are reproducible.
set -eu
if [ $# -ne 2 ]; then
	echo "usage: gen_man.sh path/to/eh_optdoc PLUGIN_PATH" >&2
	exit 2
fi
optdoc=$1
plugin=$2
here=$(dirname "$0")
top=$here/../..
version=$(sed -n 's/^#define EH_VERSION "\(.*\)"$/\1/p' "$top/plugin/eh_version.h")
[ -n "$version" ] || { echo "gen_man.sh: no EH_VERSION in plugin/eh_version.h" >&2; exit 1; }
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(date +%s)}" +%Y-%m-%d)
options=$("$optdoc" --man)

# roff-escape plain text: backslashes, then a leading dot or quote.
esc() {
	sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}

cat <<HEAD
.TH MOSQUITTO-EVENTHOOK 7 "$date" "mosquitto-eventhook $version" "Mosquitto plugins"
.SH NAME
mosquitto-eventhook \- Mosquitto plugin that publishes client activity as JSON events
.SH SYNOPSIS
In
.BR mosquitto.conf (5)
or a file in its
.BR include_dir :
.PP
.nf
.BI "plugin $plugin"
.BI plugin_opt_ "key value"
\&...
.fi
.SH DESCRIPTION
.B mosquitto-eventhook
is a plugin for the Mosquitto MQTT broker (2.0 and later, plugin API 5).
It turns what clients do (connect, disconnect, subscribe, publish, denied
access) into JSON events and delivers them to one or more sinks: a file of
JSON lines, topics of the broker itself, and any other sink compiled in,
each enabled by its first option below.
.PP
The plugin never changes a decision of the broker: it observes
authentication and access control without answering them.
The broker thread only copies each event into a bounded queue per sink;
a thread per sink delivers it, with batching and retries.
When a queue is full, new events for that sink are dropped and counted.
.PP
Options are given with
.B plugin_opt_
lines after the
.B plugin
line. Parsing is strict: an unknown key, a repeated key or a bad value
stops the broker at start with a message naming the key.
Trailing spaces and tabs are dropped from every value.
Secrets are read from files named in the configuration, never written in it.
.PP
Load the plugin once per scope (once per listener with
.BR per_listener_settings ).
Mosquitto 2.0 does not re-initialise plugins on SIGHUP: changed
.B plugin_opt_
lines take effect at the next restart; the plugin logs a warning naming
them, and one for each line of its block (file, line number, key) that
the broker will refuse at that restart, such as a key with no value.
SIGHUP only reopens the event file and re-reads the HTTP
sink's token and signing secret files.
.SH OPTIONS
$options
.SH EVENTS
Every event is one JSON object with the fields
.BR event ,
.BR id ,
.BR ts ,
.BR node ,
.B seq
and those of its type.
.B seq
increases by one for every event offered to a sink, dropped ones included,
so a gap seen by a consumer is exactly the dropped events.
Patterns such as
.BR client.* ,
.B message.*
and
.B *
select several types in the
.B _events
options.
HEAD
grep -v '^#' "$here/events.txt" | grep -v '^$' | while IFS='	' read -r name text; do
	printf '.TP\n.B %s\n' "$name"
	printf '%s\n' "$text" | esc
done
cat <<TAIL
.SH STATISTICS
Every
.B plugin_opt_stats_interval
seconds the counters of each sink are published, retained, under
.BI \$SYS/broker/eventhook/ sink /
.RB ( enqueued ,
.BR delivered ,
.BR failed ,
.BR dropped ,
.BR queued )
and they are logged when the broker stops.
.SH FILES
.TP
.I $plugin
The plugin.
.TP
.I /etc/mosquitto/conf.d/eventhook.conf
Configuration snippet installed with every line commented out: uncomment the
.B plugin
line and at least one sink, then restart the broker.
It is read when
.I /etc/mosquitto/mosquitto.conf
has
.BR "include_dir /etc/mosquitto/conf.d" .
.TP
.I /usr/share/doc/mosquitto-eventhook/examples/eventhook.conf
A commented example of every option.
.TP
.I /usr/share/doc/mosquitto-eventhook/
The documentation: events, configuration, capture and each sink.
.SH SEE ALSO
.BR mosquitto (8),
.BR mosquitto.conf (5),
.BR mosquitto_sub (1)
TAIL
