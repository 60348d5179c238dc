#!/usr/bin/env python3
"""The journald sink end to end, without journald: this script enters a private mount namespace,
mounts a tmpfs on /run there (nothing changes outside), binds its own AF_UNIX datagram socket at
journald's socket path (/run/systemd/journal/socket) and starts storwatchd in that namespace with
the default [sinks.journald] (enabled = "auto": on because the socket exists). A tmpfs crosses a
level; the test reads the entry in journald's native protocol (KEY=value lines, binary-safe
KEY\\n<le64 size><data>\\n fields, or the whole entry in a memfd passed with SCM_RIGHTS) and checks
the fields `journalctl -o verbose` would show.

Needs root and unshare(CLONE_NEWNS); exits 77 otherwise.
"""

import array
import ctypes
import json
import os
import socket
import struct
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
ev = swtest.event_matcher
CLONE_NEWNS = 0x00020000
JOURNAL_SOCKET = "/run/systemd/journal/socket"


def setUpModule():
    swtest.require_root()
    swtest.require_cmd("mount", "umount")
    swtest.require_storwatch()


def message_id(event_type):
    """FNV-1a, 128 bits, of "storwatch:" + type: the rule docs/events.md states."""
    h = 0x6c62272e07bb014262b821756295c58d
    prime = (1 << 88) | 0x13b
    for b in ("storwatch:" + event_type).encode():
        h = ((h ^ b) * prime) % (1 << 128)
    return f"{h:032x}"


def parse_native(data):
    """The fields of one entry in journald's native protocol, as {KEY: value (str)}."""
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, _, v = line.partition(b"=")
            i = nl + 1
        else:
            k = line
            (size,) = struct.unpack_from("<Q", data, nl + 1)
            v = data[nl + 9:nl + 9 + size]
            i = nl + 9 + size + 1
        fields[k.decode()] = v.decode()
    return fields


class FakeJournald:
    """A datagram socket at journald's path; a thread parses every entry sent to it."""

    def __init__(self):
        self.entries = []
        self.cond = threading.Condition()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * MiB)
        os.makedirs(os.path.dirname(JOURNAL_SOCKET), exist_ok=True)
        self.sock.bind(JOURNAL_SOCKET)
        self.sock.settimeout(0.2)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop:
            try:
                data, anc, _, _ = self.sock.recvmsg(1 << 20, socket.CMSG_SPACE(16))
            except socket.timeout:
                continue
            except OSError:
                return
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(cdata[:len(cdata) - len(cdata) % fds.itemsize])
                    for fd in fds:
                        with os.fdopen(fd, "rb") as f:  # a memfd: the entry was too large
                            data = f.read()
            with self.cond:
                self.entries.append(parse_native(data))
                self.cond.notify_all()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        self.thread.join(timeout=10)
        self.sock.close()
        return False

    def find(self, pred):
        with self.cond:
            return next((e for e in self.entries if pred(e)), None)


class JournaldSinkTest(swtest.DaemonTestCase):
    timeout = 120

    def test_threshold_entry_fields(self):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.unshare(CLONE_NEWNS) != 0:
            swtest.skip(f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}")
        # From here on this process (and the daemon it starts) is in a mount namespace of its
        # own, gone when the process exits: nothing mounted below leaks to the host.
        swtest.run(["mount", "--make-rprivate", "/"])
        swtest.mount("tmpfs", "/run", fstype="tmpfs", options="size=16m,mode=755", cleanup=self.cleanup)
        journald = self.cleanup.enter(FakeJournald())

        mnt = swtest.tempdir(prefix="swtest-tmpfs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 16 * MiB, cleanup=self.cleanup)
        extra = '[sinks.hooks]\ndir = ""\n'
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<10%:warning"]}, extra=extra))
        mon = d.monitor()
        d.wait_sample(mnt, 0)
        doctor = d.cli_json("doctor")
        self.assertIn("journald", [s["name"] for s in doctor["sinks"]], "on by default with journald's socket")

        total = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
        swtest.set_free_bytes(os.path.join(mnt, "fill"), mnt, int(total * 0.05))
        e = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))

        def entry():
            return journald.find(lambda f: f.get("STORWATCH_SEQ") == str(e["seq"]))
        f = swtest.wait_for(entry, 20, f"the journald entry of seq {e['seq']}")
        self.assertEqual(f["STORWATCH_TYPE"], "space.threshold")
        self.assertEqual(f["MESSAGE_ID"], message_id("space.threshold"))
        self.assertEqual(f["PRIORITY"], "4")  # warning
        self.assertEqual(f["SYSLOG_IDENTIFIER"], "storwatchd")
        self.assertIn("space.threshold", f["MESSAGE"])
        self.assertIn(mnt, f["MESSAGE"])
        self.assertIn(f"#{e['seq']}", f["MESSAGE"])
        self.assertEqual(f["STORWATCH_JOURNAL_ID"], doctor["journal_id"])
        self.assertEqual(f["STORWATCH_SEVERITY"], "warning")
        self.assertEqual(f["STORWATCH_FS_MOUNT"], mnt)
        self.assertEqual(f["STORWATCH_FS_DEV"], f"{e['fs']['major']}:{e['fs']['minor']}")
        self.assertEqual(f["STORWATCH_FS_TYPE"], "tmpfs")
        self.assertEqual(f["STORWATCH_DETAIL_LEVEL"], "10%")
        self.assertEqual(f["STORWATCH_DETAIL_DIRECTION"], "below")
        whole = json.loads(f["STORWATCH_JSON"])
        self.assertEqual(whole["seq"], e["seq"])
        self.assertEqual(whole["detail"], e["detail"])
        s = next(s for s in d.cli_json("doctor")["sinks"] if s["name"] == "journald")
        self.assertEqual(s["state"], "ok", s)


if __name__ == "__main__":
    swtest.main()
