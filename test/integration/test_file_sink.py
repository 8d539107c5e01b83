"""File sink failure paths against the real broker: a disk that fills in the
middle of a line and is then freed, file_fsync on a file that cannot be
synced, file_fsync failing with EIO (through an LD_PRELOAD shim that
replaces fsync in the broker process, since a failing disk cannot be had
on demand), and pipes: a FIFO or the broker's own stdout that nobody reads
(shutdown stays bounded), a slow reader that stalls (every line whole, in
order), a FIFO with no reader at start or at a SIGHUP reopen, and a
write that never returns (a frozen filesystem).

A full disk needs a small filesystem. The broker runs in a mount namespace of
its own with a 64 KB tmpfs mounted over <broker dir>/mnt, so no privilege
beyond an unprivileged user namespace is needed (on a root CI machine a plain
mount namespace serves too), and nothing outside the test ever sees the mount.
A `sleep` started in that namespace before the broker keeps it, and so the
tmpfs, alive after the broker exits; the test reads and changes the tmpfs
through /proc/<that sleep>/root, and ends the sleep in its cleanup.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import TIMEOUT, Broker, BrokerTestCase, RawClient, wait_until  # noqa: E402
from eh_rel import stopped_counters  # noqa: E402

# The ways to get a private mount namespace, in order of preference: an
# unprivileged user namespace first (no root needed), then a plain mount
# namespace, which needs root (CAP_SYS_ADMIN) but no user namespaces.
UNSHARE_CANDIDATES = [["unshare", "--user", "--map-root-user", "--mount"], ["unshare", "--mount"]]
TMPFS_SIZE = "64k"

# $1: mount point, $2: where to write the namespace holder's pid; the rest
# is the broker command.  The holder's lifetime bounds a leak if the test
# process dies before its cleanup.
WRAP_SCRIPT = """set -e
mount -t tmpfs -o size=%s tmpfs "$1"
sleep 1800 </dev/null >/dev/null 2>&1 &
echo $! > "$2"
shift 2
exec "$@"
""" % TMPFS_SIZE


def find_unshare() -> List[str]:
    """The first UNSHARE_CANDIDATES entry that can mount a tmpfs here; fails
    the calling test (never skips it) with what each attempt said."""
    tried = []
    probe = tempfile.mkdtemp(prefix="eh-fsprobe-")
    try:
        for cand in UNSHARE_CANDIDATES:
            if not shutil.which(cand[0]):
                tried.append(f"{' '.join(cand)}: {cand[0]} is not installed (util-linux)")
                continue
            try:
                r = subprocess.run(cand + ["sh", "-c", f'mount -t tmpfs -o size={TMPFS_SIZE} tmpfs "$1"',
                                           "sh", probe],
                                   stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            except subprocess.TimeoutExpired:
                tried.append(f"{' '.join(cand)}: timed out")
                continue
            if r.returncode == 0:
                return cand
            tried.append(f"{' '.join(cand)}: exit {r.returncode}: "
                         f"{r.stderr.decode(errors='replace').strip()}")
    finally:
        os.rmdir(probe)
    raise AssertionError(
        "cannot give the broker a small filesystem to fill: this test needs either unprivileged "
        "user namespaces (sysctl kernel.unprivileged_userns_clone=1 and user.max_user_namespaces > 0 "
        "on Debian) or root, for a private tmpfs mount. Attempts:\n  " + "\n  ".join(tried))


class TmpfsBroker(Broker):
    """A broker with a private TMPFS_SIZE tmpfs at ``self.mnt`` (same path
    inside its namespace); ``outside(name)`` is that file seen from here."""

    def __init__(self, *args, unshare: List[str], **kwargs):
        self.unshare = unshare
        self.holder: Optional[int] = None
        super().__init__(*args, **kwargs)
        self.mnt = self.dir / "mnt"
        self.holder_file = self.dir / "holder.pid"

    def command(self) -> List[str]:
        return self.unshare + ["sh", "-c", WRAP_SCRIPT, "sh", str(self.mnt), str(self.holder_file)] \
            + super().command()

    def start(self, *args, **kwargs) -> "TmpfsBroker":
        self.mnt.mkdir(exist_ok=True)
        super().start(*args, **kwargs)
        self.holder = int(self.holder_file.read_text())
        return self

    def outside(self, name: str = "") -> str:
        return f"/proc/{self.holder}/root{self.mnt}/{name}"

    def end_holder(self) -> None:
        if self.holder is not None:
            try:
                os.kill(self.holder, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.holder = None


def split_lines(data: bytes):
    """(parsed events, unparseable lines) of a JSON-lines file; a last line
    without its newline counts as unparseable."""
    parsed, bad = [], []
    for raw in data.split(b"\n"):
        try:
            parsed.append(json.loads(raw))
        except ValueError:
            bad.append(raw)
    if bad and bad[-1] == b"" and data.endswith(b"\n"):
        bad.pop()  # what follows the final newline
    return parsed, bad


class DiskFull(BrokerTestCase):
    def test_torn_line_then_complete_copy_on_its_own_line(self):
        unshare = find_unshare()
        b = self.add_broker(TmpfsBroker(
            ["allow_anonymous true"], unshare=unshare, start=False, name="diskfull",
            plugin_opts={"file_path": "{dir}/mnt/ev.jsonl", "events": "client.connected"}))
        self.addCleanup(b.end_holder)
        b.start()
        ev = b.outside("ev.jsonl")
        self.assertEqual(os.path.getsize(ev), 0)
        # Leave exactly one page free: the first write past it stops at a
        # page boundary.
        st = os.statvfs(b.outside())
        with open(b.outside("filler"), "wb") as f:
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 4096))
        st = os.statvfs(b.outside())
        self.assertEqual(st.f_bavail * st.f_frsize, 4096)

        # Five short lines (about 1.5 KB), then one far longer than the
        # page: its line cannot fit, so the write tears it whatever the
        # short lines' exact lengths are.
        long_id = "long-" + "x" * 6000
        ids = [f"c-{i:03d}" for i in range(5)] + [long_id] + [f"c-{i:03d}" for i in range(5, 40)]
        self.assertEqual(len(ids), 41)
        for cid in ids[:6]:
            self.assertEqual(RawClient(b.port, cid).connect().rc, 0)
        wait_until(lambda: "No space left on device; retrying" in b.log(), message="the write failure")
        for cid in ids[6:]:
            self.assertEqual(RawClient(b.port, cid).connect().rc, 0)
        with open(ev, "rb") as f:
            full = f.read()
        self.assertEqual(len(full), 4096)
        self.assertFalse(full.endswith(b"\n"), "the full disk should have torn the long line")
        # A reload reopens the same file: it is still torn there.
        b.sighup()

        os.unlink(b.outside("filler"))

        def complete():
            with open(ev, "rb") as f:
                parsed, _ = split_lines(f.read())
            return len(parsed) == len(ids)
        wait_until(complete, message="every event as a complete line after freeing space")
        self.assertEqual(b.stop(), 0)
        with open(ev, "rb") as f:
            data = f.read()
        parsed, bad = split_lines(data)

        # Every event exactly once, complete, in order; the only other line
        # is the torn start of the long one, before its complete copy.
        self.assertEqual([e["clientid"] for e in parsed], ids)
        self.assertEqual(len(bad), 1, f"unparseable lines: {[x[:80] for x in bad]}")
        lines = data.split(b"\n")
        torn_at = lines.index(bad[0])
        self.assertTrue(bad[0].startswith(b'{"event":"client.connected"'))
        self.assertTrue(lines[torn_at + 1].startswith(bad[0]),
                        "the complete copy should be the line right after the torn fragment")
        self.assertEqual(json.loads(lines[torn_at + 1])["clientid"], long_id)
        self.assertTrue(data.endswith(b"\n"))
        self.assertNotIn(b"", lines[:-1], "no empty lines")

        self.assertEqual(stopped_counters(b.log())["file"],
                         {"enqueued": 41, "delivered": 41, "failed": 0, "dropped": 0, "left": 0})
        self.assertEqual(b.log().count("eventhook: file: cannot write"), 1)
        self.assertEqual(b.log().count("eventhook: file: writing"), 1)


# fsync fails with the errno in $EH_TEST_FSYNC_ERRNO (every other call is
# untouched: the broker only fsyncs through our plugin here).
FSYNC_SHIM = r"""
#include <errno.h>
#include <stdlib.h>
int fsync(int fd)
{
	(void)fd;
	errno = atoi(getenv("EH_TEST_FSYNC_ERRNO"));
	return -1;
}
"""


class FsyncShimBroker(Broker):
    def __init__(self, *args, shim: str, fsync_errno: int, **kwargs):
        self.shim, self.fsync_errno = shim, fsync_errno
        super().__init__(*args, **kwargs)

    def _env(self):
        env = super()._env()
        # A sanitizer runtime, if any, must stay first.
        env["LD_PRELOAD"] = ":".join(p for p in (env.get("LD_PRELOAD"), self.shim) if p)
        env["EH_TEST_FSYNC_ERRNO"] = str(self.fsync_errno)
        return env


class Fsync(BrokerTestCase):
    def test_fsync_eio_counts_failed_not_retried_rate_limited_log(self):
        tmp = tempfile.mkdtemp(prefix="eh-fsyncshim-")
        self.addCleanup(shutil.rmtree, tmp, True)
        Path(tmp, "shim.c").write_text(FSYNC_SHIM)
        shim = os.path.join(tmp, "fsync_shim.so")
        subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", shim,
                        os.path.join(tmp, "shim.c")], check=True)
        b = self.add_broker(FsyncShimBroker(
            ["allow_anonymous true"], shim=shim, fsync_errno=errno.EIO, start=False, name="eio",
            plugin_opts={"file_path": "{dir}/events.jsonl", "file_fsync": "true",
                         "file_batch_max": "1", "events": "client.connected"}))
        b.start()
        ids = [f"e{i:02d}" for i in range(12)]
        for cid in ids:
            self.assertEqual(RawClient(b.port, cid).connect().rc, 0)
        self.assertEqual(b.stop(), 0)
        log = b.log()
        # Every batch failed, none retried: each event is in the file once.
        self.assertEqual(stopped_counters(log)["file"],
                         {"enqueued": 12, "delivered": 0, "failed": 12, "dropped": 0, "left": 0})
        with open(b.path("events.jsonl"), "rb") as f:
            parsed, bad = split_lines(f.read())
        self.assertEqual(([e["clientid"] for e in parsed], bad), (ids, []))
        # eh_sink_log_due: the first 10 of 12 failures are logged.
        self.assertEqual(log.count("eventhook: file: fsync '%s': Input/output error; 1 event(s) counted "
                                   "failed" % b.path("events.jsonl")), 10)
        self.assertNotIn("file_fsync has no effect", log)

    def test_fsync_unsupported_said_once_and_delivered(self):
        # /dev/null: fsync fails with EINVAL, "this file cannot be synced";
        # one event per batch so that every event is its own fsync.
        b = self.start_broker(["allow_anonymous true"], plugin_opts={
            "file_path": "/dev/null", "file_fsync": "true", "file_batch_max": "1",
            "events": "client.connected"})
        for i in range(5):
            self.assertEqual(RawClient(b.port, f"a{i}").connect().rc, 0)
        self.assertEqual(b.stop(), 0)
        log = b.log()
        self.assertEqual(stopped_counters(log)["file"],
                         {"enqueued": 5, "delivered": 5, "failed": 0, "dropped": 0, "left": 0})
        self.assertEqual(log.count("eventhook: file: file_fsync has no effect on '/dev/null': "
                                   "Invalid argument"), 1)
        self.assertNotIn("eventhook: file: fsync", log)


# The longest a broker may take to exit after SIGTERM in the pipe tests. The
# plugin's promise is shutdown_timeout_ms (1 s there) plus the thread joins;
# the bound is generous so that a slow or loaded machine never fails them,
# and the old blocked write (no exit at all) always does.
EXIT_BOUND_S = 20.0
LONG = "x" * 300  # client id padding: a few hundred events fill a 64 KiB pipe


def pipe_bytes(fd: int) -> int:
    """Bytes waiting in a pipe, seen from its read end."""
    buf = fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0")
    return int.from_bytes(buf, sys.byteorder)


def wait_pipe_full(fd: int) -> None:
    """Waits until a pipe that nobody reads has stopped filling. A full pipe
    holds less than its 64 KiB when writes left pages partly used."""
    last = [-1]

    def stopped_growing():
        n = pipe_bytes(fd)
        full, last[0] = n > 16384 and n == last[0], n
        if not full:
            time.sleep(0.3)
        return full
    wait_until(stopped_growing, message="the pipe to fill")


def read_available(fd: int) -> bytes:
    """Everything a non-blocking read end holds now (up to EOF)."""
    out = bytearray()
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


def fdinfo_flags(pid: int, fd: int) -> int:
    with open(f"/proc/{pid}/fdinfo/{fd}") as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags in /proc/{pid}/fdinfo/{fd}")


def connect_and_leave(port: int, ids) -> None:
    for cid in ids:
        c = RawClient(port, cid)
        assert c.connect().rc == 0, cid
        c.disconnect()


def expected_events(ids):
    return [(kind, cid) for cid in ids for kind in ("client.connected", "client.disconnected")]


class SlowReader(threading.Thread):
    """Reads a non-blocking FIFO end ``chunk`` bytes at a time with a pause
    of ``delay`` seconds between reads, until stopped; ``paused`` holds it."""

    def __init__(self, fd: int, chunk: int = 512, delay: float = 0.002):
        super().__init__(daemon=True)
        self.fd, self.chunk, self.delay = fd, chunk, delay
        self.paused = threading.Event()
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.data = bytearray()

    def run(self) -> None:
        while not self.done.is_set():
            if self.paused.is_set() or not select.select([self.fd], [], [], 0.05)[0]:
                time.sleep(0.01)
                continue
            try:
                chunk = os.read(self.fd, self.chunk)
            except BlockingIOError:
                continue
            if not chunk:  # no writer (yet, or any more)
                time.sleep(0.01)
                continue
            with self.lock:
                self.data += chunk
            time.sleep(self.delay)

    def snapshot(self) -> bytes:
        with self.lock:
            return bytes(self.data)


def thread_states(pid: int, name: str) -> List[str]:
    """The scheduler state letters (R, S, D, ...) of pid's threads called name."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if f.read().strip() != name:
                    continue
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                out.append(f.read().rsplit(")", 1)[1].split()[0])
        except FileNotFoundError:
            pass
    return out


class StuckStorage(BrokerTestCase):
    """A write that never returns, as on a hard-mounted NFS export that
    stopped answering: here a loop-mounted ext4 frozen with fsfreeze, where
    writes wait in the kernel, uninterruptibly, until it is thawed. The
    broker's stop must still end: the sink's thread is left behind after the
    shutdown deadline and its grace (EH_JOIN_GRACE_MS, 10 s), with its
    events counted left. Needs root, a loop device and e2fsprogs."""

    def freezable_dir(self) -> Path:
        d = Path(tempfile.mkdtemp(prefix="eh-frozen-"))
        self.addCleanup(shutil.rmtree, d, True)
        img, mnt = d / "img", d / "mnt"
        mnt.mkdir()
        with open(img, "wb") as f:
            f.truncate(16 << 20)
        for cmd in (["mkfs.ext4", "-q", "-F", str(img)], ["mount", "-o", "loop", str(img), str(mnt)]):
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
            if r.returncode:
                raise AssertionError(f"cannot make a filesystem to freeze ({' '.join(cmd)}: exit {r.returncode}: "
                                     f"{r.stderr.strip()}); this test needs root, a loop device and e2fsprogs")
        self.addCleanup(subprocess.run, ["umount", "-l", str(mnt)], capture_output=True, timeout=60)
        return mnt

    def test_write_that_never_returns_broker_stops_without_it(self):
        mnt = self.freezable_dir()
        b = self.add_broker(Broker(["allow_anonymous true"], start=False, name="frozen", plugin_opts={
            "file_path": f"{mnt}/ev.jsonl", "events": "client.connected", "shutdown_timeout_ms": "0"}))
        # Runs before the broker's cleanup: a thread in the frozen write
        # would keep the broker from ever exiting, even from SIGKILL.
        self.addCleanup(subprocess.run, ["fsfreeze", "-u", str(mnt)], capture_output=True, timeout=60)
        b.start()
        clients = [RawClient(b.port, "before")] + [RawClient(b.port, f"during-{i}") for i in range(3)]
        for c in clients:
            self.addCleanup(c.close)
        self.assertEqual(clients[0].connect().rc, 0)
        wait_until(lambda: (mnt / "ev.jsonl").read_bytes().count(b"\n") == 1, message="the first event written")

        subprocess.run(["fsfreeze", "-f", str(mnt)], check=True, timeout=60)
        for c in clients[1:]:
            self.assertEqual(c.connect().rc, 0)
        pid = b.proc.pid
        wait_until(lambda: thread_states(pid, "eh-file") == ["D"], message="the sink thread blocked in its write")

        b.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: "eventhook: file: stopped;" in b.log(), timeout=60, message="the plugin's stop")
        self.assertIn("eventhook: file: its thread is still busy 10000 ms after the shutdown deadline", b.log())
        self.assertEqual(stopped_counters(b.log())["file"],
                         {"enqueued": 4, "delivered": 1, "failed": 0, "dropped": 0, "left": 3})
        # The broker has finished; the thread it left behind ends at the
        # thaw, and with it the process.
        subprocess.run(["fsfreeze", "-u", str(mnt)], check=True, timeout=60)
        self.assertEqual(b.proc.wait(TIMEOUT), 0)


class Pipes(BrokerTestCase):
    """file_path on a FIFO, or /dev/stdout on a pipe: what a container's log
    pipe or a log shipper behind a FIFO does to the sink when its reader
    stops reading, reads slowly, or is not there yet."""

    def fifo_broker(self, opts=None, name="fifo", reader=True):
        """A broker (not started) whose file_path is <dir>/ev.fifo, and the
        read end of that FIFO (non-blocking, never read by this helper), or
        None without ``reader``."""
        plugin_opts = {"file_path": "{dir}/ev.fifo", "events": "client.connected,client.disconnected",
                       "shutdown_timeout_ms": "1000"}
        plugin_opts.update(opts or {})
        b = self.add_broker(Broker(["allow_anonymous true"], start=False, name=name,
                                   plugin_opts=plugin_opts))
        os.mkfifo(b.path("ev.fifo"))
        if not reader:
            return b, None
        r = os.open(b.path("ev.fifo"), os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, r)
        return b, r

    def stop_within_bound(self, b: Broker) -> dict:
        """SIGTERM; the broker must exit by itself within EXIT_BOUND_S
        (b.stop kills it after that: status -9). Its counters must add up."""
        t0 = time.monotonic()
        rc = b.stop(timeout=EXIT_BOUND_S)
        took = time.monotonic() - t0
        self.assertEqual(rc, 0, f"the broker did not exit by itself {took:.1f} s after SIGTERM")
        c = stopped_counters(b.log())["file"]
        self.assertEqual(c["enqueued"], c["delivered"] + c["failed"] + c["left"], c)
        return c

    def assert_whole_lines(self, data: bytes, ids, complete: bool = True):
        """data holds the events of ``ids`` (each connected then
        disconnected) in order, as whole lines with consecutive seq; with
        complete=False, a prefix of them and at most a torn last line."""
        lines = data.split(b"\n")
        tail = lines.pop()
        if complete:
            self.assertEqual(tail, b"", "the last line is not whole")
        events = [json.loads(line) for line in lines]
        want = expected_events(ids)
        if complete:
            self.assertEqual([(e["event"], e["clientid"]) for e in events], want)
        else:
            self.assertEqual([(e["event"], e["clientid"]) for e in events], want[:len(events)])
            if tail:
                self.assertLess(len(events), len(want))
                nxt = want[len(events)]
                self.assertTrue(tail.startswith(b'{"event":"%s"' % nxt[0].encode()), tail[:80])
        seqs = [e["seq"] for e in events]
        self.assertEqual(seqs, list(range(seqs[0], seqs[0] + len(seqs))) if seqs else [])
        return events

    def test_fifo_nobody_reads_shutdown_within_deadline(self):
        b, r = self.fifo_broker()
        b.start()
        ids = [f"blk{i:03d}-{LONG}" for i in range(300)]
        connect_and_leave(b.port, ids)
        # The pipe is full and the sink waits for room.
        wait_pipe_full(r)
        live = [RawClient(b.port, f"live{i}") for i in range(3)]
        for c in live:
            self.assertEqual(c.connect().rc, 0)
        c = self.stop_within_bound(b)
        self.assertEqual((c["failed"], c["dropped"]), (0, 0))
        self.assertGreater(c["left"], 0)
        self.assertIn("took no more data before the shutdown deadline", b.log())
        # What the FIFO got: exactly the lines counted delivered, whole and
        # in order, then at most the start of the next one.
        events = self.assert_whole_lines(read_available(r), ids, complete=False)
        self.assertEqual(len(events), c["delivered"])

    def test_dev_stdout_on_full_pipe_and_broker_stdout_stays_blocking(self):
        # The container case: the broker's stdout is a pipe that its reader
        # does not drain, and file_path is /dev/stdout.
        r, w = os.pipe()
        os.set_blocking(r, False)
        self.addCleanup(os.close, r)
        self.addCleanup(os.close, w)
        me = os.getpid()

        class StdoutPipeBroker(Broker):
            def command(self):
                return ["sh", "-c", 'out=$1; shift; exec "$@" >"$out"', "sh",
                        f"/proc/{me}/fd/{w}"] + super().command()

        b = self.add_broker(StdoutPipeBroker(["allow_anonymous true"], start=False, name="stdout",
                                             plugin_opts={"file_path": "/dev/stdout",
                                                          "events": "client.connected,client.disconnected",
                                                          "shutdown_timeout_ms": "1000"}))
        b.start()
        pid = b.proc.pid
        pipe = os.readlink(f"/proc/{pid}/fd/1")
        self.assertTrue(pipe.startswith("pipe:"), pipe)
        ids = [f"out{i:03d}-{LONG}" for i in range(300)]
        connect_and_leave(b.port, ids)
        wait_pipe_full(r)
        # The broker's stdout keeps its flags; the sink's own file
        # description of the same pipe is the non-blocking one.
        self.assertFalse(fdinfo_flags(pid, 1) & os.O_NONBLOCK, "the broker's stdout became non-blocking")
        ours = [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
                if fd != "1" and os.readlink(f"/proc/{pid}/fd/{fd}") == pipe]
        self.assertEqual(len(ours), 1, ours)
        ours_flags = fdinfo_flags(pid, ours[0])
        c = self.stop_within_bound(b)
        self.assertTrue(ours_flags & os.O_NONBLOCK)
        self.assertGreater(c["left"], 0)
        events = self.assert_whole_lines(read_available(r), ids, complete=False)
        self.assertEqual(len(events), c["delivered"])

    def test_slow_reader_that_stalls_gets_every_line_whole_in_order(self):
        b, r = self.fifo_broker(opts={"shutdown_timeout_ms": "5000"})
        b.start()
        reader = SlowReader(r)
        reader.start()
        self.addCleanup(reader.done.set)
        ids = [f"slow{i:03d}-{LONG}" for i in range(300)]
        connect_and_leave(b.port, ids[:150])
        # The reader stops reading long enough for the sink to say so.
        reader.paused.set()
        connect_and_leave(b.port, ids[150:])
        wait_until(lambda: "ev.fifo' has taken nothing for 5 s" in b.log(), timeout=TIMEOUT + 10,
                   message="the sink to say that the FIFO takes nothing")
        reader.paused.clear()
        want = len(ids) * 2
        wait_until(lambda: reader.snapshot().count(b"\n") >= want, timeout=TIMEOUT * 2,
                   message=f"{want} lines through the slow reader")
        wait_until(lambda: "ev.fifo' again" in b.log(), message="the sink to say it writes again")
        c = self.stop_within_bound(b)
        reader.done.set()
        reader.join(5)
        self.assert_whole_lines(reader.snapshot() + read_available(r), ids)
        self.assertEqual(c, {"enqueued": want, "delivered": want, "failed": 0, "dropped": 0, "left": 0})
        self.assertEqual(b.log().count("has taken nothing"), 1)

    def test_reader_gone_after_a_stall_is_said(self):
        # The stall warning and a failing write are said apart: a reader
        # that leaves after the sink said it was stalled is reported too.
        b, _ = self.fifo_broker(reader=False)
        r = os.open(b.path("ev.fifo"), os.O_RDONLY | os.O_NONBLOCK)
        b.start()
        connect_and_leave(b.port, [f"gone{i:03d}-{LONG}" for i in range(300)])
        wait_until(lambda: "ev.fifo' has taken nothing for 5 s" in b.log(), timeout=TIMEOUT + 10,
                   message="the sink to say that the FIFO takes nothing")
        os.close(r)
        wait_until(lambda: "ev.fifo': Broken pipe; retrying" in b.log(), message="the broken pipe to be said")
        self.stop_within_bound(b)

    def test_fifo_without_reader_at_start_delivers_once_one_opens(self):
        b, _ = self.fifo_broker(reader=False)
        b.start()  # the old open() waited here for a reader
        self.assertIn("ev.fifo' is a FIFO that no process has open for reading yet; its events wait", b.log())
        ids = [f"late{i:02d}" for i in range(20)]
        connect_and_leave(b.port, ids)
        # The sink's thread starts at its first event: let a few of its
        # attempts to open find no reader.
        time.sleep(0.5)
        r = os.open(b.path("ev.fifo"), os.O_RDONLY | os.O_NONBLOCK)
        self.addCleanup(os.close, r)
        got = bytearray()

        def all_lines():
            got.extend(read_available(r))
            return got.count(b"\n") >= 2 * len(ids)
        wait_until(all_lines, message="every event once a reader has opened the FIFO")
        wait_until(lambda: "ev.fifo' has a reader; writing" in b.log(), message="the sink to say so")
        c = self.stop_within_bound(b)
        self.assert_whole_lines(bytes(got) + read_available(r), ids)
        self.assertEqual(c, {"enqueued": 40, "delivered": 40, "failed": 0, "dropped": 0, "left": 0})

    def test_fifo_never_read_events_left_at_shutdown(self):
        b, _ = self.fifo_broker(reader=False)
        b.start()
        connect_and_leave(b.port, [f"never{i}" for i in range(10)])
        c = self.stop_within_bound(b)
        self.assertEqual(c, {"enqueued": 20, "delivered": 0, "failed": 0, "dropped": 0, "left": 20})

    def test_sighup_reopen_of_fifo_whose_reader_left(self):
        b, _ = self.fifo_broker(reader=False)
        r = os.open(b.path("ev.fifo"), os.O_RDONLY | os.O_NONBLOCK)
        try:
            b.start()
            ids = [f"hup{i:02d}" for i in range(10)]
            connect_and_leave(b.port, ids)
            got = bytearray()

            def all_lines():
                got.extend(read_available(r))
                return got.count(b"\n") >= 20
            wait_until(all_lines, message="the first events")
            self.assert_whole_lines(bytes(got), ids)
        finally:
            os.close(r)
        # The reopen finds no reader: it must neither wait for one (the old
        # open() did, in the sink thread, holding up the shutdown) nor give
        # up the previous file.
        b.sighup()
        wait_until(lambda: "ev.fifo' is a FIFO that no process has open for reading; still writing the "
                           "previous file" in b.log(), message="the reopen to fail at once")
        connect_and_leave(b.port, [f"after{i}" for i in range(5)])
        wait_until(lambda: "Broken pipe; retrying" in b.log(), message="the write to fail")
        c = self.stop_within_bound(b)
        self.assertEqual(c, {"enqueued": 30, "delivered": 20, "failed": 0, "dropped": 0, "left": 10})


if __name__ == "__main__":
    unittest.main()
