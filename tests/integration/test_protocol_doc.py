#!/usr/bin/env python3
"""The example client of docs/protocol.md works, so the documentation cannot rot.

The Python code between <!-- example:begin --> and <!-- example:end --> is extracted and run
against a storwatchd on a temporary socket; the test makes one event happen while it is subscribed
(a configuration reload adds a rule whose level the filesystem of the temporary directory is
already below) and checks what the example prints. Needs no privileges.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

DOC = os.path.join(swtest.REPO_ROOT, "docs", "protocol.md")
DEADLINE = 20.0


def extract_example(text):
    m = re.search(r"<!-- example:begin -->\s*```python\n(.*?)```\s*<!-- example:end -->", text,
                  re.S)
    if not m:
        raise AssertionError(f"{DOC}: no ```python block between <!-- example:begin --> and "
                             "<!-- example:end -->")
    return m.group(1)


class Lines:
    """Collects the lines a process prints, on a thread, so waits have deadlines."""

    def __init__(self, stream):
        self.lines = []
        self.cond = threading.Condition()
        self.done = False
        self.thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self.thread.start()

    def _read(self, stream):
        for line in stream:
            with self.cond:
                self.lines.append(line.rstrip("\n"))
                self.cond.notify_all()
        with self.cond:
            self.done = True
            self.cond.notify_all()

    def wait(self, pred, what, timeout=DEADLINE):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for line in self.lines:
                    if pred(line):
                        return line
                remaining = deadline - time.monotonic()
                if self.done or remaining <= 0:
                    raise AssertionError(f"no line with {what} within {timeout} s; output:\n"
                                         + "\n".join(self.lines))
                self.cond.wait(remaining)


class ProtocolDocTest(swtest.TestCase):
    timeout = 90

    def setUp(self):
        super().setUp()
        self.daemon_bin = swtest.find_storwatch()[0]
        if self.daemon_bin is None:
            swtest.skip("storwatchd not found (build it, or set STORWATCHD)")
        self.dir = swtest.tempdir(prefix="swtest-doc-", cleanup=self.cleanup)

    def start_daemon(self, config_path, socket_path):
        notify = os.path.join(self.dir, "notify")
        import socket as socketlib
        ns = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_DGRAM)
        ns.bind(notify)
        ns.settimeout(DEADLINE)
        self.cleanup.push(ns.close)
        err = open(os.path.join(self.dir, "stderr"), "wb")
        self.cleanup.push(err.close)
        env = dict(os.environ, NOTIFY_SOCKET=notify)
        proc = subprocess.Popen([self.daemon_bin, "--config", config_path, "--socket", socket_path,
                                 "--state-dir", os.path.join(self.dir, "state")],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                env=env)
        self.cleanup.push(swtest.terminate_process, proc)
        self.notify = ns
        self.wait_notify("READY=1")
        return proc

    def wait_notify(self, assignment):
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                data = self.notify.recv(4096).decode()
            except OSError:
                break
            if assignment in data.split("\n"):
                return
        raise AssertionError(f"no {assignment} from storwatchd; stderr:\n{self.daemon_stderr()}")

    def daemon_stderr(self):
        with open(os.path.join(self.dir, "stderr"), errors="replace") as f:
            return f.read()

    def test_example_runs(self):
        with open(DOC) as f:
            code = extract_example(f.read())
        example = os.path.join(self.dir, "example.py")
        with open(example, "w") as f:
            f.write(code)

        config = os.path.join(self.dir, "config.toml")
        with open(config, "w") as f:
            f.write("[thresholds]\nlevels = []\n")
        sock = os.path.join(self.dir, "s")
        daemon = self.start_daemon(config, sock)

        # The filesystem of the temporary directory: it is writable, so it is watched.
        fs = self.get_filesystem(sock, self.dir)
        mount = fs["mounts"][0]

        # Socket from argv[1], no COUNT: it prints events until interrupted.
        proc = self.run_example(example, [sock], {k: v for k, v in os.environ.items()
                                                  if k != "STORWATCH_SOCKET"})
        out = Lines(proc.stdout)
        out.wait(lambda line: line.startswith("subscribed; journal "), "the subscription")

        # A rule with a level the filesystem is certainly below (less than 1 PiB free) makes
        # one space.threshold event as soon as the reloaded configuration samples it.
        self.reload(daemon, config, mount, "1P")
        pattern = re.compile(r"^#(\d+) warning space\.threshold (\S+) (\{.*\})$")
        # Other events may come too (kernel messages of other tests on this machine): look for ours.
        event = out.wait(lambda line: (m := pattern.match(line)) and m.group(2) == mount,
                         f"a space.threshold event on {mount}")
        proc.send_signal(signal.SIGINT)  # Ctrl-C ends it quietly
        try:
            rc = proc.wait(timeout=DEADLINE)
        except subprocess.TimeoutExpired:
            raise AssertionError("the example did not stop on SIGINT")
        out.thread.join(5)
        self.assertEqual(rc, 0, proc.stderr.read())
        lines = out.lines
        self.assertRegex(lines[0], r"^storwatchd \d+\.\d+\S* \(.*io\.storwatch.*\)$")
        self.assertTrue(any(line.split()[:3] == [mount, fs["fstype"], fs["dev"]]
                            for line in lines[1:]),
                        f"{mount} ({fs['dev']}) not listed:\n" + "\n".join(lines))
        m = pattern.match(event)
        self.assertGreater(int(m.group(1)), 0)
        detail = json.loads(m.group(3))
        self.assertEqual(detail["direction"], "below")
        self.assertEqual(detail["resource"], "blocks")
        self.assertEqual(detail["level"], "1P")

        # The socket from STORWATCH_SOCKET, interrupted while it waits for events.
        proc2 = self.run_example(example, [], dict(os.environ, STORWATCH_SOCKET=sock))
        Lines(proc2.stdout).wait(lambda line: line.startswith("subscribed; journal "),
                                 "the subscription")
        proc2.send_signal(signal.SIGINT)
        self.assertEqual(proc2.wait(timeout=DEADLINE), 0, proc2.stderr.read())

        # With COUNT it exits by itself after that many events (whichever come first).
        proc3 = self.run_example(example, [sock, "1"], os.environ)
        out3 = Lines(proc3.stdout)
        out3.wait(lambda line: line.startswith("subscribed; journal "), "the subscription")
        self.reload(daemon, config, mount, "2P")  # a new level: one more event
        try:
            self.assertEqual(proc3.wait(timeout=DEADLINE), 0, proc3.stderr.read())
        except subprocess.TimeoutExpired:
            raise AssertionError("the example with COUNT 1 did not exit after an event; output:\n"
                                 + "\n".join(out3.lines))
        out3.thread.join(5)
        self.assertRegex(out3.lines[-1], r"^#\d+ \w+ [a-z]+\.[a-z_.]+ \S+ \{.*\}$")

    def run_example(self, example, args, env):
        proc = subprocess.Popen([sys.executable, example] + args, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        self.cleanup.push(proc.stderr.close)
        self.cleanup.push(proc.stdout.close)
        self.cleanup.push(swtest.terminate_process, proc)
        return proc

    def reload(self, daemon, config, mount, level):
        with open(config, "w") as f:
            f.write("[thresholds]\nlevels = []\n"
                    f"[[rule]]\npath = {json.dumps(mount)}\n"
                    f'levels = [ {{ resource = "blocks", below = "{level}", severity = "warning" }} ]\n')
        daemon.send_signal(signal.SIGHUP)
        self.wait_notify("RELOADING=1")
        self.wait_notify("READY=1")

    def get_filesystem(self, sock_path, path):
        import socket as socketlib
        s = socketlib.socket(socketlib.AF_UNIX, socketlib.SOCK_STREAM)
        s.settimeout(DEADLINE)
        try:
            s.connect(sock_path)
            s.sendall(json.dumps({"method": "io.storwatch.GetFilesystem",
                                  "parameters": {"path": os.path.realpath(path)}}).encode() + b"\0")
            buf = b""
            while not buf.endswith(b"\0"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
        finally:
            s.close()
        reply = json.loads(buf.rstrip(b"\0"))
        self.assertNotIn("error", reply, reply)
        fs = reply["parameters"]["filesystem"]
        if not fs["watched"]:
            swtest.skip(f"the filesystem of {path} ({fs['fstype']} at {fs['mounts']}) is not "
                        "watched here")
        return fs


if __name__ == "__main__":
    swtest.main()
