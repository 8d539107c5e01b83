"""Throughput of the broker with and without the plugin, same load, same run.

Configurations (each with a fresh broker):
  none  no plugin: the baseline every ratio is against.
  idle  the plugin with one sink that wants no event the load produces
        (file sink, file_events client.connect_failed). Capture still runs
        for what that event needs: each connection is tracked in the client
        table from its authentication to its disconnect, TICK runs the
        chores; ACL and MESSAGE callbacks are not registered (nobody wants
        what they give), nothing is enqueued, and the file sink has no
        thread yet. This is the price of having the plugin loaded.
  all   the plugin with the file and local sinks and events '*': every
        client event and every publish is captured, enqueued, rendered to
        JSON on the sink threads, written to a file and published back into
        the broker (the local sink's publishes are work the broker does).
        BENCH_ALL=0 leaves it out.
  every all five sinks, events '*', against local peers started once for
        the run (benchlib.Peers): the file and local sinks as in "all", the
        HTTP sink posting batches to a Python HTTP server, the Kafka sink
        producing to librdkafka's mock cluster, the MQTT sink publishing to
        a second mosquitto. The peers share the non-broker CPUs with the
        generator. BENCH_EVERY=0 leaves it out; BENCH_EVERY_EXTRA adds
        options to it (";"-separated, e.g. "mqtt_qos 0").
  BENCH_LOCAL replaces the local sink's options in "all" and "every"
        (";"-separated; default "local_topic $events/{event}/{clientid}").

Modes: cycle (connect, subscribe, unsubscribe, disconnect), publish0 and
publish1 (the same plus 10 publishes at QoS 0 / QoS 1).

The configurations alternate inside each round (rotated every round) so that
drift on a shared machine spreads over all of them; the table has medians.
Two numbers per row: the rate (cycles/s, what a user sees; noisy on a busy
machine) and the broker main thread's CPU time per cycle (what the plugin
adds to the broker's single thread; steadier). The rate is compared twice:
ratio of the medians, and the median of each round's own ratio (the
configurations of one round run back to back, so that one cancels drift).
For "all" and "every" a last table splits the CPU time per cycle between
the broker's main thread, each sink's thread (named eh-<sink>), the
libraries' threads, each peer and the generator (loadgen -T and -Q), next
to what the machine's cores offer per cycle: when the total reaches that,
the machine, not the broker, sets the rate.

BENCH_PACED=1 adds, after each "every" run, a plugin-free broker driven at
the rate "every" reached (loadgen -r), and prints both brokers' main-thread
CPU per cycle at that same rate: a broker's CPU per cycle depends on its
load (how many connections one wake-up serves), so "every", which runs
below the plugin-free rate, is compared with "none" at full speed only with
that caveat.

BENCH_RATE=CYCLES drives every configuration at that many cycles per second
(loadgen -r) instead of as fast as it goes: below the slowest
configuration's rate every broker gets the same load, so the broker
thread's CPU per cycle ("CPU vs none") is compared at one rate. Not
necessarily in one pattern: the generator shares its core with the sinks
and peers, and how many connections one wake-up serves changes with what
else runs there (docs/performance.md, "Paced alike"). The rate columns
then only confirm the pace. Not combined with BENCH_PACED.

BENCH_CONTROL=1 adds "none2", a second plugin-free broker measured in each
round like the others: its ratios to "none" show what this machine can
resolve in that very run, the yardstick for idle's "at least 0.99".

BENCH_DIRECT=1 adds "all-direct": "all" with fanout_thread off, the broker
thread filling both sinks' rings itself instead of handing each event once
to the fan-out thread (docs/configuration.md).

BENCH_LIBS=1 adds "libs", a plugin that registers no callback but links
every library the plugin links (bench/null_plugin.c, built by make bench):
idle's distance from it is what the plugin's callbacks and start cost, its
distance from none what loading those libraries costs.

BENCH_PAYLOAD=BYTES sets the size of each publish's payload (loadgen -s;
default 32, at most 262144); BENCH_EXTRA adds plugin options to idle, all
and every (";"-separated, e.g. "payload_max_bytes 256").
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SECS = float(os.environ.get("BENCH_SECONDS", "4"))
CONC = int(os.environ.get("BENCH_CONC", "32"))
MODES = os.environ.get("BENCH_MODES", "cycle publish0 publish1").split()
PACED = os.environ.get("BENCH_PACED", "0") == "1"
PAYLOAD = os.environ.get("BENCH_PAYLOAD", "")  # loadgen -s: bytes per publish (32)
RATE = os.environ.get("BENCH_RATE", "")  # loadgen -r: cycles per second, every configuration

# BENCH_EXTRA: options added to every configuration with the plugin,
# ";"-separated (e.g. "payload_max_bytes 256" with BENCH_PAYLOAD).
EXTRA = [o.strip() for o in os.environ.get("BENCH_EXTRA", "").split(";") if o.strip()]
# BENCH_LOCAL: the local sink's options in "all" and "every", ";"-separated;
# e.g. "local_topic $events/all;local_batch_max 1000;local_batch_linger_ms 5"
# for the batching local sink (docs/sinks/local.md).
LOCAL = [o.strip() for o in os.environ.get("BENCH_LOCAL", "local_topic $events/{event}/{clientid}").split(";")
         if o.strip()]
CONFIGS = [
    ("none", []),
    ("idle", benchlib.plugin_lines(benchlib.IDLE_OPTS + EXTRA)),
    ("all", benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl"] + LOCAL + EXTRA)),
    # "every": filled in main() once the peers run
]
if os.environ.get("BENCH_DIRECT", "0") == "1":
    CONFIGS.append(("all-direct", CONFIGS[2][1] + ["plugin_opt_fanout_thread off"]))
if os.environ.get("BENCH_ALL", "1") == "0":
    CONFIGS = [c for c in CONFIGS if c[0] != "all"]
if os.environ.get("BENCH_LIBS", "0") == "1":
    if not os.path.exists(benchlib.NULL_PLUGIN):
        sys.exit("BENCH_LIBS=1 needs %s: make BUILD=%s %s" % (benchlib.NULL_PLUGIN, benchlib.BUILD,
                                                          os.path.relpath(benchlib.NULL_PLUGIN, benchlib.ROOT)))
    CONFIGS.insert(1, ("libs", ["plugin " + benchlib.NULL_PLUGIN]))
if os.environ.get("BENCH_CONTROL", "0") == "1":
    CONFIGS.insert(1, ("none2", []))
EVENTS_PER_CYCLE = {"cycle": 5, "publish0": 15, "publish1": 15}
PEER_PIDS = {}  # name -> pid of the peers of "every", for the CPU breakdown


def main():
    if os.environ.get("BENCH_EVERY", "1") != "0":
        with benchlib.Peers() as peers:
            PEER_PIDS.update(peers.pids)
            # BENCH_EVERY_EXTRA: more options for "every", ";"-separated
            # (e.g. "mqtt_qos 0" to see what QoS 1 costs).
            extra = [o.strip() for o in os.environ.get("BENCH_EVERY_EXTRA", "").split(";") if o.strip()]
            CONFIGS.append(("every", benchlib.plugin_lines(
                ["events *", "file_path {dir}/events.jsonl"] + LOCAL + peers.sink_opts() + EXTRA + extra)))
            run()
    else:
        run()


def run():
    print("## Throughput: %d round(s) x %.0f s, %d connections in flight%s%s"
          % (ROUNDS, SECS, CONC, ", %s-byte payloads" % PAYLOAD if PAYLOAD else "",
             ", every configuration paced at %s cycles/s" % RATE if RATE else ""))
    print("machine: " + benchlib.machine())
    if benchlib.BROKER_CPU:
        print("pinning: broker main thread on CPU 0; generator and sink threads on CPU(s) %s"
              % ",".join(map(str, sorted(benchlib.OTHER_CPUS))))
    results = {(m, c): [] for m in MODES for c, _ in CONFIGS}
    base_args = ["-T"] + (["-s", PAYLOAD] if PAYLOAD else []) + (["-r", RATE] if RATE else [])
    counters = {(m, c): [] for m in MODES for c, _ in CONFIGS}
    for r in range(ROUNDS):
        order = CONFIGS[r % len(CONFIGS):] + CONFIGS[:r % len(CONFIGS)]
        for mode in MODES:
            for name, lines in order:
                with benchlib.Broker(lines) as b:
                    args = list(base_args)
                    if name == "every":
                        for pid in PEER_PIDS.values():
                            args += ["-Q", str(pid)]
                    res = benchlib.loadgen(b, mode, secs=SECS, conc=CONC, args=args)
                    b.stop()
                    counters[(mode, name)].append(b.sink_counters())
                results[(mode, name)].append(res)
                sinks = " ".join("%s %d/%d" % (k, v["enqueued"], v["dropped"])
                                 for k, v in sorted(counters[(mode, name)][-1].items()))
                print("round %d %-8s %-5s %8.0f cycles/s  broker thread %3.0f%%  generator %3.0f%%  errors %d%s"
                      % (r + 1, mode, name, res["rate"], 100 * res["broker_thread_cpu"] / res["secs"],
                         100 * res["cpu"] / res["secs"], res["errors"],
                         "  enqueued/dropped: " + sinks if sinks else ""), flush=True)
                if PACED and name == "every":
                    with benchlib.Broker([]) as b:
                        paced = benchlib.loadgen(b, mode, secs=SECS, conc=CONC,
                                                 args=base_args + ["-r", "%.1f" % res["rate"]])
                        b.stop()
                    results.setdefault((mode, "none paced"), []).append(paced)
                    print("round %d %-8s %-5s %8.0f cycles/s  broker thread %3.0f%%  (none, paced at every's rate)"
                          % (r + 1, mode, "none", paced["rate"], 100 * paced["broker_thread_cpu"] / paced["secs"]),
                          flush=True)
    print()
    rows = []
    for mode in MODES:
        base = results[(mode, "none")]
        base_rate = benchlib.median([x["rate"] for x in base])
        base_cost = benchlib.median([1e6 * x["broker_thread_cpu"] / x["cycles"] for x in base])
        for name, _ in CONFIGS:
            rs = results[(mode, name)]
            rate = benchlib.median([x["rate"] for x in rs])
            cost = benchlib.median([1e6 * x["broker_thread_cpu"] / x["cycles"] for x in rs])
            gen = benchlib.median([100 * x["cpu"] / x["secs"] for x in rs])
            brk = benchlib.median([100 * x["broker_thread_cpu"] / x["secs"] for x in rs])
            enq = drop = 0
            for c in counters[(mode, name)]:
                for s in c.values():
                    enq += s["enqueued"]
                    drop += s["dropped"]
            # Each round runs every configuration back to back, so the
            # ratio inside a round cancels slow drift of a shared machine.
            paired = benchlib.median(round_ratios(results, mode, name))
            rows.append([mode, name, "%.0f" % rate, "%.3f" % (rate / base_rate), "%.3f" % paired, "%.1f" % cost,
                         "%.3f" % (cost / base_cost), "%.0f%%" % brk, "%.0f%%" % gen,
                         "%d / %d" % (enq, drop) if dict(CONFIGS)[name] else "-"])
    print(benchlib.table(["mode", "plugin", "cycles/s (median)", "rate vs none", "per-round ratio (median)",
                          "broker thread CPU us/cycle", "CPU vs none", "broker thread CPU",
                          "generator CPU", "events enqueued / dropped (all rounds)"], rows))
    print()
    print("targets: idle rate >= 0.99 x none, every rate >= 0.97 x none (reported, never enforced)")
    spread(results)
    if PACED:
        paced_table(results)
    breakdown(results)


def round_ratios(results, mode, name):
    """Each round's rate of name over none's in the same round."""
    return [x["rate"] / b["rate"] for x, b in zip(results[(mode, name)], results[(mode, "none")])]


def spread(results):
    """The per-round ratios, sorted: how far one round can be from the
    median on this machine (compare with none2)."""
    print()
    print("per-round rate ratios vs none, sorted:")
    for mode in MODES:
        for name, _ in CONFIGS:
            if name != "none":
                ratios = sorted(round_ratios(results, mode, name))
                print("  %-8s %-5s %s" % (mode, name, " ".join("%.3f" % r for r in ratios)))


def paced_table(results):
    """Broker main-thread CPU per cycle of "every" next to a plugin-free
    broker paced at the same rate in the same round."""
    print()
    print("### Same rate: every against none paced at every's rate (median of rounds)")
    print()
    rows = []
    for mode in MODES:
        ev, pc = results[(mode, "every")], results.get((mode, "none paced"), [])
        if not pc:
            continue

        def cost(xs):
            return [1e6 * x["broker_thread_cpu"] / x["cycles"] for x in xs]
        rows.append([mode, "%.0f" % benchlib.median([x["rate"] for x in ev]),
                     "%.0f" % benchlib.median([x["rate"] for x in pc]),
                     "%.1f" % benchlib.median(cost(ev)), "%.1f" % benchlib.median(cost(pc)),
                     "%.3f" % benchlib.median([a / b for a, b in zip(cost(ev), cost(pc))])])
    print(benchlib.table(["mode", "every cycles/s", "none paced cycles/s", "every broker thread us/cycle",
                          "none paced broker thread us/cycle", "per-round ratio (median)"], rows))


def breakdown(results):
    """Where the CPU goes per cycle with sinks on: the broker's threads by
    name (the plugin names its sink threads eh-<sink>), the peers, the
    generator; against what the machine's cores offer per cycle."""
    names = {str(pid): label for label, pid in PEER_PIDS.items()}

    def parts(x):
        out = {"broker main thread": x.get("cpu.main", 0.0), "generator": x["cpu"]}
        for k, v in x.items():
            if not k.startswith("cpu.") or k == "cpu.main":
                continue
            n = k[4:]
            if n == "eh-fanout":
                label = "fan-out thread"
            elif n.startswith("eh-"):
                label = "sink thread " + n[3:]
            elif n.startswith("rdk:"):
                label = "librdkafka threads"
            elif n.startswith("pid"):
                label = names.get(n[3:], n)
            else:
                label = "other broker threads (paho, libcurl)"
            out[label] = out.get(label, 0.0) + v
        return out

    for name in [c for c, _ in CONFIGS if c in ("all", "all-direct", "every")]:
        print()
        print("### CPU per cycle, %s: microseconds of CPU time per cycle (median of rounds), %d cores offer %s"
              % (name, benchlib.NCPU, "per cycle the last row"))
        print()
        labels, rows, per_mode = [], [], {}
        for mode in MODES:
            rs = results[(mode, name)]
            per = [{k: 1e6 * v / x["cycles"] for k, v in parts(x).items()} for x in rs]
            per_mode[mode] = per
            for p in per:
                for k in p:
                    if k not in labels:
                        labels.append(k)
        for k in labels:
            rows.append([k] + ["%.1f" % benchlib.median([p.get(k, 0.0) for p in per_mode[m]]) for m in MODES])
        rows.append(["total"] + ["%.1f" % benchlib.median([sum(p.values()) for p in per_mode[m]]) for m in MODES])
        rows.append(["%d cores' time per cycle" % benchlib.NCPU]
                    + ["%.1f" % benchlib.median([1e6 * benchlib.NCPU * x["secs"] / x["cycles"]
                                                  for x in results[(m, name)]]) for m in MODES])
        print(benchlib.table(["part"] + MODES, rows))


if __name__ == "__main__":
    main()
