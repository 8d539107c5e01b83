"""The broker thread's CPU per cycle with the plugin against without, timed
natively, in pairs that run at the same time: the figure bench/spare_cores.py
(counted) and bench/native_share.py (sampled) estimate.

With cores to spare for the sink threads, the libraries and the peers, the
broker's main thread bounds the rate, so the rate against the plugin-free
broker is the inverse of that thread's CPU per cycle against the plugin-free
broker's. That CPU is the scheduler's own count for the thread (schedstat,
in ns, read by bench/loadgen), so it holds everything: our callbacks,
glibc's paths once the process has threads, the kernel's work in every
system call, cache misses. It leaves out the other threads' CPU, which such
a machine runs elsewhere.

On this project's 2-core VM one broker's CPU per cycle moves by 10 to 40 %
from one second to the next with the host's load, in runs back to back too.
So each round runs two brokers at once, a plugin-free one and the one
measured, their main threads sharing one core (CPU 0) and each driven by its
own generator on the other core: whatever slows the host slows both alike,
and their ratio holds still. Each round starts a new pair for every row,
the rows one after the other: a broker process's own luck (where its memory
landed) moves a row by a point or more, so it has to vary between rounds for
the interval to hold it. A first row measures a second plugin-free
broker the same way, the method's own noise and bias. The table gives the
median of BENCH_ROUNDS rounds and an interval for it from order statistics
(no assumption on the noise's shape; with 8 rounds the 2nd and 7th, which
hold the median with 93 % probability).

Sharing a core, each broker gets about half of it and idles whenever its
generator is late, which the brokers' CPU per cycle includes alike. The
sinks' peers are unreachable (a closed port), as in spare_cores.py: their
events wait in the rings, all the broker thread does for them. The file
sink writes to a RAM-backed directory.

Five rows load bench/null_plugin.c: the libraries the plugin links; libcurl
alone, which the first http sink loads (docs/performance.md, "What loading
libcurl costs"); the plugin's libraries with the callbacks idle registers
(BASIC_AUTH, DISCONNECT, TICK, EXT_AUTH_START) doing nothing, the broker's
own dispatch; with one idle thread, the cost of a second thread's mere
existence to the broker's thread; and the same with that thread holding its
own file descriptor table (docs/performance.md, "The broker thread timed
natively, in pairs").

BENCH_OTHER_PLUGIN=path/to/mosquitto_eventhook.so adds, after each row that
loads the plugin, the same row with that build (" [other build]"): a change
measured against the code before it in the same run, e.g. from
`git worktree add /tmp/before <commit> && make -C /tmp/before`.

    python3 bench/paired_cpu.py   (BENCH_MODES="cycle publish0 publish1",
                                   BENCH_ROUNDS=8, BENCH_SECONDS=2, BENCH_CONC=32,
                                   BENCH_ONLY_ROWS: row names separated by ;,
                                   BENCH_OTHER_PLUGIN)
"""
import math
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODES = os.environ.get("BENCH_MODES", "cycle publish0 publish1").split()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "8"))
SECS = float(os.environ.get("BENCH_SECONDS", "2"))
WARMUP = 0.7  # seconds of load before each measured round, on fresh brokers
CONC = int(os.environ.get("BENCH_CONC", "32"))
FILE = benchlib.FILE_ALL
THREE = benchlib.FILE_HTTP_KAFKA
FOUR = benchlib.FILE_HTTP_KAFKA_MQTT
BATCH = benchlib.LOCAL_BATCH
NULL = "plugin " + benchlib.NULL_PLUGIN
CONFIGS = [
    ("none (control)", []),
    ("the plugin's libraries only", [NULL]),
    ("libcurl alone (loaded by an http sink)", ["plugin " + benchlib.NULL_PLUGIN_CURL]),
    ("the libraries and idle's four callbacks, doing nothing",
     [NULL, "plugin_opt_register basic_auth,disconnect,tick,ext_auth_start"]),
    ("no sink interested (idle)", benchlib.plugin_lines(benchlib.IDLE_OPTS)),
    ("one idle thread", [NULL, "plugin_opt_thread idle"]),
    ("one idle thread, own file table", [NULL, "plugin_opt_thread private"]),
    ("file", benchlib.plugin_lines(FILE)),
    ("file + local batching", benchlib.plugin_lines(FILE + BATCH)),
    ("file, http, kafka", benchlib.plugin_lines(THREE)),
    ("file, http, kafka, local batching", benchlib.plugin_lines(THREE + BATCH)),
    ("file, http, kafka, mqtt", benchlib.plugin_lines(FOUR)),
    ("all five, local batching", benchlib.plugin_lines(FOUR + BATCH)),
]
if os.environ.get("BENCH_ONLY_ROWS"):
    wanted = [w.strip() for w in os.environ["BENCH_ONLY_ROWS"].split(";")]
    CONFIGS = [c for c in CONFIGS if c[0] in wanted]
CONFIGS = benchlib.with_other_build(CONFIGS)


def interval_rank(n):
    """k such that the order statistics k and n-1-k (0-based) bound the
    median with about 95 % probability, and that probability exactly."""
    k = max(0, int(math.floor((n - 1.96 * math.sqrt(n)) / 2.0)))
    below = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return k, 1 - 2 * below


def median_interval(xs):
    """The median and a distribution-free interval for it (interval_rank)."""
    xs = sorted(xs)
    k, _ = interval_rank(len(xs))
    return benchlib.median(xs), xs[k], xs[len(xs) - 1 - k]


def pair(base, other, mode, secs=SECS):
    """One round: both brokers loaded at once; microseconds of each main
    thread's CPU per cycle."""
    got = {}

    def drive(key, broker):
        try:
            got[key] = benchlib.loadgen(broker, mode, secs=secs, conc=CONC, warmup=0.3)
        except Exception as e:  # reported below, after both ended
            got[key] = e

    threads = [threading.Thread(target=drive, args=(k, b)) for k, b in (("base", base), ("other", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = []
    for key in ("base", "other"):
        g = got[key]
        if isinstance(g, Exception):
            raise g
        if not g.get("cycles") or not g.get("broker_thread_cpu"):
            raise RuntimeError("no cycle or no CPU measured: " + g["text"])
        out.append(1e6 * g["broker_thread_cpu"] / g["cycles"])
    return out


def main():
    for so in (benchlib.NULL_PLUGIN, benchlib.NULL_PLUGIN_CURL):
        if not os.path.exists(so):
            sys.exit("needs %s: make BUILD=%s %s" % (so, benchlib.BUILD, os.path.relpath(so, benchlib.ROOT)))
    if not benchlib.BROKER_CPU:
        sys.exit("needs pinning (BENCH_PIN=1 and 2 CPUs or more): the pair shares CPU 0")
    print("## The broker thread's CPU per cycle against a plugin-free broker running at the same time "
          "(%d rounds of %.0f s per row and mode)" % (ROUNDS, SECS))
    print("machine: " + benchlib.machine())
    print()
    rows = []
    for mode in MODES:
        ratios = {name: [] for name, _ in CONFIGS}
        base_us = {name: [] for name, _ in CONFIGS}
        other_us = {name: [] for name, _ in CONFIGS}
        # Rounds outside, rows inside, and a new pair of brokers for every
        # round: what stays fixed for the life of a process (where its
        # memory landed, which cache sets its hot lines share) varies
        # between rounds like the rest, so the interval covers it, and a
        # drift of the host weighs on every row alike.
        for r in range(ROUNDS):
            for name, lines in CONFIGS:
                base, other = benchlib.Broker([]), benchlib.Broker(lines)
                try:
                    base.start()
                    other.start()
                    # a first short load: the sinks start their threads at
                    # the first event, and the pinning catches them
                    pair(base, other, mode, secs=WARMUP)
                    b, o = pair(base, other, mode)
                finally:
                    base.discard()
                    other.discard()
                base_us[name].append(b)
                other_us[name].append(o)
                ratios[name].append(o / b)
                print("round %d %s %s: %.1f us per cycle vs %.1f, ratio %.3f" % (r + 1, mode, name, o, b, o / b),
                      flush=True)
        for name, _ in CONFIGS:
            med, lo, hi = median_interval(ratios[name])
            rows.append([mode, name, "%.1f / %.1f" % (benchlib.median(other_us[name]), benchlib.median(base_us[name])),
                         "%.3f (%.3f-%.3f)" % (med, lo, hi), "%.3f (%.3f-%.3f)" % (1 / med, 1 / hi, 1 / lo)])
    cover = "%.0f %% interval" % (100 * interval_rank(ROUNDS)[1])
    print()
    print(benchlib.table(["mode", "plugin, events *", "broker thread us/cycle, this / plugin-free (medians)",
                          "CPU per cycle vs plugin-free (%s)" % cover,
                          "implied rate with cores to spare (%s)" % cover], rows))
    print()
    print("The implied rate is the inverse of the CPU ratio: what the broker thread's own work allows "
          "when nothing else needs its core.")


if __name__ == "__main__":
    main()
