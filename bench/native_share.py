"""The broker thread's extra CPU per cycle with sinks on, from a native
profile: the cross-check of bench/spare_cores.py that callgrind cannot give.

callgrind counts instructions, each as one: a locked instruction (glibc's
paths for a process with threads take locks and atomics), a cache miss on a
ring line another core just read, or glibc's `rep movsb` (counted per byte,
or with CG_COPY=loop as the vector loop) all weigh what the broker's average
instruction weighs. This script samples the broker's main thread instead
(`perf record -e cpu-clock -t`, 4999 Hz, over a full-speed load) and reads
how its time splits between the kernel and user space.

With cores to spare the plugin adds no system call to that thread
(bench/wakeups.py), so if its kernel time per cycle stays what it is without
the plugin, the kernel's share falls exactly as the thread's CPU per cycle
grows:

    CPU per cycle vs none = kernel share (none) / kernel share (sinks)
    implied rate vs none  = the inverse

That assumption is the method's limit: a broker that runs slower serves more
sockets per wake-up, which could lower its kernel time per cycle and make the
plugin look dearer than it is. Counted and sampled, the two methods bracket
what 2 cores cannot time. The sinks' peers are unreachable (a closed port),
as in spare_cores.py: their events wait in the rings, all the broker thread
does for them. Also printed: the share of glibc's memmove (the batching local
sink's copies) and of the plugin's own code.

    python3 bench/native_share.py   (BENCH_MODES=publish0, BENCH_ROUNDS=3, BENCH_SECONDS=4)
"""
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODES = os.environ.get("BENCH_MODES", "publish0").split()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
SECS = float(os.environ.get("BENCH_SECONDS", "4"))
FILE = benchlib.FILE_ALL
FOUR = benchlib.FILE_HTTP_KAFKA_MQTT
BATCH = benchlib.LOCAL_BATCH
CONFIGS = [
    ("none", []),
    ("file", benchlib.plugin_lines(FILE)),
    ("file, http, kafka, mqtt", benchlib.plugin_lines(FOUR)),
    ("file + local batching", benchlib.plugin_lines(FILE + BATCH)),
    ("all five, local batching", benchlib.plugin_lines(FOUR + BATCH)),
    ("all five, local batching, fanout_thread off", benchlib.plugin_lines(FOUR + BATCH + ["fanout_thread off"])),
]


def shares(path):
    """Percent of the samples in the kernel, in memmove, in the plugin."""
    def report(sort):
        return subprocess.run(["perf", "report", "-i", path, "--stdio", "--sort", sort],
                              capture_output=True, text=True).stdout.splitlines()
    out = {"kernel": 0.0, "memmove": 0.0, "plugin": 0.0}
    for line in report("dso"):
        if line.startswith("#") or "%" not in line:
            continue
        pct = float(line.split("%")[0])
        if "[kernel.kallsyms]" in line:
            out["kernel"] = pct
        elif "mosquitto_eventhook" in line:
            out["plugin"] = pct
    for line in report("sym"):
        if not line.startswith("#") and "__memmove" in line:
            out["memmove"] += float(line.split("%")[0])
    return out


def sample(lines, mode):
    with benchlib.Broker(lines) as b:
        data = os.path.join(b.dir, "perf.data")
        rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "4999", "-t", str(b.proc.pid),
                                "-o", data, "--", "sleep", str(SECS + 0.5)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        benchlib.loadgen(b, mode, secs=SECS, conc=32, warmup=0.5)
        rec.wait()
        out = shares(data)
        b.stop()
    return out


def main():
    if subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "true"],
                      capture_output=True).returncode:
        print("## Native shares: skipped (perf record does not work here)")
        return
    print("## The broker thread's time by where it is spent (perf cpu-clock samples, full-speed load, "
          "%d round(s) of %.0f s per configuration, medians)" % (ROUNDS, SECS))
    print("machine: " + benchlib.machine())
    print()
    rows = []
    for mode in MODES:
        got = {name: [] for name, _ in CONFIGS}
        for r in range(ROUNDS):
            order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
            for name, lines in order:
                s = sample(lines, mode)
                got[name].append(s)
                print("round %d %s %s: kernel %.2f %%, memmove %.2f %%, plugin %.2f %%"
                      % (r + 1, mode, name, s["kernel"], s["memmove"], s["plugin"]), flush=True)
        base = benchlib.median([s["kernel"] for s in got["none"]])
        for name, _ in CONFIGS:
            k = benchlib.median([s["kernel"] for s in got[name]])
            rows.append([mode, name, "%.2f %%" % k, "%.2f %%" % (100 - k),
                         "%.2f %%" % benchlib.median([s["memmove"] for s in got[name]]),
                         "%.2f %%" % benchlib.median([s["plugin"] for s in got[name]]),
                         "%.3f" % (base / k), "%.3f" % (k / base)])
    print()
    print(benchlib.table(["mode", "sinks, events *", "kernel share", "user share", "memmove", "plugin code",
                          "CPU per cycle vs none", "implied rate"], rows))
    print()
    print("CPU per cycle and implied rate assume the kernel's time per cycle is the same with and without "
          "the plugin (see the docstring).")


if __name__ == "__main__":
    main()
