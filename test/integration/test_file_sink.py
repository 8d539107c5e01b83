"""File sink failure paths against the real broker: a disk that fills in the
middle of a line and is then freed, file_fsync on a file that cannot be
synced, and file_fsync failing with EIO (through an LD_PRELOAD shim that
replaces fsync in the broker process, since a failing disk cannot be had
on demand).

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
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eh_harness import Broker, BrokerTestCase, RawClient, wait_until  # noqa: E402
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


if __name__ == "__main__":
    unittest.main()
