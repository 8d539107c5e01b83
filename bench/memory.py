"""Resident memory of the broker with empty and with full rings.

A ring is filled by a sink that cannot deliver: the file sink writing to
/dev/full (every write fails with ENOSPC, the runner retries the first batch
forever, the broker thread keeps enqueueing until the ring is full and then
drops and counts). Same load in every row; RSS is read from /proc after the
load, with every client gone, so the broker's own per-client memory is freed
(glibc may keep some of it: the no-plugin row is the reference).

The bound: a ring never holds more than queue_size records nor more than
queue_bytes bytes (rounded up to a power of two); its buffer is allocated at
start but only touched pages are resident.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

CYCLES = int(os.environ.get("BENCH_MEMORY_CYCLES", "6000"))  # x 15 events: enough to fill 65536


def main():
    print("## Memory: broker RSS after the same load (%d publish0 cycles, 15 events each), rings empty and full"
          % CYCLES)
    print()
    cases = [
        ("no plugin", []),
        ("file sink, events *, ring drained", benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl"])),
        ("file sink to /dev/full, events *: ring full (defaults: queue_size 65536, queue_bytes 32 MiB)",
         benchlib.plugin_lines(["events *", "file_path /dev/full"])),
        ("file sink to /dev/full, events *, queue_bytes 4 MiB: ring full by bytes",
         benchlib.plugin_lines(["events *", "file_path /dev/full", "queue_bytes 4194304",
                                "queue_size 16777216"])),
        ("file sink to /dev/full, events *, queue_size 1000: ring full by count",
         benchlib.plugin_lines(["events *", "file_path /dev/full", "queue_size 1000"])),
        # Two sinks: the fan-out ring is a third ring, drained like theirs.
        ("file + local sinks, events *, rings drained, fan-out ring too",
         benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl", "local_topic $events/all",
                                "local_batch_max 1000"])),
        ("file + local sinks, events *, rings drained, fanout_thread off",
         benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl", "local_topic $events/all",
                                "local_batch_max 1000", "fanout_thread off"])),
    ]
    rows = []
    base = None
    for label, lines in cases:
        with benchlib.Broker(lines) as b:
            before = b.rss_kib()
            r = benchlib.loadgen(b, "publish0", conc=32, warmup=0, args=["-n", str(CYCLES)], timeout=600)
            after = b.rss_kib()
            b.stop()
            c = b.sink_counters().get("file", {})
        if base is None:
            base = after
        rows.append([label, before, after, after - base, c.get("enqueued", "-"), c.get("dropped", "-"),
                     "%.0f" % r["events_rate"]])
        print("%s: RSS %d -> %d KiB" % (label, before, after), flush=True)
    print()
    print(benchlib.table(["configuration", "RSS at start KiB", "RSS after load KiB", "vs no plugin KiB",
                          "enqueued", "dropped", "events/s"], rows))


if __name__ == "__main__":
    main()
