"""Hostile and broken clients cannot hurt anyone (docs/security.md, "Limits").

One storwatchd; a well-behaved client (connect, Doctor, close, every 20 ms) measures the round
trip throughout, while in turn:

  * 1,000 connections stay open (and the one over limits.clients is refused),
  * a client sends 100 MB of garbage (reconnecting each time it is dropped),
  * a client opens subscriptions in a loop (and churns them),
  * a client subscribes and never reads while events flood in through the replay FIFO, and
    another pipelines calls without reading their replies.

Asserts: every well-behaved call succeeds within a deadline, each misbehaving client gets the
documented io.storwatch error and is disconnected, and the daemon's RSS stays under the bound of
docs/security.md.  Prints the round-trip percentiles of each phase (the table in
docs/security.md comes from here).  A second daemon with small limits checks the per-uid
connection limit (from another uid) and the request rate limit.
"""

import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402
from journal_helpers import Feeder, JournalDaemon, Varlink, error_line  # noqa: E402

SANITIZED = os.environ.get("STORWATCH_SANITIZED") == "1"
SLOW = 10 if SANITIZED else 1
RTT_DEADLINE = 2.0 * SLOW  # seconds: every well-behaved call, whatever the others do (loaded CI)
CONNECTIONS = 1000
GARBAGE_BYTES = 100 << 20
LIMIT_EXCEEDED = "io.storwatch.LimitExceeded"

LIMITS = {
    "clients": CONNECTIONS + 100,
    "clients_per_uid": CONNECTIONS + 200,  # everything here is root: the total limit applies
    "message_bytes": 65536,
    "output_bytes": 4 << 20,
    "requests_per_second": 200,
    "request_burst": 400,
    "subscriptions_per_process": 32,
    "queue_events": 4096,
}

# docs/security.md, "Memory bound": what each kind of client may make the daemon hold.
PER_CONNECTION = 16 << 10     # a connection's own state and buffers when idle
READ_BUFFER = 2 << 20         # one 64 KiB read split into the smallest messages, waiting their turn
STREAM_OUTPUT = 256 << 10     # a subscription's serialised events waiting for the socket
EVENT_BYTES = 2 << 10         # one event held in memory (struct + JSON), for these replayed events
FIXED = 8 << 20               # SQLite page caches and allocator slack
FOLD_KEYS = 4096              # [fold] max_keys (default)


def memory_bound(limits, connections, readers, non_readers, subscriptions, distinct_queued,
                 events_in_flight=0):
    """The documented bound on RSS above the idle daemon's for this many clients of each kind;
    events_in_flight: events that may wait for the journal at once (at most journal.buffer_events)."""
    return (FIXED
            + connections * PER_CONNECTION
            + readers * (limits["message_bytes"] + READ_BUFFER)
            + non_readers * limits["output_bytes"]
            + subscriptions * STREAM_OUTPUT
            + (distinct_queued + events_in_flight + (FOLD_KEYS if events_in_flight else 0)) * EVENT_BYTES)


def python_for_others():
    """A python3 every uid may run (the test's own may live under /root)."""
    for p in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if p and os.access(p, os.X_OK) and all(
                os.stat(d).st_mode & 0o001 for d in _parents(os.path.realpath(p))):
            return p
    swtest.skip("no python3 that uid 65534 may run")


def _parents(path):
    out = []
    while True:
        path = os.path.dirname(path)
        out.append(path)
        if path == "/":
            return out


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTIONS + 400
    if hard != resource.RLIM_INFINITY and hard < want:
        swtest.skip(f"RLIMIT_NOFILE hard limit {hard} < {want}: cannot open {CONNECTIONS} connections")
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def limits_toml(limits):
    return "[limits]\n" + "".join(f"{k} = {v}\n" for k, v in limits.items())


def vm(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def client_fds(pid):
    """How many client sockets the daemon holds (unix sockets other than its listener)."""
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:"):
                n += 1
        except OSError:
            pass
    return n


_fd_base = {}


def wait_fds(d, clients):
    """Waits until the daemon holds at most `clients` client sockets (plus its own)."""
    base = _fd_base[d.pid]
    swtest.wait_for(lambda: client_fds(d.pid) <= base + clients, 10 * SLOW,
                    f"the daemon to hold at most {clients} client connections")


def raw_connect(path, timeout=10.0):
    """A connected socket. A Unix socket's connect() fails with EAGAIN at once while the
    listener's backlog is full, so that is retried until the daemon accepts (within `timeout`)."""
    def attempt():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(path)
        except BlockingIOError:
            s.close()
            return None
        except BaseException:
            s.close()
            raise
        s.settimeout(timeout)
        return s
    return swtest.wait_for(attempt, timeout * SLOW, f"a connection to {path}", interval=0.001,
                           max_interval=0.01)


def read_message(s, buf=b""):
    """(message dict, rest) or (None, rest) at EOF. A Unix socket closed by the daemon with our
    requests unread in it reads as ECONNRESET once its data is consumed: EOF here as well."""
    while b"\0" not in buf:
        try:
            chunk = s.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            return None, buf
        buf += chunk
    msg, _, rest = buf.partition(b"\0")
    return json.loads(msg), rest


def expect_dropped(s, timeout=5.0):
    """Reads until EOF; asserts the daemon closes the connection within `timeout`."""
    s.settimeout(timeout * SLOW)
    try:
        while s.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except socket.timeout:
        raise AssertionError("the daemon did not close the connection")


class Prober:
    """The well-behaved client: every `interval` s, connect + Doctor + close, timed."""

    def __init__(self, path, interval=0.02):
        self.path = path
        self.interval = interval
        self.phase = "baseline"
        self.samples = {}  # phase -> [seconds]
        self.failures = []  # (phase, what)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._running.set()
        self._idle = threading.Event()  # set while paused and no call is under way
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._running.set()
        self._thread.join(30)

    def pause(self):
        """Returns once no call is under way and none will start until resume()."""
        self._idle.clear()
        self._running.clear()
        if not self._idle.wait(30):
            raise AssertionError("the prober did not pause")

    def resume(self):
        self._running.set()

    def _run(self):
        while not self._stop.is_set():
            if not self._running.is_set():
                self._idle.set()
                self._running.wait()
                continue
            phase = self.phase
            t0 = time.monotonic()
            try:
                # As libstorwatch does: a blocking connect, which waits while the listener's
                # backlog is full instead of failing with EAGAIN.
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(self.path)
                    s.settimeout(RTT_DEADLINE * 3)
                    s.sendall(b'{"method":"io.storwatch.Doctor","parameters":{}}\0')
                    reply, _ = read_message(s)
                finally:
                    s.close()
                if reply is None:
                    raise EOFError("connection closed without a reply")
                if "error" in reply:
                    self.failures.append((phase, f"error reply {reply}"))
                else:
                    self.samples.setdefault(phase, []).append(time.monotonic() - t0)
            except (OSError, EOFError, ValueError) as e:
                self.failures.append((phase, f"{type(e).__name__}: {e}"))
            self._stop.wait(self.interval)

    def run_phase(self, name, fn):
        self.phase = name
        try:
            return fn()
        finally:
            # At least a few samples under each load, even when the load was quick.
            swtest.wait_for(lambda: len(self.samples.get(name, [])) >= 10 or self.failures,
                            10 * SLOW, f"10 well-behaved calls during {name}")
            self.phase = "idle"

    @staticmethod
    def percentiles(xs):
        xs = sorted(xs)
        pick = lambda q: xs[min(len(xs) - 1, int(q * len(xs)))]  # noqa: E731
        return {"n": len(xs), "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": xs[-1]}

    def table(self):
        rows = ["| phase | calls | p50 ms | p90 ms | p99 ms | max ms |", "|---|---|---|---|---|---|"]
        for phase, xs in self.samples.items():
            if phase == "idle" or not xs:
                continue
            p = self.percentiles(xs)
            rows.append(f"| {phase} | {p['n']} | {p['p50'] * 1e3:.2f} | {p['p90'] * 1e3:.2f} | "
                        f"{p['p99'] * 1e3:.2f} | {p['max'] * 1e3:.2f} |")
        return "\n".join(rows)


class HostileClientsTest(swtest.DaemonTestCase):

    def daemon_with(self, limits, replay=False):
        extra = limits_toml(limits)
        d = JournalDaemon(lambda fifo: swtest.test_config(
            extra=extra + (f"\n[replay]\nfifo = {swtest.toml_str(fifo)}\n" if replay else "")),
            start_timeout=15.0 * SLOW, stop_timeout=10.0 * SLOW, print_events=False)
        self.cleanup.enter(d)
        self._daemons.append(d)
        return d

    def test_daemon_stays_responsive_and_bounded(self):
        d = self.daemon_with(LIMITS, replay=True)
        _fd_base[d.pid] = client_fds(d.pid)
        prober = Prober(d.socket).start()
        self.cleanup.push(prober.stop)
        rss = {"idle": vm(d.pid, "VmRSS")}
        peak_over_idle = {}
        report = {}

        def phase(name, fn, bound):
            out = prober.run_phase(name, fn)
            rss[name] = vm(d.pid, "VmRSS")
            peak_over_idle[name] = (vm(d.pid, "VmHWM") - rss["idle"], bound)
            return out

        phase("baseline", lambda: swtest.wait_for(
            lambda: len(prober.samples.get("baseline", [])) >= 50, 10 * SLOW, "baseline samples"), 0)

        # -- 1,000 connections at once, each served; one over limits.clients is refused.
        def many_connections():
            conns = []
            self.cleanup.push(lambda: [c.close() for c in conns])
            for _ in range(CONNECTIONS):
                conns.append(raw_connect(d.socket))
            # Each is served (the cheapest call: a thousand Doctor calls at once would measure how
            # long a thousand requests take, not what an open connection costs).
            req = b'{"method":"org.varlink.service.GetInfo"}\0'
            for c in conns:
                c.sendall(req)
            for c in conns:
                msg, _ = read_message(c)
                self.assertIsNotNone(msg, "a connection of the 1,000 was closed")
                self.assertNotIn("error", msg)
            report["connections"] = len(conns)
            return conns
        conns = phase("1000 connections", many_connections,
                      memory_bound(LIMITS, CONNECTIONS + 1, 1, 0, 0, 0))

        def over_clients():
            prober.pause()  # its own connection would take a slot
            self.cleanup.push(prober.resume)
            wait_fds(d, len(conns))
            extra = []
            try:
                # The prober may hold one slot at most; fill every other.
                while True:
                    s = raw_connect(d.socket)
                    extra.append(s)
                    try:
                        s.sendall(b'{"method":"io.storwatch.Doctor"}\0')
                    except BrokenPipeError:
                        pass  # refused at once: the reason is waiting to be read
                    msg, _ = read_message(s)
                    if msg is None or "error" in msg:
                        break
                    self.assertLessEqual(len(conns) + len(extra), LIMITS["clients"])
                self.assertIsNotNone(msg, "refused without an error reply")
                self.assertEqual(msg["error"], LIMIT_EXCEEDED, msg)
                self.assertEqual(msg["parameters"], {"limit": "clients", "max": LIMITS["clients"]})
                expect_dropped(extra[-1])
                # The one over the limit, in the connection's order: the daemon counted them all.
                self.assertEqual(len(conns) + len(extra), LIMITS["clients"] + 1)
                report["refused_at"] = len(conns) + len(extra)
            finally:
                for s in extra:
                    s.close()
                prober.resume()
        over_clients()
        for c in conns:
            c.close()
        wait_fds(d, 1)  # the prober may hold one

        # -- 100 MB of garbage: a request without a NUL is cut at message_bytes; random bytes
        # are not JSON. Each time it is dropped the client reconnects, until 100 MB went out.
        def garbage():
            sent = drops = 0
            errors = {}
            nonul = b"x" * (1 << 20)
            rand = os.urandom(1 << 20)
            while sent < GARBAGE_BYTES:
                data = nonul if drops % 2 == 0 else rand
                s = raw_connect(d.socket)
                try:
                    while sent < GARBAGE_BYTES:
                        sent += s.send(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                try:
                    s.settimeout(5 * SLOW)
                    msg, _ = read_message(s)
                except (ConnectionResetError, socket.timeout):
                    msg = None
                if msg is not None:
                    key = (msg.get("error"), msg.get("parameters", {}).get("limit"))
                    errors[key] = errors.get(key, 0) + 1
                s.close()
                drops += 1
            report["garbage"] = {"bytes": sent, "connections": drops,
                                 "errors": {f"{k[0]}({k[1]})": n for k, n in errors.items()}}
            self.assertGreater(errors.get((LIMIT_EXCEEDED, "message_bytes"), 0), 0, errors)
            self.assertGreater(errors.get(("io.storwatch.InvalidParameter", None), 0), 0, errors)
            self.assertGreater(drops, GARBAGE_BYTES // (4 << 20), "the garbage was not cut short")
        phase("100 MB garbage", garbage, memory_bound(LIMITS, 2, 2, 0, 0, 0))

        # -- subscriptions in a loop: the one over subscriptions_per_process is refused and
        # dropped; then subscribe/unsubscribe churn.
        def subscription_loop():
            subs = []
            try:
                for i in range(LIMITS["subscriptions_per_process"] + 1):
                    s = raw_connect(d.socket)
                    subs.append(s)
                    s.sendall(b'{"method":"io.storwatch.Subscribe","parameters":{},"more":true}\0')
                    msg, _ = read_message(s)
                    if i < LIMITS["subscriptions_per_process"]:
                        self.assertNotIn("error", msg, msg)
                self.assertEqual(msg["error"], LIMIT_EXCEEDED, msg)
                self.assertEqual(msg["parameters"], {"limit": "subscriptions_per_process",
                                                     "max": LIMITS["subscriptions_per_process"]})
                # Refused, not dropped (the client may retry there): and it holds nothing.
                subs[-1].sendall(b'{"method":"org.varlink.service.GetInfo"}\0')
                msg, _ = read_message(subs[-1])
                self.assertNotIn("error", msg)
            finally:
                for s in subs:
                    s.close()
            wait_fds(d, 1)  # the prober's
            for _ in range(500):
                with Varlink(d.socket) as v:
                    self.assertNotIn("error", v.call("io.storwatch.Subscribe", {}, more=True))
            report["subscriptions_refused_at"] = LIMITS["subscriptions_per_process"] + 1
        phase("subscription loop", subscription_loop,
              memory_bound(LIMITS, 34, 1, 0, 33, 0))

        # -- a subscriber that never reads while events flood in, and a caller that never reads
        # its replies.
        def never_reads():
            stuck = raw_connect(d.socket)
            self.cleanup.push(stuck.close)
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b'{"method":"io.storwatch.Subscribe","parameters":{},"more":true}\0')
            first, rest = read_message(stuck)
            self.assertNotIn("error", first)
            before = d.doctor()["last_seq"]
            # A heavy event storm (5,000 events/s, 2.5x the queue in all), not the FIFO's top
            # speed: this phase is about the client that does not read, not the flood itself.
            n = 10000
            feeder = Feeder(d.fifo, [error_line(d.dir, i) for i in range(n)], chunk_lines=100,
                            rate=5000).start()
            feeder.join(60 * SLOW)
            self.assertIsNone(feeder.error)
            swtest.wait_for(lambda: d.doctor()["last_seq"] >= before + n, 30 * SLOW,
                            f"{n} replayed events to be published")
            # A caller that pipelines requests and reads nothing is cut off (request rate first,
            # else output_bytes).
            greedy = raw_connect(d.socket)
            req = b'{"method":"io.storwatch.Doctor"}\0' * 100
            greedy.settimeout(0.5)
            pushed = 0
            try:
                while pushed < 10000:
                    greedy.sendall(req)
                    pushed += 100
            except (BrokenPipeError, ConnectionResetError, socket.timeout):
                pass
            greedy.settimeout(10 * SLOW)
            last, buf = None, b""
            while True:
                msg, buf = read_message(greedy, buf)
                if msg is None:
                    break
                last = msg
            greedy.close()
            self.assertIsNotNone(last)
            self.assertEqual(last.get("error"), LIMIT_EXCEEDED, last)
            self.assertIn(last["parameters"]["limit"], ("requests_per_second", "output_bytes"))
            report["greedy_caller_dropped_by"] = last["parameters"]["limit"]
            # The stuck subscriber is still connected and learns exactly what it lost.
            stuck.settimeout(30 * SLOW)
            got, lost, buf = 0, 0, rest
            while got + lost < n:
                msg, buf = read_message(stuck, buf)
                self.assertIsNotNone(msg, "the stuck subscriber was disconnected")
                e = msg["parameters"]["event"]
                if e["type"] == "stream.lost":
                    lost += int(e["detail"]["count"])
                elif e["type"] == "fs.error" and e["seq"] > before:
                    got += 1
            self.assertGreater(lost, 0, f"{n} events fit in a {LIMITS['queue_events']}-event queue?")
            # The queue, plus what the socket buffers and one refill of the output held.
            self.assertLessEqual(got, LIMITS["queue_events"] + 2500)
            report["stuck_subscriber"] = {"received": got, "lost_reported": lost}
        phase("never-reading clients", never_reads,
              memory_bound(LIMITS, 3, 1, 1, 1, LIMITS["queue_events"], events_in_flight=10000))

        prober.stop()
        print("\nwell-behaved client, connect + Doctor + close, round trip per phase "
              f"({'ASan/UBSan build' if SANITIZED else 'normal build'}):\n{prober.table()}",
              flush=True)
        print("RSS (MiB): " + ", ".join(f"{k} {v / 2**20:.1f}" for k, v in rss.items())
              + f"; peak {vm(d.pid, 'VmHWM') / 2**20:.1f}", flush=True)
        print("peak over idle vs documented bound (MiB): " + ", ".join(
            f"{k} {p / 2**20:.1f} <= {b / 2**20:.1f}" for k, (p, b) in peak_over_idle.items()
            if b), flush=True)
        print("misbehaving clients: " + json.dumps(report), flush=True)

        self.assertEqual(prober.failures, [], "well-behaved calls failed")
        for phase_name, xs in prober.samples.items():
            self.assertLess(max(xs), RTT_DEADLINE,
                            f"a well-behaved call took {max(xs):.3f} s during {phase_name}")
        if SANITIZED:
            return  # ASan's quarantine and shadow memory make RSS meaningless here
        # The bound holds for every phase at once: the peak is compared with the largest.
        peak = vm(d.pid, "VmHWM") - rss["idle"]
        bound = max(b for _, b in peak_over_idle.values())
        self.assertLess(peak, bound, f"RSS peak {peak / 2**20:.1f} MiB over idle; bound "
                                     f"{bound / 2**20:.1f} MiB")

    def test_per_uid_and_rate_limits(self):
        limits = dict(LIMITS, clients_per_uid=8, requests_per_second=20, request_burst=10)
        d = self.daemon_with(limits)
        # Another uid fills its share; root still gets in.
        code = r"""
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
conns, out = [], []
for i in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    conns.append(s)
    try:
        s.sendall(b'{"method":"io.storwatch.Doctor"}\0')
    except BrokenPipeError:
        pass  # refused at once: the reason is waiting to be read
    buf = b""
    while b"\0" not in buf:
        c = s.recv(65536)
        if not c:
            break
        buf += c
    m = json.loads(buf.split(b"\0")[0]) if b"\0" in buf else None
    out.append(m.get("error") if m else "EOF")
    if m and "error" in m:
        out.append(m["parameters"])
        try:
            eof = s.recv(1) == b""
        except ConnectionResetError:
            eof = True
        out.append("closed" if eof else "open")
        break
print(json.dumps(out))
"""
        def as_nobody():
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
        p = subprocess.run([python_for_others(), "-c", code, d.socket, "20"], capture_output=True,
                           text=True, timeout=60 * SLOW, preexec_fn=as_nobody, cwd="/")
        self.assertEqual(p.returncode, 0, p.stderr)
        out = json.loads(p.stdout)
        self.assertEqual(out[:8], [None] * 8, out)
        self.assertEqual(out[8:], [LIMIT_EXCEEDED, {"limit": "clients_per_uid", "max": 8}, "closed"])
        with Varlink(d.socket) as v:
            self.assertNotIn("error", v.call("io.storwatch.Doctor"))

        # Request rate: a burst of 10, then 20/s; a flood is cut off, a calm client is not.
        with Varlink(d.socket, timeout=10 * SLOW) as calm:
            for _ in range(5):
                self.assertNotIn("error", calm.call("io.storwatch.Doctor"))
            flood = raw_connect(d.socket)
            self.cleanup.push(flood.close)
            flood.sendall(b'{"method":"io.storwatch.Doctor"}\0' * 100)
            replies, buf = [], b""
            while True:
                msg, buf = read_message(flood, buf)
                if msg is None:
                    break
                replies.append(msg)
            ok = [r for r in replies if "error" not in r]
            self.assertGreaterEqual(len(ok), 10)
            self.assertLess(len(ok), 100)
            self.assertEqual(replies[-1]["error"], LIMIT_EXCEEDED)
            self.assertEqual(replies[-1]["parameters"], {"limit": "requests_per_second", "max": 20})
            self.assertEqual(len(replies), len(ok) + 1)
            # The bucket is the connection's: the calm client goes on within its own.
            for _ in range(5):
                self.assertNotIn("error", calm.call("io.storwatch.Doctor"))


if __name__ == "__main__":
    swtest.main()
