"""Helper of bench/kafka_sink_thread.sh: instructions per message of every
thread of one callgrind run (--separate-threads=yes, one dump), the Kafka
sink's broker process or kafka_peer replay, split the same way on both sides
so the two can be set side by side (docs/performance-kafka.md).

usage: python3 bench/kafka_cg.py LABEL N TASKS CGFILE...
  TASKS: "tid comm" lines of the profiled process, in tid order, read just
  before the dump; valgrind numbers threads in creation order, as the kernel
  hands out tids, and no thread of these runs exits before the dump, so the
  k-th line names the k-th thread's file.

The producing thread (eh-kafka, or the replay's main thread) is split with
callgrind_annotate --inclusive=yes: rd_kafka_producev, rd_kafka_poll and
rd_kafka_flush (delivery reports are served inside them), and the rest,
which is our code (ring and unpack, JSON, key and topic templates, the
runner) or, for the replay, its loop. librdkafka's own threads are summed by
kind (rdk:main; rdk:broker<id> for the thread of the cluster's broker;
rdk:broker-1 for the bootstrap and internal brokers).
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(?:\S+?):(\S+)")
PARTS = [
    ("rd_kafka_producev", "librdkafka rd_kafka_producev"),
    ("rd_kafka_poll", "librdkafka rd_kafka_poll (delivery reports)"),
    ("rd_kafka_flush", "librdkafka rd_kafka_flush (but its polls)"),
]
OURS = [
    (("eh_ring_peek_sc", "eh_ring_release_sc", "eh_event_unpack"), "ring read, unpack, release"),
    (("eh_json_write_event",), "JSON (eh_json_write_event)"),
    (("eh_template_render",), "key and topic templates (eh_template_render)"),
]


def total(path):
    for line in open(path, errors="replace"):
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    return 0


def frames(path):
    """Calls of LZ4F_compressBegin: one per compressed message set, so
    messages per set is the broker thread's batch size (lz4 is the default
    codec, see eh_kafka_compression)."""
    n, target = 0, None
    for line in open(path, errors="replace"):
        if line.startswith("cfn="):
            target = line[4:].strip().split(") ")[-1]
        elif line.startswith("calls=") and target and target.endswith("LZ4F_compressBegin"):
            n += int(line[6:].split()[0])
    return n


def edge(path, caller, callee):
    """Inclusive instructions of the calls from caller to callee."""
    fn = cfn = None
    cost, take = 0, False
    for line in open(path, errors="replace"):
        if line.startswith("fn="):
            fn, cfn = line[3:].strip().split(") ")[-1], None
        elif line.startswith("cfn="):
            cfn = line[4:].strip().split(") ")[-1]
        elif line.startswith("calls="):
            take = fn == caller and cfn == callee
        elif take:
            cost += int(line.split()[1])
            take = False
    return cost


def inclusive(path):
    out = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path], capture_output=True,
                         text=True, check=True).stdout
    cost = {}
    for line in out.splitlines():
        m = LINE.match(line)
        if m:
            fn = m.group(2).split("'")[0]
            cost.setdefault(fn, int(m.group(1).replace(",", "")))
    return cost


def kind(comm):
    if comm.endswith("-amd64-linux") or comm.startswith("callgrind"):
        return "main thread (valgrind's name for it)"
    if comm.startswith("rdk:broker") and comm != "rdk:broker-1":
        return "rdk:broker<id> (cluster's broker)"
    return comm


def main():
    label, n, tasks, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
    comms = [line.split(None, 1)[1].strip() for line in open(tasks) if line.strip()]
    files = sorted(files, key=lambda f: int(f.rsplit("-", 1)[1]))
    if len(files) != len(comms):
        print(f"{label}: {len(files)} thread files but {len(comms)} threads; cannot name them", file=sys.stderr)
        comms = [f"thread {i + 1}" for i in range(len(files))]
    rows, kinds, notes = [], {}, []
    for f, comm in zip(files, comms):
        ir = total(f)
        cost = inclusive(f) if ir else {}
        producing = "kafka_deliver" in cost or "run_replay" in cost
        if producing:
            name = "producing thread (" + ("eh-kafka" if "kafka_deliver" in cost else "replay main") + ")"
            rows.append((name, ir))
            lib = 0
            # rd_kafka_flush serves reports through rd_kafka_poll: count
            # that once, under poll.
            if cost.get("rd_kafka_flush"):
                cost["rd_kafka_flush"] -= edge(f, "rd_kafka_flush", "rd_kafka_poll")
            for fn, what in PARTS:
                if cost.get(fn):
                    rows.append(("  " + what, cost[fn]))
                    lib += cost[fn]
            ours = ir - lib
            rows.append(("  " + ("our code" if "kafka_deliver" in cost else "replay loop"), ours))
            if "kafka_deliver" in cost:
                for fns, what in OURS:
                    rows.append(("    " + what, sum(cost.get(fn, 0) for fn in fns)))
                rows.append(("    the rest (deliver, produce, runner, naps)",
                             ours - sum(cost.get(fn, 0) for fns, _ in OURS for fn in fns)))
            continue
        k = kind(comm)
        kinds[k] = kinds.get(k, 0) + ir
        if k.startswith("rdk:broker<"):
            sets = frames(f)
            if sets:
                notes.append(f"  {comm}: {sets} compressed message sets, {n / sets:.1f} messages per set")
    for k in sorted(kinds):
        rows.append((k, kinds[k]))
    rows.append(("librdkafka's threads, together", sum(v for k, v in kinds.items() if k.startswith("rdk:"))))
    print(f"{label}: instructions per message ({n} messages)")
    for what, ir in rows:
        print(f"  {what:<52} {ir / n:>9.0f}")
    for line in notes:
        print(line)


main()
