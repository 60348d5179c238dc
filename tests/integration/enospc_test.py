#!/usr/bin/env python3
"""The eBPF ENOSPC/EDQUOT probe end to end (issue 5): a real storwatchd, real loop-mounted ext4,
xfs and btrfs and a tmpfs, filled by a process running as a non-root uid (enospc_filler.py, after
the seed's alloc_test): buffered writes, O_DIRECT writes, file creation and directory creation
until ENOSPC. Each failure must arrive as space.enospc within one second with the filesystem's
device and mount, the process (pid, uid, comm) and the kind. Also: EDQUOT from a real filesystem
(the FUSE TestFs), an io_uring write completing with ENOSPC (enospc_uring_fill.c), a process
retrying for five seconds (folded events whose counts add up to its failed calls), the statfs-based
space.enospc folded into the probe's, the switch to turn the probe off, and a daemon without the
BPF capabilities (source.unavailable with the reason; statfs still reports ENOSPC).

Needs root, loop devices, the mkfs tools and a kernel and build with BPF; exits 77 otherwise.
Other processes on this machine may fail with ENOSPC meanwhile: events are matched by pid.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/enospc_test.py
"""

import json
import os
import signal
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

FILLER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "enospc_filler.py")
UID = 65534  # nobody
MiB = 1 << 20


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("setpriv", "mount", "umount")
    swtest.require_storwatch()


def run_filler(mode, d, *args, timeout=120, cwd=None):
    """Runs enospc_filler.py as uid/gid 65534 without groups (in `cwd`); its JSON line."""
    cmd = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups",
           sys.executable, FILLER, mode, d, *map(str, args)]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    out = p.stdout
    return json.loads(out.strip().splitlines()[-1])


def user_dir(parent, name):
    # The test's temp dirs are private (0700): let the uid reach the mount point.
    for up in (os.path.dirname(parent), os.path.dirname(os.path.dirname(parent))):
        if os.path.basename(up).startswith("swtest-"):
            os.chmod(up, 0o755)
    d = os.path.join(parent, name)
    os.mkdir(d)
    os.chown(d, UID, UID)
    return d


def sb_dev(mnt):
    """The superblock's device of the filesystem mounted at mnt (mountinfo field 3)."""
    for m in reversed(swtest.mountinfo()):
        if m["mountpoint"] == mnt:
            return m["dev"]
    raise AssertionError(f"{mnt} is not mounted")


def by_pid(pid, type="space.enospc"):
    def pred(e):
        return (e.get("type") == type and e.get("source") == "ebpf"
                and (e.get("process") or {}).get("pid") == pid)
    pred.__name__ = f"{type} from the probe for pid {pid}"
    return pred


class EnospcProbeTest(swtest.DaemonTestCase):
    timeout = 600

    def start(self, extra=""):
        d = self.daemon(swtest.test_config(extra=extra))
        doctor = d.cli_json("doctor")
        probe = [s for s in doctor["sources"] if s["name"] == "ebpf-enospc"]
        self.assertEqual(len(probe), 1, doctor["sources"])
        if not probe[0]["available"]:
            swtest.skip(f"the eBPF ENOSPC probe cannot run here: {probe[0].get('reason')}")
        self.assertIn("loaded", probe[0]["reason"])
        self.assertIn("per syscall", probe[0]["cost"])
        return d, d.monitor()

    def check(self, mon, res, mnt, kinds, syscalls, type="space.enospc"):
        """The probe's event for the filler's failure: right filesystem, process and kind,
        within one second of the failing call."""
        e = mon.wait_event(by_pid(res["pid"], type), timeout=5)
        self.assertEqual(res["errno"], 28 if type == "space.enospc" else 122, res)
        fs = e.get("fs") or {}
        self.assertEqual(fs.get("dev"), sb_dev(mnt), e)
        self.assertIn(mnt, fs.get("mounts", []), e)
        p = e["process"]
        self.assertEqual((p["pid"], p["uid"], p["comm"]), (res["pid"], UID, res["comm"]), e)
        self.assertIn(e["detail"]["kind"], kinds, e)
        self.assertIn(e["detail"]["syscall"], syscalls, e)
        self.assertEqual(e["detail"]["errno"], res["errno"], e)
        late = swtest.parse_time(e["time"]) - res["first_failure"]
        self.assertLess(late, 1.0, f"the event came {late:.3f} s after the failing call: {e}")
        return e

    def four_ways(self, mon, mnt, inodes_exhaustible):
        """Buffered writes, O_DIRECT writes, file and directory creation until ENOSPC.
        With `inodes_exhaustible` the filesystem has few inodes and space is freed before
        creating files, so they fail for want of inodes; otherwise they fail on a full disk."""
        d = user_dir(mnt, "u")
        res = run_filler("buffered", d)
        self.check(mon, res, mnt, ["data"], ["write"])
        os.unlink(os.path.join(d, "buffered"))
        os.sync()
        res = run_filler("direct", d)
        self.check(mon, res, mnt, ["data"], ["write"])
        if inodes_exhaustible:
            os.unlink(os.path.join(d, "direct"))
            os.sync()
            kinds = ["inodes"]
        else:
            kinds = ["metadata", "inodes"]  # a full xfs/btrfs may also have no inode left
        res = run_filler("files", d)
        self.check(mon, res, mnt, kinds, ["openat", "open", "creat"])
        # Relative names: the kernel side names the filesystem from the working directory.
        res = run_filler("dirs", ".", cwd=d)
        e = self.check(mon, res, mnt, kinds, ["mkdir", "mkdirat"])
        self.assertNotIn("path", e["detail"], e)

    def test_ext4(self):
        swtest.require_fstype("ext4")
        swtest.require_cmd("mkfs.ext4")
        _, mon = self.start()
        fs = self.cleanup.enter(swtest.LoopFs("ext4", size=32 * MiB, mkfs_args=("-N", "64", "-m", "0")))
        self.four_ways(mon, fs.mnt, inodes_exhaustible=True)

    def test_xfs(self):
        swtest.require_fstype("xfs")
        swtest.require_cmd("mkfs.xfs")
        _, mon = self.start()
        fs = self.cleanup.enter(swtest.LoopFs("xfs"))
        self.four_ways(mon, fs.mnt, inodes_exhaustible=False)

    def test_btrfs(self):
        swtest.require_fstype("btrfs")
        swtest.require_cmd("mkfs.btrfs")
        _, mon = self.start()
        # Mixed data and metadata block groups: a full disk is full for both.
        fs = self.cleanup.enter(swtest.LoopFs("btrfs", size=128 * MiB, mkfs_args=("-M",)))
        self.four_ways(mon, fs.mnt, inodes_exhaustible=False)

    def test_tmpfs(self):
        _, mon = self.start()
        mnt = swtest.tempdir(prefix="swtest-enospc-tmpfs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 16 * MiB, cleanup=self.cleanup, options="nr_inodes=64")
        self.four_ways(mon, mnt, inodes_exhaustible=True)

    def test_io_uring_completion(self):
        fill = os.environ.get("STORWATCH_URING_FILL") or os.path.join(
            swtest.REPO_ROOT, "build", "tests", "integration", "enospc_uring_fill")
        if not os.access(fill, os.X_OK):
            swtest.skip("enospc_uring_fill not built (set STORWATCH_URING_FILL)")
        _, mon = self.start()
        mnt = swtest.tempdir(prefix="swtest-enospc-uring-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 4 * MiB, cleanup=self.cleanup)
        d = user_dir(mnt, "u")
        cmd = ["setpriv", f"--reuid={UID}", f"--regid={UID}", "--clear-groups", fill, os.path.join(d, "f")]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if p.returncode != 0 and "io_uring_setup" in p.stderr:
            swtest.skip(f"io_uring is not available: {p.stderr.strip()}")
        self.assertEqual(p.returncode, 0, p.stderr)
        res = json.loads(p.stdout)
        self.assertEqual(res["res"], -28)
        e = mon.wait_event(by_pid(res["pid"]), timeout=5)
        self.assertEqual(e["fs"]["dev"], sb_dev(mnt), e)
        self.assertEqual((e["process"]["uid"], e["process"]["comm"]), (UID, "sw-uring-fill"), e)
        self.assertEqual((e["detail"]["kind"], e["detail"]["syscall"]), ("data", "io_uring:write"), e)

    def test_edquot_from_fuse(self):
        swtest.require_fuse()
        swtest.require_testfs()
        _, mon = self.start()
        tfs = self.cleanup.enter(swtest.TestFs())
        d = user_dir(tfs.data, "u")
        tfs.control("write-errno EDQUOT")
        res = run_filler("buffered", d)
        e = self.check(mon, res, tfs.mnt, ["data"], ["write"], type="space.edquot")
        self.assertEqual(e["severity"], "warning")

    def test_tight_loop_is_folded_with_exact_counts(self):
        daemon, mon = self.start()
        mnt = swtest.tempdir(prefix="swtest-enospc-loop-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 4 * MiB, cleanup=self.cleanup)
        d = user_dir(mnt, "u")
        run_filler("buffered", d)  # full
        res = run_filler("loop", d, 5)
        self.assertGreater(res["failures"], 1000, res)
        pred = by_pid(res["pid"])

        def total():
            return sum(e["count"] for e in mon.events(pred))
        # The last counts come with the next sweep and the fold window after it.
        try:
            swtest.wait_for(lambda: total() >= res["failures"], timeout=10,
                            what=f"counts adding up to {res['failures']}")
        finally:
            evs = mon.events(pred)
        self.assertEqual(total(), res["failures"], [(e["seq"], e["count"]) for e in evs])
        # Folded: a few events (one at once, then about one per second), not one per call.
        self.assertLess(len(evs), 20, len(evs))
        self.assertEqual(evs[0]["count"], 1)
        for e in evs:
            self.assertEqual(e["fs"]["dev"], sb_dev(mnt), e)
        mon.assert_no_event(pred, after_seq=evs[-1]["seq"])
        # doctor counts them too (and what else failed on this machine meanwhile).
        probe = [s for s in daemon.cli_json("doctor")["sources"] if s["name"] == "ebpf-enospc"][0]
        self.assertGreaterEqual(probe["counters"]["failed_calls"], res["failures"], probe)
        self.assertIn("cost:", daemon.cli_ok("doctor"))

    def test_statfs_enospc_folded_into_probe(self):
        # Levels make the backbone poll this filesystem (every 2 s: a poll landing between the
        # failing call and the probe's event is then unlikely enough not to matter).
        mnt = swtest.tempdir(prefix="swtest-enospc-fold-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 8 * MiB, cleanup=self.cleanup)
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<50%:warning"]},
                                           poll_min="2s", poll_max="2s"))
        doctor = d.cli_json("doctor")
        if not [s for s in doctor["sources"] if s["name"] == "ebpf-enospc" and s["available"]]:
            swtest.skip("the eBPF ENOSPC probe cannot run here")
        mon = d.monitor()
        u = user_dir(mnt, "u")
        res = run_filler("buffered", u)
        first = self.check(mon, res, mnt, ["data"], ["write"])
        t0 = swtest.parse_time(first["time"])

        def polled_full():
            for f in d.status_json():
                if mnt in f.get("mounts", []) and f.get("blocks_avail") == 0 and "sampled" in f:
                    return swtest.parse_time(f["sampled"]) > t0
            return False
        swtest.wait_for(polled_full, timeout=10, what="a poll of the full filesystem after the event")
        mon.assert_no_event(swtest.event_matcher("space.enospc", mnt), after_seq=first["seq"],
                            what="a statfs-based space.enospc after the probe's")
        self.assertFalse([e for e in mon.events(swtest.event_matcher("space.enospc", mnt))
                          if e.get("source") == "statfs"])

    def test_without_bpf_privileges_the_rest_works(self):
        # storwatchd as root but without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (bounding set).
        daemon_bin, _ = swtest.find_storwatch()
        wrap_dir = swtest.tempdir(prefix="swtest-enospc-nobpf-", cleanup=self.cleanup)
        os.chmod(wrap_dir, 0o755)
        wrapper = os.path.join(wrap_dir, "storwatchd")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec setpriv --bounding-set=-bpf,-perfmon,-sys_admin "
                    f"--inh-caps=-bpf,-perfmon,-sys_admin {daemon_bin} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        mnt = swtest.tempdir(prefix="swtest-enospc-nobpf-fs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 4 * MiB, cleanup=self.cleanup)
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<50%:warning"]}), binary=wrapper)
        probe = [s for s in d.cli_json("doctor")["sources"] if s["name"] == "ebpf-enospc"][0]
        self.assertFalse(probe["available"], probe)
        self.assertIn("CAP_BPF", probe["reason"])
        out = d.cli_ok("history", "--type", "source.unavailable", "--json")
        events = [json.loads(line) for line in out.splitlines() if line.strip()]
        self.assertTrue([e for e in events if e["detail"].get("source") == "ebpf-enospc"
                         and "CAP_BPF" in e["detail"].get("reason", "")], events)
        # The rest works: statfs still sees the filesystem fill up.
        mon = d.monitor()
        run_filler("buffered", user_dir(mnt, "u"))
        e = mon.wait_event(swtest.event_matcher("space.enospc", mnt), timeout=10)
        self.assertEqual(e["source"], "statfs")

    def test_turned_off(self):
        d = self.daemon(swtest.test_config(extra="[sources]\nebpf_enospc = false\n"))

        def probe():
            return [s for s in d.cli_json("doctor")["sources"] if s["name"] == "ebpf-enospc"][0]
        self.assertFalse(probe()["available"])
        self.assertIn("ebpf_enospc", probe()["reason"])
        self.assertIn("ebpf-enospc", d.cli_ok("doctor"))
        # Turned on again with a reload (SIGHUP), and off again.
        d.write_config(swtest.test_config(extra="[sources]\nebpf_enospc = true\n"))
        d.proc.send_signal(signal.SIGHUP)
        swtest.wait_for(lambda: "ebpf_enospc = false)" not in probe()["reason"], timeout=10,
                        what="the configuration applied after SIGHUP")
        if not probe()["available"]:
            swtest.skip(f"the eBPF ENOSPC probe cannot run here: {probe()['reason']}")
        self.assertIn("loaded", probe()["reason"])
        d.write_config(swtest.test_config(extra="[sources]\nebpf_enospc = false\n"))
        d.proc.send_signal(signal.SIGHUP)
        swtest.wait_for(lambda: not probe()["available"], timeout=10, what="the probe unloaded after SIGHUP")


if __name__ == "__main__":
    swtest.main()
