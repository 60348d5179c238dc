#!/usr/bin/env python3
"""Prometheus /metrics (issue 8): a real storwatchd started with --metrics on a free loopback
port, watching an ext4 loop filesystem, scraped every second by a real prometheus (Debian package
prometheus) on loopback. Its query API must report the filesystem's free bytes as statvfs gives
them, also after the free space changed; /metrics itself carries the families users alert on.

Needs root (loop devices) and prometheus; exits 77 ("SKIP: ...") otherwise.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/sink_prometheus.py
"""

import json
import os
import socket
import subprocess
import sys
import urllib.parse
import urllib.request

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()
    swtest.require_loop()
    swtest.require_fstype("ext4")
    swtest.require_cmd("prometheus")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def statvfs_free(mnt):
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


class Prometheus:
    def __init__(self, dir_, target):
        self.dir = dir_
        self.port = free_port()
        self.config = os.path.join(dir_, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: storwatch\n    static_configs:\n"
                    f"      - targets: ['{target}']\n")
        self.log_path = os.path.join(dir_, "prometheus.log")
        self.proc = None

    def start(self):
        cmd = [swtest.which("prometheus"), f"--config.file={self.config}",
               f"--storage.tsdb.path={os.path.join(self.dir, 'tsdb')}",
               f"--web.listen-address=127.0.0.1:{self.port}"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.dir)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited with status {self.proc.returncode}:\n{self.log()}")
            return http_get(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)[0] == 200
        swtest.wait_for(ready, 60, "prometheus to be ready", ignore=(OSError,))
        return self

    def stop(self):
        if self.proc:
            swtest.terminate_process(self.proc, term_timeout=10)

    def query(self, promql):
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        _, _, body = http_get(url)
        reply = json.loads(body)
        if reply.get("status") != "success":
            raise AssertionError(f"query {promql}: {reply}")
        return reply["data"]["result"]

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""


class PrometheusTest(swtest.DaemonTestCase):
    timeout = 150

    def test_prometheus_scrapes_free_bytes(self):
        fs = self.cleanup.enter(swtest.LoopFs("ext4", size=64 * MiB, mkfs_args=("-m", "0")))
        port = free_port()
        # A level on the loop filesystem makes the daemon poll it (filesystems without levels
        # are not polled and have no usage to report).
        d = self.daemon(swtest.test_config(rules={fs.mnt: ["blocks<1%"]}),
                        extra_args=["--metrics", f"127.0.0.1:{port}"])

        tmp = swtest.tempdir(prefix="swtest-prometheus-", cleanup=self.cleanup)
        prom = Prometheus(tmp, f"127.0.0.1:{port}")
        self.cleanup.push(prom.stop)
        prom.start()

        def free_in_prometheus(expected):
            def check():
                r = prom.query(f'storwatch_filesystem_free_bytes{{mount="{fs.mnt}"}}')
                if not r:
                    return None
                value = int(float(r[0]["value"][1]))
                # Within a few blocks: ext4 allocates metadata of its own along the way.
                return abs(value - expected) <= 16 * 4096 and r[0]
            return check

        expected = statvfs_free(fs.mnt)
        got = swtest.wait_for(free_in_prometheus(expected), 60,
                              f"prometheus to report {expected} free bytes on {fs.mnt}")
        self.assertEqual(got["metric"]["fstype"], "ext4")
        self.assertEqual(got["metric"]["job"], "storwatch")

        # The number follows the filesystem: fill 20 MiB and wait for the new value.
        swtest.fill_file(os.path.join(fs.mnt, "fill"), 20 * MiB)
        after = statvfs_free(fs.mnt)
        self.assertLess(after, expected - 16 * MiB)
        swtest.wait_for(free_in_prometheus(after), 60,
                        f"prometheus to report {after} free bytes after filling {fs.mnt}")

        # The daemon's own health is there too.
        r = swtest.wait_for(lambda: prom.query("storwatch_journal_healthy"), 30, "storwatch_journal_healthy")
        self.assertEqual(r[0]["value"][1], "1")

        status, ctype, text = http_get(f"http://127.0.0.1:{port}/metrics")
        self.assertEqual(status, 200)
        self.assertIn("version=0.0.4", ctype)
        for family in ("storwatch_filesystem_size_bytes", "storwatch_filesystem_files_free",
                       "storwatch_filesystem_level_crossed", "storwatch_filesystem_healthy",
                       "storwatch_filesystem_errors_total", "storwatch_journal_lag_events",
                       "storwatch_subscribers", "storwatch_sink_up"):
            self.assertIn(f"# TYPE {family} ", text)
        self.assertIn(f'resource="blocks",below="1%"', text)
        d.stop()

    def test_bad_metrics_address_is_refused(self):
        daemon, _ = swtest.require_storwatch()
        p = subprocess.run([daemon, "--metrics", "9639", "--check-config"], capture_output=True, text=True,
                           timeout=30)
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("metrics address", p.stderr)


if __name__ == "__main__":
    swtest.main()
