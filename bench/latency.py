"""End-to-end latency from the broker callback to delivery at each sink.

Events '*'; a load runs at a moderate rate and then at full speed. For every
event, arrival time at the sink's peer minus the event's "ts" (the wall clock
at capture, in milliseconds):
  local  bench/loadgen's probe, a subscriber to $events/# (the local sink
         publishes into the broker)
  file   bench/loadgen's probe following the file sink's output with inotify
  http   a Python HTTP receiver (HTTP_RECEIVER below): arrival is when a
         request's body has been read, before it is parsed; the answer (204)
         goes out before the parsing too, so the sink is not held up by it
  kafka  bench/kafka_latency, a librdkafka consumer of every partition with
         fetch.wait.max.ms 1, against librdkafka's mock cluster
         (build/test/kafka_peer); arrival is when the consumer is handed the
         message
  mqtt   bench/loadgen's probe subscribed to the MQTT sink's topic on the
         second mosquitto the sink publishes to (-b)
The file and local sinks run together, as they always have here, so their
events go through the fan-out thread (docs/configuration.md, fanout_thread);
"file-direct" and "local-direct" are the same with fanout_thread off, the
broker thread filling both rings itself, for comparison. Each network sink runs
alone against a fresh peer (benchlib.Peers). Every probe keeps the
events captured inside loadgen's measured window (by their ts; loadgen prints
the window's wall-clock bounds for the receivers outside it), however late
they arrive: the warm-up absorbs a sink's start (the Kafka producer's first
delivery comes about a second after the first event), and a backlog left at
the end of a full-speed window is counted.

Resolution: "ts" is truncated to the millisecond at capture, so every sample
is too large by a uniformly distributed 0..1 ms (0.5 ms on average); sub-ms
values are not meaningful. All clocks are the same machine's CLOCK_REALTIME.
Nothing is added to the product for this.
"""
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

SECS = float(os.environ.get("BENCH_SECONDS", "4"))
MODERATE = float(os.environ.get("BENCH_LATENCY_RATE", "500"))  # cycles/s
# A webhook configuration chosen for latency: batches of up to 100 events,
# sent after at most 5 ms (the same linger as the Kafka sink's linger.ms).
HTTP_BATCH = os.environ.get("BENCH_HTTP_BATCH", "100")
HTTP_LINGER_MS = os.environ.get("BENCH_HTTP_LINGER_MS", "5")
SINKS = os.environ.get("BENCH_LATENCY_SINKS", "local file local-direct file-direct http kafka mqtt").split()
CORE_LINES = benchlib.plugin_lines(["events *", "file_path {dir}/events.jsonl",
                                    "local_topic $events/{event}/{clientid}"])
KAFKA_LATENCY = os.path.join(benchlib.ROOT, benchlib.BUILD, "bench", "kafka_latency")

# Prints its port, then records (arrival, ts) per event and, on SIGTERM,
# prints "ARRIVAL_US TS_MS" lines, "overhead_us P50 P99" (request line read to
# body read) and "end N".
HTTP_RECEIVER = r'''
import calendar, re, signal, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
TS = re.compile(rb'"ts":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z"')
samples, overhead, seconds = [], [], {}
def ts_ms(m):
    whole = m.group(1)
    s = seconds.get(whole)
    if s is None:
        s = seconds[whole] = calendar.timegm(time.strptime(whole.decode(), "%Y-%m-%dT%H:%M:%S"))
    return s * 1000 + int(m.group(2))
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def parse_request(self):
        self.first_ns = time.time_ns()
        return super().parse_request()
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        arrival = time.time_ns() // 1000
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
        overhead.append(arrival - self.first_ns // 1000)
        for m in TS.finditer(body):
            samples.append((arrival, ts_ms(m)))
def finish(*a):
    out = sys.stdout
    for arrival, ts in samples:
        out.write("%d %d\n" % (arrival, ts))
    o = sorted(overhead) or [0]
    out.write("overhead_us %d %d\nend %d\n" % (o[len(o) // 2], o[int(len(o) * 0.99)], len(samples)))
    out.flush()
    sys.exit(0)
signal.signal(signal.SIGTERM, finish)
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
srv.daemon_threads = True
print(srv.server_address[1], flush=True)
srv.serve_forever()
'''


def pinned(cmd):
    cpus = benchlib.OTHER_CPUS
    return (["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []) + cmd


class Receiver:
    """A receiver outside loadgen (HTTP or Kafka): started before the load,
    stopped after the broker so that the sink's last batch gets there;
    collect() gives the (arrival_us, ts_ms) samples and its last lines."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(pinned(cmd), stdout=subprocess.PIPE, text=True)
        self.first = self.proc.stdout.readline().strip()
        if not self.first:
            raise RuntimeError("receiver did not start: %s" % cmd)

    def collect(self):
        cpu = benchlib.cpu_seconds(self.proc.pid)
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=60)
        samples, info = [], {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit():
                samples.append((int(parts[0]), int(parts[1])))
            elif parts:
                info[parts[0]] = parts[1:]
        info["cpu_s"] = cpu
        return samples, info

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def percentiles(samples, r):
    """The same fields and the same index arithmetic as loadgen's probes,
    over the events captured inside loadgen's measured window."""
    begin, end = r["window_begin_us"], r["window_end_us"]
    lat = sorted(a - ts * 1000 for a, ts in samples if begin <= ts * 1000 < end)
    if not lat:
        return {"lat_n": 0}
    n = len(lat)
    return {"lat_n": n, "lat_p50_us": lat[n // 2], "lat_p99_us": lat[int(n * 0.99)],
            "lat_p999_us": lat[int(n * 0.999)], "lat_max_us": lat[-1]}


def drive(lines, args):
    """The publish0 load against a broker with these lines; the loadgen
    result and the sinks' counters after the stop. args may name the broker's
    directory as {dir}."""
    with benchlib.Broker(lines) as b:
        r = benchlib.loadgen(b, "publish0", secs=SECS, conc=32, args=[a.replace("{dir}", b.dir) for a in args])
        b.stop()
        return r, b.sink_counters()


def run_core(sink, rate):
    probe = ["-L", "$events/#"] if sink.startswith("local") else ["-F", "{dir}/events.jsonl"]
    lines = CORE_LINES + (["plugin_opt_fanout_thread off"] if sink.endswith("-direct") else [])
    return drive(lines, probe + rate) + ("",)


def run_http(rate):
    recv = Receiver(["/usr/bin/python3", "-c", HTTP_RECEIVER])
    try:
        lines = benchlib.plugin_lines(["events *", "http_url http://127.0.0.1:%s/events" % recv.first,
                                       "http_batch_max " + HTTP_BATCH, "http_batch_linger_ms " + HTTP_LINGER_MS])
        r, counters = drive(lines, rate)
        samples, info = recv.collect()
    finally:
        recv.kill()
    r.update(percentiles(samples, r))
    o = info.get("overhead_us", ["?", "?"])
    note = "receiver: request line to body read p50 %s us p99 %s us; receiver CPU %.2f s" % (o[0], o[1],
                                                                                              info["cpu_s"])
    return r, counters, note


def run_kafka(rate):
    with benchlib.Peers() as peers:
        recv = Receiver([KAFKA_LATENCY, peers.kafka_bootstrap, "events"])
        try:
            opts = [o for o in peers.sink_opts() if o.startswith("kafka")]
            r, counters = drive(benchlib.plugin_lines(["events *"] + opts), rate)
            samples, info = recv.collect()
        finally:
            recv.kill()
    r.update(percentiles(samples, r))
    return r, counters, "consumer CPU %.2f s; %s" % (info["cpu_s"], " ".join(info.get("end", [])))


def run_mqtt(rate):
    with benchlib.Peers() as peers:
        opts = [o for o in peers.sink_opts() if o.startswith("mqtt")]
        probe = ["-L", "events/#", "-b", str(peers.mqtt_port)]
        return drive(benchlib.plugin_lines(["events *"] + opts), probe + rate) + ("",)


def main():
    print("## Latency, capture to delivery (events '*', mode publish0: 15 events per cycle; "
          "file + local sinks together, through the fan-out thread or, -direct, without; each network sink alone)")
    print("machine: " + benchlib.machine())
    print("http: http_batch_max %s, http_batch_linger_ms %s; kafka: the sink's defaults (linger.ms 5, acks all, "
          "idempotence) against the mock cluster; mqtt: the sink's defaults (QoS 1)" % (HTTP_BATCH, HTTP_LINGER_MS))
    print()
    rows = []
    for label, rate in (("moderate (%.0f cycles/s)" % MODERATE, MODERATE), ("maximum", 0)):
        for sink in SINKS:
            args = ["-r", str(rate)] if rate else []
            if sink in ("local", "file", "local-direct", "file-direct"):
                r, counters, note = run_core(sink, args)
            else:
                r, counters, note = {"http": run_http, "kafka": run_kafka, "mqtt": run_mqtt}[sink](args)
            dropped = sum(s["dropped"] for s in counters.values())
            ms = lambda k: "%.2f" % (r.get(k, float("nan")) / 1000)
            rows.append([sink, label, "%.0f" % r["events_rate"], "%d" % r.get("lat_n", 0), ms("lat_p50_us"),
                         ms("lat_p99_us"), ms("lat_p999_us"), ms("lat_max_us"), dropped])
            print("%s %s: %s" % (sink, label, r["text"].splitlines()[0]), flush=True)
            if note:
                print("  " + note, flush=True)
    print()
    print(benchlib.table(["sink", "load", "events/s captured", "samples", "p50 ms", "p99 ms", "p99.9 ms", "max ms",
                          "dropped"], rows))
    print()
    print("Each value includes +0..1 ms from the millisecond truncation of ts.")


if __name__ == "__main__":
    main()
