#!/bin/sh
# `make bench`: the core's benchmarks, then every sink's bench/bench_*.sh
# and bench/bench_*.py.
# Reports, never fails on a number. Environment knobs (defaults in brackets):
#   BENCH_ROUNDS [5] BENCH_SECONDS [4] BENCH_CONC [32] BENCH_MODES [cycle publish0 publish1]
#   BENCH_PIN [1; 0: no CPU pinning]  BENCH_ALL [1]  BENCH_EVERY [1]  BENCH_EVERY_EXTRA [options for "every", ;-separated]
#   CG_CYCLES [1000]   BENCH_ONLY: space-separated subset of
#   "throughput callgrind idle spare native paired profile latency wakeups memory stop sinks"
set -eu
BUILD=${BUILD:-build}
export BUILD
here=$(cd "$(dirname "$0")" && pwd)
only=${BENCH_ONLY:-throughput callgrind idle spare native paired profile latency wakeups memory stop sinks}
want() { case " $only " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
echo "# mosquitto-eventhook benchmarks, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git -C "$here" describe --always --dirty 2>/dev/null || echo unknown)"
echo
want throughput && { /usr/bin/python3 "$here/throughput.py"; echo; }
want callgrind && { sh "$here/callgrind.sh"; echo; }
want idle && { /usr/bin/python3 "$here/idle_cost.py"; echo; }
want spare && { /usr/bin/python3 "$here/spare_cores.py"; echo; }
want native && { /usr/bin/python3 "$here/native_share.py"; echo; }
want paired && { /usr/bin/python3 "$here/paired_cpu.py"; echo; }
want profile && { /usr/bin/python3 "$here/profile_diff.py"; echo; }
want latency && { /usr/bin/python3 "$here/latency.py"; echo; }
want wakeups && { /usr/bin/python3 "$here/wakeups.py"; echo; }
want memory && { /usr/bin/python3 "$here/memory.py"; echo; }
want stop && { /usr/bin/python3 "$here/stop_time.py"; echo; }
if want sinks; then
	# Each sink's own benchmark, with its own baseline measured in the same
	# run (docs/performance-<sink>.md).
	for s in "$here"/bench_*.sh "$here"/bench_*.py; do
		[ -e "$s" ] || continue
		echo "## $(basename "$s")"
		case "$s" in
		*.py) /usr/bin/python3 "$s" || echo "$(basename "$s") failed (exit $?)" ;;
		*) sh "$s" || echo "$(basename "$s") failed (exit $?)" ;;
		esac
		echo
	done
fi
