#!/usr/bin/env python3
"""The NATS JetStream sink and `storwatch fleet` (issue 8): a real nats-server with JetStream on
loopback, a real storwatchd whose [sinks.nats] publishes to it, events injected through the
replay FIFO.

- A burst of 10,000 events while nats-server is killed with SIGKILL mid-burst and started again
  on the same store: the stream then holds every event the journal got after the sink started,
  each exactly once (no duplicate message, no missing sequence number), read back through
  `storwatch fleet history`; meanwhile /metrics shows the sink down with a lag, then up and
  caught up.
- `storwatch fleet monitor --host H --type GLOB` prints live events, prefixed with the host.

Needs nats-server (Debian package nats-server); exits 77 ("SKIP: ...") without it.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/sink_nats.py
"""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402
from journal_helpers import Feeder, JournalDaemon, error_line, history, journal_config  # noqa: E402

HOST = "fleet-test-host"
BURST = 10000


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()
    swtest.require_cmd("nats-server")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class NatsServer:
    """nats-server with JetStream on loopback; its file store survives kill() + start()."""

    def __init__(self, store_dir, log_path):
        self.store_dir = store_dir
        self.log_path = log_path
        self.port = free_port()
        self.http_port = free_port()
        self.proc = None

    @property
    def url(self):
        return f"nats://127.0.0.1:{self.port}"

    def start(self):
        cmd = [swtest.which("nats-server"), "-js", "-a", "127.0.0.1", "-p", str(self.port),
               "-m", str(self.http_port), "-sd", self.store_dir]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"nats-server exited with status {self.proc.returncode}")
            # /healthz answers ok once JetStream has recovered its store.
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=2) as r:
                return r.status == 200
        swtest.wait_for(ready, 30, "nats-server to be ready", ignore=(OSError,))
        return self

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self):
        if self.proc:
            swtest.terminate_process(self.proc)

    def stream_state(self, stream="STORWATCH"):
        """The stream's state from the monitoring endpoint, or None while it does not exist."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/jsz?streams=true", timeout=5) as r:
            jsz = json.load(r)
        for acc in jsz.get("account_details") or []:
            for s in acc.get("stream_detail") or []:
                if s["name"] == stream:
                    return s["state"]
        return None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


def nats_config(fifo, url):
    extra = "\n".join(["[sinks.nats]", f"url = {swtest.toml_str(url)}", f"host = {swtest.toml_str(HOST)}",
                       'timeout = "1s"', "", "[sinks.journald]", "enabled = false", "",
                       "[sinks.hooks]", 'dir = ""', ""])
    # Queues large enough that nothing a subscriber sees is lost to its own slowness.
    return journal_config(fifo, queue_events=1 << 20, extra=extra)


def fleet_history(d, url, *args):
    text = d.cli_ok("fleet", "history", "--nats", url, "--json", *args, timeout=120)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class NatsSinkTest(swtest.DaemonTestCase):
    timeout = 280

    def setUp(self):
        super().setUp()
        tmp = swtest.tempdir(prefix="swtest-nats-", cleanup=self.cleanup)
        self.nats = NatsServer(os.path.join(tmp, "store"), os.path.join(tmp, "nats.log"))
        self.cleanup.push(self.nats.stop)
        self.nats.start()

    def nats_sink(self, d):
        for s in d.doctor().get("sinks", []):
            if s["name"] == "nats":
                return s
        raise AssertionError("Doctor lists no nats sink")

    def metric(self, name):
        """The value of sample `name` (with its labels) on the daemon's /metrics, or None."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + " "):
                    return int(line.split()[-1])
        return None

    def daemon_with_sink(self):
        self.metrics_port = free_port()
        d = self.cleanup.enter(JournalDaemon(lambda fifo: nats_config(fifo, self.nats.url),
                                             print_events=False,
                                             extra_args=["--metrics", f"127.0.0.1:{self.metrics_port}"]))
        self._daemons.append(d)
        start = swtest.wait_for(lambda: (s := self.nats_sink(d))["state"] != "starting" and s, 30,
                                "the nats sink to load its cursor")
        return d, start["cursor"]

    def test_burst_with_server_killed_mid_burst_arrives_exactly_once(self):
        d, cursor0 = self.daemon_with_sink()
        lines = [error_line(d.dir, n) for n in range(BURST)]
        # Paced (about 5 s), so that the kill falls in the middle of the burst.
        feeder = Feeder(d.fifo, lines, chunk_lines=100, rate=2000).start()
        self.cleanup.push(feeder.stop)

        # Kill the server once part of the burst is in the stream, while the rest still flows.
        swtest.wait_for(lambda: (st := self.nats.stream_state()) and st["messages"] >= 1500, 120,
                        "the first 1500 events in the stream", ignore=(OSError,))
        self.nats.kill()
        feeder.join()
        self.assertIsNone(feeder.error)
        self.assertEqual(feeder.written, BURST)
        doc = d.wait_journaled(timeout=120)
        sink = swtest.wait_for(lambda: (s := self.nats_sink(d))["failures"] > 0 and s, 30,
                               "the nats sink to report the dead server")
        self.assertLess(sink["cursor"], doc["journaled_seq"], "the burst was delivered before the kill")
        self.assertEqual(sink["state"], "failing")
        swtest.wait_for(lambda: self.metric('storwatch_sink_up{sink="nats"}') == 0, 10,
                        "the metrics to show the nats sink down")
        self.assertGreater(self.metric('storwatch_sink_lag_events{sink="nats"}'), 0)
        self.nats.start()

        # Every journaled event reaches the stream once the server is back.
        last = doc["last_seq"]
        swtest.wait_for(lambda: self.nats_sink(d)["cursor"] >= last, 180,
                        f"the nats sink's cursor to reach seq {last}")
        swtest.wait_for(lambda: self.metric('storwatch_sink_up{sink="nats"}') == 1 and
                        self.metric('storwatch_sink_lag_events{sink="nats"}') == 0, 10,
                        "the metrics to show the nats sink up and caught up")
        expected = [e for e in history(d, after=cursor0)]
        expected_ids = {(e["journal_id"], e["seq"]) for e in expected}
        state = self.nats.stream_state()
        stream = fleet_history(d, self.nats.url)
        ids = [(e["journal_id"], e["seq"]) for e in stream]

        self.assertEqual(len(ids), len(set(ids)), "a message stored twice")
        self.assertEqual(state["messages"], len(stream), "fleet history returned what the stream holds")
        self.assertEqual(set(ids), expected_ids, "the stream holds exactly the journal's events")
        fed = sorted(e["detail"]["n"] for e in stream if e.get("source") == "replay")
        self.assertEqual(fed, list(range(BURST)), "every injected event once")
        self.assertTrue(all(e["host"] == HOST for e in stream))
        self.assertEqual([e["stream_seq"] for e in stream], sorted(e["stream_seq"] for e in stream))

        # The same history as text lines, with --limit and --type.
        text = d.cli_ok("fleet", "history", "--nats", self.nats.url, "--limit", 3, "--type", "fs.*")
        rows = text.splitlines()
        self.assertEqual(len(rows), 3, text)
        self.assertTrue(all(r.startswith(HOST + " ") and "fs.error" in r for r in rows), text)

    def test_fleet_monitor_prints_live_events_with_host(self):
        d, _ = self.daemon_with_sink()
        proc = subprocess.Popen([d.cli_binary, "fleet", "monitor", "--nats", self.nats.url, "--json",
                                 "--host", HOST, "--type", "fs.*"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        self.cleanup.push(proc.stderr.close)
        self.cleanup.push(proc.stdout.close)
        self.cleanup.push(swtest.terminate_process, proc)
        got = []
        reader = threading.Thread(target=lambda: got.extend(json.loads(line) for line in proc.stdout),
                                  daemon=True)
        reader.start()
        # The monitor subscribes when it starts; an event per round until one is printed.
        n = [0]

        def printed():
            self.assertIsNone(proc.poll(), "fleet monitor exited")
            with open(d.fifo, "w") as f:
                f.write(error_line(d.dir, 100000 + n[0]))
            n[0] += 1
            return any(e.get("source") == "replay" for e in list(got))
        swtest.wait_for(printed, 30, "fleet monitor to print an injected event", interval=0.2,
                        max_interval=0.5)
        e = next(e for e in list(got) if e.get("source") == "replay")
        self.assertEqual(e["host"], HOST)
        self.assertEqual(e["type"], "fs.error")
        self.assertEqual(swtest.terminate_process(proc), 0, proc.stderr.read())
        reader.join(10)


if __name__ == "__main__":
    swtest.main()
