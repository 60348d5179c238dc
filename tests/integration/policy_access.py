#!/usr/bin/env python3
"""The [policy] end to end (issue 9): a real storwatchd, clients running as uid 65534 (nobody)
and as root, events with process fields and kernel text injected through the replay FIFO
(the deterministic way to have an event caused by a chosen uid).

- a non-root client cannot add or remove rules, and is told why;
- it sees the process fields (pid, uid, comm, cgroup) of events its own uid caused, not of
  others', and no kernel log text, live (Subscribe) and in the history (ListEvents); root sees
  everything;
- a configured policy: queries for root only (refused with the reason), other users' process
  fields and kernel text granted to one uid.

Needs root (to switch uids and mount a tmpfs) and /usr/bin/python3 reachable by other uids.
Exits 77 ("SKIP: ...") when it cannot run.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

NOBODY = 65534
HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"  # the test's own interpreter may live where nobody can read


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        swtest.skip(f"{SYSTEM_PYTHON} not found: the uid {NOBODY} client needs a system Python")


class Client:
    """policy_client.py as `uid` (None: root): call() returns the reply line; subscribe() runs in
    the background and collects its lines."""

    def __init__(self, daemon, uid=None):
        self.daemon = daemon
        self.uid = uid
        self.script = os.path.join(daemon.dir, "policy_client.py")
        if not os.path.exists(self.script):
            shutil.copy(os.path.join(HERE, "policy_client.py"), self.script)
            os.chmod(self.script, 0o644)

    def _preexec(self):
        if self.uid is not None:
            os.setgroups([])
            os.setgid(self.uid)
            os.setuid(self.uid)

    def argv(self, *args):
        return [SYSTEM_PYTHON, self.script, self.daemon.socket] + [str(a) for a in args]

    def call(self, method, params=None):
        p = subprocess.run(self.argv("call", method, json.dumps(params or {})), capture_output=True,
                           text=True, timeout=30, preexec_fn=self._preexec, cwd="/")
        if p.returncode != 0 or not p.stdout.strip():
            raise AssertionError(f"policy_client {method} failed ({p.returncode}): {p.stderr.strip()}")
        return json.loads(p.stdout.splitlines()[0])

    def subscribe(self, cleanup, params=None):
        return Stream(self, cleanup, params)


class Stream:
    def __init__(self, client, cleanup, params):
        self.lines = []
        self.cond = threading.Condition()
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(client.argv("subscribe", json.dumps(params or {})),
                                     stdout=subprocess.PIPE, stderr=self.err, text=True,
                                     preexec_fn=client._preexec, cwd="/")
        cleanup.push(self.stop)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        first = self.wait(lambda lines: lines, "the subscription's first reply")[0]
        if "error" in first:
            self.error = first
        else:
            self.error = None

    def stop(self):
        swtest.terminate_process(self.proc)
        self.thread.join(5)
        self.proc.stdout.close()
        self.err.close()

    def _read(self):
        for line in self.proc.stdout:
            with self.cond:
                self.lines.append(json.loads(line))
                self.cond.notify_all()

    def wait(self, pred, what, timeout=10.0):
        def ready():
            with self.cond:
                return pred(list(self.lines)) and list(self.lines)
        try:
            return swtest.wait_for(ready, timeout, what)
        except AssertionError:
            self.err.seek(0)
            raise AssertionError(f"timed out waiting for {what}; lines: {self.lines}; "
                                 f"client stderr: {self.err.read().strip()}") from None

    def events(self):
        with self.cond:
            return [line["parameters"]["event"] for line in self.lines
                    if "event" in line.get("parameters", {})]

    def wait_events(self, pred, n, what):
        self.wait(lambda _: len([e for e in self.events() if pred(e)]) >= n, what)
        return [e for e in self.events() if pred(e)]


class PolicyTests(swtest.DaemonTestCase):
    timeout = 120

    def setUp(self):
        super().setUp()
        self.base = swtest.tempdir(prefix="swtest-policy-", cleanup=self.cleanup)
        os.chmod(self.base, 0o755)
        self.mnt = os.path.join(self.base, "data")
        os.mkdir(self.mnt)
        swtest.mount_tmpfs(self.mnt, 8 << 20, cleanup=self.cleanup)
        self.fifo = os.path.join(self.base, "replay.fifo")

    def start(self, policy=""):
        extra = f"[replay]\nfifo = {swtest.toml_str(self.fifo)}\n" + policy
        return self.daemon(swtest.test_config(extra=extra))

    def replay(self, *events):
        fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
        try:
            os.write(fd, "".join(json.dumps(e) + "\n" for e in events).encode())
        finally:
            os.close(fd)

    def caused_by(self, uid, marker):
        """A replayed fs.error on the test's tmpfs, caused by `uid`, with kernel text."""
        return {"type": "fs.error", "fs": self.mnt,
                "detail": {"errno": 5, "inode": marker, "message": f"EXT4-fs error {marker}", "comm": "dd"},
                "process": {"pid": 4000 + marker, "uid": uid, "comm": "dd", "cgroup": "/user.slice"}}

    @staticmethod
    def ours(e):
        return e.get("source") == "replay"

    def test_non_root_cannot_change_rules(self):
        d = self.start()
        nobody = Client(d, NOBODY)
        rule = {"path": self.mnt, "levels": [{"resource": "blocks", "below": "10%"}]}
        for method, params in (("AddRule", {"rule": rule}), ("AddRule", {"line": f"{self.mnt} G T 10% 5%"}),
                               ("RemoveRule", {"path": self.mnt})):
            with self.subTest(method=method, params=params):
                r = nobody.call(method, params)
                self.assertEqual(r.get("error"), "io.storwatch.PermissionDenied", r)
                self.assertEqual(r["parameters"]["reason"], f"changing rules needs root; you are uid {NOBODY}")
        rc, _, err = d.cli("rules", "add", self.mnt, "--free-below", "10%", user=NOBODY)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"permission denied: changing rules needs root; you are uid {NOBODY}", err)
        self.assertEqual(nobody.call("ListRules")["parameters"]["rules"], [])
        # Root is not affected; the rule it sets is visible to anyone.
        Client(d).call("AddRule", {"rule": rule})
        self.assertEqual([r["path"] for r in nobody.call("ListRules")["parameters"]["rules"]], [self.mnt])
        r = nobody.call("RemoveRule", {"path": self.mnt})
        self.assertEqual(r.get("error"), "io.storwatch.PermissionDenied", r)
        self.assertEqual(len(nobody.call("ListRules")["parameters"]["rules"]), 1)

    def test_process_fields_only_for_own_uid_and_no_kernel_text(self):
        d = self.start()
        root_stream = Client(d).subscribe(self.cleanup)
        nobody_stream = Client(d, NOBODY).subscribe(self.cleanup)
        self.assertIsNone(nobody_stream.error)
        self.replay(self.caused_by(0, 1), self.caused_by(NOBODY, 2), self.caused_by(1000, 3))

        seen = {e["detail"]["inode"]: e for e in root_stream.wait_events(self.ours, 3, "root: 3 events")}
        for marker, uid in ((1, 0), (2, NOBODY), (3, 1000)):
            self.assertEqual(seen[marker]["process"]["uid"], uid)
            self.assertEqual(seen[marker]["detail"]["message"], f"EXT4-fs error {marker}")

        def check(events, how):
            by = {e["detail"]["inode"]: e for e in events}
            self.assertEqual(sorted(by), [1, 2, 3], how)
            self.assertNotIn("process", by[1], f"{how}: root's process fields shown to uid {NOBODY}")
            self.assertNotIn("process", by[3], f"{how}: uid 1000's process fields shown to uid {NOBODY}")
            self.assertEqual(by[2]["process"], {"pid": 4002, "uid": NOBODY, "comm": "dd", "cgroup": "/user.slice"},
                             f"{how}: its own process fields")
            for e in by.values():
                self.assertNotIn("message", e["detail"], f"{how}: kernel text shown to uid {NOBODY}")
                self.assertNotIn("comm", e["detail"], f"{how}: kernel text shown to uid {NOBODY}")
                self.assertEqual(e["detail"]["errno"], 5)
                self.assertEqual(e["fs"]["mounts"], [self.mnt])

        check(nobody_stream.wait_events(self.ours, 3, f"uid {NOBODY}: 3 events"), "Subscribe")
        history = Client(d, NOBODY).call("ListEvents", {"filter": {"types": ["fs.error"]}})
        check([e for e in history["parameters"]["events"] if self.ours(e)], "ListEvents")
        root_history = Client(d).call("ListEvents", {"filter": {"types": ["fs.error"]}})
        self.assertTrue(all("process" in e for e in root_history["parameters"]["events"] if self.ours(e)))
        # The CLI (one JSON event per line) shows the same.
        out = d.cli_ok("history", "--json", "--type", "fs.error", user=NOBODY)
        check([e for e in map(json.loads, out.splitlines()) if self.ours(e)], "storwatch history")

    def test_non_root_clients_without_cap_sys_ptrace(self):
        """The service runs without CAP_SYS_PTRACE, so it may not open another uid's namespace
        file: a non-root client in the daemon's own mount namespace is still recognised as such."""
        setpriv = swtest.require_cmd("setpriv")
        daemon, _ = swtest.require_storwatch()
        wrapper = os.path.join(self.base, "storwatchd-without-ptrace")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {setpriv} --bounding-set -sys_ptrace -- {daemon} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        d = self.daemon(swtest.test_config(), binary=wrapper)
        r = Client(d, NOBODY).call("ListFilesystems")
        self.assertNotIn("error", r, r)
        self.assertIn([self.mnt], [f["mounts"] for f in r["parameters"]["filesystems"]])
        self.assertIn(self.mnt, d.cli_ok("status", user=NOBODY))

    def test_configured_policy(self):
        d = self.start("[policy]\nquery = [\"uid:0\"]\n"
                       f"process_fields = [\"uid:{NOBODY}\"]\nkernel_text = [\"uid:{NOBODY}\"]\n")
        nobody = Client(d, NOBODY)
        for method in ("ListFilesystems", "ListMounts", "ListEvents", "Doctor"):
            with self.subTest(method=method):
                r = nobody.call(method)
                self.assertEqual(r.get("error"), "io.storwatch.PermissionDenied", r)
                self.assertEqual(r["parameters"]["reason"], f"querying needs root; you are uid {NOBODY}")
        rc, _, err = d.cli("status", user=NOBODY)
        self.assertNotEqual(rc, 0)
        self.assertIn(f"querying needs root; you are uid {NOBODY}", err)
        # Subscribing is still open (the default), and this uid was granted everything.
        stream = nobody.subscribe(self.cleanup)
        self.assertIsNone(stream.error)
        self.replay(self.caused_by(0, 1))
        e = stream.wait_events(self.ours, 1, "the event caused by root")[0]
        self.assertEqual(e["process"]["uid"], 0)
        self.assertEqual(e["detail"]["message"], "EXT4-fs error 1")


if __name__ == "__main__":
    swtest.main()
