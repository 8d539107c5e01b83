"""Where the broker thread's extra time goes: a native profile of its main
thread with and without the plugin, by symbol, in microseconds of CPU per
cycle.

bench/paired_cpu.py times the whole difference; this script splits it.
Each round starts a fresh broker per configuration, drives it at full speed
with bench/loadgen (pinned as in the other benchmarks) and samples its main
thread with `perf record -e cpu-clock -t` at 4999 Hz. The samples give
each symbol's share of the thread's time; the thread's CPU per cycle is the
scheduler's count over the measured window (bench/loadgen, as in
paired_cpu.py), which perf's own start-up delay does not shift. A symbol's
share times that is its CPU per cycle, summed over the rounds by weight of
cycles. The table lists the symbols whose CPU per cycle moved most between
the first configuration and each other one, and the totals by library.

The kernel's rows move by several percent between rounds (the host's load,
how many sockets one wake-up serves): read them over several rounds, and
the user-space rows (the plugin, glibc, the broker) first. A symbol that
exists only with the plugin (ours, glibc's cancellation bookkeeping for a
process with threads) is the firmest figure.

    python3 bench/profile_diff.py   (BENCH_MODES=publish0, BENCH_ROUNDS=2,
                                     BENCH_SECONDS=8, BENCH_TOP=25,
                                     BENCH_PROFILE="none;file",
                                     BENCH_OTHER_PLUGIN=path/to/other.so)

BENCH_PROFILE names the configurations, the first being the reference:
none, idle, file, four (file, http, kafka, mqtt against a closed port),
all (the four and the local sink batching). BENCH_OTHER_PLUGIN adds, after
each configuration that loads the plugin, the same one with that build.
"""
import collections
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

MODES = os.environ.get("BENCH_MODES", "publish0").split()
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))
SECS = float(os.environ.get("BENCH_SECONDS", "8"))
TOP = int(os.environ.get("BENCH_TOP", "25"))
HZ = 4999
KNOWN = {
    "none": [],
    "idle": benchlib.plugin_lines(benchlib.IDLE_OPTS),
    "file": benchlib.plugin_lines(benchlib.FILE_ALL),
    "four": benchlib.plugin_lines(benchlib.FILE_HTTP_KAFKA_MQTT),
    "all": benchlib.plugin_lines(benchlib.FILE_HTTP_KAFKA_MQTT + benchlib.LOCAL_BATCH),
}


def configs():
    names = [n.strip() for n in os.environ.get("BENCH_PROFILE", "none;file").split(";") if n.strip()]
    for n in names:
        if n not in KNOWN:
            sys.exit("BENCH_PROFILE: unknown configuration %r (known: %s)" % (n, ", ".join(KNOWN)))
    return benchlib.with_other_build([(n, KNOWN[n]) for n in names])


def samples_by_symbol(path):
    """{(dso, symbol): samples} from a perf.data of one thread."""
    rep = subprocess.run(["perf", "report", "-i", path, "--stdio", "--no-children", "--sort", "dso,sym",
                          "-F", "sample,dso,sym"], capture_output=True, text=True)
    if rep.returncode:
        raise RuntimeError("perf report failed: " + rep.stderr.strip())
    got = collections.Counter()
    for line in rep.stdout.splitlines():
        parts = line.split(None, 2)
        if line.startswith("#") or len(parts) < 3 or not parts[0].isdigit():
            continue
        sym = re.sub(r"^\[[.k]\] ", "", parts[2].strip())
        got[(parts[1], sym)] += int(parts[0])
    return got


def profile(lines, mode):
    """({(dso, symbol): share of the samples}, cycles, broker thread CPU
    seconds in the measured window) of one fresh broker under full load."""
    b = benchlib.Broker(lines)
    rec = None
    try:
        b.start()
        data = os.path.join(b.dir, "perf.data")
        # a first short load: lazy sink threads start and get pinned
        benchlib.loadgen(b, mode, secs=0.5, warmup=0.2)
        rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", str(HZ), "-t", str(b.proc.pid),
                                "-o", data, "--", "sleep", str(SECS + 0.3)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        res = benchlib.loadgen(b, mode, secs=SECS, conc=32, warmup=0.3)
        _, err = rec.communicate()
        if rec.returncode:
            raise RuntimeError("perf record failed: " + err.strip())
        got = samples_by_symbol(data)
    finally:
        if rec and rec.poll() is None:
            rec.kill()
            rec.wait()
        b.discard()
    total = sum(got.values())
    if not total or not res.get("cycles") or not res.get("broker_thread_cpu"):
        raise RuntimeError("no samples, cycle or CPU measured: " + res["text"])
    return {k: v / total for k, v in got.items()}, res["cycles"], res["broker_thread_cpu"]


def short(dso):
    return os.path.basename(dso.strip("[]")) if dso.startswith("[") else os.path.basename(dso)


def main():
    if subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", "/dev/null", "true"],
                      capture_output=True).returncode:
        print("## Profile difference: skipped (perf record does not work here)")
        return
    cfgs = configs()
    print("## The broker thread's CPU per cycle by symbol (perf cpu-clock samples at %d Hz, full-speed load, "
          "%d round(s) of %.0f s per configuration, a fresh broker each)" % (HZ, ROUNDS, SECS))
    print("machine: " + benchlib.machine())
    for mode in MODES:
        # per configuration: {symbol: CPU seconds}, cycles; a symbol's CPU
        # in a round is its share of the samples times the thread's CPU
        cpu = {n: collections.Counter() for n, _ in cfgs}
        cycles = dict.fromkeys((n for n, _ in cfgs), 0.0)
        for r in range(ROUNDS):
            for name, lines in cfgs:
                share, cyc, secs = profile(lines, mode)
                cpu[name].update({k: v * secs for k, v in share.items()})
                cycles[name] += cyc
                print("round %d %s %s: %.1f us of broker-thread CPU per cycle over %.0f cycles"
                      % (r + 1, mode, name, 1e6 * secs / cyc, cyc), flush=True)
        us = {n: {k: v * 1e6 / cycles[n] for k, v in cpu[n].items()} for n, _ in cfgs}
        ref = cfgs[0][0]
        for name, _ in cfgs[1:]:
            a, b = us[ref], us[name]
            print()
            print("### %s: %s against %s, microseconds of broker-thread CPU per cycle" % (mode, name, ref))
            print()
            by_dso_a, by_dso_b = collections.Counter(), collections.Counter()
            for (dso, _), v in a.items():
                by_dso_a[short(dso)] += v
            for (dso, _), v in b.items():
                by_dso_b[short(dso)] += v
            rows = [["**all**", "", "%.2f" % sum(a.values()), "%.2f" % sum(b.values()),
                     "%+.2f" % (sum(b.values()) - sum(a.values()))]]
            for d in sorted(set(by_dso_a) | set(by_dso_b), key=lambda d: -abs(by_dso_b[d] - by_dso_a[d])):
                rows.append(["*" + d + "*", "", "%.2f" % by_dso_a[d], "%.2f" % by_dso_b[d],
                             "%+.2f" % (by_dso_b[d] - by_dso_a[d])])
            keys = sorted(set(a) | set(b), key=lambda k: -abs(b.get(k, 0) - a.get(k, 0)))
            for k in keys[:TOP]:
                rows.append([k[1], short(k[0]), "%.3f" % a.get(k, 0), "%.3f" % b.get(k, 0),
                             "%+.3f" % (b.get(k, 0) - a.get(k, 0))])
            print(benchlib.table(["symbol", "in", ref, name, "difference"], rows))
    print()
    print("Kernel symbols move by several percent from round to round; compare user-space rows first.")


if __name__ == "__main__":
    main()
