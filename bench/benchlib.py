"""Shared helpers for the benchmarks (make bench): start the real broker with
or without the plugin, pin it, run bench/loadgen against it, parse results,
print tables. Sink benchmarks (bench/bench_<sink>.sh) may import this module:

    sys.path.insert(0, "bench"); import benchlib
    with benchlib.Broker(benchlib.plugin_lines(["file_path /dev/null"])) as b:
        r = benchlib.loadgen(b, "cycle", secs=5)
        print(r["rate"])

Nothing here asserts on timing: the benchmarks report, they never fail on a
number.
"""
import os
import pwd
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, BUILD, "mosquitto_eventhook.so")
LOADGEN = os.path.join(ROOT, BUILD, "bench", "loadgen")
# bench/null_plugin.c: links the plugin's libraries, registers nothing.
NULL_PLUGIN = os.path.join(ROOT, BUILD, "bench", "null_plugin.so")
NULL_PLUGIN_CURL = os.path.join(ROOT, BUILD, "bench", "null_plugin_curl.so")
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
NCPU = len(os.sched_getaffinity(0))
# On a small machine the broker's main thread gets core 0 and everything else
# (the generator, the plugin's sink threads, the peers) the other cores.
# BENCH_PIN=0 leaves all of it to the scheduler.
PIN = NCPU >= 2 and os.environ.get("BENCH_PIN", "1") != "0"
BROKER_CPU = {0} if PIN else None
OTHER_CPUS = set(range(1, NCPU)) if PIN else None
# A RAM-backed directory, so that the file sink never measures the disk.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# "No sink interested" (throughput.py's idle, idle_cost.py): one sink that
# wants an event the loads never produce.
IDLE_OPTS = ["file_path {dir}/events.jsonl", "file_events client.connect_failed"]

# Sink options for the broker-thread measurements (native_share.py,
# paired_cpu.py, profile_diff.py): every event to a file, and the peer sinks pointed at a
# closed port, so their events wait in the rings, all the broker thread does
# for them; the local sink batching.
CLOSED = "127.0.0.1:9"
FILE_ALL = ["events *", "file_path {dir}/events.jsonl"]
FILE_HTTP_KAFKA = FILE_ALL + ["http_url http://%s/" % CLOSED, "kafka_brokers " + CLOSED]
FILE_HTTP_KAFKA_MQTT = FILE_HTTP_KAFKA + ["mqtt_uri tcp://" + CLOSED]
LOCAL_BATCH = ["local_topic $events/all", "local_batch_max 1000"]


def with_other_build(configs):
    """configs, a list of (name, broker lines), with each configuration that
    loads the plugin followed by the same one loading the build named by
    BENCH_OTHER_PLUGIN instead (" [other build]"): a change measured
    against the code before it in the same run. Unchanged without it."""
    other = os.environ.get("BENCH_OTHER_PLUGIN")
    if not other:
        return list(configs)
    other = os.path.abspath(other)
    if not os.path.exists(other):
        sys.exit("BENCH_OTHER_PLUGIN: no such file: " + other)
    line = "plugin " + PLUGIN
    out = []
    for name, lines in configs:
        out.append((name, lines))
        if line in lines:
            out.append((name + " [other build]", ["plugin " + other if ln == line else ln for ln in lines]))
    return out


def plugin_lines(opts, plugin=PLUGIN):
    """mosquitto.conf lines loading the plugin with plugin_opt_<k> <v> for
    each "k v" in opts."""
    return ["plugin " + plugin] + ["plugin_opt_" + o for o in opts]


class Broker:
    """The real mosquitto on a free loopback port with the given extra
    configuration lines; the working directory holds the config, the log and
    any file the configuration names with {dir}."""

    def __init__(self, lines=(), pin=True, prefix=None, env=None):
        self.dir = tempfile.mkdtemp(prefix="eh-bench-", dir=SCRATCH)
        self.port = free_port()
        self.lines = [l.replace("{dir}", self.dir) for l in lines]
        self.pin = pin
        self.pinned = set()  # thread ids already pinned
        self.prefix = prefix or []
        self.env = env
        self.proc = None

    def conf(self):
        return "\n".join([
            "listener %d 127.0.0.1" % self.port,
            "user " + pwd.getpwuid(os.getuid()).pw_name,
            "allow_anonymous true",
            # Without it the broker's PUBACKs meet Nagle and delayed ACKs
            # and every QoS 1 cycle waits 40 ms.
            "set_tcp_nodelay true",
            "connection_messages false",
            "log_dest file %s/broker.log" % self.dir,
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_keepalive 3600",
        ] + self.lines) + "\n"

    def start(self, timeout=30):
        path = os.path.join(self.dir, "mosquitto.conf")
        with open(path, "w") as f:
            f.write(self.conf())
        self.proc = subprocess.Popen(self.prefix + [MOSQUITTO, "-c", path], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(self.dir, "stderr.log"), "w"), env=self.env)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("broker exited:\n" + self.log())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError("broker did not listen:\n" + self.log())
        if self.pin and BROKER_CPU:
            self.pin_threads()
        return self

    def pin_threads(self):
        """Pins threads not pinned yet. Called again while a load runs: a
        sink with no peer starts its thread at its first event, from the
        broker's thread, whose CPU it would otherwise inherit."""
        pid = self.proc.pid
        pinned = self.pinned
        try:
            tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
        except OSError:
            return
        for tid in tids:
            if tid in pinned:
                continue
            try:
                os.sched_setaffinity(tid, BROKER_CPU if tid == pid else OTHER_CPUS)
                pinned.add(tid)
            except OSError:
                pass

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log(self):
        out = ""
        for name in ("stderr.log", "broker.log"):
            try:
                with open(os.path.join(self.dir, name)) as f:
                    out += f.read()
            except OSError:
                pass
        return out

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.log()

    def sink_counters(self):
        """{sink: {enqueued, delivered, failed, dropped, left}} from the
        plugin's shutdown lines (call after stop)."""
        out = {}
        pat = re.compile(r"eventhook: (\w+): stopped; enqueued (\d+), delivered (\d+), failed (\d+), "
                         r"dropped (\d+), left undelivered at shutdown (\d+)")
        for m in pat.finditer(self.log()):
            out[m.group(1)] = dict(zip(("enqueued", "delivered", "failed", "dropped", "left"),
                                       map(int, m.groups()[1:])))
        return out

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def discard(self):
        """Kills the broker without its orderly stop, for a measurement
        done with it: sinks whose peer is unreachable would otherwise hold
        every stop for their drain deadline."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()


def loadgen(broker, mode="cycle", secs=5.0, conc=32, warmup=1.0, args=(), timeout=None):
    """Runs bench/loadgen against broker; returns the RESULT fields as floats
    plus "text" (its human line)."""
    cmd = [LOADGEN, "-p", str(broker.port), "-c", str(conc), "-d", str(secs), "-w", str(warmup),
           "-P", str(broker.proc.pid)]
    if mode == "publish0":
        cmd += ["-m", "publish", "-q", "0"]
    elif mode == "publish1":
        cmd += ["-m", "publish", "-q", "1"]
    elif mode != "cycle":
        raise ValueError(mode)
    cmd += list(args)
    pre = ["taskset", "-c", ",".join(map(str, sorted(OTHER_CPUS)))] if OTHER_CPUS else []
    p = subprocess.Popen(pre + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    end = time.time() + (timeout or secs + warmup + 120)
    while p.poll() is None and time.time() < end:
        if broker.pin and BROKER_CPU:
            broker.pin_threads()
        time.sleep(0.05)
    if p.poll() is None:
        p.kill()
    out, err = p.communicate()
    if p.returncode:
        raise RuntimeError("loadgen failed: %s\n%s" % (out, err))
    res = {"text": "\n".join(l for l in out.splitlines() if not l.startswith("RESULT"))}
    for line in out.splitlines():
        if line.startswith("RESULT "):
            for kv in line.split()[1:]:
                k, v = kv.split("=", 1)
                res[k] = float(v)
    return res


def thread_times(pid):
    """(user, system) clock ticks of the process's main thread."""
    with open("/proc/%d/task/%d/stat" % (pid, pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def tracepoints_work(*events):
    """Whether perf can count these tracepoints here (not in every VM or
    container)."""
    cmd = ["perf", "stat"] + [a for e in events for a in ("-e", e)] + ["true"]
    try:
        return subprocess.run(cmd, capture_output=True).returncode == 0
    except OSError:
        return False


class Tracepoints:
    """perf stat counting tracepoints on one thread for the life of a with
    block; .counts maps each event to its count afterwards."""

    def __init__(self, tid, events, directory):
        self.events = list(events)
        self.out = os.path.join(directory, "perf.txt")
        self.cmd = ["perf", "stat", "-x,", "-o", self.out] + [a for e in self.events for a in ("-e", e)] + \
            ["-t", str(tid)]
        self.counts = {}

    def __enter__(self):
        self.proc = subprocess.Popen(self.cmd, stderr=subprocess.DEVNULL)
        time.sleep(0.3)  # perf attaches before the load starts
        return self

    def __exit__(self, *exc):
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()
        self.counts = {e: 0 for e in self.events}
        for line in open(self.out):
            f = line.split(",")
            if len(f) > 2 and f[2] in self.counts and f[0].isdigit():
                self.counts[f[2]] = int(f[0])


def cpu_seconds(pid):
    """User + system CPU seconds of a process (all its threads) so far;
    NaN once it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def table(headers, rows):
    """A Markdown table, columns padded for the terminal."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
                     + [line(r) for r in cells[1:]])


def machine():
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    ver = subprocess.run([MOSQUITTO, "-h"], capture_output=True, text=True).stdout.splitlines()
    return "%d CPU(s) %s, %s, load average %s" % (NCPU, model, ver[0] if ver else "mosquitto",
                                                   open("/proc/loadavg").read().split()[0])


HTTP_PEER = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a):
        pass
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
'''


class Peers:
    """Local peers for every network sink, on the non-broker CPUs: an HTTP
    server answering 204 (Python's http.server), librdkafka's mock cluster
    (build/test/kafka_peer) and a second mosquitto for the MQTT sink.
    sink_opts() gives the plugin options that point every sink at them."""

    def __init__(self):
        self.procs = []
        self.dir = tempfile.mkdtemp(prefix="eh-bench-peers-", dir=SCRATCH)

    def _spawn(self, cmd, **kw):
        pre = ["taskset", "-c", ",".join(map(str, sorted(OTHER_CPUS)))] if OTHER_CPUS else []
        p = subprocess.Popen(pre + cmd, **kw)
        self.procs.append(p)
        return p

    def start(self):
        http = self._spawn(["/usr/bin/python3", "-c", HTTP_PEER], stdout=subprocess.PIPE, text=True)
        self.http_port = int(http.stdout.readline())
        kafka = self._spawn([os.path.join(ROOT, BUILD, "test", "kafka_peer"), "mock", "1", "events:4"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = kafka.stdout.readline()
        if not line.startswith("bootstrap "):
            raise RuntimeError("kafka_peer mock: " + line)
        self.kafka_bootstrap = line.split()[1]
        self.mqtt_port = free_port()
        conf = os.path.join(self.dir, "peer.conf")
        with open(conf, "w") as f:
            # set_tcp_nodelay as in Broker: without it the peer's PUBACKs
            # or its deliveries wait on Nagle and delayed ACKs, and that, not the
            # MQTT sink, is what a latency run measures.
            f.write("listener %d 127.0.0.1\nallow_anonymous true\nuser %s\nlog_dest none\n"
                    "max_queued_messages 0\nset_tcp_nodelay true\n"
                    % (self.mqtt_port, pwd.getpwuid(os.getuid()).pw_name))
        mqtt = self._spawn([MOSQUITTO, "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # What loadgen -Q reports as cpu.pid<PID>, by the name a table shows.
        self.pids = {"http peer (Python)": http.pid, "kafka mock cluster": kafka.pid,
                     "mqtt peer (mosquitto)": mqtt.pid}
        deadline = time.time() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.mqtt_port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError("peer mosquitto did not listen")
                time.sleep(0.05)
        return self

    def sink_opts(self):
        return ["http_url http://127.0.0.1:%d/events" % self.http_port,
                "http_batch_max 500", "http_batch_linger_ms 20",
                "kafka_brokers " + self.kafka_bootstrap, "kafka_topic events",
                "mqtt_uri tcp://127.0.0.1:%d" % self.mqtt_port, "mqtt_topic events/{event}"]

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
