"""How long the broker takes to stop (SIGTERM to exit) with each sink.

For each configuration, BENCH_STOPS (default 10) brokers are started, given
a short load, and stopped; the time from SIGTERM to the process's exit is
taken with a blocking waitpid. Two cases:
  quiet       the load ended 0.3 s before the SIGTERM (nothing outstanding)
  under load  the SIGTERM arrives while the generator is still running, so
              the sinks drain what they hold (shutdown_timeout_ms bounds it)
The last columns add up each sink's "left undelivered at shutdown" and
"failed" counts from the plugin's stop lines: a stop that loses nothing
shows 0 / 0.

    BUILD=build python3 bench/stop_time.py
"""
import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

STOPS = int(os.environ.get("BENCH_STOPS", "10"))
LOAD = ["-c", "8", "-r", "500", "-m", "publish", "-q", "1"]


def configs(peers):
    def only(sink):
        return [o for o in peers.sink_opts() if o.startswith(sink + "_")]
    base = ["events *"]
    return [
        ("none", None),
        ("file", base + ["file_path {dir}/events.jsonl"]),
        ("local", base + ["local_topic $events/{event}/{clientid}"]),
        ("http", base + only("http")),
        ("kafka", base + only("kafka")),
        ("mqtt", base + only("mqtt")),
        ("every", base + ["file_path {dir}/events.jsonl", "local_topic $events/{event}/{clientid}"]
         + peers.sink_opts()),
    ]


def one_stop(lines, under_load):
    """Seconds from SIGTERM to exit, and (left, failed) summed over sinks."""
    with benchlib.Broker(benchlib.plugin_lines(lines) if lines is not None else [], pin=False) as b:
        cmd = [benchlib.LOADGEN, "-p", str(b.port), "-d", "2" if under_load else "0.7", "-w", "0"] + LOAD
        gen = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if under_load:
            time.sleep(1.0)
        else:
            gen.wait()
            time.sleep(0.3)
        t0 = time.monotonic()
        b.proc.send_signal(signal.SIGTERM)
        b.proc.wait()
        took = time.monotonic() - t0
        if gen.poll() is None:
            gen.kill()
        gen.wait()
        counters = b.sink_counters()
    return took, sum(c["left"] for c in counters.values()), sum(c["failed"] for c in counters.values())


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))]


def main():
    print("## Broker stop time, SIGTERM to exit, %d stops per row" % STOPS)
    print("machine: " + benchlib.machine())
    print()
    rows = []
    with benchlib.Peers() as peers:
        for name, lines in configs(peers):
            for under_load in (False, True):
                times, left, failed = [], 0, 0
                for _ in range(STOPS):
                    t, l, f = one_stop(lines, under_load)
                    times.append(1000 * t)
                    left += l
                    failed += f
                rows.append([name, "under load" if under_load else "quiet",
                             "%.0f" % benchlib.median(times), "%.0f" % pct(times, 0.9), "%.0f" % max(times),
                             "-" if lines is None else "%d / %d" % (left, failed)])
                print("%-6s %-10s %s" % (name, rows[-1][1], " ".join("%.0f" % t for t in times)), flush=True)
    print()
    print(benchlib.table(["sinks", "case", "median ms", "p90 ms", "max ms", "left / failed (all stops)"], rows))


if __name__ == "__main__":
    main()
