"""Integration-test harness for mosquitto-eventhook.

Every integration test in this project drives the real Debian broker
(/usr/sbin/mosquitto 2.0.11) with real clients and asserts on what real peers
saw.  This module holds everything those tests share, so that a sink test is
a few lines of scenario rather than a page of process and socket handling:

* Brokers: ``Broker`` writes a mosquitto.conf into a private temp dir, runs
  the broker in the foreground on free loopback ports, and offers
  ``sighup()``, ``stop()`` and ``log()``.  ``BrokerTestCase`` starts brokers
  for a test, always stops them, and prints their logs if the test failed.
* Clients: ``RawClient`` is a small MQTT 3.1.1/5 client built on the packet
  codec below.  It reports the broker's exact answers (CONNACK, SUBACK,
  PUBACK/PUBREC/PUBCOMP, UNSUBACK and DISCONNECT reason codes, the
  session-present flag), which paho 1.6.1 does not all expose.  ``Client``
  wraps paho for tests that want an ordinary library client; ``Collector``
  is a paho subscriber that records what it receives.
* Events: ``read_events()`` / ``wait_events()`` read the JSON-lines file the
  plugin's file sink writes.

A test in brief:

    class MySinkTest(BrokerTestCase):
        def test_connect_event(self):
            b = self.start_broker(["allow_anonymous true"], plugin_opts={
                "file_path": "{dir}/events.jsonl", "events": "*"})
            c = RawClient(b.port, "c1", MQTTV5)
            self.assertEqual(c.connect().rc, 0)
            c.disconnect()
            wait_events(b.path("events.jsonl"),
                        lambda evs: any(e.get("clientid") == "c1" for e in evs))

Timing rules (they keep the suite correct on slow or sanitizer-instrumented
machines): every wait is a poll against a generous deadline (``TIMEOUT``,
20 s, override with EH_TIMEOUT), never a fixed sleep.  To prove that
something did NOT happen, use an ordering barrier instead of waiting: the
broker handles one connection's packets in order and routes a PUBLISH to
subscribers synchronously, so ``publisher.ping()`` followed by
``subscriber.ping()`` proves every earlier message the broker was going to
deliver to that subscriber has arrived (see ``barrier()``; brokers need
``max_inflight_messages 0`` or few enough QoS>0 messages in flight so that
none wait in the broker's queue behind the PINGRESP).

Environment:
  EH_PLUGIN           plugin .so (default <repo>/build/mosquitto_eventhook.so)
  EH_BROKER_PRELOAD   put into the broker's LD_PRELOAD (sanitizer runtimes)
  EH_MOSQUITTO        broker binary (default /usr/sbin/mosquitto)
  EH_DYNSEC_PLUGIN    dynamic-security plugin (default Debian's); against a
                      2.1 broker, its own build's behaves as 2.1 users see
  EH_TIMEOUT          default deadline in seconds (default 20)
  EH_KEEP_TMP=1       keep broker temp dirs after the test
  EH_LOG_LINES        broker log lines printed on failure (default 300)

Only the standard library and Debian's python3-paho-mqtt 1.6.1 are used.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NamedTuple,
                    Optional, Sequence, Tuple, Union)

REPO_ROOT = Path(__file__).resolve().parents[2]
MOSQUITTO = os.environ.get("EH_MOSQUITTO", "/usr/sbin/mosquitto")
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
DYNSEC_PLUGIN = os.environ.get("EH_DYNSEC_PLUGIN", "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so")
TIMEOUT = float(os.environ.get("EH_TIMEOUT", "20"))

MQTTV31 = 3
MQTTV311 = 4
MQTTV5 = 5

__all__ = [
    "REPO_ROOT", "MOSQUITTO", "DYNSEC_PLUGIN", "TIMEOUT",
    "MQTTV31", "MQTTV311", "MQTTV5",
    "wait_until", "free_port", "plugin_path", "require_plugin",
    "write_password_file", "dynsec_client", "write_dynsec_file",
    "Broker", "BrokerError", "BrokerTestCase",
    "read_events", "wait_events",
    "Will", "Message", "Connack", "MqttClosed", "MqttTimeout",
    "RawClient", "barrier", "Client", "Collector",
]


# --------------------------------------------------------------------------
# Waiting
# --------------------------------------------------------------------------

def wait_until(predicate: Callable[[], Any], timeout: float = TIMEOUT,
               interval: float = 0.01, message: str = "condition") -> Any:
    """Poll ``predicate`` until it returns a truthy value and return it.

    Raises MqttTimeout (a TimeoutError) naming ``message`` at the deadline.
    The interval backs off to 0.1 s so long waits stay cheap.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise MqttTimeout(f"timed out after {timeout:g}s waiting for {message}")
        time.sleep(interval)
        interval = min(interval * 2, 0.1)


# --------------------------------------------------------------------------
# Ports, plugin location, security files
# --------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free on ``host`` a moment ago.

    Another process may take it before the broker binds; Broker.start()
    detects "Address already in use" and retries with fresh ports.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def plugin_path() -> str:
    """The plugin under test: $EH_PLUGIN or <repo>/build/mosquitto_eventhook.so."""
    return os.environ.get("EH_PLUGIN") or str(REPO_ROOT / "build" / "mosquitto_eventhook.so")


def require_plugin(path: Optional[str] = None) -> str:
    """Return the plugin path, or skip the calling test if it is not built."""
    path = path or plugin_path()
    if not os.path.isfile(path):
        raise unittest.SkipTest(f"plugin not built: {path} does not exist "
                                f"(run `make` at the repo root or set EH_PLUGIN)")
    return path


def write_password_file(path: Union[str, Path], users: Mapping[str, str]) -> str:
    """Write a mosquitto password file with ``mosquitto_passwd -b``."""
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    if not users:
        # mosquitto_passwd cannot create an empty file; an empty file is a
        # valid password file that knows no user.
        Path(path).write_text("")
        return path
    first = True
    for user, password in users.items():
        cmd = [MOSQUITTO_PASSWD, "-b"] + (["-c"] if first else []) + [path, user, password]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        first = False
    return path


def dynsec_client(username: str, password: Optional[str], roles: Sequence[str] = (),
                  groups: Sequence[str] = (), iterations: int = 101) -> dict:
    """A dynamic-security client entry with its password hashed as the plugin
    expects: base64(PBKDF2-HMAC-SHA512(password, salt, iterations, 64))."""
    entry: Dict[str, Any] = {"username": username,
                             "roles": [{"rolename": r} for r in roles],
                             "groups": [{"groupname": g} for g in groups]}
    if password is not None:
        salt = hashlib.sha256(("eh-salt:" + username).encode()).digest()[:12]
        digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
        entry.update(password=base64.b64encode(digest).decode(),
                     salt=base64.b64encode(salt).decode(), iterations=iterations)
    return entry


def write_dynsec_file(path: Union[str, Path], clients: Sequence[dict], roles: Sequence[dict],
                      groups: Sequence[dict] = (), anonymous_group: Optional[str] = None,
                      default_acl: Optional[Mapping[str, bool]] = None) -> str:
    """Write a dynamic-security JSON configuration (what `mosquitto_ctrl
    dynsec init` produces, plus our clients, roles and groups).

    ``roles`` entries are {"rolename": ..., "acls": [{"acltype": ...,
    "topic": ..., "allow": bool, "priority": int}]}.
    """
    doc: Dict[str, Any] = {
        "clients": list(clients),
        "roles": list(roles),
        "groups": list(groups),
        "defaultACLAccess": dict(default_acl or {
            "publishClientSend": False, "publishClientReceive": True,
            "subscribe": False, "unsubscribe": True}),
    }
    if anonymous_group:
        doc["anonymousGroup"] = anonymous_group
    Path(path).write_text(json.dumps(doc, indent=1))
    return str(path)


# --------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------

PluginSpec = Union[str, Tuple[str, Union[Mapping[str, Any], Sequence[Tuple[str, Any]], None]]]
OptionsSpec = Union[Mapping[str, Any], Sequence[Tuple[str, Any]], None]


def _option_items(opts: OptionsSpec) -> List[Tuple[str, Any]]:
    if not opts:
        return []
    if isinstance(opts, Mapping):
        return list(opts.items())
    return [tuple(kv) for kv in opts]  # type: ignore[misc]


class BrokerError(RuntimeError):
    """The broker failed to start or reload; ``log`` holds what it said."""

    def __init__(self, message: str, log: str = "", returncode: Optional[int] = None):
        super().__init__(message + (f"\n--- broker log ---\n{log}" if log else ""))
        self.log = log
        self.returncode = returncode


class Broker:
    """A real mosquitto process with a generated configuration.

    ``conf_lines``            global configuration lines (security options
                              too, in the default non-per-listener mode).
    ``plugin``                load the plugin under test (skips the test via
                              require_plugin() if it is not built).
    ``plugin_opts``           dict or list of (key, value): written as
                              ``plugin_opt_<key> <value>`` after our line
                              (a value of None: ``plugin_opt_<key>`` alone).
    ``plugin_path``           override of plugin_path().
    ``extra_plugins_before`` / ``extra_plugins_after``
                              other v5 plugins around ours: a path, or
                              (path, options).  Without our plugin they are
                              simply listed in order.
    ``listeners``             None (one listener), a count, or one list of
                              lines per listener (e.g. per-listener security).
    ``per_listener``          write the plugin lines into every listener
                              block; default: True when conf_lines contain
                              ``per_listener_settings true``.
    ``listener_plugin_opts``  per-listener override of plugin_opts (one
                              mapping per listener), e.g. distinct file paths.
    ``listener_plugins``      per-listener mode: for each listener, the list
                              of plugins to write into its block, in order;
                              the string "eventhook" stands for our plugin
                              with its options.  Default: extra_plugins_before,
                              ours, extra_plugins_after in every block.
    ``local_only``            write no listener line and pass ``-p <port>``
                              instead: Debian's stock "local only mode"
                              (loopback only, allow_anonymous true unless set).
    ``port_option``           with local_only, whether to pass ``-p`` (default
                              True); without it the config must bind the port
                              itself, e.g. with a ``port {port}`` line.
    ``relative_config``       start as ``mosquitto -c mosquitto.conf`` from
                              the temp dir (a plugin that locates the config
                              through /proc/self/cmdline must resolve it).

    Every listener binds 127.0.0.1 on a free port: ``port`` is the first,
    ``ports`` all of them.  In any configuration line, ``{port}`` and
    ``{port0}``, ``{port1}``... are replaced by those ports, and ``{dir}``
    (also in plugin option values) by the broker's temp dir.  The config
    always has ``user root`` (so the broker does not switch to user
    mosquitto and can read our temp files), ``log_dest file
    <dir>/broker.log`` and ``log_type all``.
    """

    def __init__(self, conf_lines: Sequence[str] = (), *, plugin: bool = True,
                 plugin_opts: OptionsSpec = None, plugin_path: Optional[str] = None,
                 extra_plugins_before: Sequence[PluginSpec] = (),
                 extra_plugins_after: Sequence[PluginSpec] = (),
                 listeners: Union[None, int, Sequence[Sequence[str]]] = None,
                 per_listener: Optional[bool] = None,
                 listener_plugin_opts: Optional[Sequence[OptionsSpec]] = None,
                 listener_plugins: Optional[Sequence[Sequence[PluginSpec]]] = None,
                 local_only: bool = False, port_option: bool = True,
                 relative_config: bool = False,
                 workdir: Optional[str] = None, name: str = "broker",
                 start: bool = True):
        self.name = name
        self.local_only = local_only
        self.port_option = port_option
        self.relative_config = relative_config
        self.plugin = plugin
        self.plugin_path = (require_plugin(plugin_path) if plugin else plugin_path)
        self.plugin_opts = plugin_opts
        self.listener_plugin_opts = listener_plugin_opts
        self.listener_plugins = listener_plugins
        self.extra_plugins_before = list(extra_plugins_before)
        self.extra_plugins_after = list(extra_plugins_after)
        self._own_dir = workdir is None
        self.dir = Path(workdir or tempfile.mkdtemp(prefix=f"eh-{name}-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "broker.log"
        self.output_path = self.dir / "broker.out"
        self.conf_lines: List[str] = []
        self.listener_lines: List[List[str]] = []
        self.per_listener = per_listener
        self.configure(conf_lines, listeners)
        if local_only and self.listener_lines != [[]]:
            raise ValueError("local_only brokers have exactly one listener and no listener lines")
        self.ports = [free_port() for _ in self.listener_lines]
        self.proc: Optional[subprocess.Popen] = None
        self.returncode: Optional[int] = None
        if start:
            try:
                self.start()
            except BaseException:
                # Nobody holds this object yet to clean it up; the error
                # carries the log.
                self.cleanup()
                raise

    # -- configuration ----------------------------------------------------

    @property
    def port(self) -> int:
        return self.ports[0]

    def path(self, name: str) -> str:
        """Absolute path of ``name`` inside the broker's temp dir."""
        return str(self.dir / name)

    def configure(self, conf_lines: Optional[Sequence[str]] = None,
                  listeners: Union[None, int, Sequence[Sequence[str]]] = None) -> None:
        """Replace the global and/or listener lines (ports are kept).  Call
        write_config() and sighup() to make a running broker re-read them."""
        if conf_lines is not None:
            self.conf_lines = list(conf_lines)
        if listeners is not None or not self.listener_lines:
            if listeners is None:
                listeners = 1
            if isinstance(listeners, int):
                self.listener_lines = [[] for _ in range(listeners)]
            else:
                self.listener_lines = [list(lines) for lines in listeners]
        if hasattr(self, "ports") and len(self.ports) != len(self.listener_lines):
            raise ValueError("the number of listeners cannot change after creation")

    def _per_listener(self) -> bool:
        if self.per_listener is not None:
            return self.per_listener
        return any(line.split()[:2] == ["per_listener_settings", "true"]
                   for line in self.conf_lines if line.strip())

    def _plugin_block(self, listener_index: Optional[int]) -> List[str]:
        def one(path: str, opts: OptionsSpec) -> List[str]:
            return [f"plugin {path}"] + [self._expand(f"plugin_opt_{k}" if v is None else f"plugin_opt_{k} {v}")
                                         for k, v in _option_items(opts)]

        def spec(p: PluginSpec) -> List[str]:
            if isinstance(p, str):
                return one(p, None)
            return one(p[0], p[1])

        def ours() -> List[str]:
            if not self.plugin:
                return []
            opts = self.plugin_opts
            if listener_index is not None and self.listener_plugin_opts is not None:
                opts = self.listener_plugin_opts[listener_index]
            return one(self.plugin_path, opts)  # type: ignore[arg-type]

        if listener_index is not None and self.listener_plugins is not None:
            order = list(self.listener_plugins[listener_index])
        else:
            order = self.extra_plugins_before + ["eventhook"] + self.extra_plugins_after
        lines: List[str] = []
        for p in order:
            lines += ours() if p == "eventhook" else spec(p)
        return lines

    def config_text(self) -> str:
        per_listener = self._per_listener()
        out = [
            "# generated by test/integration/eh_harness.py",
            "user root",
            f"log_dest file {self.log_path}",
            "log_type all",
            "log_timestamp_format %H:%M:%S",
        ]
        out += [self._expand(line) for line in self.conf_lines]
        if not per_listener:
            out += self._plugin_block(None)
        for i, (port, lines) in enumerate(zip(self.ports, self.listener_lines)):
            if self.local_only:
                break
            out.append(f"listener {port} 127.0.0.1")
            if per_listener:
                out += self._plugin_block(i)
            out += [self._expand(line) for line in lines]
        return "\n".join(out) + "\n"

    def _expand(self, line: str) -> str:
        line = line.replace("{dir}", str(self.dir))
        line = line.replace("{port}", str(self.ports[0]))
        for i, port in enumerate(self.ports):
            line = line.replace(f"{{port{i}}}", str(port))
        return line

    def write_config(self) -> str:
        # surrogateescape: a test can put bytes that are not UTF-8 in an option.
        self.conf_path.write_bytes(self.config_text().encode("utf-8", "surrogateescape"))
        return str(self.conf_path)

    # -- process ------------------------------------------------------------

    def _env(self) -> Dict[str, str]:
        env = dict(os.environ)
        preload = os.environ.get("EH_BROKER_PRELOAD")
        if preload:
            env["LD_PRELOAD"] = preload
        return env

    def command(self) -> List[str]:
        conf = self.conf_path.name if self.relative_config else str(self.conf_path)
        cmd = [MOSQUITTO, "-c", conf]
        if self.local_only and self.port_option:
            cmd += ["-p", str(self.port)]
        return cmd

    def start(self, timeout: float = TIMEOUT) -> "Broker":
        """Start the broker and wait until every listener accepts connections.

        Readiness is read from /proc/net/tcp (LISTEN state) plus the
        "running" log line rather than by connecting, so a plugin under test
        sees no probe connection.  A port lost to another process between
        free_port() and bind is retried with fresh ports.
        """
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError(f"{self.name} is already running")
        for attempt in range(3):
            self.write_config()
            log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
            out_offset = self.output_path.stat().st_size if self.output_path.exists() else 0
            out = open(self.output_path, "ab")
            try:
                self.proc = subprocess.Popen(self.command(),
                                             stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=subprocess.STDOUT, env=self._env(),
                                             cwd=str(self.dir))
            finally:
                out.close()
            self.returncode = None
            deadline = time.monotonic() + timeout
            while True:
                rc = self.proc.poll()
                if rc is not None:
                    self.returncode = rc
                    said = _read_from(self.log_path, log_offset) + _read_from(self.output_path,
                                                                              out_offset)
                    if b"Address already in use" in said and attempt < 2:
                        self.ports = [free_port() for _ in self.ports]
                        break
                    raise BrokerError(f"{self.name} exited with status {rc} during startup",
                                      self.log() + self.output(), rc)
                if self._running_line_seen(log_offset) and _ports_listening(self.ports):
                    return self
                if time.monotonic() >= deadline:
                    self.stop()
                    raise BrokerError(f"{self.name} not ready after {timeout:g}s",
                                      self.log() + self.output())
                time.sleep(0.02)
        raise BrokerError(f"{self.name}: could not find free ports")

    def _running_line_seen(self, offset: int) -> bool:
        return b" running" in _read_from(self.log_path, offset)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sighup(self, timeout: float = TIMEOUT) -> None:
        """Send SIGHUP and return once the broker has begun the reload.

        The broker logs "Reloading config." at the start of the reload and
        finishes it (config re-read, security cleanup/init, re-check of every
        client) in the same main-loop iteration, before it reads any socket
        again; so any client action taken after this returns is handled by
        the reloaded configuration.
        """
        if not self.alive():
            raise BrokerError(f"{self.name} is not running", self.log() + self.output())
        before = self.log().count("Reloading config.")
        self.proc.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
        wait_until(lambda: self.log().count("Reloading config.") > before or not self.alive(),
                   timeout, message=f"{self.name} to log 'Reloading config.'")
        if not self.alive():
            raise BrokerError(f"{self.name} died on SIGHUP", self.log() + self.output(),
                              self.proc.returncode)  # type: ignore[union-attr]

    def stop(self, timeout: float = TIMEOUT) -> Optional[int]:
        """SIGTERM, wait (SIGKILL after ``timeout``), return the exit status
        (negative: killed by that signal).  Idempotent."""
        if self.proc is None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None
        return self.returncode

    def capture_21(self) -> bool:
        """Whether our plugin took its Mosquitto 2.1 path in this started
        broker, as its start line says (a 2.1 build falls back to the 2.0 path
        in a 2.0 broker).  For the assertions where 2.1 is exact and 2.0
        infers: disconnect reasons, denied subscribes."""
        return "eventhook: capture on Mosquitto 2.1 events" in self.log()

    def log(self) -> str:
        """The broker log so far (log_type all)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def output(self) -> str:
        """The broker's stdout/stderr (sanitizer reports end up here)."""
        try:
            return self.output_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def dump(self, stream=None, max_lines: Optional[int] = None) -> None:
        """Print the config, the tail of the log and the process output."""
        stream = stream or sys.stdout
        if max_lines is None:
            max_lines = int(os.environ.get("EH_LOG_LINES", "300"))
        log_lines = self.log().splitlines()
        skipped = max(0, len(log_lines) - max_lines)
        print(f"\n===== {self.name}: {' '.join(self.command())} =====", file=stream)
        print(self.config_text().rstrip(), file=stream)
        print(f"===== {self.name}: broker.log"
              + (f" (last {max_lines} of {len(log_lines)} lines)" if skipped else "")
              + " =====", file=stream)
        print("\n".join(log_lines[skipped:]), file=stream)
        output = self.output().strip()
        if output:
            print(f"===== {self.name}: stdout/stderr =====\n{output}", file=stream)
        print(f"===== {self.name}: end (exit status {self.returncode}) =====", file=stream)
        stream.flush()

    def cleanup(self) -> None:
        """Stop the broker and remove its temp dir (kept with EH_KEEP_TMP=1)."""
        self.stop()
        if self._own_dir and not os.environ.get("EH_KEEP_TMP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Broker":
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()


def _read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` after ``offset`` (offsets are byte counts: the
    log holds client ids in any encoding)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _ports_listening(ports: Iterable[int]) -> bool:
    wanted = set(ports)
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f, None)
                for line in f:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                        found.add(int(fields[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            continue
    return wanted <= found


class BrokerTestCase(unittest.TestCase):
    """Mixin base for tests that start brokers.

    ``self.start_broker(...)`` takes Broker's arguments.  Brokers are always
    stopped after the test; if the test (or any subtest) failed, their
    config, log and output are printed first.
    """

    _eh_lock = threading.Lock()

    def start_broker(self, *args, **kwargs) -> Broker:
        """Create a Broker (same arguments), register it, start it."""
        kwargs.setdefault("name", f"{self._testMethodName}-{len(self._eh_brokers())}")
        broker = self.add_broker(Broker(*args, start=False, **kwargs))
        broker.start()
        return broker

    def add_broker(self, broker: Broker) -> Broker:
        """Register a broker created elsewhere (e.g. with start=False) so it
        is stopped, dumped on failure and cleaned up.  Thread-safe."""
        with self._eh_lock:
            brokers = self._eh_brokers()
            if not brokers:
                self.addCleanup(self._eh_finish_brokers)
            brokers.append(broker)
        return broker

    def _eh_brokers(self) -> List[Broker]:
        if not hasattr(self, "_eh_broker_list"):
            self._eh_broker_list: List[Broker] = []
        return self._eh_broker_list

    def _eh_test_failed(self) -> bool:
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        result = outcome.result
        # Python 3.11 records failures (and subtest failures) on the result
        # as they happen, so they are visible here during cleanup.
        for test, _ in itertools.chain(getattr(result, "errors", []),
                                       getattr(result, "failures", [])):
            if test is self or getattr(test, "test_case", None) is self:
                return True
        # Python <= 3.10 collects them on the outcome instead.
        return any(exc is not None for _, exc in getattr(outcome, "errors", []))

    def _eh_finish_brokers(self) -> None:
        brokers = self._eh_brokers()
        for broker in brokers:
            broker.stop()
        if self._eh_test_failed():
            for broker in brokers:
                broker.dump()
        for broker in brokers:
            broker.cleanup()
        brokers.clear()


# --------------------------------------------------------------------------
# Plugin file sink
# --------------------------------------------------------------------------

def read_events(path: Union[str, Path]) -> List[dict]:
    """Parse a JSON-lines event file.  A last line without its newline is
    ignored: the sink may be in the middle of writing it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    events = []
    for raw in data.split(b"\n")[:-1]:
        if raw.strip():
            events.append(json.loads(raw))
    return events


def wait_events(path: Union[str, Path], predicate: Callable[[List[dict]], Any],
                timeout: float = TIMEOUT) -> List[dict]:
    """Poll the event file until ``predicate(events)`` is truthy; return the
    events.  On timeout raise an AssertionError showing the last events."""
    last: List[dict] = []

    def check():
        nonlocal last
        last = read_events(path)
        return predicate(last)

    try:
        wait_until(check, timeout, message=f"events in {path}")
    except MqttTimeout:
        shown = "\n".join(json.dumps(e, sort_keys=True) for e in last[-50:])
        raise AssertionError(f"timed out after {timeout:g}s waiting for events in {path}; "
                             f"{len(last)} events, last ones:\n{shown}") from None
    return last


# --------------------------------------------------------------------------
# MQTT packet codec (3.1, 3.1.1, 5)
# --------------------------------------------------------------------------

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP = 8, 9, 10, 11, 12, 13
DISCONNECT, AUTH = 14, 15

PACKET_NAMES = {CONNECT: "CONNECT", CONNACK: "CONNACK", PUBLISH: "PUBLISH",
                PUBACK: "PUBACK", PUBREC: "PUBREC", PUBREL: "PUBREL", PUBCOMP: "PUBCOMP",
                SUBSCRIBE: "SUBSCRIBE", SUBACK: "SUBACK", UNSUBSCRIBE: "UNSUBSCRIBE",
                UNSUBACK: "UNSUBACK", PINGREQ: "PINGREQ", PINGRESP: "PINGRESP",
                DISCONNECT: "DISCONNECT", AUTH: "AUTH"}


class ProtocolError(ValueError):
    """Malformed MQTT data."""


# MQTT 5 properties: id -> (name, type).  Types: byte, u16, u32, varint,
# str, bin, pair.  Subscription identifier and user property may repeat.
PROPERTIES = {
    0x01: ("payload_format_indicator", "byte"),
    0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"),
    0x08: ("response_topic", "str"),
    0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"),
    0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"),
    0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"),
    0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"),
    0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"),
    0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"),
    0x1F: ("reason_string", "str"),
    0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"),
    0x23: ("topic_alias", "u16"),
    0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"),
    0x26: ("user_property", "pair"),
    0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"),
    0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
_PROPERTY_IDS = {name: (pid, kind) for pid, (name, kind) in PROPERTIES.items()}
_REPEATABLE = {"user_property", "subscription_identifier"}


def encode_varint(value: int) -> bytes:
    if not 0 <= value <= 268435455:
        raise ProtocolError(f"variable byte integer out of range: {value}")
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def decode_varint(buf: bytes, pos: int = 0) -> Optional[Tuple[int, int]]:
    """(value, next position), or None if ``buf`` ends inside the integer."""
    value, shift = 0, 0
    for i in range(4):
        if pos + i >= len(buf):
            return None
        byte = buf[pos + i]
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos + i + 1
        shift += 7
    raise ProtocolError("variable byte integer longer than 4 bytes")


def _enc_bin(data: Union[bytes, str]) -> bytes:
    if isinstance(data, str):
        data = data.encode("utf-8")
    if len(data) > 0xFFFF:
        raise ProtocolError("string or binary field longer than 65535 bytes")
    return struct.pack("!H", len(data)) + data


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def remaining(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ProtocolError("packet shorter than its fields")
        chunk = self.data[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("!H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("!I", self.take(4))[0]

    def varint(self) -> int:
        res = decode_varint(self.data, self.pos)
        if res is None:
            raise ProtocolError("truncated variable byte integer")
        value, self.pos = res
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def string(self) -> str:
        return self.binary().decode("utf-8")

    def rest(self) -> bytes:
        return self.take(self.remaining())


def encode_properties(props: Optional[Mapping[str, Any]]) -> bytes:
    """Encode {name: value}; repeatable properties take a list (user_property
    a list of (key, value) pairs)."""
    body = bytearray()
    for name, value in (props or {}).items():
        if name not in _PROPERTY_IDS:
            raise ProtocolError(f"unknown MQTT 5 property {name!r}")
        pid, kind = _PROPERTY_IDS[name]
        values = value if name in _REPEATABLE else [value]
        for v in values:
            body += encode_varint(pid)
            if kind == "byte":
                body += struct.pack("!B", v)
            elif kind == "u16":
                body += struct.pack("!H", v)
            elif kind == "u32":
                body += struct.pack("!I", v)
            elif kind == "varint":
                body += encode_varint(v)
            elif kind in ("str", "bin"):
                body += _enc_bin(v)
            else:  # pair
                body += _enc_bin(v[0]) + _enc_bin(v[1])
    return encode_varint(len(body)) + bytes(body)


def _decode_properties(r: _Reader) -> Dict[str, Any]:
    length = r.varint()
    end = r.pos + length
    if end > len(r.data):
        raise ProtocolError("properties longer than the packet")
    props: Dict[str, Any] = {}
    while r.pos < end:
        pid = r.varint()
        if pid not in PROPERTIES:
            raise ProtocolError(f"unknown property id 0x{pid:02x}")
        name, kind = PROPERTIES[pid]
        if kind == "byte":
            value: Any = r.u8()
        elif kind == "u16":
            value = r.u16()
        elif kind == "u32":
            value = r.u32()
        elif kind == "varint":
            value = r.varint()
        elif kind == "str":
            value = r.string()
        elif kind == "bin":
            value = r.binary()
        else:
            value = (r.string(), r.string())
        if name in _REPEATABLE:
            props.setdefault(name, []).append(value)
        else:
            props[name] = value
    if r.pos != end:
        raise ProtocolError("property overran its length")
    return props


def decode_properties(data: bytes) -> Dict[str, Any]:
    return _decode_properties(_Reader(data))


def encode_packet(ptype: int, flags: int, body: bytes) -> bytes:
    return bytes([(ptype << 4) | flags]) + encode_varint(len(body)) + body


def decode_packet(buf: bytes) -> Optional[Tuple[int, int, bytes, int]]:
    """Split one packet off ``buf``: (type, flags, body, bytes consumed), or
    None if ``buf`` does not yet hold a whole packet."""
    if len(buf) < 2:
        return None
    res = decode_varint(buf, 1)
    if res is None:
        return None
    length, pos = res
    if len(buf) < pos + length:
        return None
    return buf[0] >> 4, buf[0] & 0x0F, bytes(buf[pos:pos + length]), pos + length


class Will(NamedTuple):
    topic: str
    payload: bytes = b""
    qos: int = 0
    retain: bool = False
    properties: Optional[Dict[str, Any]] = None


class Message(NamedTuple):
    """What a subscriber received; compare these four fields in tests."""
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Connack(NamedTuple):
    """CONNACK answer.  ``rc`` is the return code (3.1.1) or reason code (5);
    rc None means the broker closed the connection without a CONNACK."""
    rc: Optional[int]
    session_present: Optional[bool]
    properties: Dict[str, Any] = {}


class Publish(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    mid: Optional[int]
    properties: Dict[str, Any]

    def message(self) -> Message:
        return Message(self.topic, self.payload, self.qos, self.retain)


def _protocol_name(protocol: int) -> bytes:
    return b"MQIsdp" if protocol == MQTTV31 else b"MQTT"


def encode_connect(client_id: str, protocol: int = MQTTV311, clean: bool = True,
                   keepalive: int = 60, username: Optional[str] = None,
                   password: Union[bytes, str, None] = None, will: Optional[Will] = None,
                   properties: Optional[Mapping[str, Any]] = None) -> bytes:
    """CONNECT.  A password without a username is encoded as given (the
    3.1.1 spec forbids it; the broker's answer is what tests want)."""
    flags = 0x02 if clean else 0
    if will is not None:
        flags |= 0x04 | (will.qos << 3) | (0x20 if will.retain else 0)
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    body = _enc_bin(_protocol_name(protocol)) + bytes([protocol, flags]) + struct.pack("!H", keepalive)
    if protocol == MQTTV5:
        body += encode_properties(properties)
    body += _enc_bin(client_id)
    if will is not None:
        if protocol == MQTTV5:
            body += encode_properties(will.properties)
        payload = will.payload.encode() if isinstance(will.payload, str) else will.payload
        body += _enc_bin(will.topic) + _enc_bin(payload)
    if username is not None:
        body += _enc_bin(username)
    if password is not None:
        body += _enc_bin(password)
    return encode_packet(CONNECT, 0, body)


def decode_connect(body: bytes) -> Dict[str, Any]:
    r = _Reader(body)
    name = r.binary()
    protocol = r.u8()
    if name not in (b"MQTT", b"MQIsdp"):
        raise ProtocolError(f"bad protocol name {name!r}")
    flags = r.u8()
    out: Dict[str, Any] = {"protocol": protocol, "clean": bool(flags & 0x02),
                           "keepalive": r.u16(), "properties": {}}
    if protocol == MQTTV5:
        out["properties"] = _decode_properties(r)
    out["client_id"] = r.string()
    out["will"] = None
    if flags & 0x04:
        wprops = _decode_properties(r) if protocol == MQTTV5 else {}
        topic = r.string()
        out["will"] = Will(topic, r.binary(), (flags >> 3) & 3, bool(flags & 0x20),
                           wprops or None)
    out["username"] = r.string() if flags & 0x80 else None
    out["password"] = r.binary() if flags & 0x40 else None
    return out


def encode_connack(rc: int, session_present: bool = False, protocol: int = MQTTV311,
                   properties: Optional[Mapping[str, Any]] = None) -> bytes:
    body = bytes([1 if session_present else 0, rc])
    if protocol == MQTTV5:
        body += encode_properties(properties)
    return encode_packet(CONNACK, 0, body)


def decode_connack(body: bytes, protocol: int = MQTTV311) -> Connack:
    r = _Reader(body)
    flags, rc = r.u8(), r.u8()
    props = _decode_properties(r) if protocol == MQTTV5 and r.remaining() else {}
    return Connack(rc, bool(flags & 1), props)


def encode_publish(topic: str, payload: Union[bytes, str] = b"", qos: int = 0,
                   retain: bool = False, mid: Optional[int] = None, dup: bool = False,
                   protocol: int = MQTTV311,
                   properties: Optional[Mapping[str, Any]] = None) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode("utf-8")
    body = _enc_bin(topic)
    if qos > 0:
        if mid is None:
            raise ProtocolError("QoS > 0 PUBLISH needs a packet identifier")
        body += struct.pack("!H", mid)
    if protocol == MQTTV5:
        body += encode_properties(properties)
    body += payload
    flags = (0x08 if dup else 0) | (qos << 1) | (1 if retain else 0)
    return encode_packet(PUBLISH, flags, body)


def decode_publish(flags: int, body: bytes, protocol: int = MQTTV311) -> Publish:
    r = _Reader(body)
    qos = (flags >> 1) & 3
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    topic = r.string()
    mid = r.u16() if qos else None
    props = _decode_properties(r) if protocol == MQTTV5 else {}
    return Publish(topic, r.rest(), qos, bool(flags & 1), bool(flags & 8), mid, props)


def encode_ack(ptype: int, mid: int, rc: Optional[int] = None, protocol: int = MQTTV311,
               properties: Optional[Mapping[str, Any]] = None) -> bytes:
    """PUBACK, PUBREC, PUBREL or PUBCOMP.  In MQTT 5 a zero reason code with
    no properties is omitted, as the spec allows and brokers do."""
    body = struct.pack("!H", mid)
    if protocol == MQTTV5 and (rc or properties):
        body += bytes([rc or 0])
        if properties:
            body += encode_properties(properties)
    return encode_packet(ptype, 0x02 if ptype == PUBREL else 0, body)


def decode_ack(body: bytes, protocol: int = MQTTV311) -> Tuple[int, int, Dict[str, Any]]:
    """(packet id, reason code (0 when absent), properties)."""
    r = _Reader(body)
    mid = r.u16()
    rc, props = 0, {}
    if protocol == MQTTV5 and r.remaining():
        rc = r.u8()
        if r.remaining():
            props = _decode_properties(r)
    return mid, rc, props


SubscriptionSpec = Union[str, Tuple[str, int]]


def encode_subscribe(mid: int, subscriptions: Sequence[Tuple[str, int]],
                     protocol: int = MQTTV311,
                     properties: Optional[Mapping[str, Any]] = None) -> bytes:
    """``subscriptions``: (filter, options byte); in 3.1.1 the options byte is
    the requested QoS, in 5 it may add no-local (4), retain-as-published (8)
    and retain handling (16, 32)."""
    body = struct.pack("!H", mid)
    if protocol == MQTTV5:
        body += encode_properties(properties)
    for topic_filter, options in subscriptions:
        body += _enc_bin(topic_filter) + bytes([options])
    return encode_packet(SUBSCRIBE, 0x02, body)


def decode_subscribe(body: bytes, protocol: int = MQTTV311):
    r = _Reader(body)
    mid = r.u16()
    props = _decode_properties(r) if protocol == MQTTV5 else {}
    subs = []
    while r.remaining():
        subs.append((r.string(), r.u8()))
    return mid, subs, props


def encode_suback(mid: int, codes: Sequence[int], protocol: int = MQTTV311,
                  properties: Optional[Mapping[str, Any]] = None) -> bytes:
    body = struct.pack("!H", mid)
    if protocol == MQTTV5:
        body += encode_properties(properties)
    return encode_packet(SUBACK, 0, body + bytes(codes))


def decode_suback(body: bytes, protocol: int = MQTTV311) -> Tuple[int, List[int], Dict[str, Any]]:
    r = _Reader(body)
    mid = r.u16()
    props = _decode_properties(r) if protocol == MQTTV5 else {}
    return mid, list(r.rest()), props


def encode_unsubscribe(mid: int, filters: Sequence[str], protocol: int = MQTTV311,
                       properties: Optional[Mapping[str, Any]] = None) -> bytes:
    body = struct.pack("!H", mid)
    if protocol == MQTTV5:
        body += encode_properties(properties)
    for f in filters:
        body += _enc_bin(f)
    return encode_packet(UNSUBSCRIBE, 0x02, body)


def decode_unsubscribe(body: bytes, protocol: int = MQTTV311):
    r = _Reader(body)
    mid = r.u16()
    props = _decode_properties(r) if protocol == MQTTV5 else {}
    filters = []
    while r.remaining():
        filters.append(r.string())
    return mid, filters, props


def encode_unsuback(mid: int, codes: Sequence[int] = (), protocol: int = MQTTV311,
                    properties: Optional[Mapping[str, Any]] = None) -> bytes:
    body = struct.pack("!H", mid)
    if protocol == MQTTV5:
        body += encode_properties(properties) + bytes(codes)
    return encode_packet(UNSUBACK, 0, body)


def decode_unsuback(body: bytes, protocol: int = MQTTV311) -> Tuple[int, List[int], Dict[str, Any]]:
    """(packet id, reason codes (empty for 3.1.1), properties)."""
    r = _Reader(body)
    mid = r.u16()
    if protocol != MQTTV5:
        return mid, [], {}
    props = _decode_properties(r)
    return mid, list(r.rest()), props


def encode_pingreq() -> bytes:
    return encode_packet(PINGREQ, 0, b"")


def encode_disconnect(rc: Optional[int] = None, protocol: int = MQTTV311,
                      properties: Optional[Mapping[str, Any]] = None) -> bytes:
    body = b""
    if protocol == MQTTV5 and (rc or properties):
        body = bytes([rc or 0]) + (encode_properties(properties) if properties else b"")
    return encode_packet(DISCONNECT, 0, body)


def decode_disconnect(body: bytes, protocol: int = MQTTV311) -> Tuple[int, Dict[str, Any]]:
    r = _Reader(body)
    rc, props = 0, {}
    if protocol == MQTTV5 and r.remaining():
        rc = r.u8()
        if r.remaining():
            props = _decode_properties(r)
    return rc, props


# --------------------------------------------------------------------------
# Raw MQTT client
# --------------------------------------------------------------------------

class MqttClosed(ConnectionError):
    """The connection closed before the awaited answer arrived."""


class MqttTimeout(TimeoutError):
    """A deadline passed; with the generous defaults this means a real hang."""


class _Packet(NamedTuple):
    type: int
    flags: int
    body: bytes


class RawClient:
    """A minimal MQTT 3.1.1 / 5 client that reports the broker's exact answers.

    A reader thread parses incoming packets, acknowledges incoming QoS 1/2
    messages (PUBACK; PUBREC then PUBCOMP on PUBREL), appends them to
    ``messages`` and queues every other packet for the waiting call.  All
    calls take ``timeout`` (default TIMEOUT) and raise MqttClosed if the
    connection ends first, MqttTimeout at the deadline.

        c = RawClient(broker.port, "cid", MQTTV5)
        ack = c.connect(username="u", password="p")   # Connack(rc, session_present, props)
        c.subscribe([("a/#", 2)])                    # -> [granted QoS or reason code]
        c.publish("a/b", b"x", qos=1)                # -> PUBACK reason code
        c.ping(); c.disconnect()

    ``server_disconnect`` holds the reason code of a DISCONNECT the broker
    sent (MQTT 5), ``closed`` tells whether the connection has ended.
    """

    def __init__(self, port: int, client_id: str = "", protocol: int = MQTTV311,
                 host: str = "127.0.0.1", timeout: float = TIMEOUT):
        self.port, self.host = port, host
        self.client_id = client_id
        self.protocol = protocol
        self.timeout = timeout
        self.messages: List[Message] = []
        self.publishes: List[Publish] = []
        self.server_disconnect: Optional[int] = None
        self.last_pubcomp: Optional[int] = None
        self._sock: Optional[socket.socket] = None
        self._reader: Optional[threading.Thread] = None
        self._cond = threading.Condition()
        self._send_lock = threading.Lock()
        self._inbox: List[_Packet] = []
        self._closed = False
        self._mids = itertools.cycle(range(1, 65536))
        self._qos2_in: set = set()

    # -- plumbing -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def _send(self, data: bytes) -> None:
        sock = self._sock
        if sock is None:
            raise MqttClosed(f"{self.client_id}: not connected")
        try:
            with self._send_lock:
                sock.sendall(data)
        except OSError as e:
            raise MqttClosed(f"{self.client_id}: send failed: {e}") from None

    def _read_loop(self, sock: socket.socket) -> None:
        buf = b""
        # The broker does not set TCP_NODELAY: a small answer written while
        # an earlier one is unacknowledged waits for our ACK, which Linux
        # delays by up to 40 ms.  Acknowledging at once keeps a scenario of
        # a few hundred round trips well under a second.
        quickack = getattr(socket, "TCP_QUICKACK", None)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                if quickack is not None:
                    sock.setsockopt(socket.IPPROTO_TCP, quickack, 1)
                buf += data
                while True:
                    split = decode_packet(buf)
                    if split is None:
                        break
                    ptype, flags, body, used = split
                    buf = buf[used:]
                    self._dispatch(_Packet(ptype, flags, body))
        except (OSError, ProtocolError, MqttClosed):
            pass
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, pkt: _Packet) -> None:
        if pkt.type == PUBLISH:
            pub = decode_publish(pkt.flags, pkt.body, self.protocol)
            duplicate = pub.qos == 2 and pub.mid in self._qos2_in
            if not duplicate:
                with self._cond:
                    self.publishes.append(pub)
                    self.messages.append(pub.message())
                    self._cond.notify_all()
            if pub.qos == 1:
                self._send(encode_ack(PUBACK, pub.mid, protocol=self.protocol))
            elif pub.qos == 2:
                self._qos2_in.add(pub.mid)
                self._send(encode_ack(PUBREC, pub.mid, protocol=self.protocol))
            return
        if pkt.type == PUBREL:
            mid = struct.unpack("!H", pkt.body[:2])[0]
            self._qos2_in.discard(mid)
            self._send(encode_ack(PUBCOMP, mid, protocol=self.protocol))
            return
        with self._cond:
            if pkt.type == DISCONNECT:
                self.server_disconnect = decode_disconnect(pkt.body, self.protocol)[0]
            self._inbox.append(pkt)
            self._cond.notify_all()

    def _wait_packet(self, match: Callable[[_Packet], bool], what: str,
                     timeout: Optional[float]) -> _Packet:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i, pkt in enumerate(self._inbox):
                    if match(pkt):
                        return self._inbox.pop(i)
                if self._closed:
                    raise MqttClosed(f"{self.client_id}: connection closed while waiting for {what}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MqttTimeout(f"{self.client_id}: no {what} after {timeout:g}s")
                self._cond.wait(left)

    def _wait_ack(self, ptype: int, mid: int, timeout: Optional[float]) -> int:
        def match(p: _Packet) -> bool:
            return p.type == ptype and struct.unpack("!H", p.body[:2])[0] == mid
        pkt = self._wait_packet(match, f"{PACKET_NAMES[ptype]} for mid {mid}", timeout)
        return decode_ack(pkt.body, self.protocol)[1]

    # -- MQTT operations -----------------------------------------------------

    def open(self, timeout: Optional[float] = None) -> "RawClient":
        """Open the TCP connection only (connect() does this itself)."""
        sock = socket.create_connection((self.host, self.port),
                                        timeout=self.timeout if timeout is None else timeout)
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        with self._cond:
            self._closed = False
            self._inbox.clear()
        self.server_disconnect = None
        self._reader = threading.Thread(target=self._read_loop, args=(sock,),
                                        name=f"raw-{self.client_id}", daemon=True)
        self._reader.start()
        return self

    def connect(self, username: Optional[str] = None, password: Union[bytes, str, None] = None,
                clean: bool = True, keepalive: int = 60, will: Optional[Will] = None,
                session_expiry: Optional[int] = None,
                properties: Optional[Mapping[str, Any]] = None,
                timeout: Optional[float] = None) -> Connack:
        """Send CONNECT and return the CONNACK (rc None if the broker closed
        the connection without one).  ``clean`` is clean_session (3.1.1) or
        clean_start (5); ``session_expiry`` sets the MQTT 5 property."""
        if self._sock is None:
            self.open(timeout)
        props = dict(properties or {})
        if session_expiry is not None:
            props["session_expiry_interval"] = session_expiry
        self._send(encode_connect(self.client_id, self.protocol, clean, keepalive,
                                  username, password, will, props))
        try:
            pkt = self._wait_packet(lambda p: p.type == CONNACK, "CONNACK", timeout)
        except MqttClosed:
            return Connack(None, None, {})
        return decode_connack(pkt.body, self.protocol)

    def subscribe(self, subscriptions: Union[str, Sequence[SubscriptionSpec]], qos: int = 0,
                  properties: Optional[Mapping[str, Any]] = None,
                  timeout: Optional[float] = None) -> List[int]:
        """Subscribe to a filter, a list of filters (all at ``qos``) or a list
        of (filter, options); return the SUBACK codes, one per filter."""
        if isinstance(subscriptions, str):
            subscriptions = [subscriptions]
        subs = [(s, qos) if isinstance(s, str) else (s[0], s[1]) for s in subscriptions]
        mid = next(self._mids)
        self._send(encode_subscribe(mid, subs, self.protocol, properties))
        pkt = self._wait_packet(lambda p: p.type == SUBACK and p.body[:2] == struct.pack("!H", mid),
                                "SUBACK", timeout)
        return decode_suback(pkt.body, self.protocol)[1]

    def unsubscribe(self, filters: Union[str, Sequence[str]],
                    properties: Optional[Mapping[str, Any]] = None,
                    timeout: Optional[float] = None) -> List[int]:
        """Return the UNSUBACK reason codes (MQTT 5) or [] (3.1.1)."""
        if isinstance(filters, str):
            filters = [filters]
        mid = next(self._mids)
        self._send(encode_unsubscribe(mid, list(filters), self.protocol, properties))
        pkt = self._wait_packet(lambda p: p.type == UNSUBACK and p.body[:2] == struct.pack("!H", mid),
                                "UNSUBACK", timeout)
        return decode_unsuback(pkt.body, self.protocol)[1]

    def publish(self, topic: str, payload: Union[bytes, str] = b"", qos: int = 0,
                retain: bool = False, properties: Optional[Mapping[str, Any]] = None,
                timeout: Optional[float] = None) -> Optional[int]:
        """Publish and return the broker's answer: None for QoS 0, the PUBACK
        reason code for QoS 1, the PUBREC reason code for QoS 2 (0 in 3.1.1
        when acknowledged).  For QoS 2 the flow is completed with PUBREL
        unless the PUBREC code is an MQTT 5 error; the PUBCOMP code is kept
        in ``last_pubcomp``."""
        mid = next(self._mids) if qos else None
        self._send(encode_publish(topic, payload, qos, retain, mid, False, self.protocol, properties))
        if qos == 0:
            return None
        if qos == 1:
            return self._wait_ack(PUBACK, mid, timeout)
        self.last_pubcomp = None
        rc = self._wait_ack(PUBREC, mid, timeout)
        if self.protocol == MQTTV5 and rc >= 0x80:
            return rc
        self._send(encode_ack(PUBREL, mid, protocol=self.protocol))
        self.last_pubcomp = self._wait_ack(PUBCOMP, mid, timeout)
        return rc

    def send(self, data: bytes) -> None:
        """Send raw bytes (an encode_* result, or something malformed)."""
        self._send(data)

    def expect(self, ptype: int, mid: Optional[int] = None,
               timeout: Optional[float] = None) -> Tuple[int, int, bytes]:
        """Wait for the next packet of type ``ptype`` (and packet id ``mid``
        for acknowledgements) and return (type, flags, body).  Incoming
        PUBLISH/PUBREL are handled by the reader and never returned here."""
        def match(p: _Packet) -> bool:
            return p.type == ptype and (mid is None or p.body[:2] == struct.pack("!H", mid))
        pkt = self._wait_packet(match, PACKET_NAMES.get(ptype, str(ptype)), timeout)
        return pkt.type, pkt.flags, pkt.body

    def next_mid(self) -> int:
        """A packet identifier this client has not used recently."""
        return next(self._mids)

    def ping(self, timeout: Optional[float] = None) -> bool:
        """PINGREQ/PINGRESP round trip: proves that the broker has handled
        everything this client sent before and that everything it queued
        for this client before the PINGRESP has been received."""
        self._send(encode_pingreq())
        self._wait_packet(lambda p: p.type == PINGRESP, "PINGRESP", timeout)
        return True

    def alive(self, timeout: Optional[float] = None) -> bool:
        """True if a ping round trip succeeds, False if the connection is gone."""
        if self._sock is None:
            return False
        try:
            return self.ping(timeout)
        except MqttClosed:
            return False

    def disconnect(self, rc: Optional[int] = None,
                   properties: Optional[Mapping[str, Any]] = None,
                   timeout: Optional[float] = None) -> None:
        """Normal disconnect: send DISCONNECT (MQTT 5 reason ``rc``; 0x04
        asks for the will) and wait until the broker closes the socket, which
        proves it has processed the DISCONNECT (will discarded or sent)."""
        if self._sock is None:
            return
        try:
            self._send(encode_disconnect(rc, self.protocol, properties))
        except MqttClosed:
            pass
        self._wait_closed_or_raise(timeout)
        self.close()

    def drop(self, timeout: Optional[float] = None) -> None:
        """Abnormal disconnect: half-close the socket without DISCONNECT (the
        broker sees a lost connection and publishes the will), then wait for
        the broker to close its side, which proves the will was handled."""
        if self._sock is None:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self._wait_closed_or_raise(timeout)
        self.close()

    def wait_closed(self, timeout: Optional[float] = None) -> bool:
        """True once the broker has closed the connection; False at the deadline."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def _wait_closed_or_raise(self, timeout: Optional[float]) -> None:
        if not self.wait_closed(timeout):
            raise MqttTimeout(f"{self.client_id}: broker did not close the connection")

    def close(self) -> None:
        """Close the socket at once (no DISCONNECT, no waiting for the broker)."""
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        if self._reader is not None and self._reader is not threading.current_thread():
            self._reader.join(self.timeout)
        self._reader = None

    def wait_messages(self, predicate: Union[int, Callable[[List[Message]], Any]],
                      timeout: Optional[float] = None) -> List[Message]:
        """Wait until ``predicate(messages)`` holds (an int n means at least n
        messages) and return a copy of ``messages``."""
        if isinstance(predicate, int):
            count = predicate
            predicate = lambda msgs: len(msgs) >= count  # noqa: E731
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self.messages):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MqttTimeout(f"{self.client_id}: expected messages not received "
                                      f"after {timeout:g}s; got {self.messages!r}")
                self._cond.wait(left)
            return list(self.messages)

    def take_messages(self) -> List[Message]:
        """Return and forget the messages received so far (``publishes``
        is emptied too)."""
        with self._cond:
            msgs, self.messages, self.publishes = self.messages, [], []
            return msgs

    def __enter__(self) -> "RawClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def barrier(publishers: Iterable[Any], subscribers: Iterable[Any],
            timeout: Optional[float] = None) -> None:
    """Ordering proof that needs no sleeping: ping every publisher (the
    broker has now routed all they sent), then every subscriber (all that
    routing produced has now been received).  Clients whose connection is
    already closed are skipped."""
    for group in (publishers, subscribers):
        for c in group:
            if c is not None and not c.closed:
                try:
                    c.ping(timeout)
                except MqttClosed:
                    pass


# --------------------------------------------------------------------------
# paho-based client
# --------------------------------------------------------------------------

def _paho():
    import paho.mqtt.client as mqtt
    return mqtt


def _make_paho_class():
    mqtt = _paho()

    class _AckCapturingClient(mqtt.Client):
        """paho 1.6.1 parses but drops the PUBACK/PUBREC/PUBCOMP reason code;
        read it from the raw packet before paho handles it."""

        def _eh_capture(self, kind: str) -> None:
            pkt = self._in_packet["packet"]
            if len(pkt) >= 2:
                mid = struct.unpack("!H", pkt[:2])[0]
                rc = pkt[2] if self._protocol == mqtt.MQTTv5 and len(pkt) > 2 else 0
                with self._eh_cond:
                    self._eh_acks[(kind, mid)] = rc
                    self._eh_cond.notify_all()

        def _handle_pubackcomp(self, cmd):
            self._eh_capture(cmd)
            return super()._handle_pubackcomp(cmd)

        def _handle_pubrec(self):
            self._eh_capture("PUBREC")
            return super()._handle_pubrec()

        # paho has no public ping; Client.ping() needs to see the answer.
        def _handle_pingresp(self):
            rc = super()._handle_pingresp()
            with self._eh_cond:
                self._eh_pings += 1
                self._eh_cond.notify_all()
            return rc

    return _AckCapturingClient


class Client:
    """paho-mqtt 1.6.1 client with blocking, deadline-bound helpers.

        c = Client(broker.port, "cid", MQTTV5)
        rc = c.connect(username="u", password="p")   # CONNACK code
        c.subscribe("a/#", qos=1)                    # -> [granted QoS / reason codes]
        c.publish("a/b", "x", qos=1)                 # -> PUBACK code (PUBREC for QoS 2)
        c.wait_messages(1); c.disconnect()

    The network loop runs in our own thread and never reconnects, so a
    refused client does not come back behind the test's back.
    """

    def __init__(self, port: int, client_id: str = "", protocol: int = MQTTV311,
                 host: str = "127.0.0.1", clean_session: bool = True,
                 timeout: float = TIMEOUT):
        mqtt = _paho()
        self.port, self.host, self.protocol, self.timeout = port, host, protocol, timeout
        self.client_id = client_id
        paho_protocol = {MQTTV31: mqtt.MQTTv31, MQTTV311: mqtt.MQTTv311, MQTTV5: mqtt.MQTTv5}[protocol]
        kwargs = {} if protocol == MQTTV5 else {"clean_session": clean_session}
        self.paho = _make_paho_class()(client_id=client_id, protocol=paho_protocol, **kwargs)
        self.paho._eh_cond = threading.Condition()
        self.paho._eh_acks = {}
        self.paho._eh_pings = 0
        self._cond = self.paho._eh_cond
        self.messages: List[Message] = []
        self.connack: Optional[int] = None
        self.session_present: Optional[bool] = None
        self._suback: Dict[int, List[int]] = {}
        self._disconnected = False
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.paho.on_connect = self._on_connect
        self.paho.on_disconnect = self._on_disconnect
        self.paho.on_subscribe = self._on_subscribe
        self.paho.on_message = self._on_message

    # paho callbacks (run on our loop thread)
    def _on_connect(self, client, userdata, flags, rc, properties=None):
        with self._cond:
            self.connack = getattr(rc, "value", rc)
            self.session_present = bool(flags.get("session present"))
            self._cond.notify_all()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        with self._cond:
            self._disconnected = True
            self._cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, granted, properties=None):
        with self._cond:
            self._suback[mid] = [getattr(g, "value", g) for g in granted]
            self._cond.notify_all()

    def _on_message(self, client, userdata, msg):
        with self._cond:
            self.messages.append(Message(msg.topic, msg.payload, msg.qos, bool(msg.retain)))
            self._cond.notify_all()

    def _loop(self) -> None:
        mqtt = _paho()
        while not self._stop.is_set():
            rc = self.paho.loop(timeout=0.05)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                break
        with self._cond:
            self._disconnected = True
            self._cond.notify_all()

    def _wait(self, predicate: Callable[[], Any], what: str, timeout: Optional[float]) -> Any:
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value is not None and value is not False:
                    return value
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MqttTimeout(f"{self.client_id}: no {what} after {timeout:g}s")
                self._cond.wait(min(left, 0.1))

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._disconnected

    def connect(self, username: Optional[str] = None, password: Optional[str] = None,
                will: Optional[Will] = None, clean_start: bool = True,
                session_expiry: Optional[int] = None, keepalive: int = 60,
                timeout: Optional[float] = None) -> Optional[int]:
        """Connect; return the CONNACK code (None: closed without CONNACK).
        ``clean_start`` applies to MQTT 5; 3.1.1 takes clean_session in the
        constructor.  ``session_present`` is set from the CONNACK."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties
        if username is not None or password is not None:
            self.paho.username_pw_set(username, password)
        if will is not None:
            wprops = None
            if will.properties:
                # paho names properties in CamelCase: will_delay_interval
                # becomes WillDelayInterval.
                wprops = Properties(PacketTypes.WILLMESSAGE)
                for k, v in will.properties.items():
                    setattr(wprops, "".join(p.capitalize() for p in k.split("_")), v)
            self.paho.will_set(will.topic, will.payload, will.qos, will.retain, wprops)
        kwargs: Dict[str, Any] = {}
        if self.protocol == MQTTV5:
            kwargs["clean_start"] = clean_start
            if session_expiry is not None:
                props = Properties(PacketTypes.CONNECT)
                props.SessionExpiryInterval = session_expiry
                kwargs["properties"] = props
        self.paho.connect(self.host, self.port, keepalive, **kwargs)
        self._thread = threading.Thread(target=self._loop, name=f"paho-{self.client_id}",
                                        daemon=True)
        self._thread.start()
        self._wait(lambda: self.connack is not None or self._disconnected,
                   "CONNACK", timeout)
        if self.connack not in (None, 0):
            self._shutdown()
        return self.connack

    def subscribe(self, topic: Union[str, Sequence[Tuple[str, int]]], qos: int = 0,
                  timeout: Optional[float] = None) -> List[int]:
        """Return the granted QoS list (3.1.1) or reason code values (5)."""
        rc, mid = self.paho.subscribe(topic, qos) if isinstance(topic, str) else self.paho.subscribe(list(topic))
        if rc != 0:
            raise MqttClosed(f"{self.client_id}: subscribe failed ({rc})")
        return self._wait(lambda: self._suback.get(mid) or (self._disconnected and []),
                          "SUBACK", timeout) or self._raise_closed("SUBACK")

    def _raise_closed(self, what: str):
        raise MqttClosed(f"{self.client_id}: connection closed while waiting for {what}")

    def publish(self, topic: str, payload: Union[bytes, str] = b"", qos: int = 0,
                retain: bool = False, timeout: Optional[float] = None) -> Optional[int]:
        """None for QoS 0 (once written), else the PUBACK code (QoS 1) or the
        PUBREC code (QoS 2; waits for PUBCOMP unless the code is an error)."""
        info = self.paho.publish(topic, payload, qos, retain)
        if info.rc != 0:
            raise MqttClosed(f"{self.client_id}: publish failed ({info.rc})")
        if qos == 0:
            self._wait(lambda: info.is_published() or self._disconnected, "QoS 0 write", timeout)
            return None
        kind = "PUBACK" if qos == 1 else "PUBREC"
        key = (kind, info.mid)
        self._wait(lambda: key in self.paho._eh_acks or self._disconnected, kind, timeout)
        if key not in self.paho._eh_acks:
            self._raise_closed(kind)
        rc = self.paho._eh_acks.pop(key)
        if qos == 2 and rc < 0x80:
            self._wait(lambda: info.is_published() or self._disconnected, "PUBCOMP", timeout)
        return rc

    def ping(self, timeout: Optional[float] = None) -> bool:
        """PINGREQ/PINGRESP round trip, with the same ordering guarantee as
        RawClient.ping() (so barrier() accepts paho clients too)."""
        with self._cond:
            before = self.paho._eh_pings
        if self.closed or self.paho._send_pingreq() != 0:
            self._raise_closed("PINGRESP")
        self._wait(lambda: self.paho._eh_pings > before or self._disconnected, "PINGRESP", timeout)
        if self.paho._eh_pings == before:
            self._raise_closed("PINGRESP")
        return True

    def wait_messages(self, predicate: Union[int, Callable[[List[Message]], Any]],
                      timeout: Optional[float] = None) -> List[Message]:
        """Like RawClient.wait_messages."""
        if isinstance(predicate, int):
            count = predicate
            predicate = lambda msgs: len(msgs) >= count  # noqa: E731
        self._wait(lambda: predicate(self.messages) or None, "messages", timeout)
        with self._cond:
            return list(self.messages)

    def disconnect(self, timeout: Optional[float] = None) -> None:
        """Send DISCONNECT and stop the network loop."""
        if self._thread is not None and not self.closed:
            self.paho.disconnect()
            try:
                self._wait(lambda: self._disconnected, "disconnect", timeout)
            except MqttTimeout:
                pass
        self._shutdown()

    def close(self) -> None:
        """Drop the connection without DISCONNECT (abnormal: the will fires)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.timeout)
        sock = self.paho.socket()
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(self.timeout)
        self._thread = None
        try:
            self.paho.socket() and self.paho.socket().close()
        except OSError:
            pass

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self._shutdown()


class Collector(Client):
    """A paho subscriber that records (topic, payload, qos, retain) of every
    message it receives in ``messages``.

        col = Collector(broker.port, ["events/#"], qos=1)
        ...
        col.wait_messages(lambda m: any(x.topic == "events/a" for x in m))
    """

    def __init__(self, port: int, filters: Union[str, Sequence[str]], qos: int = 1,
                 client_id: str = "eh-collector", protocol: int = MQTTV311,
                 username: Optional[str] = None, password: Optional[str] = None,
                 timeout: float = TIMEOUT, **kwargs):
        super().__init__(port, client_id, protocol, timeout=timeout, **kwargs)
        rc = self.connect(username=username, password=password)
        if rc != 0:
            raise AssertionError(f"collector {client_id}: CONNACK {rc}")
        filters = [filters] if isinstance(filters, str) else list(filters)
        self.granted = self.subscribe([(f, qos) for f in filters])
