"""How many events the batching local sink puts in one message at full speed.

Under valgrind the broker runs tens of times slower, so a linger of a few
milliseconds collects far fewer events per message than on the real
machine, and the callgrind counts (bench/callgrind.sh) would charge each
event a larger share of the broker's per-message work than it pays at full
speed. This measures the real figure: the broker with the file and local
sinks, the local sink batching (BENCH_LOCAL, as in throughput.py), driven
as fast as it goes with throughput.py's load, and a subscriber on the local
sink's topic that prints each message's length.

Events per message = the local sink's delivered events / messages received.
The subscriber costs the broker the delivery of every message, which slows
it and so makes the batches smaller: the figure errs low, never high.

  BENCH_MODES (publish0), BENCH_SECONDS (3), BENCH_CONC (32), BENCH_ROUNDS (3)
  BENCH_LOCAL ("local_topic $events/all;local_batch_max 1000;local_batch_linger_ms 5")

Prints a table; asserts nothing.
"""
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODES = os.environ.get("BENCH_MODES", "publish0").split()
SECS = float(os.environ.get("BENCH_SECONDS", "3"))
CONC = int(os.environ.get("BENCH_CONC", "32"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
# bench/callgrind.sh's batched configurations use the same options.
DEFAULT = "local_topic $events/all;local_batch_max 1000;local_batch_linger_ms 5"
LOCAL = [o.strip() for o in os.environ.get("BENCH_LOCAL", DEFAULT).split(";") if o.strip()]


def one(mode, local=LOCAL, secs=SECS):
    """(loadgen result, the local sink's counters, each message's length)
    for one full-speed load of `mode` against file + local sinks."""
    topic = next((o.split(None, 1)[1] for o in local if o.startswith("local_topic ")), None)
    if not topic or "{" in topic:
        sys.exit("local_batches.py: the local sink needs a local_topic without placeholders, e.g. $events/all")
    with benchlib.Broker(benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl"] + local)) as b:
        out = open(os.path.join(b.dir, "lengths"), "w")
        sub = subprocess.Popen(["mosquitto_sub", "-p", str(b.port), "-h", "127.0.0.1", "-i", "lbsub",
                                "-t", topic, "-F", "%l"], stdout=out, stderr=subprocess.DEVNULL)
        time.sleep(0.5)  # subscribed well before the load starts
        res = benchlib.loadgen(b, mode, secs=secs, conc=CONC)
        time.sleep(0.5)  # the last lingering message
        sub.terminate()
        sub.wait()
        out.close()
        b.stop()
        local = b.sink_counters().get("local", {})
        lengths = [int(x) for x in open(os.path.join(b.dir, "lengths")).read().split()]
    return res, local, lengths


def main():
    print("## Local sink batching at full speed: %s, %d round(s) x %.0f s, %d connections in flight"
          % ("; ".join(LOCAL), ROUNDS, SECS, CONC))
    print("machine: " + benchlib.machine())
    rows = []
    for mode in MODES:
        for r in range(ROUNDS):
            res, local, lengths = one(mode)
            msgs = len(lengths)
            events = local.get("delivered", 0)
            rows.append([mode, str(r + 1), "%.0f" % res["rate"], str(events), str(msgs),
                         "%.0f" % (events / msgs) if msgs else "-",
                         "%.0f" % (sum(lengths) / msgs) if msgs else "-",
                         "%.0f" % (sum(lengths) / events) if events else "-",
                         str(local.get("dropped", 0))])
    print(benchlib.table(["mode", "round", "cycles/s", "local events delivered", "messages received",
                          "events per message", "bytes per message", "bytes per event", "local dropped"], rows))


if __name__ == "__main__":
    main()
