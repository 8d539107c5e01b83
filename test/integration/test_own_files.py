"""The plugin's threads and the broker's file descriptor table.

When every sink opens its descriptors on its own thread (the file sink on a
regular file, the local, http and kafka sinks), the sink threads and the
fan-out thread each take a table of their own, holding none of the broker's
descriptors; the threads of libcurl and librdkafka share their sink
thread's
(plugin/eh_thread.h: the kernel's shared-table path in every read and write
costs the broker's thread 3 to 5 % of its CPU). Read through
/proc/<pid>/task/<tid>/fd, each thread's own view of its table:

- such a thread holds no socket, not the broker's log, only what it opened;
- after a SIGHUP the file sink's thread holds the new file, not the rotated
  one, and events keep arriving complete and in order;
- a FIFO path leaves every thread sharing the broker's table, as before;
- the mqtt sink's thread and paho's two threads (which serve every
  MQTTAsync client of the process) take one table together when the
  plugin is the broker's only plugin, loaded once; with a second block of
  ours (per-listener settings) every thread shares, as before.
"""
from __future__ import annotations

import json
import os
import select
import stat
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import Broker, BrokerTestCase, RawClient, read_events, wait_events, wait_until  # noqa: E402


def threads(pid):
    """{tid: name} of the process's threads."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                out[int(tid)] = f.read().strip()
        except OSError:
            pass
    return out


def table(pid, tid):
    """{fd: link target} as thread tid sees its descriptor table ({} once
    the thread has ended)."""
    out = {}
    base = f"/proc/{pid}/task/{tid}/fd"
    try:
        fds = os.listdir(base)
    except OSError:
        return out  # a library's thread that ended since the listing
    for fd in fds:
        try:
            out[int(fd)] = os.readlink(f"{base}/{fd}")
        except OSError:
            pass  # closed between the listing and the readlink
    return out


def same_table(tid1, tid2):
    """Whether two threads share one descriptor table, from the kernel
    (kcmp KCMP_FILES); None where kcmp is not available."""
    import ctypes
    import platform
    number = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
    if number is None:
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    args = [ctypes.c_long(a) for a in (number, tid1, tid2, 2, 0, 0)]  # 2: KCMP_FILES
    rc = libc.syscall(*args)
    return None if rc < 0 else rc == 0


def sockets(tab):
    """The sockets in a table, as socket:[inode]."""
    return {target for target in tab.values() if target.startswith("socket:")}


class OwnFilesTest(BrokerTestCase):
    def broker(self, fifo=False, **opts):
        """A broker with the plugin and opts ({dir}: its directory); with
        fifo, <dir>/events.fifo is made first and returned, opened for
        reading, as well."""
        plugin_opts = {"events": "*"}
        plugin_opts.update(opts)
        b = Broker(["allow_anonymous true"], start=False, name=self._testMethodName)
        self.add_broker(b)
        reader = None
        if fifo:
            os.mkfifo(b.path("events.fifo"))
            reader = os.open(b.path("events.fifo"), os.O_RDONLY | os.O_NONBLOCK)
            self.addCleanup(os.close, reader)
        b.plugin_opts = [(k, v.replace("{dir}", str(b.dir))) for k, v in plugin_opts.items()]
        b.start()
        return (b, reader) if fifo else b

    def thread_files(self, b, tid):
        """What thread tid opened itself: its descriptors above 2."""
        return {target for fd, target in table(b.proc.pid, tid).items() if fd > 2}

    def eh_threads(self, b, want):
        """{name: tid} of the plugin's threads, once all of want run."""
        got = {}

        def ready():
            got.clear()
            got.update({name: tid for tid, name in threads(b.proc.pid).items() if name.startswith("eh-")})
            return set(want) <= set(got)

        wait_until(ready, message="threads %s" % sorted(want))
        return got

    @staticmethod
    def wait_disconnected(path, clientid):
        """Until the file at path holds clientid's client.disconnected."""
        wait_events(path, lambda evs: any(e.get("clientid") == clientid and e["event"] == "client.disconnected"
                                          for e in evs))

    def cycle(self, b, clientid, topic):
        c = RawClient(b.port, clientid)
        self.assertEqual(c.connect().rc, 0)
        self.assertEqual(c.publish(topic, b"x", qos=1), 0)
        c.disconnect()

    def test_file_and_local_threads_hold_no_broker_descriptor(self):
        b = self.broker(file_path="{dir}/events.jsonl", local_topic="$ev/{event}/{clientid}",
                        local_events="message.publish")
        path = b.path("events.jsonl")
        viewer = RawClient(b.port, "viewer")
        self.assertEqual(viewer.connect().rc, 0)
        viewer.subscribe("$ev/#")
        self.cycle(b, "c1", "t/1")
        self.wait_disconnected(path, "c1")
        names = self.eh_threads(b, {"eh-file", "eh-local", "eh-fanout"})
        main = table(b.proc.pid, b.proc.pid)
        self.assertTrue(sockets(main), "the broker's own table holds its sockets")
        log = os.path.realpath(b.path("broker.log"))
        self.assertIn(log, main.values())
        for name, tid in names.items():
            tab = table(b.proc.pid, tid)
            self.assertEqual(sockets(tab), set(), f"{name} holds a socket: {tab}")
            self.assertNotIn(log, tab.values(), name)
            self.assertEqual(self.thread_files(b, tid), {os.path.realpath(path)} if name == "eh-file" else set(),
                             name)

        # logrotate's rename and SIGHUP: the thread reopens in its table
        os.rename(path, path + ".1")
        b.sighup()
        self.cycle(b, "c2", "t/2")
        self.wait_disconnected(path, "c2")  # in the new file
        self.assertEqual(self.thread_files(b, names["eh-file"]), {os.path.realpath(path)},
                         "the file sink's thread holds the new file only")
        old = [(e["event"], e.get("clientid")) for e in read_events(path + ".1") if e.get("clientid") == "c1"]
        new = [(e["event"], e.get("clientid")) for e in read_events(path) if e.get("clientid") == "c2"]
        for got, who in ((old, "c1"), (new, "c2")):
            self.assertEqual(got, [("client.connect", who), ("client.connected", who),
                                   ("message.publish", who), ("client.disconnected", who)])
        msgs = viewer.wait_messages(lambda m: len(m) >= 2)
        self.assertEqual([(m.topic, json.loads(m.payload)["topic"]) for m in msgs[:2]],
                         [("$ev/message.publish/c1", "t/1"), ("$ev/message.publish/c2", "t/2")])
        viewer.disconnect()
        self.assertEqual(b.stop(), 0)
        self.assertNotIn("keeps the descriptor table it started with", b.log())

    def test_file_alone_thread_started_by_the_broker_thread(self):
        """One sink, no fan-out: the broker thread itself starts the file
        sink's thread at the first event."""
        b = self.broker(file_path="{dir}/events.jsonl")
        self.cycle(b, "c1", "t/1")
        self.wait_disconnected(b.path("events.jsonl"), "c1")
        names = self.eh_threads(b, {"eh-file"})
        self.assertNotIn("eh-fanout", names)
        self.assertEqual(sockets(table(b.proc.pid, names["eh-file"])), set())
        self.assertEqual(self.thread_files(b, names["eh-file"]), {os.path.realpath(b.path("events.jsonl"))})
        self.assertEqual(b.stop(), 0)

    def test_fifo_path_shares_the_table(self):
        b, reader = self.broker(fifo=True, file_path="{dir}/events.fifo")
        fifo = b.path("events.fifo")
        self.cycle(b, "c1", "t/1")
        names = self.eh_threads(b, {"eh-file"})
        got = b""
        while b'"client.disconnected"' not in got:
            wait_until(lambda: self._readable(reader), message="events on the FIFO")
            got += os.read(reader, 65536)
        self.assertTrue(stat.S_ISFIFO(os.stat(fifo).st_mode))
        tab = table(b.proc.pid, names["eh-file"])
        self.assertTrue(sockets(tab) & sockets(table(b.proc.pid, b.proc.pid)),
                        "a FIFO's sink thread shares the broker's table")
        self.assertEqual(b.stop(), 0)

    @staticmethod
    def _readable(fd):
        return bool(select.select([fd], [], [], 0)[0])

    def test_http_and_kafka_threads_hold_no_broker_descriptor(self):
        """Peers unreachable: the libraries' own sockets come and go in
        their threads' tables, never the broker's."""
        b = self.broker(file_path="{dir}/events.jsonl", http_url="http://127.0.0.1:9/",
                        kafka_brokers="127.0.0.1:9")
        self.cycle(b, "c1", "t/1")
        self.wait_disconnected(b.path("events.jsonl"), "c1")
        self.eh_threads(b, {"eh-file", "eh-http", "eh-kafka", "eh-fanout"})
        main = table(b.proc.pid, b.proc.pid)
        log = os.path.realpath(b.path("broker.log"))
        seen = set()
        for tid, name in threads(b.proc.pid).items():
            if tid == b.proc.pid:
                continue
            tab = table(b.proc.pid, tid)
            seen.add(name.split(":")[0])
            self.assertEqual(sockets(tab) & sockets(main), set(), f"{name} holds a broker socket")
            self.assertNotIn(log, tab.values(), name)
        # librdkafka's threads are there too, in the kafka sink thread's table
        self.assertIn("rdk", seen)
        self.assertEqual(b.stop(), 0)
        self.assertNotIn("keeps the descriptor table it started with", b.log())

    def test_mqtt_sink_and_paho_threads_share_one_table_of_their_own(self):
        """The only plugin: the sink's thread starts paho's threads, which
        hold the connection to the target in that table, never the
        broker's; events reach the target."""
        peer = self.add_broker(Broker(["allow_anonymous true"], plugin=False, name="target"))
        watcher = RawClient(peer.port, "watcher")
        self.assertEqual(watcher.connect().rc, 0)
        watcher.subscribe("eventhook/#")
        b = self.broker(file_path="{dir}/events.jsonl", mqtt_uri=f"tcp://127.0.0.1:{peer.port}")
        self.cycle(b, "c1", "t/1")
        msgs = watcher.wait_messages(lambda m: any(x.topic.endswith("/client.disconnected/c1") for x in m))
        self.assertEqual([x.topic.split("/")[-2] for x in msgs if x.topic.endswith("/c1")],
                         ["client.connect", "client.connected", "message.publish", "client.disconnected"])
        self.eh_threads(b, {"eh-file", "eh-mqtt"})
        names = {name: tid for tid, name in threads(b.proc.pid).items()}
        self.assertIn("MQTTAsync_send", names)
        self.assertIn("MQTTAsync_rcv", names)
        main = table(b.proc.pid, b.proc.pid)
        log = os.path.realpath(b.path("broker.log"))
        for tid, name in threads(b.proc.pid).items():
            if tid == b.proc.pid:
                continue
            tab = table(b.proc.pid, tid)
            self.assertEqual(sockets(tab) & sockets(main), set(), f"{name} holds a broker socket")
            self.assertNotIn(log, tab.values(), name)
        paho = table(b.proc.pid, names["MQTTAsync_rcv"])
        self.assertEqual(len(sockets(paho)), 1, f"paho's connection to the target: {paho}")
        for name in ("MQTTAsync_send", "MQTTAsync_rcv"):
            shared = same_table(names["eh-mqtt"], names[name])
            if shared is None:  # no kcmp here: the two views at two moments
                self.assertEqual(table(b.proc.pid, names["eh-mqtt"]), table(b.proc.pid, names[name]), name)
            else:
                self.assertTrue(shared, f"{name} shares the sink thread's table")
                self.assertIs(same_table(b.proc.pid, names[name]), False, f"{name} is off the broker's table")
        self.assertEqual(b.stop(), 0)
        self.assertNotIn("keeps the descriptor table it started with", b.log())
        self.assertIn("eventhook: mqtt: stopped; enqueued 4, delivered 4, failed 0, dropped 0, "
                      "left undelivered at shutdown 0", b.log())
        watcher.disconnect()

    def test_mqtt_sink_in_two_plugin_blocks_keeps_every_thread_sharing(self):
        """Per-listener settings, a block of ours per listener: paho's
        threads would serve both sinks, so every thread shares."""
        b = self.start_broker(["per_listener_settings true"], listeners=[["allow_anonymous true"]] * 2,
                              listener_plugin_opts=[{"file_path": "{dir}/a.jsonl", "mqtt_uri": "tcp://127.0.0.1:9"},
                                                    {"file_path": "{dir}/b.jsonl",
                                                     "mqtt_uri": "tcp://127.0.0.1:9"}])
        self.cycle(b, "c1", "t/1")
        self.wait_disconnected(b.path("a.jsonl"), "c1")
        main = sockets(table(b.proc.pid, b.proc.pid))
        seen = 0
        for tid, name in threads(b.proc.pid).items():
            if name in ("eh-file", "eh-mqtt"):
                seen += 1
                self.assertTrue(sockets(table(b.proc.pid, tid)) & main, f"{name} shares the broker's table")
        self.assertGreaterEqual(seen, 3)
        self.assertEqual(b.stop(), 0)


if __name__ == "__main__":
    unittest.main()
