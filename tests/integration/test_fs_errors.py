#!/usr/bin/env python3
"""Filesystem errors end to end (issue 4): a real storwatchd on a temporary socket and state
directory, real ext4, xfs and btrfs filesystems on loop devices, real kernel errors.

- ext4 trigger_fs_error: fs.error with the right device and errno, kernel-log details merged in;
  a flood of 100,000 errors gives events whose counts add up to exactly what errors_count rose by;
- errors=remount-ro: fs.readonly (cause emergency_ro) within a second, though the mount still
  says rw; umount works with the fanotify mark in place; a fresh mount gives fs.writable;
- debugfs corruption: a corrupted directory block gives fs.error with the directory's inode and
  path; a corrupted inode checksum gives fs.error with that inode;
- xfs corrupted with xfs_db and shut down with xfs_io; btrfs on a FUSE-backed loop device whose
  reads fail with EIO: fs.error from the kernel log, fs.shutdown and fs.readonly;
- errors while storwatchd was stopped are reported once at the next start, not again after that;
- status shows health and error counts.

Needs root, loop devices, mkfs.ext4 and debugfs; the xfs and btrfs tests also need their tools
(and btrfs the FUSE test filesystem). Exits 77 ("SKIP: ...") when nothing can run.
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


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "debugfs", "mount", "umount")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def ext4_dir(fs):
    return "/sys/fs/ext4/" + os.path.basename(fs.dev)


def errors_count(fs):
    with open(ext4_dir(fs) + "/errors_count") as f:
        return int(f.read())


def trigger(fs, n=1, message="storwatch test error"):
    """Raises n real ext4 errors (EUCLEAN) through sysfs."""
    fd = os.open(ext4_dir(fs) + "/trigger_fs_error", os.O_WRONLY)
    try:
        data = (message + "\n").encode()
        for _ in range(n):
            os.pwrite(fd, data, 0)
    finally:
        os.close(fd)


def dev_of(path):
    st = os.stat(path)
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def live_errors(mon, mnt):
    """fs.error events on `mnt` seen by the monitor, catch-up reports excluded."""
    return mon.events(lambda e: ev("fs.error", mnt)(e) and not (e.get("detail") or {}).get("catch_up"))


def count_sum(events):
    return sum(int(e.get("count", 1)) for e in events)


def history(d, after=0):
    rc, out, err = d.cli("history", "--json", "--after", str(after))
    if rc != 0:
        raise AssertionError(f"storwatch history failed: {err}")
    import json
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class FsErrorTest(swtest.DaemonTestCase):
    timeout = 240

    def ext4(self, options=None, size=64 * MiB):
        return self.cleanup.enter(swtest.LoopFs("ext4", size=size, options=options))

    def test_trigger_error_gives_fs_error_with_device_and_errno(self):
        fs = self.ext4()
        d = self.daemon()
        mon = d.monitor()
        trigger(fs, message="storwatch single error")
        e = mon.wait_event(ev("fs.error", fs.mnt), what=f"fs.error on {fs.mnt}")
        self.assertEqual(e["fs"]["source"], fs.dev, e)
        self.assertEqual(e["fs"]["dev"], dev_of(fs.dev), e)
        self.assertEqual(e["fs"]["fstype"], "ext4")
        self.assertEqual(e["detail"]["errno"], errno.EUCLEAN, e)
        self.assertEqual(e["detail"]["error"], "EUCLEAN")
        self.assertEqual(e["count"], 1)
        self.assertEqual(e["source"], "fanotify", e)
        # The kernel log's line is merged into the same event, not sent as another one.
        self.assertIn("kmsg", e["detail"]["sources"], e)
        self.assertEqual(e["detail"]["function"], "trigger_test_error", e)
        self.assertIn("storwatch single error", e["detail"]["message"])
        mon.assert_no_event(lambda x: ev("fs.error", fs.mnt)(x) and x["seq"] != e["seq"],
                            what="a second fs.error for one kernel error")

    def test_flood_counts_add_up_to_errors_count(self):
        fs = self.ext4()
        d = self.daemon()
        mon = d.monitor()
        before = errors_count(fs)
        n = 100_000
        trigger(fs, n, message="flood")
        swtest.wait_for(lambda: errors_count(fs) == before + n, 30, "errors_count to rise by 100000")
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) >= n, 30,
                        f"fs.error counts on {fs.mnt} to reach {n}")
        # One more error as a marker: everything about the flood is out once its count arrives,
        # and nothing may have been counted twice.
        trigger(fs, 1, message="marker")
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) >= n + 1, 30, "the marker error")
        mon.sync()
        evs = live_errors(mon, fs.mnt)
        self.assertEqual(count_sum(evs), errors_count(fs) - before,
                         f"{len(evs)} events: " + ", ".join(str(e["count"]) for e in evs))
        self.assertLess(len(evs), 200, "a flood is a few events, not one per error")
        st = d.fs_status(fs.mnt)
        self.assertEqual(st["error_count"], n + 1)
        self.assertEqual(st["kernel_error_count"], errors_count(fs))
        self.assertEqual(st["health"], "errors")

    def test_remount_ro_is_reported_within_a_second(self):
        fs = self.ext4(options="errors=remount-ro")
        d = self.daemon()
        mon = d.monitor()
        t0 = time.monotonic()
        trigger(fs, message="remount-ro test")
        e = mon.wait_event(ev("fs.readonly", fs.mnt), timeout=10, what=f"fs.readonly on {fs.mnt}")
        took = time.monotonic() - t0
        self.assertEqual(e["detail"]["cause"], "emergency_ro", e)
        self.assertLess(took, 1.0, f"fs.readonly came {took:.3f} s after the error")
        err = mon.wait_event(ev("fs.error", fs.mnt))
        self.assertLess(err["seq"], e["seq"], "the error comes before the read-only state it caused")
        # The trap: the mount still says rw, and writes fail.
        mi = [m for m in swtest.mountinfo() if m["mountpoint"] == fs.mnt]
        self.assertTrue(mi and "rw" in mi[0]["options"].split(","), mi)
        with self.assertRaises(OSError) as cm:
            with open(os.path.join(fs.mnt, "x"), "w") as f:
                f.write("x")
        self.assertEqual(cm.exception.errno, errno.EROFS)
        st = d.fs_status(fs.mnt)
        self.assertIn(st["health"], ("readonly", "shutdown"), st)
        self.assertTrue(st["read_only"])
        # The fanotify mark holds nothing: a plain umount works, and the device detaches.
        swtest.umount(fs.mnt, lazy_fallback=False)
        # A fresh mount accepts writes again.
        fs.mount()
        w = mon.wait_event(ev("fs.writable", fs.mnt), what=f"fs.writable on {fs.mnt}")
        self.assertGreater(w["seq"], e["seq"])
        swtest.wait_for(lambda: (d.fs_status(fs.mnt) or {}).get("health") in ("ok", "errors"), 10,
                        "health to leave readonly")
        with open(os.path.join(fs.mnt, "x"), "w") as f:
            f.write("x")

    def test_corrupted_directory_gives_inode_and_path(self):
        fs = self.ext4()
        broken = os.path.join(fs.mnt, "a", "broken")
        os.makedirs(broken)
        for i in range(3):
            with open(os.path.join(broken, f"f{i}"), "w") as f:
                f.write("x")
        ino = os.stat(broken).st_ino
        fs.umount()
        swtest.run(["debugfs", "-w", "-R", "zap_block -f /a/broken -p 0x55 0", fs.dev])
        fs.mount()
        d = self.daemon()
        mon = d.monitor()
        with self.assertRaises(OSError) as cm:
            os.listdir(broken)
        self.assertEqual(cm.exception.errno, errno.EBADMSG)
        e = mon.wait_event(ev("fs.error", fs.mnt), what=f"fs.error on {fs.mnt}")
        self.assertEqual(e["detail"]["inode"], ino, e)
        self.assertEqual(e["detail"]["path"], broken, e)
        self.assertEqual(e["detail"]["errno"], errno.EBADMSG, e)

    def test_corrupted_inode_gives_its_inode(self):
        fs = self.ext4()
        os.mkdir(os.path.join(fs.mnt, "dir"))
        victim = os.path.join(fs.mnt, "dir", "victim")
        with open(victim, "w") as f:
            f.write("data")
        ino = os.stat(victim).st_ino
        fs.umount()
        swtest.run(["debugfs", "-w", "-R", "set_inode_field /dir/victim checksum 0xdead", fs.dev])
        fs.mount()
        d = self.daemon()
        mon = d.monitor()
        with self.assertRaises(OSError) as cm:
            os.stat(victim)
        self.assertEqual(cm.exception.errno, errno.EBADMSG)
        e = mon.wait_event(ev("fs.error", fs.mnt, inode=ino), what=f"fs.error for inode {ino}")
        self.assertEqual(e["detail"]["errno"], errno.EBADMSG, e)
        # The kernel cannot load this inode, so no path can be found for it (docs/events.md).
        self.assertNotIn("path", e["detail"])

    def test_errors_while_stopped_are_reported_once(self):
        fs = self.ext4()
        trigger(fs, 3, message="before storwatchd ever ran")
        d = self.daemon()
        # Never seen before: what the filesystem recorded is reported once, as catch-up.
        first = [e for e in history(d) if ev("fs.error", fs.mnt)(e)]
        self.assertEqual(len(first), 1, first)
        self.assertTrue(first[0]["detail"]["catch_up"])
        self.assertEqual(first[0]["count"], 3)
        mon = d.monitor()
        trigger(fs, 1, message="live")
        mon.wait_event(ev("fs.error", fs.mnt))
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) == 1, 10, "the live error")
        seq = d.last_seq()
        d.stop()
        trigger(fs, 5, message="while stopped")
        d.start()
        evs = swtest.wait_for(lambda: [e for e in history(d, seq) if ev("fs.error", fs.mnt)(e)], 10,
                              "the catch-up event")
        self.assertEqual(len(evs), 1, evs)
        self.assertTrue(evs[0]["detail"]["catch_up"], evs[0])
        self.assertEqual(evs[0]["count"], 5, evs[0])
        self.assertEqual(evs[0]["detail"]["errno"], errno.EUCLEAN)
        self.assertIn("last_error_time", evs[0]["detail"])
        seq = d.last_seq()
        d.restart()
        d.last_seq()  # answering
        again = [e for e in history(d, seq) if ev("fs.error", fs.mnt)(e)]
        self.assertEqual(again, [], "reported again after a restart")
        self.assertEqual(d.fs_status(fs.mnt)["health"], "ok")

    def test_xfs_corruption_and_shutdown(self):
        swtest.require_cmd("mkfs.xfs", "xfs_db", "xfs_io")
        swtest.require_fstype("xfs")
        fs = self.cleanup.enter(swtest.LoopFs("xfs"))
        # An inode in a chunk of its own, so the root's cluster stays readable.
        os.mkdir(os.path.join(fs.mnt, "d"))
        for i in range(200):
            open(os.path.join(fs.mnt, "d", f"f{i}"), "w").close()
        os.mkdir(os.path.join(fs.mnt, "e"))
        victim = os.path.join(fs.mnt, "e", "victim")
        with open(victim, "w") as f:
            f.write("x")
        ino = os.stat(victim).st_ino
        fs.umount()
        swtest.run(["xfs_db", "-x", "-c", f"inode {ino}", "-c", "write -d core.magic 0", fs.dev])
        fs.mount()
        d = self.daemon()
        mon = d.monitor()
        with self.assertRaises(OSError) as cm:
            with open(victim) as f:
                f.read()
        self.assertEqual(cm.exception.errno, errno.EUCLEAN)
        e = mon.wait_event(ev("fs.error", fs.mnt), what=f"fs.error on xfs {fs.mnt}")
        self.assertEqual(e["source"], "kmsg", e)  # xfs reports no FAN_FS_ERROR on this kernel
        self.assertEqual(e["detail"]["errno"], errno.EUCLEAN, e)
        self.assertEqual(e["fs"]["fstype"], "xfs")
        swtest.run(["xfs_io", "-x", "-c", "shutdown", fs.mnt])
        s = mon.wait_event(ev("fs.shutdown", fs.mnt), what="fs.shutdown")
        r = mon.wait_event(ev("fs.readonly", fs.mnt), what="fs.readonly")
        self.assertEqual(r["detail"]["cause"], "shutdown")
        self.assertGreater(r["seq"], s["seq"])
        self.assertEqual(d.fs_status(fs.mnt)["health"], "shutdown")
        # Errors after the shutdown are counted, and summarised when it is unmounted.
        for _ in range(3):
            try:
                open(victim).close()
            except OSError:
                pass
        fs.umount()
        mon.sync()
        summaries = mon.events(lambda x: ev("fs.error", fs.mnt)(x) and x["detail"].get("summary"))
        singles = mon.events(lambda x: ev("fs.error", fs.mnt)(x) and x["seq"] > r["seq"]
                             and not x["detail"].get("summary"))
        self.assertEqual(singles, [], "errors after the shutdown are not sent one by one")
        if summaries:
            self.assertEqual(summaries[0]["detail"]["until"], "unmounted")

    def test_btrfs_read_errors_from_a_failing_device(self):
        swtest.require_cmd("mkfs.btrfs")
        swtest.require_fstype("btrfs")
        swtest.require_fuse()
        swtest.require_testfs()
        tfs = self.cleanup.enter(swtest.TestFs(image_size=256 * MiB))
        dev = swtest.loop_attach(tfs.image, cleanup=self.cleanup)
        swtest.mkfs(dev, "btrfs", ["-K"])  # no discard: loop over FUSE cannot
        mnt = swtest.tempdir(prefix="swtest-btrfs-", cleanup=self.cleanup)
        swtest.mount(dev, mnt, "btrfs", cleanup=self.cleanup)
        self.cleanup.push(tfs.control, "clear")  # reads work again before the umount
        data = os.path.join(mnt, "data")
        swtest.fill_file(data, 8 * MiB)
        d = self.daemon()
        mon = d.monitor()
        tfs.control(f"eio {1 * MiB} {255 * MiB}")
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        with self.assertRaises(OSError):
            with open(data, "rb") as f:
                while f.read(MiB):
                    pass
        e = mon.wait_event(ev("fs.error", mnt), what=f"fs.error on btrfs {mnt}")
        self.assertEqual(e["source"], "kmsg", e)
        self.assertEqual(e["fs"]["fstype"], "btrfs")
        self.assertEqual(e["fs"]["source"], dev)

    def test_new_superblock_on_the_same_device_is_watched(self):
        """umount + mount in one go (maybe between two reads of the mount table): the kernel
        dropped the old mark with the old superblock; the new one is marked and counted."""
        fs = self.ext4()
        d = self.daemon()
        mon = d.monitor()
        trigger(fs, 2, message="first superblock")
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) == 2, 10, "2 errors")
        swtest.run(["sh", "-c", f"umount {fs.mnt} && mount {fs.dev} {fs.mnt}"])
        mon.sync()
        before = count_sum(live_errors(mon, fs.mnt))
        trigger(fs, 3, message="second superblock")
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) >= before + 3, 10,
                        "3 errors on the new superblock")
        trigger(fs, 1, message="marker")
        swtest.wait_for(lambda: count_sum(live_errors(mon, fs.mnt)) >= before + 4, 10, "the marker")
        mon.sync()
        evs = live_errors(mon, fs.mnt)
        self.assertEqual(count_sum(evs), 6, evs)
        self.assertEqual(evs[-1]["source"], "fanotify", evs[-1])
        catch_up = mon.events(lambda e: ev("fs.error", fs.mnt)(e) and e["detail"].get("catch_up"))
        self.assertEqual(catch_up, [], "the errors of the first superblock were reported already")

    def test_unprivileged_falls_back_to_the_counters(self):
        """Without CAP_SYS_ADMIN and CAP_SYSLOG: source.unavailable for fanotify and kmsg, once,
        and ext4 errors still reported, counted by errors_count."""
        setpriv = swtest.require_cmd("setpriv")
        daemon, _ = swtest.require_storwatch()
        fs = self.ext4()
        os.chmod(os.path.dirname(fs.mnt), 0o755)  # the daemon asks the filesystem for its UUID
        tmp = swtest.tempdir(prefix="swtest-nobody-", cleanup=self.cleanup)
        os.chmod(tmp, 0o777)
        config = os.path.join(tmp, "config.toml")
        with open(config, "w") as f:
            f.write(swtest.test_config())
        out_path = os.path.join(tmp, "stdout.log")
        import subprocess
        with open(out_path, "wb") as out:
            proc = subprocess.Popen(
                [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
                 daemon, "--config", config, "--socket", os.path.join(tmp, "s"),
                 "--state-dir", os.path.join(tmp, "state"), "--print"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd="/")
        self.cleanup.push(swtest.terminate_process, proc)

        def lines():
            with open(out_path, errors="replace") as f:
                return f.read().splitlines()
        # The eBPF sources (ebpf-block, ebpf-enospc) need the dropped capabilities too and say so
        # once each; these are about the filesystem-error sources.
        def fs_error_unavailable():
            return [x for x in lines() if "source.unavailable" in x and "source=ebpf-" not in x]
        swtest.wait_for(lambda: len(fs_error_unavailable()) >= 2, 10,
                        "source.unavailable for fanotify and kmsg")
        unavailable = fs_error_unavailable()
        self.assertEqual(len(unavailable), 2, unavailable)
        self.assertTrue(any("source=fanotify-fs-error" in x and "CAP_SYS_ADMIN" in x for x in unavailable),
                        unavailable)
        self.assertTrue(any("source=kmsg" in x for x in unavailable), unavailable)
        trigger(fs, 3, message="unprivileged")

        def counted():
            n = 0
            for x in lines():
                if " fs.error " in x and f" {fs.mnt} " in x:
                    counts = [t for t in x.split() if t.startswith("count=")]
                    n += int(counts[0][6:]) if counts else 1
            return n
        swtest.wait_for(lambda: counted() >= 3, 10, f"fs.error on {fs.mnt} from errors_count")
        self.assertEqual(counted(), 3, lines())
        self.assertEqual(swtest.terminate_process(proc), 0)


if __name__ == "__main__":
    swtest.main()
