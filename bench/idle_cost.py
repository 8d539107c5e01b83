"""What the plugin costs the broker thread when no sink wants the load's
events (throughput.py's *idle*), from counts rather than from rates.

A rate ratio on this VM is known to about +-1 % (docs/performance.md), the
size of the effect in question. So for each of throughput.py's load shapes
(32 connections in flight; cycle, publish0, publish1) this measures, for a
broker without the plugin (none) and with it (idle):

- system calls per cycle on the broker's main thread (perf's
  raw_syscalls:sys_enter tracepoint, whole load), and how many of them are
  epoll_wait: the only call whose count depends on timing (how many
  sockets one wake-up finds ready);
- the split of that thread's CPU time between user space and the kernel
  (/proc/<pid>/task/<pid>/stat utime and stime over the load);
- user-space instructions per cycle, and those inside the plugin's
  callbacks (bench/callgrind.sh with the same load shape);
- when strace is installed, every system call's count over exactly 2000
  cycles, idle against none (printed before the table).

If idle makes the same system calls apart from epoll_wait, the kernel
does the same work for it, and its extra CPU per cycle is its extra
user-space work: about user share x (instruction ratio - 1), assuming the
broker's instructions and ours take the same time each on average. (The
extra instructions are the larger of the whole cycle's difference and our
callbacks' own count: the first moves by about 1 % from run to run.) The
last columns print that estimate and the rate ratio it implies while the
broker thread is the bottleneck, next to what the same estimate gives if
each instruction of ours cost five times the broker's average.

    python3 bench/idle_cost.py     (BENCH_SECONDS=3, BENCH_CG_CYCLES=2000)
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SECS = float(os.environ.get("BENCH_SECONDS", "3"))
CG_CYCLES = int(os.environ.get("BENCH_CG_CYCLES", "2000"))
MODES = os.environ.get("BENCH_MODES", "cycle publish0 publish1").split()
LOAD = {"cycle": "-c 32 -m cycle", "publish0": "-c 32 -m publish -q 0 -N 10",
        "publish1": "-c 32 -m publish -q 1 -N 10"}
CONFIGS = [("none", []), ("idle", benchlib.plugin_lines(benchlib.IDLE_OPTS))]
SYSCALLS, EPOLL = "raw_syscalls:sys_enter", "syscalls:sys_enter_epoll_wait"
STRACE_CYCLES = 2000


def real_run(lines, mode):
    """System calls per cycle and the user share of the main thread's CPU."""
    with benchlib.Broker(lines) as b:
        with benchlib.Tracepoints(b.proc.pid, [SYSCALLS, EPOLL], b.dir) as tp:
            u0, s0 = benchlib.thread_times(b.proc.pid)
            r = benchlib.loadgen(b, mode, secs=SECS, warmup=0)
            u1, s1 = benchlib.thread_times(b.proc.pid)
            time.sleep(0.2)
        calls, epoll = tp.counts[SYSCALLS], tp.counts[EPOLL]
        b.stop()
    user, system = u1 - u0, s1 - s0
    return {"syscalls": calls / r["all_cycles"], "epoll": epoll / r["all_cycles"],
            "user_share": user / (user + system) if user + system else 0.0}


def strace_counts(lines, mode, cycles=STRACE_CYCLES):
    """{system call: count} on the broker's main thread over a load of
    exactly `cycles` cycles, from strace -c (slow, but every call counted)."""
    with benchlib.Broker(lines) as b:
        out = os.path.join(b.dir, "strace.txt")
        st = subprocess.Popen(["strace", "-c", "-o", out, "-p", str(b.proc.pid)], stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        benchlib.loadgen(b, mode, secs=0, warmup=0, args=["-n", str(cycles)])
        time.sleep(0.3)
        st.send_signal(signal.SIGINT)
        st.wait()
        b.stop()
        counts = {}
        for line in open(out):
            f = line.split()
            if len(f) >= 5 and f[-1] != "total" and f[3].isdigit():
                counts[f[-1]] = int(f[3])
    return counts


def counted(mode):
    """User-space instructions per cycle (whole main thread, and inside our
    callbacks) for none and idle, from bench/callgrind.sh."""
    with tempfile.TemporaryDirectory(prefix="eh-idle-cost.") as tmp:
        report = os.path.join(tmp, "report.jsonl")
        env = dict(os.environ, CG_CONFIGS="none idle", CG_LOAD=LOAD[mode], CG_REPORT=report)
        subprocess.run(["sh", os.path.join(benchlib.ROOT, "bench", "callgrind.sh"), str(CG_CYCLES)],
                       env=env, stdout=subprocess.DEVNULL, check=True)
        runs = {r["name"]: r for r in map(json.loads, open(report))}
    return {name: {"ir": r["total"] / r["cycles"], "ours": sum(v[0] for v in r["cost"].values()) / r["cycles"]}
            for name, r in runs.items()}


def main():
    if not benchlib.tracepoints_work(SYSCALLS, EPOLL):
        print("## Idle cost: skipped (perf with syscall tracepoints is not available)")
        return
    print("## No sink interested (idle): what the plugin adds per cycle on the broker thread, counted")
    print()
    rows = []
    for mode in MODES:
        real = {name: real_run(lines, mode) for name, lines in CONFIGS}
        ir = counted(mode)
        share = real["none"]["user_share"]
        ir_ratio = ir["idle"]["ir"] / ir["none"]["ir"]
        # The kernel's part is taken to be none's: idle makes the same
        # system calls (the table and strace show it; epoll_wait's count
        # follows timing). The extra user-space work is the larger of the
        # whole cycle's difference, which moves by about 1 % between runs
        # of the same broker, and our callbacks' own count.
        ours = ir["idle"]["ours"] / ir["none"]["ir"]
        extra = max(ir_ratio - 1, ours)
        cpu = 1 + share * extra
        cpu5 = 1 + share * (extra + 4 * ours)
        rows.append([mode, "%.2f / %.2f" % (real["none"]["syscalls"] - real["none"]["epoll"],
                                             real["idle"]["syscalls"] - real["idle"]["epoll"]),
                     "%.2f / %.2f" % (real["none"]["epoll"], real["idle"]["epoll"]),
                     "%.1f %%" % (100 * share), "%.0f / %.0f (%.4f)" % (ir["none"]["ir"], ir["idle"]["ir"], ir_ratio),
                     "%.0f" % ir["idle"]["ours"], "%.4f" % cpu, "%.3f" % (1 / cpu), "%.3f" % (1 / cpu5)])
        if shutil.which("strace"):
            a, b = (strace_counts(lines, mode) for _, lines in CONFIGS)
            diff = ["%s %+d" % (k, b.get(k, 0) - a.get(k, 0)) for k in sorted(set(a) | set(b))
                    if a.get(k, 0) != b.get(k, 0)]
            print("%s: strace -c over %d cycles, idle against none: %d kinds of call, %s" % (
                mode, STRACE_CYCLES, len(set(a) | set(b)), "differing: " + ", ".join(diff) if diff else "every count the same"),
                flush=True)
        print("%s: done" % mode, flush=True)
    print()
    print(benchlib.table(["mode", "system calls per cycle but epoll_wait, none / idle",
                          "epoll_wait per cycle, none / idle", "user share of none's CPU",
                          "user-space Ir per cycle, none / idle (ratio)", "Ir in our callbacks per cycle",
                          "estimated CPU per cycle vs none", "implied rate vs none",
                          "the same if ours cost 5x per instruction"], rows))
    print()
    print("System calls from a %.0f s load at full speed; instructions from callgrind, %d cycles of the same shape."
          % (SECS, CG_CYCLES))


if __name__ == "__main__":
    main()
