"""End-to-end latency from the broker callback to delivery at each core sink.

The plugin is configured with the file and local sinks and events '*'; a
load runs at a moderate rate and then at full speed. bench/loadgen measures,
for every event, arrival time minus the event's "ts" (the wall clock at
capture, in milliseconds):
  local  a subscriber to $events/# (the local sink publishes into the broker)
  file   inotify on the file sink's output, reading each new line

Resolution: "ts" is truncated to the millisecond at capture, so every sample
is too large by a uniformly distributed 0..1 ms (0.5 ms on average); sub-ms
values are not meaningful. Both clocks are the same machine's
CLOCK_REALTIME. Nothing is added to the product for this.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SECS = float(os.environ.get("BENCH_SECONDS", "4"))
MODERATE = float(os.environ.get("BENCH_LATENCY_RATE", "500"))  # cycles/s
LINES = benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl",
                               "local_topic $events/{event}/{clientid}"])


def main():
    print("## Latency, capture to delivery (file + local sinks, events '*', mode publish0: 15 events per cycle)")
    print("machine: " + benchlib.machine())
    print()
    rows = []
    for label, rate in (("moderate (%.0f cycles/s)" % MODERATE, MODERATE), ("maximum", 0)):
        for sink in ("local", "file"):
            with benchlib.Broker(LINES) as b:
                probe = ["-L", "$events/#"] if sink == "local" else ["-F", os.path.join(b.dir, "events.jsonl")]
                args = probe + (["-r", str(rate)] if rate else [])
                r = benchlib.loadgen(b, "publish0", secs=SECS, conc=32, args=args)
                b.stop()
                dropped = sum(s["dropped"] for s in b.sink_counters().values())
            ms = lambda k: "%.2f" % (r.get(k, float("nan")) / 1000)
            rows.append([sink, label, "%.0f" % r["events_rate"], "%d" % r.get("lat_n", 0), ms("lat_p50_us"),
                         ms("lat_p99_us"), ms("lat_p999_us"), ms("lat_max_us"), dropped])
            print("%s %s: %s" % (sink, label, r["text"].splitlines()[0]), flush=True)
    print()
    print(benchlib.table(["sink", "load", "events/s captured", "samples", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                          "dropped"], rows))
    print()
    print("Each value includes +0..1 ms from the millisecond truncation of ts.")


if __name__ == "__main__":
    main()
