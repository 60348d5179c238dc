#!/usr/bin/env python3
"""Block-layer I/O errors from the eBPF source (issue 7): a real storwatchd with its default
configuration loads a program on the block_rq_error tracepoint; a loop device backed by the FUSE
test filesystem's disk.img whose chosen byte ranges fail with EIO gives real failed requests.

- an O_DIRECT read of a failing sector gives one block.io_error (source ebpf) with the device,
  the exact sector and the request's length;
- a burst of 50 failing single-sector reads (five times what the kernel log prints per 5 s) gives
  folded events whose counts add up to exactly 50, at once, and nothing from the kernel log;
- ext4 on such a device: a lookup in a directory whose block cannot be read gives block.io_error
  (fs = that ext4) and the fs.error that follows;
- a write-zeroes request the device refuses (EOPNOTSUPP: the file under the loop device cannot do
  it), a discard, mkfs and mount (ext4's lazy init) on such a device give no block.io_error;
- with `[sources] ebpf_block = false` the daemon says so in source.unavailable (ebpf-block) and
  block.io_error comes from the kernel log.

Needs root, loop devices, FUSE and the test filesystem, mkfs.ext4 and debugfs, and a storwatchd
that can load BPF here (exits 77 with the daemon's reason when it cannot).
"""

import errno
import fcntl
import json
import os
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402
from test_block import KMSG_CONFIG, BlockCase, dev_numbers, on_device, read_sector  # noqa: E402

MiB = 1 << 20
BLKDISCARD = 0x1277
BLKZEROOUT = 0x127F


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_fuse()
    swtest.require_testfs()
    swtest.require_cmd("losetup", "mkfs.ext4", "debugfs", "mount", "umount")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def at_sector(dev, sector):
    def pred(e):
        return on_device(dev)(e) and e["detail"]["sector"] == sector
    pred.__name__ = f"block.io_error on {os.path.basename(dev)} at sector {sector}"
    return pred


def history(d):
    rc, out, err = d.cli("history", "--json", "--after", "0")
    if rc != 0:
        raise AssertionError(f"storwatch history failed: {err}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class BlockBpfTest(BlockCase):

    def bpf_daemon(self):
        """A daemon with the default sources; skips when it could not load the eBPF source."""
        d = self.daemon()
        # The manager logs the reason before the daemon answers on its socket.
        why = [line for line in d.stderr().splitlines() if "ebpf-block:" in line]
        if why:
            self.skipTest(f"storwatchd cannot run its eBPF block source here: {why[0]}")
        return d

    def doctor_entry(self, d):
        entries = [s for s in d.cli_json("doctor")["sources"] if s["name"] == "ebpf-block"]
        self.assertEqual(len(entries), 1, entries)
        return entries[0]

    def test_1_failing_sector_gives_the_exact_sector(self):
        tfs, dev = self.failing_loop()
        d = self.bpf_daemon()
        mon = d.monitor()
        sector = 20000 + 3  # not page-aligned: the sector of the request, not of the page
        tfs.control(f"eio {sector * 512} 512")
        self.assertEqual(read_sector(dev, sector), errno.EIO)
        e = mon.wait_event(on_device(dev), what=f"block.io_error on {dev}")
        self.check_device(e, dev)
        self.assertEqual(e["source"], "ebpf", e)
        self.assertEqual(e["severity"], "error", e)
        self.assertEqual(e["count"], 1, e)
        self.assertEqual(e["detail"]["sector"], sector, e)
        self.assertEqual(e["detail"]["sectors"], 1, e)
        self.assertEqual(e["detail"]["requests"], 1, e)
        self.assertNotIn("suppressed", e["detail"], e)
        self.assertEqual(e["detail"]["op"], "READ", e)
        self.assertEqual(e["detail"]["subtype"], "io", e)
        self.assertEqual(e["detail"]["errno"], errno.EIO, e)
        self.assertEqual(e["detail"]["error"], "EIO", e)
        self.assertNotIn("fs", e, "nothing is mounted from this device")
        mon.assert_no_event(lambda x: on_device(dev)(x) and x["seq"] != e["seq"],
                            what="a second block.io_error (the kernel log's line reported again)")
        probe = self.doctor_entry(d)
        self.assertTrue(probe["available"], probe)
        self.assertEqual(probe["types"], ["block.io_error"], probe)
        self.assertGreaterEqual(probe["counters"]["failed_requests"], 1, probe)
        self.assertEqual(probe["counters"]["lost"], 0, probe)

    def test_2_burst_counts_add_up_exactly(self):
        tfs, dev = self.failing_loop()
        d = self.bpf_daemon()
        mon = d.monitor()
        first, n = 8192, 50  # every sector's read is its own failing request
        marker = 40960
        tfs.control(f"eio {first * 512} {n * 512}", f"eio {marker * 512} 512")
        for s in range(first, first + n):
            self.assertEqual(read_sector(dev, s), errno.EIO, f"sector {s}")
        # The marker is far from the burst: its report closes the burst's range, so once the
        # marker's event is out, every event of the burst is too.
        self.assertEqual(read_sector(dev, marker), errno.EIO)
        m = mon.wait_event(at_sector(dev, marker), what=f"the marker's block.io_error on {dev}")
        self.assertEqual(m["count"], 1, m)
        mon.sync()
        evs = mon.events(on_device(dev))
        burst = sorted((e for e in evs if e["detail"]["sector"] != marker), key=lambda e: e["detail"]["sector"])
        print(f"\n  burst of {n}: {len(burst)} event(s), ranges "
              f"{[(e['detail']['sector'], e['detail']['sectors'], e['count']) for e in burst]}", file=sys.stderr)
        for e in evs:
            self.assertEqual(e["source"], "ebpf", f"only the eBPF source reports block errors: {e}")
            self.assertNotIn("suppressed", e["detail"], e)
            self.assertEqual(e["count"], e["detail"]["requests"], e)
        self.assertEqual(sum(e["count"] for e in burst), n, burst)
        # Folded: a few contiguous ranges covering exactly the failing sectors (a second per event
        # at most, so a slow machine may need more than one).
        self.assertLessEqual(len(burst), 5, f"a burst is folded, not one event per request: {burst}")
        at = first
        for e in burst:
            self.assertEqual(e["detail"]["sector"], at, burst)
            self.assertEqual(e["detail"]["sectors"], e["count"], e)  # one sector per request
            at += e["detail"]["sectors"]
        self.assertEqual(at, first + n, burst)

    def test_3_ext4_gives_block_error_and_fs_error(self):
        tfs, dev = self.failing_loop()
        mnt, sub, block, bsize = self.ext4_with_directory(tfs, dev, "swtest-blockbpf-")
        sector = block * bsize // 512
        d = self.bpf_daemon()
        mon = d.monitor()
        tfs.control(f"eio {block * bsize} {bsize}")
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        # A lookup in the directory: ext4_find_entry cannot read its block and calls ext4_error.
        with self.assertRaises(OSError):
            os.stat(os.path.join(sub, "f0"))
        e = mon.wait_event(on_device(dev), what=f"block.io_error on {dev}")
        self.check_device(e, dev)
        self.assertEqual(e["source"], "ebpf", e)
        self.assertGreaterEqual(e["detail"]["sector"], sector, e)
        self.assertLessEqual(e["detail"]["sector"] + e["detail"]["sectors"], sector + bsize // 512, e)
        self.assertEqual(e["detail"]["op"], "READ", e)
        self.assertEqual(e["fs"]["source"], dev, e)
        self.assertEqual(e["fs"]["fstype"], "ext4", e)
        self.assertIn(mnt, e["fs"]["mounts"], e)
        f = mon.wait_event(swtest.event_matcher("fs.error", mnt), what=f"fs.error on {mnt}")
        self.assertEqual(f["fs"]["source"], dev, f)

    def test_4_mkfs_and_discard_give_no_media_errors(self):
        tfs, dev = self.failing_loop()
        d = self.bpf_daemon()
        mon = d.monitor()
        # The loop device offers write-zeroes, but the file under it cannot do it: the first
        # WRITE_ZEROES request fails with BLK_STS_NOTSUPP, the loop driver stops offering it and
        # the kernel writes zeroes instead (so the ioctl works).
        zeroes = f"/sys/class/block/{os.path.basename(dev)}/queue/write_zeroes_max_bytes"
        fd = os.open(dev, os.O_WRONLY)
        try:
            fcntl.ioctl(fd, BLKZEROOUT, struct.pack("QQ", 0, MiB))
            fcntl.ioctl(fd, BLKDISCARD, struct.pack("QQ", MiB, MiB))
        finally:
            os.close(fd)
        with open(zeroes) as f:
            self.assertEqual(f.read().strip(), "0", "the device refused a WRITE_ZEROES request")
        swtest.mkfs(dev, "ext4")  # discards
        mnt = swtest.tempdir(prefix="swtest-blockbpf-", cleanup=self.cleanup)
        swtest.mount(dev, mnt, "ext4", cleanup=self.cleanup)  # lazy init: write-zeroes
        swtest.fill_file(os.path.join(mnt, "f"), MiB)
        # A real error as a marker: once it is out, the requests before it have been handled.
        marker = 131000
        tfs.control(f"eio {marker * 512} 512")
        self.assertEqual(read_sector(dev, marker), errno.EIO)
        e = mon.wait_event(at_sector(dev, marker), what=f"the marker's block.io_error on {dev}")
        self.assertEqual(e["source"], "ebpf", e)
        mon.assert_no_event(lambda x: on_device(dev)(x) and x["detail"]["sector"] != marker,
                            what="block.io_error from a discard, mkfs or mount")

    def test_5_turned_off_falls_back_to_the_kernel_log(self):
        tfs, dev = self.failing_loop()
        d = self.daemon(KMSG_CONFIG)
        mon = d.monitor()

        def unavailable():
            return [e for e in history(d) if e["type"] == "source.unavailable"
                    and e["detail"].get("source") == "ebpf-block"]
        swtest.wait_for(unavailable, 10, "source.unavailable for ebpf-block in the journal")
        u = unavailable()[0]
        self.assertEqual(u["source"], "ebpf", u)
        self.assertIn("ebpf_block", u["detail"]["reason"], u)
        self.assertIn("kernel log", u["detail"]["reason"], u)
        probe = self.doctor_entry(d)
        self.assertFalse(probe["available"], probe)
        self.assertEqual(probe["reason"], u["detail"]["reason"], probe)
        sector = 30000
        tfs.control(f"eio {sector * 512} 512")
        # The kernel log's rate limit is shared by the whole machine: wait for the line, which
        # may come only after the kernel's 5 s interval.
        for _ in range(3):
            self.assertEqual(read_sector(dev, sector), errno.EIO)
            try:
                e = mon.wait_event(at_sector(dev, sector), timeout=6,
                                   what=f"block.io_error from the kernel log on {dev}")
                break
            except AssertionError:
                continue
        else:
            self.fail("no block.io_error from the kernel log after three failed reads 6 s apart")
        self.assertEqual(e["source"], "kmsg", e)
        self.check_device(e, dev)


if __name__ == "__main__":
    swtest.main()
