"""Helpers shared by the journal integration tests (test_journal*.py): a raw Varlink client, the
replay FIFO feeder, whole-journal reads through `storwatch history` and ListEvents, and checks on
the state database.  Standard library only, like swtest.
"""

import collections
import errno
import json
import os
import random
import socket
import sqlite3
import sys
import threading
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

DEADLINE = 30.0  # seconds for anything that involves the whole journal

# ListEvents returns at most this many events per call (docs: limit at most 10000).
PAGE = 10000


def journal_config(fifo, queue_events=None, buffer_events=None, max_size=None, max_age=None,
                   fold_window=None, fold_max_keys=None, extra=""):
    """A test configuration (no levels: nothing is polled) with the replay FIFO at `fifo` and the
    given [limits], [journal] and [fold] settings."""
    lines = ["[replay]", f"fifo = {swtest.toml_str(fifo)}", ""]
    if queue_events is not None:
        lines += ["[limits]", f"queue_events = {int(queue_events)}", ""]
    journal = []
    if buffer_events is not None:
        journal.append(f"buffer_events = {int(buffer_events)}")
    if max_size is not None:
        journal.append(f"max_size = {swtest.toml_str(max_size)}")
    if max_age is not None:
        journal.append(f"max_age = {swtest.toml_str(max_age)}")
    if journal:
        lines += ["[journal]"] + journal + [""]
    fold = []
    if fold_window is not None:
        fold.append(f"window = {swtest.toml_str(fold_window)}")
    if fold_max_keys is not None:
        fold.append(f"max_keys = {int(fold_max_keys)}")
    if fold:
        lines += ["[fold]"] + fold + [""]
    return swtest.test_config(extra="\n".join(lines) + ("\n" + extra if extra else ""))


class JournalDaemon(swtest.Daemon):
    """swtest.Daemon whose state directory may be elsewhere (state_dir=...), e.g. on a small
    loop-mounted filesystem; the replay FIFO is `fifo` in its temp dir."""

    def __init__(self, config_fn, state_dir=None, **kwargs):
        # config_fn(fifo_path) -> TOML text: the FIFO lives in the daemon's temp dir, which exists
        # only once __enter__ made it.
        self._config_fn = config_fn
        self._state_dir_override = state_dir
        super().__init__("", **kwargs)

    def __enter__(self):
        found_daemon, found_cli = swtest.find_storwatch()
        self.binary = self.binary or found_daemon
        self.cli_binary = self.cli_binary or found_cli
        if not self.binary or not self.cli_binary:
            swtest.require_storwatch()
        # Like swtest.Daemon.__enter__, with the configuration written once the dir exists.
        self._cl = swtest.Cleanup()
        try:
            self.dir = swtest.tempdir(prefix="swtest-daemon-", cleanup=self._cl, parent=self.tmpdir)
            os.chmod(self.dir, 0o755)
            self.socket = os.path.join(self.dir, "s")
            self.state_dir = self._state_dir_override or os.path.join(self.dir, "state")
            self.config_path = os.path.join(self.dir, "config.toml")
            self.fifo = os.path.join(self.dir, "replay.fifo")
            self.write_config(self._config_fn(self.fifo))
            self._cl.push(self._final_stop)
            self.start()
        except BaseException:
            self.show_logs("storwatchd failed to start")
            self._cl.close(_propagating=True)
            raise
        return self

    @property
    def db_path(self):
        return os.path.join(self.state_dir, "storwatch.db")

    def varlink(self, timeout=DEADLINE):
        return Varlink(self.socket, timeout)

    def doctor(self):
        with self.varlink() as v:
            return v.call_ok("io.storwatch.Doctor")

    def wait_journaled(self, timeout=DEADLINE, what=None):
        """Waits until every event published so far is journaled (nothing buffered, journaled_seq
        at last_seq); returns Doctor's reply."""
        def done():
            d = self.doctor()
            if d["journal_buffered"] == 0 and d["journaled_seq"] >= d["last_seq"]:
                return d
            return None
        return swtest.wait_for(done, timeout, what or "the journal to catch up with last_seq")

    def vm_status(self, key):
        """A field of /proc/PID/status in bytes (VmHWM, VmRSS, ...)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    parts = line.split()
                    return int(parts[1]) * 1024
        raise KeyError(key)


# ---------------------------------------------------------------------------
# Raw Varlink (NUL-terminated JSON over the Unix socket)
# ---------------------------------------------------------------------------

class VarlinkError(AssertionError):
    def __init__(self, reply):
        self.reply = reply
        self.error = reply.get("error")
        self.parameters = reply.get("parameters") or {}
        super().__init__(f"Varlink error {self.error}: {self.parameters}")


class Varlink:
    def __init__(self, path, timeout=DEADLINE):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.pending = collections.deque()  # complete messages not returned yet

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self):
        self.sock.close()

    def send(self, method, parameters=None, **flags):
        msg = {"method": method}
        if parameters is not None:
            msg["parameters"] = parameters
        msg.update(flags)
        self.sock.sendall(json.dumps(msg).encode() + b"\0")

    def receive(self):
        """The next message (a dict); EOFError when the daemon closed the connection."""
        while not self.pending:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise EOFError(f"connection closed; unparsed bytes: {self.buf[:200]!r}")
            parts = (self.buf + chunk).split(b"\0")
            self.buf = parts.pop()
            self.pending.extend(parts)
        return json.loads(self.pending.popleft())

    def call(self, method, parameters=None, **flags):
        self.send(method, parameters if parameters is not None else {}, **flags)
        return self.receive()

    def call_ok(self, method, parameters=None):
        reply = self.call(method, parameters)
        if "error" in reply:
            raise VarlinkError(reply)
        return reply.get("parameters", {})


class RawSubscriber:
    """A Subscribe stream read by a thread: `replies` collects (event, journaled_seq) for every
    reply that carries an event, until the daemon closes the connection.  `first` is the first
    reply's parameters (journal_id, journaled_seq)."""

    def __init__(self, sock, params=None, timeout=120):
        self.v = Varlink(sock, timeout)
        reply = self.v.call("io.storwatch.Subscribe", params or {}, more=True)
        if "error" in reply:
            self.v.close()
            raise VarlinkError(reply)
        self.first = reply["parameters"]
        self.replies = []
        self.ended = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while True:
                p = self.v.receive()["parameters"]
                self.replies.append((p["event"], p["journaled_seq"]))
        except (EOFError, OSError):
            pass
        finally:
            self.ended.set()

    def wait_end(self, timeout=DEADLINE):
        if not self.ended.wait(timeout):
            raise AssertionError("the subscription did not end")
        self.v.close()

    def close(self):
        self.v.close()

    def durable(self):
        """The events this client may remember (protocol.md: a seq only once journaled_seq has
        reached it): those at or below the highest journaled_seq it was told."""
        j = max([self.first["journaled_seq"]] + [j for _, j in self.replies])
        return [e for e, _ in self.replies if e["seq"] <= j]


def list_events(sock, params):
    """Every event ListEvents returns for `params` (without `after`), following next_after;
    returns (events, pages)."""
    events, pages = [], 0
    params = dict(params)
    with Varlink(sock) as v:
        while True:
            reply = v.call_ok("io.storwatch.ListEvents", params)
            pages += 1
            events += reply["events"]
            if "next_after" not in reply:
                return events, pages
            if reply["events"]:
                assert reply["next_after"] >= reply["events"][-1]["seq"], reply["next_after"]
            params["after"] = reply["next_after"]


def history(d, *args, after=0):
    """The whole journal (or what `args` select) through `storwatch history --json`, page by page
    with --after (the CLI returns at most --limit events per call); unfiltered calls only, where
    a short page is the last."""
    out = []
    while True:
        text = d.cli_ok("history", "--json", "--after", after, "--limit", PAGE, *args, timeout=60)
        page = [json.loads(line) for line in text.splitlines() if line.strip()]
        out += page
        if len(page) < PAGE:
            return out
        after = page[-1]["seq"]


def integrity_check(db_path):
    """PRAGMA integrity_check of the database (read-only connection); returns its rows."""
    con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        return [r[0] for r in con.execute("PRAGMA integrity_check").fetchall()]
    finally:
        con.close()


# ---------------------------------------------------------------------------
# The replay FIFO
# ---------------------------------------------------------------------------

def error_line(fs, n, round_=0, errno=5, inode=None, type_="fs.error", count=None):
    """One replay line: an fs.error on the filesystem holding `fs`, made distinct by detail.inode
    (part of fs.error's fold key) unless `inode` is given; detail.n numbers the line."""
    detail = {"errno": errno, "inode": n if inode is None else inode, "n": n, "round": round_}
    e = {"type": type_, "fs": fs, "detail": detail}
    if count is not None:
        e["count"] = count
    return json.dumps(e, separators=(",", ":")) + "\n"


class Feeder:
    """Writes lines into the replay FIFO from a thread, in chunks.  Stops quietly when the daemon
    goes away (EPIPE).  `written` counts the lines the kernel accepted (in whole chunks: a chunk
    cut short by EPIPE is not counted).  The FIFO is closed once done, so that no line of this
    feeder is left in the pipe for a later daemon."""

    def __init__(self, fifo, lines, chunk_lines=500, gate=None, rate=None):
        self.fifo = fifo
        self.lines = lines  # a list of str
        self.chunk_lines = chunk_lines
        self.gate = gate  # gate(next_index) blocks until the feeder may go on
        self.rate = rate  # lines per second at most (a load profile), or as fast as it goes
        self.written = 0
        self.error = None
        self.done = threading.Event()
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop = True

    def join(self, timeout=DEADLINE):
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise AssertionError("the FIFO feeder did not finish")
        return self

    def _run(self):
        try:
            # Non-blocking open: with no daemon reading (killed already), a blocking open would
            # wait forever; ENXIO says so at once. The writes then block as usual.
            fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.set_blocking(fd, True)
        except OSError as e:
            if e.errno != errno.ENXIO:
                self.error = e
            self.done.set()
            return
        try:
            i = 0
            n = len(self.lines)
            t0 = time.monotonic()
            while i < n and not self._stop:
                if self.gate is not None:
                    self.gate(i)
                if self.rate:
                    due = t0 + i / self.rate - time.monotonic()
                    if due > 0:
                        time.sleep(due)  # pacing the load, not synchronising
                data = "".join(self.lines[i:i + self.chunk_lines]).encode()
                view = memoryview(data)
                while view:
                    k = os.write(fd, view)
                    view = view[k:]
                i += min(self.chunk_lines, n - i)
                self.written = i
        except BrokenPipeError:
            pass  # the daemon was killed: expected in the crash tests
        except OSError as e:
            self.error = e
        finally:
            os.close(fd)
            self.done.set()


def write_fifo(fifo, data, chunk=1 << 20):
    """Writes bytes into the FIFO (blocking; the daemon reads as fast as it can)."""
    fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO rather than a hang if nobody reads
    os.set_blocking(fd, True)
    try:
        view = memoryview(data)
        while view:
            k = os.write(fd, view[:chunk])
            view = view[k:]
    finally:
        os.close(fd)


def seed():
    """The random seed of this run: $JOURNAL_TEST_SEED or a fresh one (printed, to replay)."""
    s = os.environ.get("JOURNAL_TEST_SEED")
    s = int(s) if s else random.SystemRandom().randrange(1 << 31)
    print(f"journal tests: JOURNAL_TEST_SEED={s}", file=sys.stderr, flush=True)
    return s
