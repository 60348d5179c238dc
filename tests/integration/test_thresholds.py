#!/usr/bin/env python3
"""Space thresholds end to end: a real storwatchd on a temporary socket and state directory,
real loop-mounted ext4 and tmpfs filesystems, driven and observed through the storwatch CLI.

Levels crossed downward and back (hysteresis, no repeats), a jump across several levels,
inode levels, and space.enospc when a filesystem runs out of blocks or inodes.

Needs root, loop devices and mkfs.ext4; exits 77 ("SKIP: ...") otherwise.  The binaries come
from $STORWATCHD and $STORWATCH (CTest sets them) or a build directory of the source tree.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/test_thresholds.py
"""

import errno
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
ev = swtest.event_matcher

# ext4 with 4 KiB blocks and no reserved blocks: f_bavail == f_bfree, so "free" is exact.
EXT4_ARGS = ("-m", "0", "-b", "4096")
THREE_LEVELS = ["blocks<10%:warning", "blocks<5%:error", "blocks<1%:critical"]
# Without the eBPF ENOSPC probe, whose event would stand for the statfs-based space.enospc.
STATFS_ONLY = "[sources]\nebpf_enospc = false\n"


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "mount", "umount")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def total_bytes(mnt):
    st = os.statvfs(mnt)
    return st.f_blocks * st.f_frsize


def fill_until_enospc(path, mnt):
    """Appends to `path` until writes fail with ENOSPC and no space is left (ext4 gives
    back what it reserved for delayed allocation once the data is on disk, so one pass
    may leave some); returns the free bytes left (0 unless the filesystem keeps some)."""
    chunk = 1 << 20
    for _ in range(10):
        written = swtest.fill_file(path, 1 << 40, append=True, chunk=chunk)
        if swtest.free_bytes(mnt) == 0 or written == 0:
            break
        chunk = 4096
    return swtest.free_bytes(mnt)


class ThresholdTest(swtest.DaemonTestCase):
    timeout = 120

    def ext4(self, size=64 * MiB, mkfs_args=EXT4_ARGS):
        return self.cleanup.enter(swtest.LoopFs("ext4", size=size, mkfs_args=mkfs_args))

    def tmpfs(self, size=16 * MiB):
        mnt = swtest.tempdir(prefix="swtest-tmpfs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, size, cleanup=self.cleanup)
        return mnt

    def assert_below_sequence(self, mon, mnt, levels, fill, total):
        """Brings free space below each level in turn (fill: a path), waiting for each
        space.threshold event; returns the events."""
        got = []
        for text, severity, target_pct in levels:
            swtest.set_free_bytes(fill, mnt, int(total * target_pct / 100))
            e = mon.wait_event(ev("space.threshold", mnt, level=text, direction="below"),
                               what=f"below {text} on {mnt}")
            self.assertEqual(e["severity"], severity, e)
            d = e["detail"]
            self.assertEqual(d["resource"], "blocks")
            self.assertEqual(d["level_severity"], severity)
            self.assertEqual(d["total"] * d["block_size"], total)
            self.assertLess(d["avail"] * d["block_size"], total * float(text.rstrip("%")) / 100)
            self.assertEqual(e["fs"]["mounts"], [mnt])
            got.append(e)
        seqs = [e["seq"] for e in got]
        self.assertEqual(seqs, sorted(seqs), "levels reported out of order")
        return got

    def assert_once_each(self, mon, mnt, expected):
        """Every (level, direction) space.threshold event on mnt was seen exactly as often as
        `expected` says ({(level, direction): count}), and no other."""
        counts = {}
        for e in mon.events(ev("space.threshold", mnt)):
            key = (e["detail"]["level"], e["detail"]["direction"])
            counts[key] = counts.get(key, 0) + 1
        self.assertEqual(counts, expected, "space.threshold events seen")

    # ------------------------------------------------------------------------------------
    def test_ext4_fill_levels_enospc_hysteresis_and_back(self):
        fs = self.ext4()
        mnt = fs.mnt
        # The statfs backbone's space.enospc: with the eBPF probe on, the probe's event (sent the
        # moment the write fails) stands for it (tests/integration/enospc_test.py).
        d = self.daemon(swtest.test_config(rules={mnt: THREE_LEVELS}, extra=STATFS_ONLY))
        mon = d.monitor()
        st = d.wait_sample(mnt, 0)
        self.assertEqual(st["fstype"], "ext4")
        self.assertEqual([lv["crossed"] for lv in st["levels"]], [False, False, False])
        total = total_bytes(mnt)
        self.assertEqual(st["blocks_total"] * st["block_size"], total)
        fill = os.path.join(mnt, "fill")

        below = self.assert_below_sequence(
            mon, mnt, [("10%", "warning", 8), ("5%", "error", 3), ("1%", "critical", 0.5)],
            fill, total)

        self.assertEqual(fill_until_enospc(fill, mnt), 0)
        full = mon.wait_event(ev("space.enospc", mnt, kind="data"), what="space.enospc data")
        self.assertEqual(full["severity"], "error")
        self.assertEqual(full["source"], "statfs")
        self.assertEqual(full["detail"]["avail"], 0)
        self.assertGreater(full["seq"], below[-1]["seq"])
        st = d.fs_status(mnt)
        self.assertEqual([lv["crossed"] for lv in st["levels"]], [True, True, True])

        # Back to 10.5% free: past the 1% and 5% levels and their hysteresis (1% of the
        # size), but not past 10% + 1%: the 10% level stays crossed.
        swtest.set_free_bytes(fill, mnt, int(total * 10.5 / 100))
        up1 = mon.wait_event(ev("space.threshold", mnt, level="1%", direction="above"))
        up5 = mon.wait_event(ev("space.threshold", mnt, level="5%", direction="above"))
        self.assertLess(up1["seq"], up5["seq"], "most severe level first when going back up")
        self.assertEqual(up1["severity"], "info")
        d.wait_sample(mnt, time.time())
        mon.assert_no_event(ev("space.threshold", mnt, level="10%", direction="above"),
                            what="10% above inside its hysteresis")
        self.assertGreater(up1["seq"], full["seq"])

        # Past the hysteresis of 10%.
        swtest.set_free_bytes(fill, mnt, int(total * 12 / 100))
        up10 = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="above"))
        self.assertGreater(up10["seq"], up5["seq"])

        # Everything freed: no event repeats.
        os.unlink(fill)
        os.sync()
        t = time.time()
        st = d.wait_sample(mnt, t)
        self.assertGreater(st["blocks_avail"] * st["block_size"], total * 0.9)
        self.assertEqual([lv["crossed"] for lv in st["levels"]], [False, False, False])
        mon.sync()
        self.assert_once_each(mon, mnt, {(lv, dirn): 1 for lv in ("10%", "5%", "1%")
                                         for dirn in ("below", "above")})
        self.assertEqual(len(mon.events(ev("space.enospc"))), 1)

    def test_tmpfs_fill_levels_and_enospc(self):
        mnt = self.tmpfs(16 * MiB)
        d = self.daemon(swtest.test_config(rules={mnt: ["blocks<10%:warning", "blocks<5%:error"]}))
        mon = d.monitor()
        st = d.wait_sample(mnt, 0)
        self.assertEqual(st["fstype"], "tmpfs")
        total = total_bytes(mnt)
        self.assertEqual(total, 16 * MiB)
        fill = os.path.join(mnt, "fill")
        below = self.assert_below_sequence(mon, mnt, [("10%", "warning", 8), ("5%", "error", 3)],
                                           fill, total)
        self.assertEqual(fill_until_enospc(fill, mnt), 0)
        full = mon.wait_event(ev("space.enospc", mnt, kind="data"))
        self.assertGreater(full["seq"], below[-1]["seq"])

        os.unlink(fill)
        up5 = mon.wait_event(ev("space.threshold", mnt, level="5%", direction="above"))
        up10 = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="above"))
        self.assertLess(up5["seq"], up10["seq"])
        d.wait_sample(mnt, time.time())
        mon.sync()
        self.assert_once_each(mon, mnt, {(lv, dirn): 1 for lv in ("10%", "5%")
                                         for dirn in ("below", "above")})

    def test_jump_across_two_levels(self):
        fs = self.ext4()
        mnt = fs.mnt
        d = self.daemon(swtest.test_config(rules={mnt: THREE_LEVELS}))
        mon = d.monitor()
        d.wait_sample(mnt, 0)
        total = total_bytes(mnt)
        # One fallocate() from ~100% to 3% free: no sample can fall between the two levels.
        fd = os.open(os.path.join(mnt, "big"), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, swtest.free_bytes(mnt) - int(total * 0.03))
        finally:
            os.close(fd)
        self.assertGreater(swtest.free_bytes(mnt), total * 0.01)
        b10 = mon.wait_event(ev("space.threshold", mnt, level="10%", direction="below"))
        b5 = mon.wait_event(ev("space.threshold", mnt, level="5%", direction="below"))
        self.assertEqual(b5["seq"], b10["seq"] + 1, "both levels from one sample, in a row")
        self.assertEqual(b5["detail"]["avail"], b10["detail"]["avail"], "from one sample")
        self.assertEqual((b10["severity"], b5["severity"]), ("warning", "error"),
                         "most severe last")
        d.wait_sample(mnt, time.time())
        mon.assert_no_event(ev("space.threshold", mnt, level="1%"))
        self.assert_once_each(mon, mnt, {("10%", "below"): 1, ("5%", "below"): 1})

    def test_inode_levels_and_enospc_inodes(self):
        fs = self.ext4(mkfs_args=EXT4_ARGS + ("-N", "64"))
        mnt = fs.mnt
        sv = os.statvfs(mnt)
        self.assertLessEqual(sv.f_files, 128, "mkfs -N 64 should give few inodes")
        d = self.daemon(swtest.test_config(
            rules={mnt: ["inodes<50%:warning", "inodes<10%:error", "blocks<1%:critical"]}, extra=STATFS_ONLY))
        mon = d.monitor()
        st = d.wait_sample(mnt, 0)
        self.assertEqual(st["inodes_total"], sv.f_files)
        files = st["inodes_total"]
        level50 = files * 50 // 100
        self.assertGreaterEqual(st["inodes_avail"], level50, "starts above the 50% level")

        made = []

        def create(n):
            for _ in range(n):
                p = os.path.join(mnt, f"f{len(made)}")
                open(p, "w").close()
                made.append(p)

        # Down to just below half of the inodes free.
        create(os.statvfs(mnt).f_favail - (level50 - 1))
        self.assertEqual(os.statvfs(mnt).f_favail, level50 - 1)
        w = mon.wait_event(ev("space.threshold", mnt, resource="inodes", level="50%",
                              direction="below"))
        self.assertEqual(w["severity"], "warning")
        self.assertEqual(w["detail"]["total"], files)
        self.assertEqual(w["detail"]["avail"], level50 - 1)
        self.assertEqual(w["detail"]["level_inodes"], level50)

        # Exhaust the inodes.
        with self.assertRaises(OSError) as cm:
            create(files)
        self.assertEqual(cm.exception.errno, errno.ENOSPC)
        self.assertEqual(os.statvfs(mnt).f_favail, 0)
        e10 = mon.wait_event(ev("space.threshold", mnt, resource="inodes", level="10%",
                                direction="below"))
        full = mon.wait_event(ev("space.enospc", mnt, kind="inodes"))
        self.assertEqual(full["severity"], "error")
        self.assertEqual(full["detail"]["total"], files)
        self.assertLess(w["seq"], e10["seq"])
        self.assertLess(e10["seq"], full["seq"])
        # Plenty of blocks are left: no block level, no data ENOSPC.
        d.wait_sample(mnt, time.time())
        mon.assert_no_event(ev("space.enospc", mnt, kind="data"))
        mon.assert_no_event(ev("space.threshold", mnt, resource="blocks"))

        for p in made:
            os.unlink(p)
        mon.wait_event(ev("space.threshold", mnt, resource="inodes", level="10%",
                          direction="above"))
        mon.wait_event(ev("space.threshold", mnt, resource="inodes", level="50%",
                          direction="above"))


if __name__ == "__main__":
    swtest.main()
