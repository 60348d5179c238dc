#!/usr/bin/env python3
"""Clients in another mount namespace (issues 6 and 9): a container-like client, in a private
mount namespace (`unshare -m --propagation private`) that reaches the socket through a bind
mount, sees only the filesystems mounted in its namespace, at the paths it sees them.

The host has two test tmpfs, A and B. In the client's namespace B is unmounted and A moved to
another place (so its host path shows nothing there). Then:

- ListMounts, Subscribe `mounts` (the snapshot), ListFilesystems and GetFilesystem answer with
  the namespace's table: A at its path there, never B, never A's host path;
- an event on B never reaches the client; one on A does, with `fs.mounts` and `detail.path` as
  the client sees them; a host client gets both, with the host's paths;
- a mount made inside the namespace is a mount.attached (and its unmount a mount.detached) for
  the client, with its path there; host clients get no mount event for it.

Needs root, unshare and nsenter (util-linux). Exits 77 ("SKIP: ...") when it cannot run.
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

HERE = os.path.dirname(os.path.abspath(__file__))


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()
    swtest.require_cmd("unshare", "nsenter", "mount", "umount")


def dev_of(path):
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


def replay(fifo, events):
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        os.write(fd, "".join(json.dumps(e) + "\n" for e in events).encode())
    finally:
        os.close(fd)


class NamespaceClient:
    """policy_client.py subscribed (mounts: true) from inside a fresh private mount namespace
    prepared by `setup` (shell lines); `call()` runs one more client in the same namespace."""

    def __init__(self, script, socket_there, setup, cleanup):
        self.script = script
        self.socket = socket_there
        self.lines = []
        self.cond = threading.Condition()
        self.err = tempfile.TemporaryFile(mode="w+")
        # exec all the way down: the pid is the client's, inside the namespace (nsenter -t).
        shell = "set -e\n" + "\n".join(setup) + \
            f"\nexec {sys.executable} {script} {socket_there} subscribe '{json.dumps({'mounts': True})}'\n"
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True, cwd="/")
        cleanup.push(self.stop)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.first = self.wait(lambda lines: lines, "the subscription's first reply")[0]

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

    def wait_event(self, pred, what):
        self.wait(lambda _: any(pred(e) for e in self.events()), what)
        return next(e for e in self.events() if pred(e))

    def ns(self, *cmd):
        return swtest.run(["nsenter", "-t", str(self.proc.pid), "-m", "--"] + [str(c) for c in cmd])

    def call(self, method, params=None):
        out = self.ns(sys.executable, self.script, self.socket, "call", method, json.dumps(params or {})).stdout
        return json.loads(out.splitlines()[0])


class NamespaceViewTests(swtest.DaemonTestCase):
    timeout = 120

    def test_namespace_sees_its_own_filesystems_at_its_paths(self):
        self.check_namespace_view()

    def test_same_without_cap_sys_ptrace(self):
        """The service runs without CAP_SYS_PTRACE: a client's namespace file cannot be opened
        then, and the namespace is recognised by its root mount instead."""
        setpriv = swtest.require_cmd("setpriv")
        daemon, _ = swtest.require_storwatch()
        tools = swtest.tempdir(prefix="swtest-nsview-bin-", cleanup=self.cleanup)
        wrapper = os.path.join(tools, "storwatchd-without-ptrace")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {setpriv} --bounding-set -sys_ptrace -- {daemon} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        self.check_namespace_view(binary=wrapper)

    def check_namespace_view(self, binary=None):
        base = os.path.realpath(swtest.tempdir(prefix="swtest-nsview-", cleanup=self.cleanup))
        a, b = os.path.join(base, "A"), os.path.join(base, "B")
        a_there, run_there = os.path.join(base, "ct", "data"), os.path.join(base, "ct", "run")
        for p in (a, b, a_there, run_there):
            os.makedirs(p)
        swtest.mount_tmpfs(a, 8 << 20, cleanup=self.cleanup)
        swtest.mount_tmpfs(b, 8 << 20, cleanup=self.cleanup)
        os.makedirs(os.path.join(a, "dir", "sub"))
        with open(os.path.join(a, "dir", "file"), "w") as f:
            f.write("x")
        dev_a, dev_b = dev_of(a), dev_of(b)
        fifo = os.path.join(base, "replay.fifo")
        d = self.daemon(swtest.test_config(extra=f"[replay]\nfifo = {swtest.toml_str(fifo)}\n"), binary=binary)
        script = os.path.join(d.dir, "policy_client.py")
        shutil.copy(os.path.join(HERE, "policy_client.py"), script)
        host_mon = d.monitor()

        # The container: B gone, A moved to ct/data, the daemon's directory bound at ct/run.
        client = NamespaceClient(script, os.path.join(run_there, "s"), [
            f"umount {b}",
            f"mount --move {a} {a_there}",
            f"mount --bind {d.dir} {run_there}",
        ], self.cleanup)
        self.assertNotIn("error", client.first, client.first)

        # The mount table, as the snapshot of the subscription and as ListMounts.
        for how, table in (("Subscribe mounts", client.first["parameters"]["mount_table"]),
                           ("ListMounts", client.call("ListMounts")["parameters"]["mounts"])):
            paths = {m["path"]: m for m in table}
            self.assertIn(a_there, paths, how)
            self.assertEqual(paths[a_there]["dev"], dev_a, how)
            self.assertNotIn(a, paths, f"{how}: A's host path")
            self.assertNotIn(b, paths, f"{how}: B's host path")
            self.assertFalse([m for m in table if m["dev"] == dev_b], f"{how}: B is not mounted there")
        host_paths = {m["path"] for m in json.loads(d.cli_ok("mounts", "--json"))["mounts"]}
        self.assertIn(a, host_paths)
        self.assertIn(b, host_paths)

        # Filesystems.
        fss = {f["dev"]: f for f in client.call("ListFilesystems", {"all": True})["parameters"]["filesystems"]}
        self.assertEqual(fss[dev_a]["mounts"], [a_there])
        self.assertTrue(fss[dev_a]["watched"])
        self.assertNotIn(dev_b, fss)
        got = client.call("GetFilesystem", {"path": os.path.join(a_there, "dir")})
        self.assertEqual(got["parameters"]["filesystem"]["dev"], dev_a)
        self.assertEqual(got["parameters"]["filesystem"]["mounts"], [a_there])
        hidden = client.call("GetFilesystem", {"dev": dev_b})
        self.assertEqual(hidden.get("error"), "io.storwatch.NoSuchFilesystem", hidden)
        self.assertEqual([f["mounts"] for f in d.status_json(all=True) if f["dev"] == dev_a], [[a]])

        # Events: B's first, so it would arrive before A's if it were sent at all.
        lines = [{"type": "fs.error", "fs": b, "detail": {"errno": 5, "inode": 1}},
                 {"type": "fs.error", "fs": a,
                  "detail": {"errno": 5, "inode": 2, "path": os.path.join(a, "dir", "file")}}]
        replay(fifo, lines)
        on_a = client.wait_event(lambda e: e["type"] == "fs.error", "the event on A")
        self.assertEqual(on_a["fs"]["dev"], dev_a)
        self.assertEqual(on_a["fs"]["mounts"], [a_there])
        self.assertEqual(on_a["detail"]["path"], os.path.join(a_there, "dir", "file"))
        self.assertEqual([e for e in client.events() if e["type"] == "fs.error" and e["fs"]["dev"] == dev_b], [],
                         "an event on a filesystem the namespace does not have reached it")
        host_a = host_mon.wait_event(swtest.event_matcher("fs.error", mount=a, inode=2))
        self.assertEqual(host_a["detail"]["path"], os.path.join(a, "dir", "file"))
        host_mon.wait_event(swtest.event_matcher("fs.error", mount=b, inode=1))

        # A mount inside the namespace: the client's own mount.* events, at its paths.
        sub_there = os.path.join(a_there, "dir", "sub")
        client.ns("mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", sub_there)
        # (Only this one: directories of parallel tests removed on the host take their mounts
        # in this namespace with them, which are mount.detached events here too.)
        attached = client.wait_event(lambda e: e["type"] == "mount.attached" and e["detail"]["path"] == sub_there,
                                     "mount.attached in the namespace")
        # Mounted only there: listed, but not watched by the daemon.
        only_there = client.call("GetFilesystem", {"path": sub_there})["parameters"]["filesystem"]
        self.assertEqual((only_there["mounts"], only_there["watched"]), ([sub_there], False))
        self.assertEqual(attached["detail"]["fstype"], "tmpfs")
        self.assertIn(sub_there, [m["path"] for m in client.call("ListMounts")["parameters"]["mounts"]])
        client.ns("umount", sub_there)
        detached = client.wait_event(lambda e: e["type"] == "mount.detached" and e["detail"]["path"] == sub_there,
                                     "mount.detached in the namespace")
        # (Without CAP_SYS_PTRACE the namespace's root cannot be opened to read unique ids.)
        for key in ("mnt_id", "mnt_id_old"):
            self.assertEqual(detached["detail"].get(key), attached["detail"].get(key), key)
        # A burst of changes (read at most every 50 ms): every one of them is reported.
        burst = [os.path.join(a_there, "dir", f"b{i}") for i in range(10)]
        client.ns("sh", "-c", " && ".join(f"mkdir -p {p} && mount -t tmpfs -o size=1m tmpfs {p}" for p in burst))
        client.wait(lambda _: {e["detail"]["path"] for e in client.events() if e["type"] == "mount.attached"}
                    >= set(burst), "mount.attached for each mount of the burst")
        client.ns("sh", "-c", " && ".join(f"umount {p}" for p in burst))
        client.wait(lambda _: {e["detail"]["path"] for e in client.events() if e["type"] == "mount.detached"}
                    >= set(burst), "mount.detached for each mount of the burst")
        self.assertFalse(set(burst) & {m["path"] for m in client.call("ListMounts")["parameters"]["mounts"]})
        # Host clients have no such mount: none of those events is theirs. (Monitor.sync() cannot
        # tell: the newest sequence number is one they are not sent.) A later event they do get
        # marks the point by which they would have had them.
        replay(fifo, [{"type": "fs.error", "fs": a, "detail": {"errno": 5, "inode": 3}}])
        host_mon.wait_event(swtest.event_matcher("fs.error", mount=a, inode=3))
        self.assertEqual([e for e in host_mon.events() if e["type"].startswith("mount.") and
                          e["detail"].get("path", "").startswith(os.path.join(base, "ct"))], [],
                         "a mount event of the client's namespace reached a host client")
        # Nor did the host's own view change.
        self.assertEqual([f["mounts"] for f in d.status_json(all=True) if f["dev"] == dev_a], [[a]])

    def test_rules_cannot_be_changed_from_another_namespace(self):
        base = os.path.realpath(swtest.tempdir(prefix="swtest-nsview-", cleanup=self.cleanup))
        run_there = os.path.join(base, "run")
        os.makedirs(run_there)
        d = self.daemon()
        script = os.path.join(d.dir, "policy_client.py")
        shutil.copy(os.path.join(HERE, "policy_client.py"), script)
        client = NamespaceClient(script, os.path.join(run_there, "s"),
                                 [f"mount --bind {d.dir} {run_there}"], self.cleanup)
        r = client.call("AddRule", {"rule": {"path": "/", "levels": [{"resource": "blocks", "below": "1%"}]}})
        self.assertEqual(r.get("error"), "io.storwatch.PermissionDenied", r)
        self.assertIn("another mount namespace", r["parameters"]["reason"])


if __name__ == "__main__":
    swtest.main()
