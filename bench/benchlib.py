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
import tempfile
import time

BUILD = os.environ.get("BUILD", "build")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PLUGIN = os.path.join(ROOT, BUILD, "mosquitto_eventhook.so")
LOADGEN = os.path.join(ROOT, BUILD, "bench", "loadgen")
MOSQUITTO = os.environ.get("MOSQUITTO", "/usr/sbin/mosquitto")
NCPU = len(os.sched_getaffinity(0))
# On a small machine the broker's main thread gets core 0 and everything else
# (the generator, the plugin's sink threads, the peers) the other cores.
BROKER_CPU = {0} if NCPU >= 2 else None
OTHER_CPUS = set(range(1, NCPU)) if NCPU >= 2 else None
# A RAM-backed directory, so that the file sink never measures the disk.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


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
        pid = self.proc.pid
        for tid in os.listdir("/proc/%d/task" % pid):
            try:
                os.sched_setaffinity(int(tid), BROKER_CPU if int(tid) == pid else OTHER_CPUS)
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
    p = subprocess.run(pre + cmd, capture_output=True, text=True,
                       timeout=timeout or secs + warmup + 120)
    if p.returncode:
        raise RuntimeError("loadgen failed: %s\n%s" % (p.stdout, p.stderr))
    res = {"text": "\n".join(l for l in p.stdout.splitlines() if not l.startswith("RESULT"))}
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            for kv in line.split()[1:]:
                k, v = kv.split("=", 1)
                res[k] = float(v)
    return res


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
