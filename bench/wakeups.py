"""System calls the plugin makes on the broker thread: the ring wakes a
sleeping sink thread (or, with two sinks, the fan-out thread) with FUTEX_WAKE, so the number of futex calls by the
broker's main thread per enqueued event says how often a commit found its
consumer asleep. Counted with perf's syscalls:sys_enter_futex tracepoint on
the main thread only, for the whole life of the load; the no-plugin row is
the broker's own count (normally 0).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SECS = float(os.environ.get("BENCH_SECONDS", "4"))
FUTEX = "syscalls:sys_enter_futex"
MODERATE = float(os.environ.get("BENCH_LATENCY_RATE", "500"))
CONFIGS = [
    ("none", []),
    ("file", benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl"])),
    ("file+local", benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl",
                                          "local_topic $events/{event}/{clientid}"])),
    # The broker thread fills both rings itself: it wakes two sink threads
    # instead of the fan-out thread.
    ("file+local, fanout_thread off", benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl",
                                                             "local_topic $events/{event}/{clientid}",
                                                             "fanout_thread off"])),
]


def main():
    if not benchlib.tracepoints_work(FUTEX):
        print("## Wake-ups: skipped (perf with syscall tracepoints is not available)")
        return
    print("## Wake-ups: futex calls on the broker's main thread per enqueued event (publish0, events '*')")
    print()
    rows = []
    for label, rate in (("moderate (%.0f cycles/s)" % MODERATE, MODERATE), ("maximum", 0)):
        for name, lines in CONFIGS:
            with benchlib.Broker(lines) as b:
                with benchlib.Tracepoints(b.proc.pid, [FUTEX], b.dir) as tp:
                    r = benchlib.loadgen(b, "publish0", secs=SECS, conc=32, args=["-r", str(rate)] if rate else [])
                futex = tp.counts[FUTEX]
                b.stop()
                enq = sum(s["enqueued"] for s in b.sink_counters().values())
            rows.append([name, label, "%.0f" % r["events_rate"], enq, futex, "%.3f" % (futex / enq) if enq else "-"])
            print("%s %s: %d futex calls, %d events enqueued" % (name, label, futex, enq), flush=True)
    print()
    print(benchlib.table(["sinks", "load", "events/s", "enqueued (all sinks)", "futex calls on broker thread",
                          "per enqueued event"], rows))


if __name__ == "__main__":
    main()
