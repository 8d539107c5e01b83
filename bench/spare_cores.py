"""What each set of sinks costs the broker thread when the machine has cores to
spare for the sink threads, the libraries' threads and the peers: counted,
because on a 2-core machine it cannot be timed (docs/performance.md, "Why
every sink on is far from 0.97 here").

With cores to spare the broker's main thread bounds the rate. The plugin
adds no system call to that thread at load (bench/wakeups.py: no futex call
per event), so the kernel's part of its CPU stays the same and the extra is
user-space work:

    CPU per cycle vs none = 1 + user share x (instruction ratio - 1)
    implied rate vs none  = 1 / that

- user share: of the plugin-free broker thread's CPU at full speed
  (utime / (utime + stime) over a load of BENCH_SECONDS), per mode;
- instruction ratio: user-space instructions per cycle on the broker thread
  against the plugin-free broker's, from bench/callgrind.sh with the same
  load shape, sinks with unreachable peers (their events wait in the rings:
  all the broker thread ever does for them).

Two settings make the count match the processor rather than valgrind
(both printed with the table):

- CG_COPY=loop: glibc copies large blocks (from 8 KiB under valgrind) with
  `rep movsb`, which callgrind counts once per byte; the batching local
  sink's messages are copied twice (into the broker's allocation, then by
  Mosquitto). Counted as glibc's vector loop instead, about 0.095
  instructions per byte. Per byte overstates the copies; the loop's count
  understates them (natively about 12 bytes a cycle, docs/performance.md),
  so the batching rows err a little high.
- CG_LINGER (40 here): under valgrind the broker runs slower, so the local
  sink's 5 ms linger would collect far fewer events per message than at
  full speed. The script measures the full-speed figure
  (bench/local_batches.py, 1 round per mode) and prints both, with a
  warning when the valgrind batches are the larger: the count is then too
  kind to the batching rows.

The user share is measured in the same run (the median of BENCH_SHARE_ROUNDS
loads, 3, with the range and the broker thread's CPU per cycle), and it
moves with the host:
on this project's 2-core VM 8.8 / 13.5 / 10.4 % (cycle / publish0 /
publish1) on a quiet day, up to about 23 % while other jobs ran. Given
BENCH_USER_SHARE (e.g. "cycle=8.8 publish0=13.5 publish1=10.4") the table
also shows the implied rate at those shares.

    python3 bench/spare_cores.py   (BENCH_MODES, BENCH_SECONDS=3, BENCH_SHARE_ROUNDS=3,
                                    BENCH_CG_CYCLES=2000, BENCH_CG_LINGER=40,
                                    BENCH_CG_COPY=loop, BENCH_USER_SHARE)
"""
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402
import local_batches  # noqa: E402

SECS = float(os.environ.get("BENCH_SECONDS", "3"))
CG_CYCLES = int(os.environ.get("BENCH_CG_CYCLES", "2000"))
LINGER = os.environ.get("BENCH_CG_LINGER", "40")
COPY = os.environ.get("BENCH_CG_COPY", "loop")
MODES = os.environ.get("BENCH_MODES", "cycle publish0 publish1").split()
LOAD = {"cycle": "-c 32 -m cycle", "publish0": "-c 32 -m publish -q 0 -N 10",
        "publish1": "-c 32 -m publish -q 1 -N 10"}
SHARE_ROUNDS = int(os.environ.get("BENCH_SHARE_ROUNDS", "3"))


def given_shares():
    out = {}
    for kv in os.environ.get("BENCH_USER_SHARE", "").split():
        mode, _, pct = kv.partition("=")
        try:
            out[mode] = float(pct) / 100
        except ValueError:
            sys.exit('spare_cores.py: BENCH_USER_SHARE is "mode=percent ...", e.g. "publish0=13.5"; not %r' % kv)
        if mode not in LOAD or not 0 < out[mode] < 1:
            sys.exit("spare_cores.py: BENCH_USER_SHARE: %r is not a mode (%s) with a percentage"
                     % (kv, ", ".join(LOAD)))
    return out


GIVEN = given_shares()
ROWS = [("file", "file"), ("filelocal", "file + local"), ("fourrings", "file, http, kafka, mqtt"),
        ("every", "all five"), ("filelocalbatch", "file + local batching"),
        ("everybatch", "all five, local batching")]


def user_share(mode):
    """(user share, CPU microseconds per cycle) of the plugin-free broker
    thread over one full-speed load."""
    with benchlib.Broker([]) as b:
        u0, s0 = benchlib.thread_times(b.proc.pid)
        r = benchlib.loadgen(b, mode, secs=SECS, warmup=0)
        u1, s1 = benchlib.thread_times(b.proc.pid)
        b.stop()
    return (u1 - u0) / max(1, (u1 - u0) + (s1 - s0)), 1e6 * r["broker_thread_cpu"] / max(1, r["cycles"])


def counted(mode):
    with tempfile.TemporaryDirectory(prefix="eh-spare.") as tmp:
        report = os.path.join(tmp, "report.jsonl")
        env = dict(os.environ, CG_CONFIGS="none " + " ".join(n for n, _ in ROWS), CG_LOAD=LOAD[mode],
                   CG_REPORT=report, CG_LINGER=LINGER, CG_COPY=COPY)
        env.pop("CG_EXTRA", None)  # the table's configurations, as they are
        env.pop("CG_PAYLOAD", None)
        subprocess.run(["sh", os.path.join(benchlib.ROOT, "bench", "callgrind.sh"), str(CG_CYCLES)],
                       env=env, stdout=subprocess.DEVNULL, check=True)
        return {r["name"]: r for r in map(json.loads, open(report))}


def main():
    print("## Every sink with cores to spare: the broker thread's extra work, counted")
    print("machine: " + benchlib.machine())
    print("callgrind: %d cycles per mode, CG_COPY=%s, CG_LINGER=%s; sinks with peers unreachable"
          % (CG_CYCLES, COPY, LINGER))
    print()
    header = ["sinks, events *"]
    cells = {n: [label] for n, label in ROWS}
    batch, shares = [], []
    for mode in MODES:
        samples = [user_share(mode) for _ in range(SHARE_ROUNDS)]
        share = benchlib.median([x[0] for x in samples])
        shares.append([mode, "%.1f %%" % (100 * share), "%.1f to %.1f %%" % (100 * min(x[0] for x in samples),
                                                                         100 * max(x[0] for x in samples)),
                       "%.1f" % benchlib.median([x[1] for x in samples])])
        runs = counted(mode)
        base = runs["none"]["total"] / runs["none"]["cycles"]
        given = GIVEN.get(mode)
        header.append("%s: Ir ratio / implied rate at the measured user share %.1f %%%s"
                      % (mode, 100 * share, " / at %.1f %%" % (100 * given) if given else ""))
        for n, _ in ROWS:
            r = runs[n]
            ratio = r["total"] / r["cycles"] / base
            cells[n].append("%.3f / %.3f" % (ratio, 1 / (1 + share * (ratio - 1)))
                            + (" / %.3f" % (1 / (1 + given * (ratio - 1))) if given else ""))
        r = runs["filelocalbatch"]
        local = r["sinks"].get("local", {}).get("enqueued", 0)
        _, full, lengths = local_batches.one(mode, local_batches.DEFAULT.split(";"), secs=SECS)
        under = local / r["published"] if r.get("published") else 0
        real = full.get("delivered", 0) / len(lengths) if lengths else 0
        batch.append([mode, "%.0f" % under if under else "-", "%.0f" % real if real else "-",
                      "yes: the batching rows are too kind" if under > real else "no"])
        print("%s done: plugin-free broker %.0f Ir per cycle" % (mode, base), flush=True)
    print()
    print(benchlib.table(header, list(cells.values())))
    print()
    print("The plugin-free broker thread at full speed, %d load(s) of %.0f s per mode:" % (SHARE_ROUNDS, SECS))
    print()
    print(benchlib.table(["mode", "user share (median)", "range", "CPU us per cycle (median)"], shares))
    print()
    print("The local sink's batches (local_topic $events/all, local_batch_max 1000, linger 5 ms at full speed):")
    print()
    print(benchlib.table(["mode", "events per message under callgrind (file + local batching)",
                          "events per message at full speed (bench/local_batches.py)",
                          "larger under callgrind?"], batch))


if __name__ == "__main__":
    main()
