#!/usr/bin/env python3
"""Self-test of the integration-test harness (swtest) and of storwatch-testfs.

Needs root, /dev/fuse, loop devices and mkfs.ext4; exits 77 ("SKIP: ...")
otherwise.  The storwatch-testfs binary is taken from $STORWATCH_TESTFS or
found in a build directory of the source tree.

    sudo STORWATCH_TESTFS=build/tests/support/testfs/storwatch-testfs \\
        python3 tests/integration/test_testfs.py
"""

import errno
import mmap
import os
import subprocess
import sys
import threading

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
SECTOR = 512


def setUpModule():
    swtest.require_root()
    swtest.require_fuse()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "e2fsck", "mount", "umount", "dd")
    swtest.require_testfs()


def o_direct_pread(fd, offset, length=4096):
    """pread with an mmap'ed (page-aligned) buffer, as O_DIRECT requires."""
    buf = mmap.mmap(-1, max(length, mmap.PAGESIZE))
    try:
        n = os.preadv(fd, [memoryview(buf)[:length]], offset)
        return bytes(buf[:n])
    finally:
        buf.close()


def o_direct_pwrite(fd, offset, data):
    buf = mmap.mmap(-1, max(len(data), mmap.PAGESIZE))
    try:
        buf[:len(data)] = data
        return os.pwritev(fd, [memoryview(buf)[:len(data)]], offset)
    finally:
        buf.close()


def pattern(offset, length):
    """Recognisable content: each 512-byte sector filled with its number."""
    out = bytearray()
    for sector in range(offset // SECTOR, (offset + length) // SECTOR):
        out += (b"%08d" % sector) * (SECTOR // 8)
    return bytes(out)


class HarnessMixin:
    def assert_released(self, fs, devs=(), mounts=()):
        """Nothing of `fs` (loop devices, mounts, process, temp dir) is left."""
        losetup = swtest.run(["losetup", "-a"]).stdout
        for dev in devs:
            # (a concurrently running test may already reuse the device)
            backing = swtest.loop_backing_file(dev) or ""
            self.assertFalse(backing.startswith(os.path.dirname(fs.mnt)), f"{dev} still attached")
        self.assertNotIn(fs.mnt, losetup)
        self.assertEqual(swtest.loop_devices_for(fs.mnt), [])
        with open("/proc/self/mountinfo") as f:
            table = f.read()
        for m in list(mounts) + [fs.mnt]:
            self.assertNotIn(" " + m + " ", table, f"{m} still mounted")
        self.assertIsNotNone(fs.proc.poll(), "storwatch-testfs still running")
        self.assertFalse(os.path.exists(os.path.dirname(fs.mnt)), "temp dir left behind")


class TestHarness(swtest.TestCase):
    timeout = 60

    def test_wait_for(self):
        self.assertEqual(swtest.wait_for(lambda: 42, 1, "constant"), 42)
        with self.assertRaisesRegex(AssertionError, "timed out waiting for: never true"):
            swtest.wait_for(lambda: False, 0.2, "never true")

    def test_cleanup_runs_everything_in_reverse(self):
        order = []
        cl = swtest.Cleanup()
        cl.push(order.append, 1)
        cl.push(lambda: 1 / 0)
        cl.push(order.append, 3)
        with self.assertRaises(swtest.CleanupError):
            cl.close()
        self.assertEqual(order, [3, 1])

    def test_loopfs_ext4_fill(self):
        with swtest.LoopFs("ext4", size=32 * MiB) as lfs:
            self.assertTrue(swtest.is_mounted(lfs.mnt))
            self.assertEqual(swtest.loop_backing_file(lfs.dev), lfs.image)
            before = swtest.free_bytes(lfs.mnt)
            n = swtest.fill_file(os.path.join(lfs.mnt, "fill"), 64 * MiB)
            self.assertGreater(n, 16 * MiB)
            self.assertLess(n, 32 * MiB)
            self.assertLess(swtest.free_bytes(lfs.mnt), before - 16 * MiB)
            dev, mnt, d = lfs.dev, lfs.mnt, lfs.dir
        self.assertNotEqual(swtest.loop_backing_file(dev), lfs.image)
        self.assertFalse(swtest.is_mounted(mnt))
        self.assertFalse(os.path.exists(d))

    def test_loopfs_other_types(self):
        for fstype in ("xfs", "btrfs"):
            with self.subTest(fstype=fstype):
                if swtest.which(f"mkfs.{fstype}") is None or not swtest._kernel_has_fs(fstype):
                    self.skipTest(f"{fstype} not available")
                with swtest.LoopFs(fstype) as lfs:
                    with open(os.path.join(lfs.mnt, "f"), "w") as f:
                        f.write("x")
                    self.assertGreater(swtest.free_bytes(lfs.mnt), 0)
                    dev = lfs.dev
                self.assertNotEqual(swtest.loop_backing_file(dev), lfs.image)

    def test_tmpfs_and_bind_mount(self):
        with swtest.Cleanup() as cl:
            d = swtest.tempdir(cleanup=cl)
            a, b = os.path.join(d, "a"), os.path.join(d, "b")
            os.mkdir(a)
            os.mkdir(b)
            swtest.mount_tmpfs(a, 4 * MiB, cleanup=cl)
            swtest.bind_mount(a, b, cleanup=cl)
            with open(os.path.join(a, "f"), "w") as f:
                f.write("hi")
            with open(os.path.join(b, "f")) as f:
                self.assertEqual(f.read(), "hi")
            self.assertEqual(swtest.fill_file(os.path.join(b, "big"), 16 * MiB) // MiB, 3)
        self.assertFalse(os.path.exists(d))


class TestTestFs(HarnessMixin, swtest.TestCase):
    timeout = 120

    def test_mkfs_ext4_on_loop_device(self):
        with swtest.Cleanup() as cl:
            fs = cl.enter(swtest.TestFs(image_size=64 * MiB))
            self.assertEqual(sorted(os.listdir(fs.mnt)), ["control", "data", "disk.img"])
            self.assertEqual(os.stat(fs.image).st_size, 64 * MiB)
            dev = swtest.loop_attach(fs.image, cleanup=cl)
            swtest.mkfs(dev, "ext4")
            inner = swtest.tempdir(cleanup=cl)
            swtest.mount(dev, inner, "ext4", cleanup=cl)
            with open(os.path.join(inner, "hello"), "wb") as f:
                f.write(b"hello world\n" * 1000)
                os.fsync(f.fileno())
            swtest.umount(inner)
            swtest.run(["e2fsck", "-fn", dev])
            swtest.mount(dev, inner, "ext4", cleanup=cl)
            with open(os.path.join(inner, "hello"), "rb") as f:
                self.assertEqual(f.read(), b"hello world\n" * 1000)
        self.assert_released(fs, [dev], [inner])

    def test_eio_ranges_through_loop_device(self):
        bad = 1 * MiB + 4096  # one 4 KiB block of the image
        for direct_io in (False, True):
            with self.subTest(loop_direct_io=direct_io), swtest.Cleanup() as cl:
                fs = cl.enter(swtest.TestFs(image_size=16 * MiB))
                fd = os.open(fs.image, os.O_WRONLY)
                os.pwrite(fd, pattern(0, 4 * MiB), 0)
                os.close(fd)
                dev = swtest.loop_attach(fs.image, direct_io=direct_io, cleanup=cl)
                fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
                cl.push(os.close, fd)

                # Read everything once, so any cache along the way is warm.
                for off in (0, bad - 4096, bad, bad + 4096):
                    self.assertEqual(o_direct_pread(fd, off), pattern(off, 4096))

                fs.control(f"eio {bad} 4096")
                self.assertIn(f"eio {bad} 4096", fs.settings())
                with self.assertRaises(OSError) as cm:
                    o_direct_pread(fd, bad)
                self.assertEqual(cm.exception.errno, errno.EIO)
                # Any read overlapping the range fails, its neighbours work.
                with self.assertRaises(OSError):
                    o_direct_pread(fd, bad + 4096 - SECTOR, SECTOR)
                self.assertEqual(o_direct_pread(fd, bad - SECTOR, SECTOR),
                                 pattern(bad - SECTOR, SECTOR))
                self.assertEqual(o_direct_pread(fd, bad + 4096), pattern(bad + 4096, 4096))
                self.assertEqual(o_direct_pread(fd, 0), pattern(0, 4096))
                self.assertGreaterEqual(fs.counter("read-eio-hits"), 2)
                # The same with dd, as a shell test would do it.
                p = swtest.run(["dd", f"if={dev}", "of=/dev/null", "bs=4096", f"skip={bad // 4096}",
                                "count=1", "iflag=direct"], check=False)
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("Input/output error", p.stderr)
                swtest.run(["dd", f"if={dev}", "of=/dev/null", "bs=4096", "skip=0", "count=1",
                            "iflag=direct"])
                # The image file itself fails the same way.
                with open(fs.image, "rb") as f:
                    with self.assertRaises(OSError) as cm:
                        os.pread(f.fileno(), 4096, bad)
                    self.assertEqual(cm.exception.errno, errno.EIO)

                # Write errors.
                wfd = os.open(dev, os.O_RDWR | os.O_DIRECT)
                cl.push(os.close, wfd)
                fs.control(f"eio-write {2 * MiB} {SECTOR}")
                with self.assertRaises(OSError) as cm:
                    o_direct_pwrite(wfd, 2 * MiB, b"\x00" * 4096)
                self.assertEqual(cm.exception.errno, errno.EIO)
                self.assertEqual(o_direct_pwrite(wfd, 3 * MiB, b"\x11" * 4096), 4096)

                fs.control("clear")
                self.assertNotIn("eio", fs.settings().replace("# read-eio-hits", "").replace(
                    "# write-eio-hits", ""))
                self.assertEqual(o_direct_pread(fd, bad), pattern(bad, 4096))
                self.assertEqual(o_direct_pwrite(wfd, 2 * MiB, b"\x22" * 4096), 4096)
                self.assertEqual(o_direct_pread(fd, 2 * MiB), b"\x22" * 4096)
                self.assertEqual(o_direct_pread(fd, 3 * MiB), b"\x11" * 4096)
            self.assert_released(fs, [dev])

    def test_statfs_block_released_by_abort(self):
        with swtest.Cleanup() as cl:
            fs = cl.enter(swtest.TestFs())
            st = os.statvfs(fs.mnt)
            self.assertEqual(st.f_bsize, 4096)
            fs.control("statfs-block on")
            child = subprocess.Popen(
                [sys.executable, "-c", "import os, sys; os.statvfs(sys.argv[1])", fs.mnt],
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            cl.push(swtest.terminate_process, child, 1.0, 5.0, 9)
            swtest.wait_for(lambda: fs.counter("statfs-blocked-now") == 1, 10, "statfs to block")
            self.assertGreaterEqual(fs.waiting(), 1)
            self.assertIsNone(child.poll())
            # The rest of the file system keeps working.
            self.assertEqual(sorted(os.listdir(fs.mnt)), ["control", "data", "disk.img"])
            self.assertIn("disk.img", swtest.run(["ls", fs.mnt], timeout=10).stdout)
            with open(os.path.join(fs.data, "f"), "w") as f:
                f.write("still alive")
            self.assertIsNone(child.poll())

            fs.abort()
            swtest.wait_for(lambda: child.poll() is not None, 10, "statvfs to fail after abort")
            _, err = child.communicate(timeout=10)
            self.assertNotEqual(child.returncode, 0)
            self.assertRegex(err, "ConnectionAbortedError|Transport endpoint is not connected")
            # The daemon notices the abort and exits by itself.
            swtest.wait_for(lambda: fs.proc.poll() is not None, 10, "testfs to exit after abort")
        self.assert_released(fs)

    def test_statfs_block_released_by_off(self):
        with swtest.Cleanup() as cl:
            fs = cl.enter(swtest.TestFs(data_size=8 * MiB))
            result = {}

            def do_statvfs():
                try:
                    result["st"] = os.statvfs(fs.mnt)
                except OSError as e:
                    result["err"] = e
            fs.control("statfs-block on")
            t = threading.Thread(target=do_statvfs, daemon=True)
            t.start()
            swtest.wait_for(lambda: fs.counter("statfs-blocked-now") == 1, 10, "statfs to block")
            self.assertTrue(t.is_alive())
            self.assertIn("statfs-block on", fs.settings())
            fs.control("statfs-block off")
            t.join(10)
            self.assertFalse(t.is_alive())
            st = result["st"]
            self.assertEqual((st.f_bsize, st.f_frsize), (4096, 4096))
            self.assertEqual(st.f_bavail * st.f_frsize, 8 * MiB)
            self.assertEqual(st.f_blocks, (64 * MiB + 8 * MiB) // 4096)

            # statfs-errno
            fs.control("statfs-errno EIO")
            with self.assertRaises(OSError) as cm:
                os.statvfs(fs.mnt)
            self.assertEqual(cm.exception.errno, errno.EIO)
            fs.control("statfs-errno none")
            os.statvfs(fs.mnt)

            # Left blocked on purpose: TestFs's exit must still be clean.
            fs.control("statfs-block on")
            t2 = threading.Thread(target=do_statvfs, daemon=True)
            t2.start()
            swtest.wait_for(lambda: fs.counter("statfs-blocked-now") == 1, 10, "statfs to block")
        t2.join(10)
        self.assertFalse(t2.is_alive())
        self.assert_released(fs)

    def test_data_dir_and_write_errno(self):
        with swtest.Cleanup() as cl:
            fs = cl.enter(swtest.TestFs(data_size=4 * MiB))
            p = os.path.join(fs.data, "f")
            with open(p, "wb") as f:
                f.write(b"hello")
            with open(p, "rb") as f:
                self.assertEqual(f.read(), b"hello")

            for name, code in (("EDQUOT", errno.EDQUOT), ("ENOSPC", errno.ENOSPC),
                               ("EIO", errno.EIO)):
                fs.control(f"write-errno {name}")
                with open(p, "ab", buffering=0) as f:
                    with self.assertRaises(OSError) as cm:
                        f.write(b" world")
                    self.assertEqual(cm.exception.errno, code, name)
            self.assertGreaterEqual(fs.counter("write-errno-hits"), 3)
            fs.control("write-errno none")
            with open(p, "ab", buffering=0) as f:
                f.write(b" world")
            with open(p, "rb") as f:
                self.assertEqual(f.read(), b"hello world")

            # Directory operations.
            os.makedirs(os.path.join(fs.data, "a", "b"))
            os.rename(p, os.path.join(fs.data, "a", "b", "g"))
            self.assertEqual(os.listdir(os.path.join(fs.data, "a", "b")), ["g"])
            with self.assertRaises(OSError) as cm:
                os.rmdir(os.path.join(fs.data, "a"))
            self.assertEqual(cm.exception.errno, errno.ENOTEMPTY)
            # An unlinked file stays usable while open.
            g = os.path.join(fs.data, "a", "b", "g")
            with open(g, "rb") as f:
                os.unlink(g)
                self.assertEqual(f.read(), b"hello world")
            os.rmdir(os.path.join(fs.data, "a", "b"))
            os.rmdir(os.path.join(fs.data, "a"))
            self.assertEqual(os.listdir(fs.data), [])
            with self.assertRaises(OSError) as cm:
                open(os.path.join(fs.mnt, "toplevel"), "w")
            self.assertEqual(cm.exception.errno, errno.EACCES)

            # Capacity of /data: fill_file stops at ENOSPC.
            n = swtest.fill_file(os.path.join(fs.data, "fill"), 16 * MiB)
            self.assertEqual(n, 4 * MiB)
            self.assertEqual(swtest.free_bytes(fs.data), 0)
            os.unlink(os.path.join(fs.data, "fill"))
            self.assertEqual(swtest.free_bytes(fs.data), 4 * MiB)
        self.assert_released(fs)

    def test_backing_file(self):
        with swtest.Cleanup() as cl:
            d = swtest.tempdir(cleanup=cl)
            backing = os.path.join(d, "backing.img")
            fs = cl.enter(swtest.TestFs(image_size=8 * MiB, backing=backing))
            self.assertEqual(os.stat(backing).st_size, 8 * MiB)
            with open(fs.image, "r+b") as f:
                f.seek(5 * MiB)
                f.write(b"through fuse")
                os.fsync(f.fileno())
            with open(backing, "rb") as f:
                f.seek(5 * MiB)
                self.assertEqual(f.read(12), b"through fuse")
            os.truncate(fs.image, 12 * MiB)
            self.assertEqual(os.stat(backing).st_size, 12 * MiB)
            self.assertIn(f"# image-size {12 * MiB}\n", fs.settings())
        self.assert_released(fs)

    def test_control_rejects_bad_commands(self):
        with swtest.Cleanup() as cl:
            fs = cl.enter(swtest.TestFs())
            for bad in ("bogus", "eio 1", "eio x 4", "eio 0 0", "statfs-block maybe",
                        "write-errno ENOTANERRNO", "clear now"):
                with self.subTest(cmd=bad):
                    with self.assertRaises(OSError) as cm:
                        fs.control(bad)
                    self.assertEqual(cm.exception.errno, errno.EINVAL)
            # A batch is applied all-or-nothing.
            with self.assertRaises(OSError):
                fs.control("eio 0 512\nbogus")
            self.assertNotIn("\neio ", fs.settings())
            fs.control("eio 0 512\neio-write 4K 1M\nwrite-errno EDQUOT", "statfs-block off")
            s = fs.settings()
            self.assertIn("eio 0 512\n", s)
            self.assertIn(f"eio-write 4096 {MiB}\n", s)
            self.assertIn("write-errno EDQUOT\n", s)
            # Shell style: echo ... > control
            swtest.run(["sh", "-c", f"echo clear > '{fs.control_path}'"])
            s = fs.settings()
            self.assertNotIn("eio 0 512", s)
            self.assertIn("write-errno none\n", s)
            self.assertIn("statfs-block off\n", s)
            self.assertTrue(fs.alive)
        self.assert_released(fs)

    def test_cleanup_after_failure(self):
        """A test failing half-way still releases loop device, mounts and FUSE."""
        with self.assertRaises(ZeroDivisionError):
            with swtest.Cleanup() as cl:
                fs = cl.enter(swtest.TestFs())
                dev = swtest.loop_attach(fs.image, cleanup=cl)
                swtest.mkfs(dev, "ext4")
                inner = swtest.tempdir(cleanup=cl)
                swtest.mount(dev, inner, cleanup=cl)
                keep_open = open(os.path.join(inner, "busy"), "w")
                cl.push(keep_open.close)
                fs.control("statfs-block on")
                1 / 0
        self.assert_released(fs, [dev], [inner])


if __name__ == "__main__":
    swtest.main()
