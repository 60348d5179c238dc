#!/usr/bin/env python3
"""The Alertmanager sink end to end: a real prometheus-alertmanager on loopback (cluster off, a
webhook receiver served by this script), a real storwatchd whose [sinks.alertmanager] points at
it, and a loop-mounted ext4 whose free space crosses a level and comes back.

Checks what an operator would: the alert is active in Alertmanager's API with the expected
labels, a "firing" notification reaches the receiver, and when space is freed the alert leaves
the active list and a "resolved" notification follows. Also: with Alertmanager down the sink
shows "failing" in `storwatch doctor`, and once it is back the alert arrives (catch-up from the
journal).

Needs root, loop devices, mkfs.ext4 and prometheus-alertmanager; exits 77 otherwise.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
ev = swtest.event_matcher


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "mount", "umount", "prometheus-alertmanager")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """An HTTP server on loopback that records the JSON bodies Alertmanager posts."""

    def __init__(self):
        self.payloads = []
        self.lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with outer.lock:
                    outer.payloads.append(json.loads(body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)
        return False

    def notified(self, status, alertname, mount):
        with self.lock:
            for p in self.payloads:
                for a in p.get("alerts", []):
                    if a.get("status") == status and a["labels"].get("alertname") == alertname \
                            and a["labels"].get("mount") == mount:
                        return a
        return None


class Alertmanager:
    """prometheus-alertmanager on 127.0.0.1 with its storage in a temp dir; cluster disabled."""

    def __init__(self, webhook_port, cleanup):
        self.dir = swtest.tempdir(prefix="swtest-am-", cleanup=cleanup)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = os.path.join(self.dir, "alertmanager.yml")
        with open(self.config, "w") as f:
            f.write(f"""route:
  receiver: hook
  group_by: [alertname, mount, level]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: http://127.0.0.1:{webhook_port}/
        send_resolved: true
""")
        self.proc = None
        self.log = os.path.join(self.dir, "alertmanager.log")

    def start(self):
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [swtest.which("prometheus-alertmanager"), f"--config.file={self.config}",
                 f"--storage.path={os.path.join(self.dir, 'data')}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address="],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"alertmanager exited: {open(self.log).read()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=2) as r:
                    return r.status == 200
            except OSError:
                return False
        swtest.wait_for(ready, 30, "alertmanager to be ready")

    def stop(self):
        if self.proc is not None:
            swtest.terminate_process(self.proc)
            self.proc = None

    def alerts(self):
        with urllib.request.urlopen(self.url + "/api/v2/alerts", timeout=5) as r:
            return json.load(r)

    def active(self, alertname, mount):
        for a in self.alerts():
            if a["labels"].get("alertname") == alertname and a["labels"].get("mount") == mount \
                    and a["status"]["state"] == "active":
                return a
        return None


def sink(d, name):
    for s in d.cli_json("doctor").get("sinks", []):
        if s["name"] == name:
            return s
    return None


class AlertmanagerSinkTest(swtest.DaemonTestCase):
    timeout = 180

    def test_threshold_fires_and_resolves(self):
        hook = self.cleanup.enter(Webhook())
        am = Alertmanager(hook.port, self.cleanup)
        self.cleanup.push(am.stop)
        am.start()
        fs = self.cleanup.enter(swtest.LoopFs("ext4", size=64 * MiB, mkfs_args=("-m", "0", "-b", "4096")))
        mnt = fs.mnt
        extra = f"""[sinks.alertmanager]
url = {swtest.toml_str(am.url)}
resend = "1s"
[sinks.hooks]
dir = ""
[sinks.journald]
enabled = false
"""
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<10%:warning"]}, extra=extra))
        mon = d.monitor()
        d.wait_sample(mnt, 0)
        total = os.statvfs(mnt).f_blocks * os.statvfs(mnt).f_frsize
        fill = os.path.join(mnt, "fill")

        swtest.set_free_bytes(fill, mnt, int(total * 0.05))
        mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))
        a = swtest.wait_for(lambda: am.active("StorwatchSpaceThreshold", mnt), 20,
                            "the alert to be active in Alertmanager")
        labels = a["labels"]
        self.assertEqual(labels["level"], "10%")
        self.assertEqual(labels["resource"], "blocks")
        self.assertEqual(labels["severity"], "warning")
        self.assertEqual(labels["fstype"], "ext4")
        self.assertEqual(labels["host"], socket.gethostname())
        self.assertIn(mnt, a["annotations"]["summary"])
        swtest.wait_for(lambda: hook.notified("firing", "StorwatchSpaceThreshold", mnt), 20,
                        "a firing notification at the receiver")

        swtest.set_free_bytes(fill, mnt, int(total * 0.5))
        up = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="above"))
        swtest.wait_for(lambda: am.active("StorwatchSpaceThreshold", mnt) is None, 20,
                        "the alert to be resolved in Alertmanager")
        swtest.wait_for(lambda: hook.notified("resolved", "StorwatchSpaceThreshold", mnt), 20,
                        "a resolved notification at the receiver")
        s = sink(d, "alertmanager")
        self.assertEqual(s["state"], "ok", s)
        self.assertGreaterEqual(s["delivered"], 2, s)

        # Alertmanager down: the sink fails (the daemon and its subscribers do not care), and
        # catches up from the journal once it is back.
        am.stop()
        swtest.set_free_bytes(fill, mnt, int(total * 0.05))
        mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"), after_seq=up["seq"],
                       what="below again")
        swtest.wait_for(lambda: sink(d, "alertmanager")["state"] == "failing", 20,
                        "the sink to report failing")
        self.assertIn("alertmanager", sink(d, "alertmanager").get("last_error", ""))
        self.assertIn("failing", d.cli_ok("status"))
        am.start()
        swtest.wait_for(lambda: am.active("StorwatchSpaceThreshold", mnt), 40,
                        "the alert to reach Alertmanager after it came back")
        swtest.wait_for(lambda: sink(d, "alertmanager")["state"] == "ok", 20, "the sink to be ok again")


if __name__ == "__main__":
    swtest.main()
