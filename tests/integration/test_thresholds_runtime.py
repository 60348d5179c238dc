#!/usr/bin/env python3
"""Space thresholds around the daemon's life: rules changed at runtime (both syntaxes, bad
ones refused, non-root refused), bind mounts shown as one filesystem, unmounting while the
daemon runs, crossed levels and rules across restarts, and a stuck statfs (FUSE test
filesystem) that must not delay other filesystems nor the daemon's exit.

Needs root, loop devices and mkfs.ext4 (and /dev/fuse with storwatch-testfs for the stuck
statfs test); exits 77 ("SKIP: ...") otherwise.  Binaries come from $STORWATCHD, $STORWATCH
and $STORWATCH_TESTFS (CTest sets them) or a build directory of the source tree.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        STORWATCH_TESTFS=build/tests/support/testfs/storwatch-testfs \\
        python3 tests/integration/test_thresholds_runtime.py
"""

import os
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
ev = swtest.event_matcher
EXT4_ARGS = ("-m", "0", "-b", "4096")
NOBODY = 65534


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "mount", "umount")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def total_bytes(mnt):
    st = os.statvfs(mnt)
    return st.f_blocks * st.f_frsize


def dev_of(path):
    st = os.stat(path)
    return f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"


class RuntimeTest(swtest.DaemonTestCase):
    timeout = 120

    def ext4(self, size=64 * MiB):
        return self.cleanup.enter(swtest.LoopFs("ext4", size=size, mkfs_args=EXT4_ARGS))

    def entries_for(self, d, dev, all=False):
        return [fs for fs in d.status_json(all=all) if fs["dev"] == dev]

    def refused(self, d, *args, user=None, rc=1):
        """Runs the CLI, asserts exit status `rc`; returns stderr."""
        code, out, err = d.cli(*args, user=user)
        self.assertEqual(code, rc, f"storwatch {' '.join(map(str, args))}: {out}{err}")
        self.assertEqual(out, "")
        return err.strip()

    def rules(self, d, user=None):
        return d.cli_json("rules", "list", user=user)["rules"]

    # ------------------------------------------------------------------------------------
    def test_rules_added_and_removed_at_runtime(self):
        fs = self.ext4()
        mnt = fs.mnt
        d = self.daemon()
        mon = d.monitor()
        self.assertEqual(self.rules(d), [])
        st = d.fs_status(mnt)
        self.assertIsNotNone(st, "a fresh ext4 mount is watched")
        self.assertEqual((st["rules"], st["levels"]), ([], []))
        total = total_bytes(mnt)

        # Structured form.
        d.cli_ok("rules", "add", mnt, "--free-below", "10%", "--free-below", "5%:error",
                 "--inodes-below", "2%")
        rules = self.rules(d)
        self.assertEqual(len(rules), 1, rules)
        r = rules[0]
        self.assertEqual((r["path"], r["origin"]), (mnt, "runtime"))
        self.assertEqual([(lv["resource"], lv["below"], lv["severity"]) for lv in r["levels"]],
                         [("blocks", "10%", "warning"), ("blocks", "5%", "error"),
                          ("inodes", "2%", "warning")])
        listed = d.cli_ok("rules", "list")
        self.assertIn(mnt, listed)
        st = d.wait_sample(mnt, 0)
        self.assertEqual([(lv["resource"], lv["below"], lv["crossed"]) for lv in st["levels"]],
                         [("blocks", "10%", False), ("blocks", "5%", False),
                          ("inodes", "2%", False)])
        fill = os.path.join(mnt, "fill")
        swtest.set_free_bytes(fill, mnt, int(total * 0.08))
        e = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))
        self.assertEqual(e["severity"], "warning")

        # Seed one-line form: replaces the block levels (in filesystem blocks), keeps the
        # inode level; both new levels are above the free space, so both are reported.
        blocks = st["blocks_total"]
        l1, l2 = blocks * 20 // 100, blocks * 15 // 100
        d.cli_ok("rules", "add", f"{mnt} G T {l1} {l2}")
        r = self.rules(d)[0]
        self.assertEqual([(lv["resource"], lv["below"]) for lv in r["levels"]],
                         [("inodes", "2%"), ("blocks", f"{l1} blocks"), ("blocks", f"{l2} blocks")])
        self.assertTrue(r.get("events", True))
        self.assertTrue(r.get("thresholds", True))
        e1 = mon.wait_event(ev("space.threshold", mnt, level=f"{l1} blocks", direction="below"))
        e2 = mon.wait_event(ev("space.threshold", mnt, level=f"{l2} blocks", direction="below"))
        self.assertLess(e1["seq"], e2["seq"])
        self.assertEqual((e1["severity"], e2["severity"]), ("warning", "error"))
        # Also through `rules line`, the seed syntax's own command.
        d.cli_ok("rules", "line", f"{mnt} T {l1} {l2}")

        # "!MOUNT T": thresholds off; the rule stays, the filesystem is no longer polled.
        d.cli_ok("rules", "add", f"!{mnt} T")
        r = self.rules(d)
        self.assertEqual(len(r), 1)
        self.assertFalse(r[0]["thresholds"])
        swtest.wait_for(lambda: d.fs_status(mnt)["levels"] == [], 10, "levels to be dropped")

        # "!MOUNT": the rule is gone.
        d.cli_ok("rules", "add", f"!{mnt}")
        self.assertEqual(self.rules(d), [])
        err = self.refused(d, "rules", "remove", mnt)
        self.assertEqual(err, f"storwatch: invalid rule: there is no rule for {mnt}")

        # Added again and removed with `rules remove`.
        d.cli_ok("rules", "add", mnt, "--free-below", "1%:critical")
        self.assertEqual([x["path"] for x in self.rules(d)], [mnt])
        d.cli_ok("rules", "remove", mnt)
        self.assertEqual(self.rules(d), [])
        swtest.wait_for(lambda: d.fs_status(mnt)["levels"] == [], 10, "levels to be dropped")

    def test_invalid_rules_refused(self):
        fs = self.ext4()
        mnt = fs.mnt
        sub = os.path.join(mnt, "sub")
        os.mkdir(sub)
        d = self.daemon()
        d.cli_ok("rules", "add", mnt, "--free-below", "10%")
        before = self.rules(d)
        cases = [
            (["rules", "add", mnt, "--free-below", "150%"],
             'rule.levels[0].below: invalid amount "150%": a percentage must be at least 0.000001% and below 100%'),
            (["rules", "add", mnt, "--free-below", "5%", "--free-below", "lots"],
             'rule.levels[1].below: invalid amount "lots": expected a percentage (10%), a size (5G) or a number'),
            (["rules", "add", mnt, "--inodes-below", "2%", "--inodes-below", "2%"],
             'duplicate level "inodes<2%" (levels[0] and levels[1])'),
            (["rules", "add", mnt, "--free-below", "10%", "--hysteresis", "x"],
             'rule.levels[0].hysteresis: invalid amount "x": expected a percentage (10%), '
             'a size (5G) or a number'),
            (["rules", "add", "/proc", "--free-below", "10%"],
             "/proc is a proc filesystem, which storwatch does not watch"),
            (["rules", "add", f"{mnt} T"],
             "T needs at least one level (L1, a number of available blocks)"),
            (["rules", "add", f"{mnt} T 5 10"], "L1 (5) must be higher than L2 (10)"),
            (["rules", "add", f"{mnt} G X"], 'unknown event type "X": expected G or T'),
            (["rules", "add", f"{mnt} T 0"], 'level "0" must be above zero'),
            (["rules", "add", f"!{mnt} T 5"], 'unexpected level "5": "!" requests take no levels'),
            (["rules", "line", f"{mnt} G G"], 'event type "G" given twice'),
            (["rules", "line", "data G"], 'relative path "data": the mount point must be absolute'),
            (["rules", "add", sub, "--free-below", "10%"],
             f"{sub} is not a mount point (it is on the filesystem mounted at {mnt}); "
             "a rule names the mount point of a filesystem"),
            (["rules", "remove", sub], f"there is no rule for {sub}"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                err = self.refused(d, *args)
                self.assertIn(message, err)
                self.assertTrue(err.startswith("storwatch: "), err)
                self.assertEqual(err.count("\n"), 0, "one line")
                self.assertEqual(self.rules(d), before, "a refused rule changes nothing")
        # Usage errors (the command line itself) exit with 2.
        err = self.refused(d, "rules", "add", mnt, "--free-below", "10%:fatal", rc=2)
        self.assertIn('severity "fatal" is not one of info, warning, error, critical', err)
        self.assertEqual(self.rules(d), before)

    def test_rule_change_refused_for_non_root(self):
        fs = self.ext4()
        mnt = fs.mnt
        d = self.daemon()
        d.cli_ok("rules", "add", mnt, "--free-below", "10%")
        before = self.rules(d)
        for args in (["rules", "add", mnt, "--free-below", "5%"],
                     ["rules", "add", f"{mnt} G T 710000 500000"],
                     ["rules", "add", f"!{mnt}"],
                     ["rules", "line", f"!{mnt} T"],
                     ["rules", "remove", mnt]):
            with self.subTest(args=args):
                err = self.refused(d, *args, user=NOBODY)
                self.assertIn(f"changing rules needs root; you are uid {NOBODY}", err)
                self.assertEqual(self.rules(d), before)
        # Listing and status work for anyone.
        self.assertEqual(self.rules(d, user=NOBODY), before)
        self.assertEqual(d.cli_json("doctor", user=NOBODY)["uid"], NOBODY)
        code, out, err = d.cli("status", user=NOBODY)
        self.assertEqual(code, 0, err)
        self.assertIn(mnt, out)

    def test_bind_mounts_are_one_filesystem(self):
        fs = self.ext4()
        mnt = fs.mnt
        os.mkdir(os.path.join(mnt, "sub"))
        b1 = swtest.tempdir(prefix="swtest-bind-", cleanup=self.cleanup)
        b2 = swtest.tempdir(prefix="swtest-bind-", cleanup=self.cleanup)
        swtest.bind_mount(mnt, b1, cleanup=self.cleanup)
        swtest.bind_mount(os.path.join(mnt, "sub"), b2, cleanup=self.cleanup)
        dev = dev_of(mnt)
        self.assertEqual(dev_of(b1), dev)
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<10%"]}))
        mon = d.monitor()
        entries = self.entries_for(d, dev)
        self.assertEqual(len(entries), 1, entries)
        self.assertEqual(sorted(entries[0]["mounts"]), sorted([mnt, b1, b2]))
        self.assertEqual(len(self.entries_for(d, dev, all=True)), 1)
        self.assertEqual(entries[0]["source"], fs.dev)
        # The rule applies to the filesystem at every mount; status of any path shows it.
        for p in (mnt, b1, b2):
            one = d.cli_json("status", p)["filesystem"]
            self.assertEqual(one["dev"], dev)
            self.assertEqual([r["path"] for r in one["rules"]], [mnt])
        # Filling through a bind mount reports the filesystem once, with all its mounts.
        swtest.set_free_bytes(os.path.join(b1, "fill"), b1, int(total_bytes(mnt) * 0.05))
        e = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))
        self.assertEqual(sorted(e["fs"]["mounts"]), sorted([mnt, b1, b2]))
        self.assertEqual(e["fs"]["dev"], dev)
        d.wait_sample(mnt, time.time())
        mon.assert_no_event(ev("space.threshold", level="10%", direction="below"),
                            after_seq=e["seq"])

    def test_unmounted_filesystem_dropped_and_not_held_busy(self):
        fs = self.ext4()
        mnt = fs.mnt
        bind = swtest.tempdir(prefix="swtest-bind-", cleanup=self.cleanup)
        swtest.bind_mount(mnt, bind, cleanup=self.cleanup)
        dev = dev_of(mnt)
        # Levels close to the free space: the daemon polls this filesystem at its fastest.
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<99%"], bind: ["blocks<98%"]}))
        d.wait_sample(mnt, 0)
        self.assertEqual(sorted(self.entries_for(d, dev)[0]["mounts"]), sorted([mnt, bind]))

        p = subprocess.run(["umount", bind], capture_output=True, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stderr), (0, ""), "umount of the bind mount")
        swtest.wait_for(lambda: [e["mounts"] for e in self.entries_for(d, dev)] == [[mnt]], 10,
                        "the bind mount to leave the filesystem's mounts")
        d.wait_sample(mnt, time.time())

        p = subprocess.run(["umount", mnt], capture_output=True, text=True, timeout=30)
        self.assertEqual((p.returncode, p.stderr), (0, ""), "umount while storwatchd runs")
        swtest.wait_for(lambda: not self.entries_for(d, dev, all=True), 10,
                        "the unmounted filesystem to leave the status")
        self.assertIsNone(d.fs_status(mnt))
        # Nothing holds the filesystem: its loop device detaches at once.
        swtest.loop_detach(fs.dev, timeout=5)
        self.assertTrue(d.alive)
        self.assertEqual(d.cli("status")[0], 0)

    def test_restart_keeps_rules_and_crossed_levels(self):
        fs = self.ext4()
        mnt = fs.mnt
        total = total_bytes(mnt)
        fill = os.path.join(mnt, "fill")
        d = self.daemon()
        d.cli_ok("rules", "add", mnt, "--free-below", "10%", "--free-below", "5%")
        rules = self.rules(d)
        mon = d.monitor()
        swtest.set_free_bytes(fill, mnt, int(total * 0.08))
        mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))

        def crossed(st):
            return {lv["below"]: lv["crossed"] for lv in st["levels"]}

        def printed(start, **match):
            return [e for e in d.printed_events(start=start)
                    if e["type"] == "space.threshold" and e["mount"] == mnt
                    and all(e["detail"].get(k) == v for k, v in match.items())]

        # Restart: the rule is back, 10% is known to be crossed and not reported again.
        d.restart()
        self.assertEqual(self.rules(d), rules)
        st = d.wait_sample(mnt, d.started_at)
        self.assertEqual(crossed(st), {"10%": True, "5%": False})
        # --print writes each event before the sample shows in the status.
        self.assertEqual(printed(d.starts), [], d.stdout())

        # Crossed while the daemon is down: reported when it starts, and only that level.
        d.stop()
        swtest.set_free_bytes(fill, mnt, int(total * 0.03))
        d.start()
        swtest.wait_for(lambda: printed(d.starts, level="5%", direction="below"), 10,
                        "the 5% level crossed while down to be reported at start")
        st = d.wait_sample(mnt, d.started_at)
        self.assertEqual(crossed(st), {"10%": True, "5%": True})
        self.assertEqual([(e["detail"]["level"], e["detail"]["direction"]) for e in printed(d.starts)],
                         [("5%", "below")])

        # Back above while down: both reported at start, most severe first.
        d.stop()
        os.unlink(fill)
        os.sync()
        d.start()
        swtest.wait_for(lambda: len(printed(d.starts)) >= 2, 10, "above events at start")
        d.wait_sample(mnt, d.started_at)
        self.assertEqual([(e["detail"]["level"], e["detail"]["direction"]) for e in printed(d.starts)],
                         [("5%", "above"), ("10%", "above")])
        self.assertEqual(self.rules(d), rules)

    def test_stuck_statfs_does_not_delay_others_nor_exit(self):
        swtest.require_fuse()
        swtest.require_testfs()
        tfs = self.cleanup.enter(swtest.TestFs(data_size=8 * MiB))
        fs = self.ext4()
        mnt = fs.mnt
        if os.environ.get("STORWATCH_SANITIZED") == "1":
            # LeakSanitizer's check at exit stops every thread, and the one in the stuck statfs
            # sleeps uninterruptibly: the exit would wait for the hung filesystem.
            old_asan = os.environ.get("ASAN_OPTIONS")
            os.environ["ASAN_OPTIONS"] = (old_asan + ":" if old_asan else "") + "detect_leaks=0"
            self.addCleanup(lambda: os.environ.pop("ASAN_OPTIONS") if old_asan is None
                            else os.environ.__setitem__("ASAN_OPTIONS", old_asan))
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<10%"], tfs.mnt: ["blocks<1%"]},
                                           statfs_timeout="1s"))
        fuse = [x for x in d.status_json(all=True) if tfs.mnt in x["mounts"]]
        self.assertEqual(len(fuse), 1, d.status_json(all=True))
        self.assertTrue(fuse[0]["fstype"].startswith("fuse"), fuse[0])
        self.assertTrue(fuse[0]["watched"], fuse[0])
        d.wait_sample(tfs.mnt, 0)
        d.wait_sample(mnt, 0)
        mon = d.monitor()

        calls = tfs.counter("statfs-calls")
        tfs.control("statfs-block on")
        swtest.wait_for(lambda: tfs.counter("statfs-blocked-now") >= 1, 10,
                        "the daemon's statfs to block")
        self.assertGreater(tfs.counter("statfs-calls"), calls)
        u = mon.wait_event(ev("fs.unresponsive", tfs.mnt), timeout=5)
        self.assertEqual(u["severity"], "warning")

        # Other filesystems' events are not delayed (polls are at most 200 ms apart).
        swtest.set_free_bytes(os.path.join(mnt, "fill"), mnt, int(total_bytes(mnt) * 0.05))
        t0 = time.monotonic()
        mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"), timeout=5)
        self.assertLess(time.monotonic() - t0, 2.0, "threshold event delayed by a stuck statfs")
        # The API answers, and says the filesystem is stale.
        t0 = time.monotonic()
        st = [x for x in d.status_json() if tfs.mnt in x["mounts"]]
        self.assertLess(time.monotonic() - t0, 2.0)
        self.assertEqual(st[0]["health"], "stale")
        self.assertEqual(d.fs_status(mnt)["health"], "ok")

        tfs.control("statfs-block off")
        r = mon.wait_event(ev("fs.responsive", tfs.mnt), timeout=5)
        self.assertGreater(r["seq"], u["seq"])
        swtest.wait_for(lambda: d.fs_status(tfs.mnt)["health"] == "ok", 10, "health ok again")

        # Stuck again, then SIGTERM: the daemon exits promptly all the same.
        tfs.control("statfs-block on")
        swtest.wait_for(lambda: tfs.counter("statfs-blocked-now") >= 1, 10,
                        "the daemon's statfs to block again")
        took = d.stop(timeout=3)
        self.assertLess(took, 3)


if __name__ == "__main__":
    swtest.main()
