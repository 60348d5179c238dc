#!/usr/bin/env python3
"""storwatchd as a process, the way systemd and generic Varlink clients see it.

sd_notify (READY, RELOADING, STOPPING) on a notification socket the test owns, SIGHUP reload (also
with a broken configuration), socket activation (LISTEN_FDS), --check-config and
--print-default-config, one daemon per socket (and stale socket files), org.varlink.service, the
documented errors, and hostile clients (garbage, oversized messages, too many clients or
subscriptions) that are answered with a Varlink error and dropped while everyone else is served.

Needs no privileges: every daemon runs on a socket and state directory in a temporary directory
with a configuration that polls nothing ([thresholds] levels = []).
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

INTERFACE_FILE = os.path.join(swtest.REPO_ROOT, "src", "proto", "io.storwatch.varlink")
QUIET_CONFIG = "[thresholds]\nlevels = []\n"
DEADLINE = 10.0  # seconds for anything the daemon should do "at once"


def daemon_binary():
    path = swtest.find_storwatch()[0]
    if path is None:
        swtest.skip("storwatchd not found (build it, or set STORWATCHD)")
    return path


# ---------------------------------------------------------------------------
# A minimal Varlink client: NUL-terminated JSON over a Unix stream socket.
# ---------------------------------------------------------------------------

class Dropped(Exception):
    """The daemon closed the connection."""


class Varlink:
    def __init__(self, path, timeout=DEADLINE):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        # With a timeout the socket is non-blocking underneath: a full listen backlog (a burst of
        # clients the daemon has not accepted yet) fails connect() with EAGAIN. Retry, as
        # docs/protocol.md tells clients to.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.01)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, method, parameters=None, **flags):
        msg = {"method": method}
        if parameters is not None:
            msg["parameters"] = parameters
        msg.update(flags)
        self.sock.sendall(json.dumps(msg).encode() + b"\0")

    def send_raw(self, data):
        self.sock.sendall(data)

    def receive(self):
        """The next message (a dict); raises Dropped at EOF or a reset connection."""
        while b"\0" not in self.buf:
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                # The daemon closed with our request bytes unread: Linux reports that as a reset,
                # after the data it sent before closing has been read.
                chunk = b""
            if not chunk:
                raise Dropped(f"connection closed; unparsed bytes: {self.buf[:200]!r}")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def call(self, method, parameters=None, **flags):
        self.send(method, parameters, **flags)
        return self.receive()

    def expect_dropped(self):
        """Asserts the daemon closes the connection (within the socket timeout)."""
        try:
            msg = self.receive()
        except Dropped:
            return
        raise AssertionError(f"connection not dropped; got {msg}")


def connect(path, timeout=DEADLINE):
    return Varlink(path, timeout)


# ---------------------------------------------------------------------------
# The notification socket ($NOTIFY_SOCKET) and the daemon process.
# ---------------------------------------------------------------------------

class NotifySocket:
    """An AF_UNIX datagram socket playing systemd's part: it collects the sd_notify messages."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.messages = []  # every assignment received, in order ("READY=1", "STATUS=...")

    def close(self):
        self.sock.close()

    def expect(self, assignment, timeout=DEADLINE):
        """Waits until `assignment` arrives (after the ones already consumed); returns the
        assignments received up to and including it."""
        deadline = time.monotonic() + timeout
        seen = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {assignment} from storwatchd within {timeout} s "
                                     f"(got {seen})")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            for line in data.decode().split("\n"):
                if not line:
                    continue
                self.messages.append(line)
                seen.append(line)
                if line == assignment:
                    return seen

    def assert_quiet(self):
        """Nothing more is waiting on the socket."""
        self.sock.settimeout(0)
        try:
            data = self.sock.recv(4096)
        except (BlockingIOError, socket.timeout):
            return
        raise AssertionError(f"unexpected notification {data!r}")


def _prctl_pdeathsig():
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


class Storwatchd:
    """One storwatchd process with its config, socket, state dir and logs in `dir`.

    notify: start with NOTIFY_SOCKET and wait for READY=1 (else: wait until the socket answers).
    listen_sock: a listening socket passed as fd 3 with LISTEN_FDS=1 and LISTEN_PID set to the
    child's pid in a preexec_fn, as systemd does."""

    def __init__(self, dir, name="d", config=QUIET_CONFIG, socket_path=None, state_dir=None,
                 notify=True, listen_sock=None, listen_pid=None, extra_args=()):
        self.dir = dir
        self.name = name
        self.config_path = os.path.join(dir, f"{name}.toml")
        self.socket = socket_path or os.path.join(dir, f"{name}.sock")
        self.state_dir = state_dir or os.path.join(dir, f"{name}.state")
        self.stderr_path = os.path.join(dir, f"{name}.stderr")
        self.notify = NotifySocket(os.path.join(dir, f"{name}.notify")) if notify else None
        self.listen_sock = listen_sock
        self.listen_pid = listen_pid  # default: the child's own pid
        self.extra_args = list(extra_args)
        self.proc = None
        if config is not None:
            self.write_config(config)

    def write_config(self, text):
        with open(self.config_path, "w") as f:
            f.write(text)

    def command(self):
        return [daemon_binary(), "--config", self.config_path, "--socket", self.socket,
                "--state-dir", self.state_dir] + self.extra_args

    def spawn(self):
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")}
        if self.notify:
            env["NOTIFY_SOCKET"] = self.notify.path
        pass_fds = ()
        listen_fd = self.listen_sock.fileno() if self.listen_sock else None
        listen_pid = self.listen_pid

        def preexec():
            _prctl_pdeathsig()
            if listen_fd is not None:
                # What systemd does: the socket at fd 3, LISTEN_PID naming the process that
                # execs storwatchd (only known in the child, hence putenv here: with env=None
                # the child's environment is what exec passes on).
                if listen_fd != 3:
                    os.dup2(listen_fd, 3)
                os.set_inheritable(3, True)
                os.environ["LISTEN_FDS"] = "1"
                os.environ["LISTEN_PID"] = str(listen_pid or os.getpid())
        if listen_fd is not None:
            pass_fds = (3,)
        with open(self.stderr_path, "ab") as err:
            if listen_fd is None:
                self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                             stdout=subprocess.DEVNULL, stderr=err, env=env,
                                             preexec_fn=preexec)
            else:
                # env=None: the preexec_fn's putenv() must reach exec.
                saved = dict(os.environ)
                os.environ.clear()
                os.environ.update(env)
                try:
                    self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL,
                                                 stdout=subprocess.DEVNULL, stderr=err,
                                                 pass_fds=pass_fds, preexec_fn=preexec)
                finally:
                    os.environ.clear()
                    os.environ.update(saved)
        return self.proc

    def start(self):
        self.spawn()
        try:
            if self.notify:
                self.wait_notify("READY=1")
            else:
                self.wait_answering()
        except AssertionError:
            self.kill()
            raise AssertionError(f"storwatchd did not start; stderr:\n{self.stderr()}")
        return self

    def wait_notify(self, assignment, timeout=DEADLINE):
        try:
            return self.notify.expect(assignment, timeout)
        except AssertionError as e:
            raise AssertionError(f"{e}; exit status {self.proc.poll()}; stderr:\n{self.stderr()}")

    def wait_answering(self, path=None):
        path = path or self.socket

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError(f"storwatchd exited with {self.proc.returncode}:\n"
                                     f"{self.stderr()}")
            c = connect(path, timeout=2)
            try:
                return "parameters" in c.call("org.varlink.service.GetInfo")
            finally:
                c.close()
        swtest.wait_for(answers, DEADLINE, f"storwatchd to answer on {path}",
                        ignore=(OSError, Dropped))

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def wait_exit(self, timeout=DEADLINE):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"storwatchd did not exit within {timeout} s; stderr:\n"
                                 f"{self.stderr()}")

    def stop(self):
        """SIGTERM; asserts a clean exit (status 0) within the deadline."""
        self.signal(signal.SIGTERM)
        rc = self.wait_exit()
        if rc != 0:
            raise AssertionError(f"storwatchd exited with {rc}; stderr:\n{self.stderr()}")

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stderr(self):
        try:
            with open(self.stderr_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def call(self, method, parameters=None, path=None, **flags):
        c = connect(path or self.socket)
        try:
            return c.call(method, parameters, **flags)
        finally:
            c.close()


def run_daemon(*args, timeout=30):
    return subprocess.run([daemon_binary()] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class DaemonTestCase(swtest.TestCase):
    timeout = 60

    def setUp(self):
        super().setUp()
        daemon_binary()
        self.dir = swtest.tempdir(prefix="swtest-daemon-", cleanup=self.cleanup)

    def daemon(self, **kwargs):
        d = Storwatchd(self.dir, **kwargs)
        if d.notify:
            self.cleanup.push(d.notify.close)
        self.cleanup.push(d.kill)
        return d

    def assertError(self, reply, name, **parameters):
        self.assertEqual(reply.get("error"), name, f"reply: {reply}")
        for k, v in parameters.items():
            self.assertEqual(reply.get("parameters", {}).get(k), v, f"reply: {reply}")


# ---------------------------------------------------------------------------
# sd_notify and signals
# ---------------------------------------------------------------------------

class NotifyTest(DaemonTestCase):
    def test_ready_reload_stopping(self):
        d = self.daemon().start()
        self.assertIn("READY=1", d.notify.messages)
        self.assertIn("parameters", d.call("org.varlink.service.GetInfo"))

        d.signal(signal.SIGHUP)
        seen = d.wait_notify("READY=1")
        self.assertEqual([m for m in seen if m in ("RELOADING=1", "READY=1")],
                         ["RELOADING=1", "READY=1"], f"notifications: {seen}")
        self.assertIn("configuration reloaded", d.stderr())
        self.assertIn("parameters", d.call("org.varlink.service.GetInfo"))

        t0 = time.monotonic()
        d.signal(signal.SIGTERM)
        d.wait_notify("STOPPING=1")
        self.assertEqual(d.wait_exit(), 0, d.stderr())
        self.assertLess(time.monotonic() - t0, 5.0, "slow to stop")
        d.notify.assert_quiet()

    def test_sigint_stops_cleanly(self):
        d = self.daemon().start()
        d.signal(signal.SIGINT)
        d.wait_notify("STOPPING=1")
        self.assertEqual(d.wait_exit(), 0, d.stderr())

    def test_reload_with_broken_config_keeps_the_old_one(self):
        rule_path = os.path.join(self.dir, "not-a-mount")
        with_rule = QUIET_CONFIG + (f'[[rule]]\npath = {json.dumps(rule_path)}\n'
                                    'levels = [ { resource = "blocks", below = "10%" } ]\n')
        d = self.daemon(config=with_rule).start()

        def rule_paths():
            reply = d.call("io.storwatch.ListRules")
            return [r["path"] for r in reply["parameters"]["rules"]]
        self.assertEqual(rule_paths(), [rule_path])

        d.write_config('[limits]\nclients = "many"\n')
        d.signal(signal.SIGHUP)
        d.wait_notify("RELOADING=1")
        d.wait_notify("READY=1")
        self.assertTrue(d.alive)
        err = d.stderr()
        self.assertIn("reload:", err)
        self.assertIn("limits.clients: must be an integer", err)
        self.assertIn("keeping the previous configuration", err)
        self.assertEqual(rule_paths(), [rule_path])  # still the old configuration

        d.write_config("[thresholds\n")  # not even TOML
        d.signal(signal.SIGHUP)
        d.wait_notify("READY=1")
        self.assertTrue(d.alive)
        self.assertEqual(rule_paths(), [rule_path])

        # A good file is taken: so the rule above survived because the reload was refused.
        d.write_config(QUIET_CONFIG)
        d.signal(signal.SIGHUP)
        d.wait_notify("READY=1")
        self.assertEqual(rule_paths(), [])
        self.assertIn("configuration reloaded", d.stderr())
        d.stop()


# ---------------------------------------------------------------------------
# Socket activation
# ---------------------------------------------------------------------------

class SocketActivationTest(DaemonTestCase):
    def listening_socket(self, path):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.cleanup.push(s.close)
        s.bind(path)
        s.listen(16)
        return s

    def test_listen_fds(self):
        path = os.path.join(self.dir, "activated.sock")
        lsock = self.listening_socket(path)
        # A client that connects before the daemon runs waits in the backlog, as with systemd.
        early = connect(path)
        self.cleanup.push(early.close)
        early.send("org.varlink.service.GetInfo")

        d = self.daemon(listen_sock=lsock).start()
        self.assertEqual(early.receive()["parameters"]["product"], "storwatchd")
        self.assertEqual(d.call("io.storwatch.ListRules", path=path)["parameters"]["rules"], [])
        # The passed socket is used, not the --socket path.
        self.assertFalse(os.path.exists(d.socket), "storwatchd bound --socket as well")

        # systemd keeps the socket across restarts: the next daemon gets the same one.
        d.stop()
        waiting = connect(path)
        self.cleanup.push(waiting.close)
        waiting.send("io.storwatch.ListRules")
        d2 = self.daemon(name="d2", listen_sock=lsock).start()
        self.assertEqual(waiting.receive()["parameters"]["rules"], [])
        self.assertTrue(os.path.exists(path), "storwatchd removed the activated socket")
        d2.stop()
        self.assertTrue(os.path.exists(path))

    def test_listen_pid_of_another_process_is_ignored(self):
        # LISTEN_PID names another process: the fds are not ours, bind --socket instead.
        path = os.path.join(self.dir, "activated.sock")
        lsock = self.listening_socket(path)
        d = self.daemon(listen_sock=lsock, listen_pid=os.getpid()).start()
        self.assertTrue(os.path.exists(d.socket))
        self.assertIn("parameters", d.call("org.varlink.service.GetInfo"))
        d.stop()


# ---------------------------------------------------------------------------
# Configuration checks
# ---------------------------------------------------------------------------

class ConfigTest(DaemonTestCase):
    def write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_check_config(self):
        good = self.write("good.toml", QUIET_CONFIG + "[limits]\nclients = 10\n")
        p = run_daemon("--check-config", "--config", good)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("configuration ok", p.stdout)

        cases = [
            ('[limits]\nclients = "many"\n', "limits.clients: must be an integer"),
            ("[limits]\nclients = 0\n", "limits.clients: must be between 1 and 100000"),
            ("[watch]\nskip_fstype = []\n", 'watch: unknown key "skip_fstype"'),
            ("[thresholds]\npoll_min = \"fast\"\n", "thresholds.poll_min: invalid duration"),
            ('[thresholds]\nlevels = [ { resource = "blocks", below = "150%" } ]\n',
             "thresholds.levels"),
            ("[daemon]\nsocket = 5\n", "daemon.socket: must be a string"),
            ("[thresholds\n", ":1:"),  # a TOML syntax error names line and column
        ]
        for text, message in cases:
            with self.subTest(config=text):
                path = self.write("bad.toml", text)
                p = run_daemon("--check-config", "--config", path)
                self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
                self.assertIn(path, p.stderr)
                self.assertIn(message, p.stderr)
                self.assertNotIn("configuration ok", p.stdout)

        missing = os.path.join(self.dir, "missing.toml")
        p = run_daemon("--check-config", "--config", missing)
        self.assertEqual(p.returncode, 1)
        self.assertIn(missing, p.stderr)
        self.assertIn("No such file", p.stderr)

    def test_bad_config_at_start(self):
        d = self.daemon(config="[limits]\nqueue_events = 1\n")
        d.spawn()
        self.assertEqual(d.wait_exit(), 1)
        self.assertIn("limits.queue_events: must be between 16 and", d.stderr())
        self.assertFalse(os.path.exists(d.socket))
        self.assertNotIn("READY=1", d.notify.messages)

    def test_print_default_config(self):
        p = run_daemon("--print-default-config")
        self.assertEqual(p.returncode, 0, p.stderr)
        try:
            import tomllib
        except ImportError:
            self.skipTest(f"python {sys.version.split()[0]} has no tomllib (3.11+)")
        conf = tomllib.loads(p.stdout)
        self.assertEqual(conf["daemon"], {"socket": "/run/storwatch/io.storwatch",
                                          "state_dir": "/var/lib/storwatch"})
        self.assertEqual(conf["limits"], {"clients": 1024, "clients_per_uid": 128,
                                          "message_bytes": 65536, "output_bytes": 4194304,
                                          "requests_per_second": 200, "request_burst": 400,
                                          "subscriptions_per_process": 32,
                                          "queue_events": 4096})
        self.assertEqual(conf["watch"]["watch_readonly"], False)
        levels = [(lv["resource"], lv["below"], lv["severity"])
                  for lv in conf["thresholds"]["levels"]]
        self.assertEqual(levels, [(r, b, s) for r in ("blocks", "inodes")
                                  for b, s in (("10%", "warning"), ("5%", "error"),
                                               ("1%", "critical"))])
        # What it prints is a valid configuration file.
        path = self.write("default.toml", p.stdout)
        q = run_daemon("--check-config", "--config", path)
        self.assertEqual(q.returncode, 0, q.stderr)


# ---------------------------------------------------------------------------
# One daemon per socket
# ---------------------------------------------------------------------------

class SocketOwnershipTest(DaemonTestCase):
    def make_an_event(self, d):
        """Makes `d` publish and journal an event: a reload adds a rule whose level (1 PiB free)
        the filesystem of the temporary directory is below. Returns the journaled events (which
        may include events of other tests running on this machine: kernel messages are global)."""
        fs = d.call("io.storwatch.GetFilesystem",
                    {"path": os.path.realpath(self.dir)})["parameters"]["filesystem"]
        if not fs["watched"]:
            self.skipTest(f"the filesystem of {self.dir} is not watched here")
        d.write_config(QUIET_CONFIG + f'[[rule]]\npath = {json.dumps(fs["mounts"][0])}\n'
                       'levels = [ { resource = "blocks", below = "1P" } ]\n')
        d.signal(signal.SIGHUP)
        d.wait_notify("READY=1")

        def journaled():
            reply = d.call("io.storwatch.ListEvents", {"after": 0})["parameters"]
            events = [e for e in reply["events"] if e["seq"] <= reply["journaled_seq"]]
            return events if any(e["type"] == "space.threshold" for e in events) else None
        return swtest.wait_for(journaled, DEADLINE, "a space.threshold event in the journal")

    def test_second_daemon_refuses(self):
        a = self.daemon(name="a").start()
        # With an event journaled, sequence numbers are reserved: a second daemon that opened the
        # state directory would take them for numbers lost in a crash.
        before = self.make_an_event(a)
        for state_dir in (os.path.join(self.dir, "b.state"), a.state_dir):
            with self.subTest(state_dir=state_dir):
                b = self.daemon(name="b", socket_path=a.socket, state_dir=state_dir)
                b.spawn()
                self.assertEqual(b.wait_exit(), 1, b.stderr())
                self.assertIn(f"another storwatchd is listening on {a.socket}", b.stderr())
                self.assertNotIn("READY=1", b.notify.messages)
                b.notify.close()
                os.unlink(b.notify.path)
                # The first one is untouched, and so is its journal.
                self.assertTrue(a.alive)
                self.assertIn("parameters", a.call("org.varlink.service.GetInfo"))
                events = a.call("io.storwatch.ListEvents", {"after": 0})["parameters"]["events"]
                self.assertEqual(events[:len(before)], before)
                self.assertEqual([e for e in events if e["type"] == "stream.lost"], [])
        a.stop()

    def test_stale_socket_is_reused(self):
        a = self.daemon(name="a").start()
        a.kill()  # SIGKILL: the socket file stays behind
        self.assertTrue(os.path.exists(a.socket))
        b = self.daemon(name="b", socket_path=a.socket, state_dir=a.state_dir).start()
        self.assertIn("parameters", b.call("org.varlink.service.GetInfo"))
        b.stop()
        # A clean stop leaves the file too (it is never unlinked under a successor); the next
        # start reuses it as well.
        c = self.daemon(name="c", socket_path=a.socket, state_dir=a.state_dir).start()
        self.assertIn("parameters", c.call("org.varlink.service.GetInfo"))
        c.stop()

    def test_path_that_is_not_a_socket(self):
        path = os.path.join(self.dir, "file")
        with open(path, "w") as f:
            f.write("precious\n")
        d = self.daemon(socket_path=path)
        d.spawn()
        self.assertEqual(d.wait_exit(), 1)
        self.assertIn(f"{path} exists and is not a socket", d.stderr())
        with open(path) as f:
            self.assertEqual(f.read(), "precious\n")


# ---------------------------------------------------------------------------
# org.varlink.service and the documented errors
# ---------------------------------------------------------------------------

class VarlinkServiceTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.d = self.daemon().start()

    def test_get_info(self):
        p = self.d.call("org.varlink.service.GetInfo")["parameters"]
        self.assertEqual(p["product"], "storwatchd")
        self.assertEqual(p["vendor"], "storwatch")
        self.assertRegex(p["version"], r"^\d+\.\d+")
        self.assertIn("url", p)
        self.assertEqual(sorted(p["interfaces"]), ["io.storwatch", "org.varlink.service"])

    def test_interface_description_is_the_interface_file(self):
        with open(INTERFACE_FILE) as f:
            expected = f.read()
        reply = self.d.call("org.varlink.service.GetInterfaceDescription",
                            {"interface": "io.storwatch"})
        self.assertEqual(reply["parameters"]["description"], expected)
        svc = self.d.call("org.varlink.service.GetInterfaceDescription",
                          {"interface": "org.varlink.service"})["parameters"]["description"]
        self.assertIn("interface org.varlink.service", svc)
        self.assertError(self.d.call("org.varlink.service.GetInterfaceDescription",
                                     {"interface": "org.example.nope"}),
                         "org.varlink.service.InterfaceNotFound", interface="org.example.nope")

    def test_documented_errors(self):
        d = self.d
        self.assertError(d.call("io.storwatch.NoSuchMethod"),
                         "org.varlink.service.MethodNotFound", method="io.storwatch.NoSuchMethod")
        self.assertError(d.call("org.example.Thing"),
                         "org.varlink.service.InterfaceNotFound", interface="org.example")
        self.assertIsInstance(d.call("io.storwatch.ListMounts")["parameters"]["mounts"], list)
        self.assertError(d.call("io.storwatch.Subscribe"), "org.varlink.service.ExpectedMore")
        self.assertError(d.call("io.storwatch.Subscribe", {"after": "last"}, more=True),
                         "io.storwatch.InvalidParameter", parameter="after")
        journal_id = d.call("io.storwatch.Doctor")["parameters"]["journal_id"]
        self.assertError(d.call("io.storwatch.Subscribe", {"after": 0, "journal_id": "0" * 32},
                                more=True),
                         "io.storwatch.JournalMismatch", expected="0" * 32, actual=journal_id)
        self.assertError(d.call("io.storwatch.Subscribe", {"mounts": True, "after": 0}, more=True),
                         "io.storwatch.InvalidParameter", parameter="mounts")
        self.assertError(d.call("io.storwatch.Subscribe",
                                {"filter": {"types": ["x"] * 65}}, more=True),
                         "io.storwatch.LimitExceeded", limit="filter_entries", max=64)
        self.assertError(d.call("io.storwatch.ListEvents", {"limit": 0}),
                         "io.storwatch.InvalidParameter", parameter="limit")
        self.assertError(d.call("io.storwatch.ListEvents", {"since": "yesterday"}),
                         "io.storwatch.InvalidParameter", parameter="since")
        events = d.call("io.storwatch.ListEvents", {"after": 0, "limit": 10})["parameters"]
        self.assertEqual(events["journal_id"], journal_id)
        self.assertIsInstance(events["events"], list)
        self.assertError(d.call("io.storwatch.Subscribe", {"filter": {"min_severity": "loud"}},
                                more=True),
                         "io.storwatch.InvalidParameter", parameter="filter")
        self.assertError(d.call("io.storwatch.GetFilesystem", {"path": "relative/path"}),
                         "io.storwatch.NoSuchFilesystem", path="relative/path")
        self.assertError(d.call("io.storwatch.GetFilesystem", {}),
                         "io.storwatch.InvalidParameter", parameter="path")
        if os.geteuid() != 0:
            self.assertError(d.call("io.storwatch.RemoveRule", {"path": "/"}),
                             "io.storwatch.PermissionDenied")
        else:
            self.assertError(d.call("io.storwatch.AddRule", {"line": "/ X"}),
                             "io.storwatch.InvalidRule")
        # Every error above left the connection usable: errors of a call never drop the client.
        c = connect(d.socket)
        self.cleanup.push(c.close)
        self.assertIn("parameters", c.call("io.storwatch.ListMounts"))
        self.assertIn("parameters", c.call("org.varlink.service.GetInfo"))

    def test_subscribe_and_oneway(self):
        c = connect(self.d.socket)
        self.cleanup.push(c.close)
        first = c.call("io.storwatch.Subscribe", {"filter": {"types": ["space.*"]}}, more=True)
        self.assertTrue(first.get("continues"), first)
        self.assertNotIn("error", first)
        self.assertNotIn("event", first["parameters"])
        self.assertRegex(first["parameters"]["journal_id"], r"^[0-9a-f]{8,}$")
        self.assertIsInstance(first["parameters"]["journaled_seq"], int)
        self.assertGreaterEqual(first["parameters"]["journaled_seq"], 0)
        # A oneway call gets no reply, not even an error; the next call's reply is the next
        # message.
        o = connect(self.d.socket)
        self.cleanup.push(o.close)
        o.send("io.storwatch.ListRules", oneway=True)
        o.send("io.storwatch.NoSuchMethod", oneway=True)
        o.send("io.storwatch.ListEvents", oneway=True)
        o.send("org.example.Thing", oneway=True)
        o.send("io.storwatch.Subscribe", {}, oneway=True, more=True)
        self.assertIn("product", o.call("org.varlink.service.GetInfo")["parameters"])
        self.assertIn("rules", o.call("io.storwatch.ListRules")["parameters"])


# ---------------------------------------------------------------------------
# Hostile clients
# ---------------------------------------------------------------------------

class HostileClientTest(DaemonTestCase):
    def start(self, config=QUIET_CONFIG):
        self.d = self.daemon(config=config).start()
        return self.d

    def still_serves(self):
        c = connect(self.d.socket)
        try:
            self.assertEqual(c.call("org.varlink.service.GetInfo")["parameters"]["product"],
                             "storwatchd")
        finally:
            c.close()
        self.assertTrue(self.d.alive)

    def test_garbage_is_answered_and_dropped(self):
        self.start()
        cases = [
            (b"this is not json\0", "io.storwatch.InvalidParameter", "message"),
            (b"[1, 2, 3]\0", "io.storwatch.InvalidParameter", "message"),
            (b'{"parameters": {}}\0', "io.storwatch.InvalidParameter", "message"),
            (b'{"method": 42}\0', "io.storwatch.InvalidParameter", "message"),
            (b'{"method": "io.storwatch.ListRules", "parameters": [1]}\0',
             "io.storwatch.InvalidParameter", "message"),
            (b'{"method": "io.storwatch.ListRules", "more": "yes"}\0',
             "io.storwatch.InvalidParameter", "message"),
            (b"\xff\xfe\x00", "io.storwatch.InvalidParameter", "message"),
        ]
        for data, error, parameter in cases:
            with self.subTest(data=data):
                c = connect(self.d.socket)
                try:
                    c.send_raw(data)
                    reply = c.receive()
                    self.assertError(reply, error, parameter=parameter)
                    self.assertTrue(reply["parameters"].get("reason"), reply)
                    c.expect_dropped()
                finally:
                    c.close()
                self.still_serves()

    def test_garbage_after_a_valid_call_in_the_same_write(self):
        self.start()
        c = connect(self.d.socket)
        self.cleanup.push(c.close)
        c.send_raw(b'{"method": "org.varlink.service.GetInfo"}\0garbage\0'
                   b'{"method": "org.varlink.service.GetInfo"}\0')
        self.assertIn("product", c.receive()["parameters"])
        self.assertError(c.receive(), "io.storwatch.InvalidParameter", parameter="message")
        c.expect_dropped()  # the call after the garbage is not answered
        self.still_serves()

    def test_oversized_message(self):
        self.start()
        c = connect(self.d.socket, timeout=30)
        self.cleanup.push(c.close)
        payload = b'{"method": "org.varlink.service.GetInfo", "parameters": {"x": "' + \
            b"A" * (1 << 20)  # 1 MiB, no NUL

        def flood():
            try:
                c.send_raw(payload)
            except OSError:
                pass  # dropped half-way: expected
        t = threading.Thread(target=flood, daemon=True)
        t.start()
        # While that client is being dealt with, others are served.
        self.still_serves()
        reply = c.receive()
        self.assertError(reply, "io.storwatch.LimitExceeded", limit="message_bytes", max=65536)
        c.expect_dropped()
        t.join(DEADLINE)
        self.assertFalse(t.is_alive(), "the sender is still blocked: the daemon kept reading")
        self.still_serves()

    def test_message_at_the_limit_is_accepted(self):
        self.start("[thresholds]\nlevels = []\n[limits]\nmessage_bytes = 4096\n")
        c = connect(self.d.socket)
        self.cleanup.push(c.close)
        head = b'{"method": "org.varlink.service.GetInfo", "parameters": {"pad": "'
        tail = b'"}}'
        msg = head + b"x" * (4096 - len(head) - len(tail)) + tail
        self.assertEqual(len(msg), 4096)
        c.send_raw(msg + b"\0")
        self.assertIn("product", c.receive()["parameters"])
        c.send_raw(head + b"x" * 4096 + tail + b"\0")
        self.assertError(c.receive(), "io.storwatch.LimitExceeded", limit="message_bytes",
                         max=4096)
        c.expect_dropped()

    def test_slow_client_does_not_block_others(self):
        self.start()
        slow = connect(self.d.socket)
        self.cleanup.push(slow.close)
        slow.send_raw(b'{"method": "org.varlink.serv')  # and then nothing
        self.still_serves()
        slow.send_raw(b'ice.GetInfo"}\0')  # it may finish later
        self.assertIn("product", slow.receive()["parameters"])

    def test_client_limit(self):
        self.start("[thresholds]\nlevels = []\n[limits]\nclients = 2\n")
        held = []
        for _ in range(2):
            c = connect(self.d.socket)
            self.cleanup.push(c.close)
            self.assertIn("parameters", c.call("org.varlink.service.GetInfo"))
            held.append(c)
        extra = connect(self.d.socket)
        self.cleanup.push(extra.close)
        self.assertError(extra.receive(), "io.storwatch.LimitExceeded", limit="clients", max=2)
        extra.expect_dropped()
        # The clients already connected are unaffected; a freed slot is usable again.
        self.assertIn("parameters", held[0].call("org.varlink.service.GetInfo"))
        held[1].close()

        def slot_free():
            c = connect(self.d.socket, timeout=2)
            try:
                return "parameters" in c.call("org.varlink.service.GetInfo")
            finally:
                c.close()
        swtest.wait_for(slot_free, DEADLINE, "a client slot after one client left",
                        ignore=(Dropped,))

    def test_subscriptions_per_process(self):
        self.start("[thresholds]\nlevels = []\n[limits]\nsubscriptions_per_process = 2\n")
        subs = []
        for _ in range(2):
            c = connect(self.d.socket)
            self.cleanup.push(c.close)
            self.assertTrue(c.call("io.storwatch.Subscribe", {}, more=True).get("continues"))
            subs.append(c)
        third = connect(self.d.socket)
        self.cleanup.push(third.close)
        self.assertError(third.call("io.storwatch.Subscribe", {}, more=True),
                         "io.storwatch.LimitExceeded", limit="subscriptions_per_process", max=2)
        # Refusing a subscription does not drop the connection; other calls still work on it.
        self.assertIn("parameters", third.call("org.varlink.service.GetInfo"))
        subs[0].close()

        def subscribed():
            reply = third.call("io.storwatch.Subscribe", {}, more=True)
            return reply.get("continues")
        swtest.wait_for(subscribed, DEADLINE, "a subscription after another one ended")

    def test_call_on_a_streaming_connection(self):
        self.start()
        c = connect(self.d.socket)
        self.cleanup.push(c.close)
        self.assertTrue(c.call("io.storwatch.Subscribe", {}, more=True).get("continues"))
        c.send("org.varlink.service.GetInfo")
        self.assertError(c.receive(), "io.storwatch.InvalidParameter", parameter="method")
        c.expect_dropped()
        self.still_serves()

    def test_many_connect_and_vanish(self):
        self.start()
        # Clients that connect and go away at once, or mid-message, cost nothing lasting.
        for i in range(200):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.d.socket)
            if i % 2:
                s.sendall(b'{"method": "io.storwatch.Subscribe", "more": true}\0')
            if i % 3 == 0:
                s.sendall(b'{"method": "io.sto')
            s.close()
        # Until the daemon has seen them all go, this uid may still be at limits.clients_per_uid
        # (128): a new client is refused meanwhile, not afterwards.
        def served():
            c = connect(self.d.socket)
            try:
                return c.call("org.varlink.service.GetInfo").get("error") is None
            finally:
                c.close()
        swtest.wait_for(served, 10, "a new client to be served", ignore=(OSError, EOFError))
        self.still_serves()


if __name__ == "__main__":
    swtest.main()
