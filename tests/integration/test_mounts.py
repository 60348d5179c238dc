#!/usr/bin/env python3
"""Mount table events and mount subscriptions end to end (issue 6), on one backend per run:
`--backend fanotify` (the fast path: fanotify mount notifications and statmount; remounts found
by the mountinfo scan) or `--backend mountinfo` (the fallback), chosen with `[mounts] backend`.
A real storwatchd in a private mount namespace of its own (`unshare -m --propagation private`),
the test's mounts made in that namespace (`nsenter -t PID -m`), so the host's table is untouched
and everything the test mounted goes away with the daemon. The CLI runs in that namespace too: a
client sees the mounts of its own namespace.

- attach (tmpfs), remount ro and rw, bind, move (`mount --move`), detach: each one event, once,
  with the right mount ids, path, fstype, source and options; a move is one mount.changed with
  old_path and the same unique mount id;
- propagation: a shared mount with a bind peer; a mount below one appears below the other (two
  mount.attached), and its unmount leaves both (two mount.detached);
- no mount.* events for the table the daemon found at start;
- `storwatch mounts` lists the table, `storwatch mounts --follow` prints the snapshot, then the
  changes after it.

- overflow (fanotify only): with the daemon stopped (SIGSTOP), more changes than the kernel
  queues (16,384); after SIGCONT one mount.resync, and the table is right again.

Needs root, unshare and nsenter (util-linux). Exits 77 ("SKIP: ...") when it cannot run (also
for `--backend fanotify` on a kernel without mount notifications).
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

UNIQUE_MIN = 1 << 31  # unique mount ids start at 2^31

BACKEND = "mountinfo"
if "--backend" in sys.argv:
    i = sys.argv.index("--backend")
    BACKEND = sys.argv[i + 1]
    del sys.argv[i:i + 2]
assert BACKEND in ("fanotify", "mountinfo"), BACKEND
# What reports attach, detach, move (and, on the fast path, a propagation change seen with an
# attach), and what reports remounts.
NOTIFY_SOURCE = BACKEND
REMOUNT_SOURCE = "mountinfo"


def setUpModule():
    swtest.require_root()
    swtest.require_cmd("unshare", "nsenter", "mount", "umount")


class MountTests(swtest.DaemonTestCase):
    def setUp(self):
        super().setUp()
        daemon, _ = swtest.find_storwatch()
        if not daemon:
            swtest.require_storwatch()
        _, cli = swtest.find_storwatch()
        tools = swtest.tempdir(prefix="swtest-mounts-bin-", cleanup=self.cleanup)
        pidfile = os.path.join(tools, "pid")
        wrapper = os.path.join(tools, "storwatchd-in-mntns")
        with open(wrapper, "w") as f:
            # exec all the way: the daemon keeps the pid the test started (SIGTERM, nsenter -t).
            f.write(f"#!/bin/sh\necho $$ > {pidfile}\n"
                    f"exec unshare -m --propagation private -- {daemon} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        cli_wrapper = os.path.join(tools, "storwatch-in-mntns")
        with open(cli_wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec nsenter -t \"$(cat {pidfile})\" -m -- {cli} \"$@\"\n")
        os.chmod(cli_wrapper, 0o755)
        config = swtest.test_config(extra=f'[mounts]\nbackend = "{BACKEND}"\n')
        self.d = self.daemon(config, binary=wrapper, cli=cli_wrapper)
        if BACKEND == "fanotify":
            unavailable = [e for e in self.d.printed_events() if e["type"] == "source.unavailable"
                           and e["detail"].get("source") == "fanotify-mount"]
            if unavailable:
                self.skipTest("no fanotify mount notifications here: " + unavailable[0]["detail"]["reason"])
        self.base = os.path.realpath(swtest.tempdir(prefix="swtest-mounts-", cleanup=self.cleanup))
        self.mon = self.d.monitor()

    # -- helpers -------------------------------------------------------
    def ns(self, *cmd):
        """Runs cmd in the daemon's mount namespace."""
        return swtest.run(["nsenter", "-t", str(self.d.pid), "-m", "--"] + [str(c) for c in cmd])

    def dir(self, *parts):
        path = os.path.join(self.base, *parts)
        os.makedirs(path, exist_ok=True)
        return path

    def ours(self, e):
        if not e.get("type", "").startswith("mount."):
            return False
        d = e.get("detail", {})
        return any(str(d.get(k, "")).startswith(self.base + "/") for k in ("path", "old_path"))

    def step(self, commands, expected, source=NOTIFY_SOURCE):
        """Runs the commands in the daemon's namespace; waits for `expected` mount.* events about
        the test's mounts and returns exactly those that followed (after syncing with the
        daemon, so an extra or duplicate event shows), each from `source`."""
        before = self.d.last_seq()
        for cmd in commands:
            self.ns(*cmd)
        swtest.wait_for(lambda: len(self.since(before)) >= expected, 10,
                        f"{expected} mount events after {commands}")
        self.mon.sync()
        got = self.since(before)
        self.assertEqual(len(got), expected, "\n".join(json.dumps(e["detail"]) for e in got))
        for e in got:
            self.assertEqual(e["source"], source, e)
            self.assertEqual(e["severity"], "info", e)
        return got

    def since(self, seq):
        return [e for e in self.mon.events(self.ours) if e["seq"] > seq]

    def table(self):
        return json.loads(self.d.cli_ok("mounts", "--json"))["mounts"]

    def entry(self, path):
        found = [m for m in self.table() if m["path"] == path]
        self.assertLessEqual(len(found), 1, found)
        return found[0] if found else None

    def check_mount(self, detail, path, source, fstype="tmpfs"):
        self.assertEqual(detail["path"], path, detail)
        self.assertEqual(detail["fstype"], fstype, detail)
        self.assertEqual(detail["source"], source, detail)
        self.assertGreaterEqual(detail["mnt_id"], UNIQUE_MIN, detail)
        self.assertLess(detail["mnt_id_old"], UNIQUE_MIN, detail)
        self.assertIsInstance(detail["parent_id"], int, detail)
        self.assertEqual(detail["root"], "/", detail)

    # -- tests ---------------------------------------------------------
    def test_1_lifecycle(self):
        # The table the daemon found at start gave no events.
        self.mon.sync()
        self.assertEqual([e for e in self.d.printed_events() if e["type"].startswith("mount.")], [])

        a = self.dir("a")
        [e] = self.step([["mount", "-t", "tmpfs", "-o", "size=1m", "swt-a", a]], 1)
        self.assertEqual(e["type"], "mount.attached")
        self.check_mount(e["detail"], a, "swt-a")
        self.assertIn("rw", e["detail"]["options"].split(","))
        self.assertEqual(e["fs"]["fstype"], "tmpfs", e)
        self.assertIn(a, e["fs"]["mounts"], e)
        self.assertEqual(e["fs"]["dev"], e["detail"]["dev"], e)
        mnt_a = e["detail"]["mnt_id"]
        listed = self.entry(a)
        self.assertIsNotNone(listed, self.table())
        self.assertEqual(listed["mnt_id"], mnt_a)
        self.assertEqual(listed["mnt_id_old"], e["detail"]["mnt_id_old"])
        self.assertEqual((listed["fstype"], listed["source"], listed["dev"]),
                         ("tmpfs", "swt-a", e["detail"]["dev"]))

        # Remount read-only, then read-write: one mount.changed each, with the old options.
        [e] = self.step([["mount", "-o", "remount,ro", a]], 1, REMOUNT_SOURCE)
        self.assertEqual(e["type"], "mount.changed")
        self.assertEqual(e["detail"]["mnt_id"], mnt_a)
        self.assertIn("ro", e["detail"]["options"].split(","), e)
        self.assertIn("rw", e["detail"]["old_options"].split(","), e)
        self.assertIn("options", e["detail"]["changed"], e)
        [e] = self.step([["mount", "-o", "remount,rw", a]], 1, REMOUNT_SOURCE)
        self.assertEqual(e["type"], "mount.changed")
        self.assertEqual(e["detail"]["mnt_id"], mnt_a)
        self.assertIn("rw", e["detail"]["options"].split(","), e)
        self.assertIn("ro", e["detail"]["old_options"].split(","), e)

        # Bind: a new mount of the same filesystem.
        b = self.dir("b")
        [e] = self.step([["mount", "--bind", a, b]], 1)
        self.assertEqual(e["type"], "mount.attached")
        self.check_mount(e["detail"], b, "swt-a")
        self.assertEqual(e["fs"]["dev"], self.entry(a)["dev"], e)
        self.assertEqual(sorted(e["fs"]["mounts"]), sorted([a, b]), e)
        mnt_b = e["detail"]["mnt_id"]
        self.assertNotEqual(mnt_b, mnt_a)

        # A read-only bind remount changes that mount only.
        [e] = self.step([["mount", "-o", "remount,bind,ro", b]], 1, REMOUNT_SOURCE)
        self.assertEqual((e["type"], e["detail"]["path"], e["detail"]["mnt_id"]),
                         ("mount.changed", b, mnt_b))
        self.assertIn("ro", e["detail"]["options"].split(","), e)

        # Move: one mount.changed with old_path, the same mount id; no attach or detach.
        c = self.dir("c")
        [e] = self.step([["mount", "--move", b, c]], 1)
        self.assertEqual(e["type"], "mount.changed", e)
        self.assertEqual((e["detail"]["path"], e["detail"]["old_path"]), (c, b), e)
        self.assertEqual(e["detail"]["mnt_id"], mnt_b, e)
        self.assertIn("path", e["detail"]["changed"], e)
        self.assertIsNone(self.entry(b))
        self.assertEqual(self.entry(c)["mnt_id"], mnt_b)

        # Detach: the id the mount had (it cannot be asked any more).
        [e] = self.step([["umount", c]], 1)
        self.assertEqual(e["type"], "mount.detached", e)
        self.check_mount(e["detail"], c, "swt-a")
        self.assertEqual(e["detail"]["mnt_id"], mnt_b, e)
        self.assertIsNone(self.entry(c))
        [e] = self.step([["umount", a]], 1)
        self.assertEqual((e["type"], e["detail"]["path"], e["detail"]["mnt_id"]),
                         ("mount.detached", a, mnt_a))
        self.assertEqual(e["fs"]["fstype"], "tmpfs", e)  # the filesystem as it was

    def test_2_propagation(self):
        p, q = self.dir("p"), self.dir("q")
        [e] = self.step([["mount", "-t", "tmpfs", "-o", "size=1m", "swt-p", p]], 1)
        self.assertEqual((e["type"], e["detail"]["path"]), ("mount.attached", p))
        # A propagation change does not wake mountinfo pollers (the kernel does not count it as
        # a change of the namespace): it shows with the next change, here the bind.
        changed, attached = self.step([["mount", "--make-shared", p], ["mount", "--bind", p, q]], 2)
        self.assertEqual((changed["type"], changed["detail"]["path"]), ("mount.changed", p))
        shared = [f for f in changed["detail"]["propagation"] if f.startswith("shared:")]
        self.assertEqual(len(shared), 1, changed)
        self.assertEqual(changed["detail"]["old_propagation"], [], changed)
        self.assertEqual(changed["detail"]["changed"], ["propagation"], changed)
        self.assertEqual((attached["type"], attached["detail"]["path"]), ("mount.attached", q))
        self.assertEqual(attached["detail"]["propagation"], shared, attached)  # a peer of p

        # Mounting below one peer mounts below the other too: two mount.attached.
        self.ns("mkdir", os.path.join(p, "x"))  # inside the tmpfs, which only the namespace sees
        got = self.step([["mount", "-t", "tmpfs", "-o", "size=1m", "swt-x", os.path.join(p, "x")]], 2)
        self.assertEqual({e["type"] for e in got}, {"mount.attached"})
        self.assertEqual(sorted(e["detail"]["path"] for e in got),
                         sorted([os.path.join(p, "x"), os.path.join(q, "x")]))
        self.assertEqual({e["detail"]["source"] for e in got}, {"swt-x"})
        self.assertEqual(len({e["detail"]["dev"] for e in got}), 1, got)
        self.assertEqual(len({e["detail"]["mnt_id"] for e in got}), 2, got)
        for e in got:
            self.check_mount(e["detail"], e["detail"]["path"], "swt-x")
        # And its unmount leaves both.
        got = self.step([["umount", os.path.join(p, "x")]], 2)
        self.assertEqual({e["type"] for e in got}, {"mount.detached"})
        self.assertEqual(sorted(e["detail"]["path"] for e in got),
                         sorted([os.path.join(p, "x"), os.path.join(q, "x")]))

    def test_3_cli(self):
        a = self.dir("a")
        self.step([["mount", "-t", "tmpfs", "-o", "size=1m", "swt-cli", a]], 1)
        rc, out, err = self.d.cli("mounts")
        self.assertEqual(rc, 0, err)
        lines = out.splitlines()
        self.assertEqual(lines[0].split()[:6], ["ID", "DEV", "FSTYPE", "SOURCE", "PATH", "OPTIONS"])
        row = [line.split() for line in lines if a in line.split()]
        self.assertEqual(len(row), 1, out)
        self.assertEqual(row[0][2:5], ["tmpfs", "swt-cli", a], out)
        self.assertGreaterEqual(int(row[0][0]), UNIQUE_MIN, out)

        # --follow: the snapshot first, then only the changes after it.
        proc = subprocess.Popen(self.d.command("mounts", "--follow", "--json"), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd="/")
        self.cleanup.push(proc.stderr.close)
        self.cleanup.push(proc.stdout.close)
        self.cleanup.push(swtest.terminate_process, proc)
        lines = queue.Queue()

        def reader():
            for line in proc.stdout:
                lines.put(line)
            lines.put(None)
        threading.Thread(target=reader, daemon=True).start()

        def next_line():
            try:
                line = lines.get(timeout=10)
            except queue.Empty:
                self.fail("storwatch mounts --follow printed nothing in 10 s")
            if line is None:
                self.fail("storwatch mounts --follow exited: " + proc.stderr.read())
            return json.loads(line)

        snapshot = next_line()["mounts"]
        self.assertEqual([m["source"] for m in snapshot if m["path"] == a], ["swt-cli"])
        b = self.dir("b")
        self.ns("mount", "--bind", a, b)
        self.ns("umount", b)
        e = next_line()
        self.assertEqual((e["type"], e["detail"]["path"]), ("mount.attached", b), e)
        e = next_line()
        self.assertEqual((e["type"], e["detail"]["path"]), ("mount.detached", b), e)

        # Text form: the table, then one line per change.
        proc2 = subprocess.Popen(self.d.command("mounts", "--follow"), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd="/")
        self.cleanup.push(proc2.stderr.close)
        self.cleanup.push(proc2.stdout.close)
        self.cleanup.push(swtest.terminate_process, proc2)
        text = queue.Queue()

        def reader2():
            for line in proc2.stdout:
                text.put(line)
        threading.Thread(target=reader2, daemon=True).start()
        seen = []
        swtest.wait_for(lambda: (seen.extend(self._drain(text)) or any(a in s.split() for s in seen)),
                        10, "the snapshot of storwatch mounts --follow")
        self.assertTrue(seen[0].split()[:2] == ["ID", "DEV"], seen)
        self.ns("mount", "--bind", a, b)
        swtest.wait_for(lambda: (seen.extend(self._drain(text)) or
                                 any("mount.attached" in s and b in s for s in seen)),
                        10, "a mount.attached line from storwatch mounts --follow")

    def test_4_overflow(self):
        if BACKEND != "fanotify":
            self.skipTest("queue overflow is the fanotify backend's")
        churn, kept = self.dir("churn"), self.dir("kept")
        # 9,000 mounts and unmounts (18,000 notifications, more than the 16,384 the kernel queues
        # for a reader that does not read) while the daemon is stopped, then one mount that stays.
        script = ("import ctypes, sys\n"
                  "libc = ctypes.CDLL(None, use_errno=True)\n"
                  "churn, kept = sys.argv[1].encode(), sys.argv[2].encode()\n"
                  "for _ in range(9000):\n"
                  "    if libc.mount(b'swt-churn', churn, b'tmpfs', 0, b'size=4k') != 0:\n"
                  "        sys.exit('mount: errno %d' % ctypes.get_errno())\n"
                  "    if libc.umount(churn) != 0:\n"
                  "        sys.exit('umount: errno %d' % ctypes.get_errno())\n"
                  "if libc.mount(b'swt-kept', kept, b'tmpfs', 0, b'size=4k') != 0:\n"
                  "    sys.exit('mount: errno %d' % ctypes.get_errno())\n")
        before = self.d.last_seq()
        os.kill(self.d.pid, signal.SIGSTOP)
        try:
            self.ns(sys.executable, "-c", script, churn, kept)
        finally:
            os.kill(self.d.pid, signal.SIGCONT)
        resyncs = lambda: [e for e in self.mon.events(lambda e: e.get("type") == "mount.resync")
                           if e["seq"] > before]
        swtest.wait_for(lambda: resyncs(), 20, "mount.resync after the queue overflowed")
        self.mon.sync()
        [r] = resyncs()
        self.assertEqual(r["severity"], "warning", r)
        self.assertEqual(r["detail"]["reason"], "overflow", r)
        self.assertEqual(r["detail"]["attached"], 1, r)  # only `kept` is new; churn came and went
        got = self.since(before)
        self.assertEqual([(e["type"], e["detail"]["path"]) for e in got], [("mount.attached", kept)], got)
        self.assertLess(got[0]["seq"], r["seq"])  # the changes first, then the resync that found them
        self.assertEqual(self.entry(kept)["source"], "swt-kept")
        self.assertIsNone(self.entry(churn))
        # Notifications work again after the resync.
        [e] = self.step([["umount", kept]], 1)
        self.assertEqual((e["type"], e["detail"]["path"]), ("mount.detached", kept))

    @staticmethod
    def _drain(q):
        out = []
        while True:
            try:
                out.append(q.get_nowait())
            except queue.Empty:
                return out


if __name__ == "__main__":
    swtest.main()
