#!/usr/bin/env python3
"""Block-layer I/O errors and block device events end to end (issue 7): a real storwatchd, a
loop device backed by the FUSE test filesystem's disk.img whose chosen byte ranges fail with EIO.

The block error tests here are of the kernel log fallback: the daemon runs with
`[sources] ebpf_block = false` (test_block_bpf.py tests the eBPF source, the default).

- an O_DIRECT read of a failing sector gives block.io_error with the device and the exact sector;
- a burst over a range gives folded events; the kernel log prints at most 10 such lines per 5 s
  (printk_ratelimited in blk_print_req_error), so the counts are completed by the "N callbacks
  suppressed" line the kernel prints before its next line: after the burst, one more failing read
  (5 s later) must make the counts add up to exactly the failed requests;
- ext4 on such a device: a lookup in a directory whose block cannot be read gives block.io_error
  (fs = that ext4) and the fs.error that follows;
- loop attach / resize (truncate + losetup -c) / detach give device.changed, device.resized (new
  size), device.changed with media_change; a loop device created and removed through
  /dev/loop-control gives device.added and device.removed;
- mkfs and mount on such a device (discard and write-zeroes fail with EOPNOTSUPP) give no
  block.io_error.

Needs root, loop devices, FUSE and the test filesystem, mkfs.ext4 and debugfs. Exits 77 ("SKIP:
...") when it cannot run. Block errors of other processes on this machine during a test share the
kernel's rate limit and may shift the suppressed counts.
"""

import errno
import fcntl
import mmap
import os
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
RATELIMIT_INTERVAL = 5.0  # DEFAULT_RATELIMIT_INTERVAL of printk_ratelimited
# Other tests just before this one may have used up the interval: start as if an error just happened.
_last_error = [time.monotonic()]  # monotonic time of the last block error these tests caused


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_fuse()
    swtest.require_testfs()
    swtest.require_cmd("losetup", "mkfs.ext4", "debugfs", "mount", "umount", "truncate")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def quiet_block_log():
    """Waits until the kernel's block error rate limit has room again (a fresh 5 s interval)."""
    left = _last_error[0] + RATELIMIT_INTERVAL + 0.3 - time.monotonic()
    if left > 0:
        time.sleep(left)  # the kernel's interval: there is nothing to poll


def read_sector(dev, sector, size=512):
    """One O_DIRECT read at `sector`; returns the errno (0 when it worked)."""
    buf = mmap.mmap(-1, max(size, 4096))
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        os.preadv(fd, [memoryview(buf)[:size]], sector * 512)
        return 0
    except OSError as e:
        return e.errno
    finally:
        _last_error[0] = time.monotonic()
        os.close(fd)
        buf.close()


def dev_numbers(dev):
    st = os.stat(dev)
    return os.major(st.st_rdev), os.minor(st.st_rdev)


def on_device(dev, type_="block.io_error"):
    name = os.path.basename(dev)

    def pred(e):
        return e.get("type") == type_ and (e.get("device") or {}).get("name") == name
    pred.__name__ = f"{type_} on {name}"
    return pred


def count_sum(events):
    return sum(int(e.get("count", 1)) for e in events)


# The fallback under test: block.io_error from the kernel log, as without eBPF.
KMSG_CONFIG = swtest.test_config(extra="[sources]\nebpf_block = false\n")


class BlockCase(swtest.DaemonTestCase):
    """What the block tests share (also test_block_bpf.py's): a failing loop device and checks."""
    timeout = 240

    def failing_loop(self, image_size=64 * MiB):
        tfs = self.cleanup.enter(swtest.TestFs(image_size=image_size))
        dev = swtest.loop_attach(tfs.image, cleanup=self.cleanup)
        return tfs, dev

    def check_device(self, e, dev):
        maj, mnr = dev_numbers(dev)
        self.assertEqual(e["device"]["name"], os.path.basename(dev), e)
        self.assertEqual(e["device"]["major"], maj, e)
        self.assertEqual(e["device"]["minor"], mnr, e)
        self.assertEqual(e["device"]["dev"], f"{maj}:{mnr}", e)

    def ext4_with_directory(self, tfs, dev, prefix):
        """ext4 on `dev`, mounted, with a directory /dir of 4 files whose block is not cached.
        Returns (mount point, directory, its block, block size)."""
        swtest.mkfs(dev, "ext4", ["-E", "nodiscard"])
        mnt = swtest.tempdir(prefix=prefix, cleanup=self.cleanup)
        swtest.mount(dev, mnt, "ext4", cleanup=self.cleanup)
        self.cleanup.push(tfs.control, "clear")  # reads work again before the umount
        sub = os.path.join(mnt, "dir")
        os.mkdir(sub)
        for i in range(4):
            with open(os.path.join(sub, f"f{i}"), "w") as f:
                f.write("x")
        os.sync()
        # Mounted afresh: jbd2 no longer pins the directory's buffer, so the read goes to the device.
        swtest.umount(mnt)
        out = swtest.run(["debugfs", "-R", "blocks /dir", dev]).stdout.split()
        swtest.mount(dev, mnt, "ext4", cleanup=self.cleanup)
        self.cleanup.push(tfs.control, "clear")
        return mnt, sub, int(out[0]), os.statvfs(mnt).f_bsize


class BlockTest(BlockCase):
    def daemon(self, config=None, **kwargs):
        return super().daemon(KMSG_CONFIG if config is None else config, **kwargs)

    def test_1_failing_sector_gives_the_exact_sector(self):
        tfs, dev = self.failing_loop()
        d = self.daemon()
        mon = d.monitor()
        sector = 20000 + 3  # not page-aligned: the sector of the request, not of the page
        tfs.control(f"eio {sector * 512} 512")
        quiet_block_log()
        self.assertEqual(read_sector(dev, sector), errno.EIO)
        e = mon.wait_event(on_device(dev), what=f"block.io_error on {dev}")
        self.check_device(e, dev)
        self.assertEqual(e["source"], "kmsg", e)
        self.assertEqual(e["severity"], "error", e)
        self.assertEqual(e["detail"]["sector"], sector, e)
        self.assertEqual(e["detail"]["op"], "READ", e)
        self.assertEqual(e["detail"]["subtype"], "io", e)
        self.assertEqual(e["detail"]["errno"], errno.EIO, e)
        self.assertEqual(e["detail"]["error"], "EIO", e)
        self.assertEqual(e["detail"]["requests"], 1, e)
        self.assertEqual(e["count"], 1 + e["detail"].get("suppressed", 0), e)
        self.assertNotIn("fs", e, "nothing is mounted from this device")

    def test_2_burst_is_folded_and_counts_add_up(self):
        tfs, dev = self.failing_loop()
        d = self.daemon()
        mon = d.monitor()
        first, n = 8192, 24  # three pages of the FUSE file: every sector's read fails on its own
        marker = 40960
        tfs.control(f"eio {first * 512} {n * 512}", f"eio {marker * 512} 512")
        quiet_block_log()
        for s in range(first, first + n):
            self.assertEqual(read_sector(dev, s), errno.EIO, f"sector {s}")
        burst = mon.wait_event(on_device(dev), what=f"block.io_error on {dev}")
        self.assertEqual(burst["detail"]["sector"], first, burst)
        # What the kernel printed of the burst is out as few events (at most 10 lines per 5 s
        # reach the log); the rest is counted in the "callbacks suppressed" line the kernel prints
        # right before its next line, here the marker's, 5 s later.
        time.sleep(0.5)  # let the merge window close (nothing to poll for "no more lines")
        quiet_block_log()
        self.assertEqual(read_sector(dev, marker), errno.EIO)
        m = mon.wait_event(lambda e: on_device(dev)(e) and e["detail"]["sector"] == marker,
                           what=f"the marker's block.io_error on {dev}")
        mon.sync()
        evs = mon.events(on_device(dev))
        burst_evs = [e for e in evs if e["detail"]["sector"] != marker]
        printed = sum(e["detail"]["requests"] for e in burst_evs)
        self.assertGreaterEqual(printed, 1)
        self.assertLessEqual(printed, 10, "the kernel prints at most 10 lines per 5 s")
        self.assertLess(len(burst_evs), printed + 1)
        if printed > 1:
            self.assertLessEqual(len(burst_evs), 2, f"a burst is folded, not one event per line: {burst_evs}")
        for e in burst_evs:
            self.assertGreaterEqual(e["detail"]["sector"], first, e)
            self.assertLess(e["detail"]["sector"] + e["detail"].get("sectors", 1), first + n + 1, e)
            self.assertEqual(e["count"], e["detail"]["requests"] + e["detail"].get("suppressed", 0), e)
        suppressed = m["detail"].get("suppressed", 0)
        print(f"\n  burst of {n}: {len(burst_evs)} event(s), {printed} printed, {suppressed} suppressed; "
              f"ranges {[(e['detail']['sector'], e['detail'].get('sectors'), e['count']) for e in burst_evs]}",
              file=sys.stderr)
        self.assertEqual(m["detail"]["requests"], 1, m)
        self.assertEqual(printed + suppressed, n,
                         f"printed {printed} + suppressed {suppressed} != {n} failed reads; events {evs}")
        self.assertEqual(count_sum(evs), n + 1, evs)

    def test_3_ext4_gives_block_error_and_fs_error(self):
        tfs, dev = self.failing_loop()
        mnt, sub, block, bsize = self.ext4_with_directory(tfs, dev, "swtest-block-")
        sector = block * bsize // 512
        d = self.daemon()
        mon = d.monitor()
        tfs.control(f"eio {block * bsize} {bsize}")
        quiet_block_log()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        # A lookup in the directory: ext4_find_entry cannot read its block and calls ext4_error
        # (readdir would only print a warning).
        with self.assertRaises(OSError):
            os.stat(os.path.join(sub, "f0"))
        _last_error[0] = time.monotonic()
        e = mon.wait_event(on_device(dev), what=f"block.io_error on {dev}")
        self.check_device(e, dev)
        self.assertGreaterEqual(e["detail"]["sector"], sector, e)
        self.assertLess(e["detail"]["sector"], sector + bsize // 512, e)
        self.assertEqual(e["detail"]["op"], "READ", e)
        self.assertEqual(e["fs"]["source"], dev, e)
        self.assertEqual(e["fs"]["fstype"], "ext4", e)
        self.assertIn(mnt, e["fs"]["mounts"], e)
        f = mon.wait_event(swtest.event_matcher("fs.error", mnt), what=f"fs.error on {mnt}")
        self.assertEqual(f["fs"]["source"], dev, f)

    def test_4_loop_attach_resize_detach_give_device_events(self):
        d = self.daemon()
        mon = d.monitor()
        tmp = swtest.tempdir(prefix="swtest-block-", cleanup=self.cleanup)
        image = swtest.make_image(os.path.join(tmp, "image"), 16 * MiB)
        dev = swtest.loop_attach(image, cleanup=self.cleanup)
        e = mon.wait_event(on_device(dev, "device.changed"), what=f"device.changed on attach of {dev}")
        self.check_device(e, dev)
        self.assertEqual(e["source"], "uevent", e)
        swtest.run(["truncate", "-s", str(32 * MiB), image])
        swtest.run(["losetup", "-c", dev])
        r = mon.wait_event(on_device(dev, "device.resized"), what=f"device.resized of {dev}")
        self.check_device(r, dev)
        self.assertEqual(r["detail"]["size"], 32 * MiB, r)
        swtest.loop_detach(dev)
        mon.wait_event(lambda x: on_device(dev, "device.changed")(x) and x["detail"].get("media_change") is True,
                       what=f"device.changed with media_change on detach of {dev}")

    def test_5_loop_control_add_and_remove(self):
        LOOP_CTL_ADD, LOOP_CTL_REMOVE = 0x4C80, 0x4C81
        d = self.daemon()
        mon = d.monitor()
        fd = os.open("/dev/loop-control", os.O_RDWR)
        self.cleanup.push(os.close, fd)
        num = None
        for cand in range(240, 250):
            if not os.path.exists(f"/sys/class/block/loop{cand}"):
                try:
                    num = fcntl.ioctl(fd, LOOP_CTL_ADD, cand)
                    break
                except OSError as e:
                    if e.errno != errno.EEXIST:
                        raise
        if num is None:
            self.skipTest("no free loop device number in 240..249")
        removed = [False]

        def remove():
            if not removed[0]:
                fcntl.ioctl(fd, LOOP_CTL_REMOVE, num)
        self.cleanup.push(remove)
        dev = f"/dev/loop{num}"
        a = mon.wait_event(on_device(dev, "device.added"), what=f"device.added of {dev}")
        self.assertEqual(a["device"]["major"], 7, a)
        self.assertEqual(a["device"]["minor"], num, a)
        self.assertEqual(a["detail"]["size"], 0, a)
        fcntl.ioctl(fd, LOOP_CTL_REMOVE, num)
        removed[0] = True
        mon.wait_event(on_device(dev, "device.removed"), what=f"device.removed of {dev}")

    def test_6_mkfs_gives_no_media_errors(self):
        tfs, dev = self.failing_loop()
        d = self.daemon()
        mon = d.monitor()
        swtest.mkfs(dev, "ext4")  # discards: EOPNOTSUPP on loop over FUSE
        mnt = swtest.tempdir(prefix="swtest-block-", cleanup=self.cleanup)
        swtest.mount(dev, mnt, "ext4", cleanup=self.cleanup)  # lazy init: write-zeroes
        swtest.fill_file(os.path.join(mnt, "f"), MiB)
        # A real error as a marker: once it is out, the lines before it have been handled.
        marker = 131000
        tfs.control(f"eio {marker * 512} 512")
        quiet_block_log()
        self.assertEqual(read_sector(dev, marker), errno.EIO)
        mon.wait_event(lambda e: on_device(dev)(e) and e["detail"]["sector"] == marker,
                       what=f"the marker's block.io_error on {dev}")
        mon.assert_no_event(lambda e: on_device(dev)(e) and e["detail"]["sector"] != marker,
                            what="block.io_error from mkfs or mount")


if __name__ == "__main__":
    swtest.main()
