"""swtest: helpers for storwatch's integration tests (Python 3 standard library only).

Integration tests are plain ``python3 tests/integration/test_xxx.py`` scripts run
by CTest with ``SKIP_RETURN_CODE 77``.  A test script typically looks like::

    import os, sys
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import swtest

    def setUpModule():
        swtest.require_root()
        swtest.require_fuse()

    class MyTest(swtest.TestCase):
        def test_something(self):
            fs = self.cleanup.enter(swtest.TestFs())
            dev = swtest.loop_attach(fs.image, cleanup=self.cleanup)
            ...

    if __name__ == "__main__":
        swtest.main()

Rules of the house:

* Every resource is registered on a ``Cleanup`` stack (``self.cleanup`` in a
  ``swtest.TestCase``) right after it is created, so it is released in reverse
  order even when the test fails.  Functions that create resources take an
  optional ``cleanup=`` argument that does the registration for you.
* Never synchronise with fixed sleeps: poll a condition with ``wait_for``.
* Every external command runs with a timeout.

Sections of this module:

  1. Skipping and requirements
  2. Commands and polling
  3. Cleanup stack
  4. Mount table, mounts, temp dirs
  5. Loop devices, images, mkfs, LoopFs
  6. FUSE test file system (TestFs)
  7. Space helpers
  8. TestCase base class and main()
  9. (reserved) daemon helpers are appended at the end of this file
"""

import errno
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

__all__ = [
    # 1
    "SKIP_RETURN_CODE", "Skip", "skip", "require_root", "require_cmd", "require_fuse",
    "require_loop", "require_fstype", "require_testfs", "which",
    # 2
    "CommandError", "run", "wait_for", "terminate_process",
    # 3
    "Cleanup", "CleanupError",
    # 4
    "mountinfo", "is_mounted", "mounts_under", "mount", "umount", "mount_tmpfs",
    "bind_mount", "tempdir", "remove_tree",
    # 5
    "make_image", "loop_attach", "loop_detach", "loop_backing_file", "loop_devices_for",
    "mkfs", "LoopFs",
    # 6
    "find_testfs", "ensure_fusectl", "fuse_conn_id", "fuse_abort", "TestFs",
    # 7
    "fill_file", "free_bytes",
    # 8
    "TestCase", "main",
]

# Directories searched for commands in addition to $PATH (mkfs.*, losetup live
# in sbin directories which are not always on a non-login PATH).
_SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/local/bin", "/usr/bin", "/bin")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


# ---------------------------------------------------------------------------
# 1. Skipping and requirements
# ---------------------------------------------------------------------------

SKIP_RETURN_CODE = 77

# Under ASan/UBSan (make test-sanitize sets STORWATCH_SANITIZED=1) the daemon runs several times
# slower: deadlines of wait_for() and of stopping the daemon are stretched by this factor.
SANITIZED_SLOWDOWN = 3 if os.environ.get("STORWATCH_SANITIZED") == "1" else 1


class Skip(unittest.SkipTest, SystemExit):
    """Raised by skip().

    It is both a ``unittest.SkipTest`` (inside a test or setUpModule/setUpClass
    unittest records a skip, and ``main()`` turns "everything skipped" into
    exit code 77) and a ``SystemExit`` with code 77 (raised at module level,
    before ``main()``, it ends the script with exit code 77).
    """

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason
        self.code = SKIP_RETURN_CODE

    def __str__(self):
        return str(self.reason)


_announced_skips = set()


def skip(reason):
    """Print "SKIP: reason" and skip (exit code 77 for the whole script)."""
    print(f"SKIP: {reason}", flush=True)
    _announced_skips.add(str(reason))
    raise Skip(reason)


def which(name):
    """Path of command `name` looked up in $PATH and the sbin directories, or None."""
    path = os.environ.get("PATH", "")
    dirs = [d for d in path.split(os.pathsep) if d] + [d for d in _SBIN_DIRS]
    return shutil.which(name, path=os.pathsep.join(dirs))


def require_root():
    if os.geteuid() != 0:
        skip("must run as root")


def require_cmd(*names):
    """Skip unless every command exists; returns the path of the first one."""
    found = []
    for name in names:
        p = which(name)
        if p is None:
            skip(f"command not found: {name}")
        found.append(p)
    return found[0] if found else None


def _kernel_has_fs(fstype):
    try:
        with open("/proc/filesystems") as f:
            for line in f:
                if line.split()[-1:] == [fstype]:
                    return True
    except OSError:
        pass
    return False


def require_fstype(fstype):
    """Skip unless the kernel supports `fstype` (after a modprobe attempt) and
    mkfs.<fstype> exists (for block file systems)."""
    if not _kernel_has_fs(fstype):
        modprobe = which("modprobe")
        if modprobe:
            subprocess.run([modprobe, "-q", fstype], stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           timeout=30, check=False)
        if not _kernel_has_fs(fstype):
            skip(f"kernel does not support file system type {fstype}")
    if fstype in _MKFS_FLAGS:
        require_cmd(f"mkfs.{fstype}")


def require_fuse():
    if not os.path.exists("/dev/fuse"):
        skip("/dev/fuse missing")
    require_fstype("fuse")


def require_loop():
    if not os.path.exists("/dev/loop-control") and not glob.glob("/dev/loop[0-9]*"):
        skip("no loop device support")
    require_cmd("losetup")


def require_testfs(binary=None):
    """Skip unless storwatch-testfs can be found; returns its path."""
    path = find_testfs(binary)
    if path is None:
        skip("storwatch-testfs not found (build it, or set STORWATCH_TESTFS)")
    return path


# ---------------------------------------------------------------------------
# 2. Commands and polling
# ---------------------------------------------------------------------------

class CommandError(RuntimeError):
    def __init__(self, cmd, returncode, stdout, stderr):
        self.cmd = cmd
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(
            f"command {' '.join(map(str, cmd))!r} failed with exit code {returncode}"
            + (f": {stderr.strip()}" if stderr and stderr.strip() else ""))


def run(cmd, check=True, timeout=60, input=None, env=None):
    """Run a command (list), capture its output as text, kill it after `timeout`
    seconds.  Raises CommandError on a non-zero exit when `check`."""
    cmd = [str(c) for c in cmd]
    exe = which(cmd[0]) if os.sep not in cmd[0] else cmd[0]
    if exe is None:
        raise CommandError(cmd, 127, "", f"command not found: {cmd[0]}")
    full_env = None
    if env:
        full_env = dict(os.environ)
        full_env.update(env)
    p = subprocess.run([exe] + cmd[1:], input=input, capture_output=True, text=True,
                       timeout=timeout, env=full_env,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise CommandError(cmd, p.returncode, p.stdout, p.stderr)
    return p


def wait_for(predicate, timeout=10.0, what=None, interval=0.005, max_interval=0.1, ignore=()):
    """Poll `predicate()` until it returns a true value (which is returned).

    Polls at short, growing intervals; raises AssertionError("timed out
    waiting for: <what>") after `timeout` seconds.  Exceptions whose type is
    in `ignore` count as "not yet"."""
    what = what or getattr(predicate, "__name__", "condition")
    deadline = time.monotonic() + timeout * SANITIZED_SLOWDOWN
    delay = interval
    while True:
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out waiting for: {what}")
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, max_interval)


def terminate_process(proc, term_timeout=5.0, kill_timeout=5.0, sig=signal.SIGTERM):
    """Stop a subprocess.Popen: `sig` (SIGTERM), wait up to `term_timeout`,
    then SIGKILL and wait up to `kill_timeout`.  Returns the exit status."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(timeout=term_timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        proc.kill()
    except ProcessLookupError:
        pass
    # A process stuck in an uninterruptible wait may outlive this; report it.
    return proc.wait(timeout=kill_timeout)


# ---------------------------------------------------------------------------
# 3. Cleanup stack
# ---------------------------------------------------------------------------

class CleanupError(RuntimeError):
    pass


class Cleanup:
    """A LIFO stack of cleanup actions that always runs every action.

    Use as a context manager or call close().  A failing action is reported
    on stderr and the remaining actions still run; afterwards a CleanupError
    is raised unless another exception is already propagating (the test's
    own failure is more interesting than a secondary cleanup failure)."""

    def __init__(self):
        self._stack = []
        self._lock = threading.Lock()

    def push(self, fn, *args, **kwargs):
        """Register fn(*args, **kwargs); returns fn."""
        with self._lock:
            self._stack.append((fn, args, kwargs))
        return fn

    callback = push  # contextlib.ExitStack spelling

    def enter(self, cm):
        """Enter context manager `cm`, register its exit; returns what __enter__ returned."""
        value = cm.__enter__()
        self.push(cm.__exit__, None, None, None)
        return value

    enter_context = enter

    def close(self, _propagating=False):
        errors = []
        while True:
            with self._lock:
                if not self._stack:
                    break
                fn, args, kwargs = self._stack.pop()
            try:
                fn(*args, **kwargs)
            except BaseException as e:  # noqa: B902 - must keep cleaning up
                name = getattr(fn, "__qualname__", repr(fn))
                print(f"swtest: cleanup {name}{tuple(args)!r} failed: {type(e).__name__}: {e}",
                      file=sys.stderr, flush=True)
                errors.append(e)
                if isinstance(e, KeyboardInterrupt):
                    _propagating = True
        if errors and not _propagating:
            raise CleanupError(f"{len(errors)} cleanup action(s) failed; first: "
                               f"{type(errors[0]).__name__}: {errors[0]}") from errors[0]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(_propagating=exc_type is not None)
        return False

    def __len__(self):
        return len(self._stack)


# ---------------------------------------------------------------------------
# 4. Mount table, mounts, temp dirs
# ---------------------------------------------------------------------------

def _unescape_mountinfo(s):
    # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\" and len(s[i + 1:i + 4]) == 3 and s[i + 1:i + 4].isdigit():
            out.append(chr(int(s[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(s[i])
            i += 1
    return "".join(out)


def mountinfo(pid="self"):
    """Parsed /proc/<pid>/mountinfo: list of dicts with keys mount_id,
    parent_id, dev ("major:minor"), root, mountpoint, options, fstype, source,
    super_options."""
    result = []
    with open(f"/proc/{pid}/mountinfo") as f:
        for line in f:
            left, _, right = line.rstrip("\n").partition(" - ")
            lf = left.split(" ")
            rf = right.split(" ")
            result.append({
                "mount_id": int(lf[0]),
                "parent_id": int(lf[1]),
                "dev": lf[2],
                "root": _unescape_mountinfo(lf[3]),
                "mountpoint": _unescape_mountinfo(lf[4]),
                "options": lf[5],
                "fstype": rf[0] if rf else "",
                "source": _unescape_mountinfo(rf[1]) if len(rf) > 1 else "",
                "super_options": rf[2] if len(rf) > 2 else "",
            })
    return result


def _canon(path):
    """Absolute, symlink-free path without touching `path` itself (it may be a
    dead or blocking FUSE mount point)."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if not name:
        return path
    return os.path.join(os.path.realpath(parent), name)


def is_mounted(path):
    """True if something is mounted on `path` (reads the mount table; works
    for dead FUSE mounts where os.path.ismount() fails)."""
    p = _canon(path)
    return any(m["mountpoint"] == p for m in mountinfo())


def mounts_under(path):
    """Mount points at or below `path`, deepest first."""
    p = _canon(path)
    found = {m["mountpoint"] for m in mountinfo()
             if m["mountpoint"] == p or m["mountpoint"].startswith(p.rstrip("/") + "/")}
    return sorted(found, key=lambda m: m.count("/"), reverse=True)


def mount(src, target, fstype=None, options=None, cleanup=None, timeout=60):
    """mount [-t fstype] [-o options] src target; registers umount on `cleanup`."""
    cmd = ["mount"]
    if fstype:
        cmd += ["-t", fstype]
    if options:
        cmd += ["-o", options if isinstance(options, str) else ",".join(options)]
    cmd += [src, target]
    run(cmd, timeout=timeout)
    if cleanup is not None:
        cleanup.push(umount, target)
    return target


def mount_tmpfs(target, size, cleanup=None, options=None):
    opts = f"size={int(size)}" + (f",{options}" if options else "")
    return mount("tmpfs", target, fstype="tmpfs", options=opts, cleanup=cleanup)


def bind_mount(src, dst, cleanup=None):
    run(["mount", "--bind", src, dst])
    if cleanup is not None:
        cleanup.push(umount, dst)
    return dst


def umount(target, timeout=5.0, lazy_fallback=True):
    """Unmount `target` (every mount stacked on it).

    Retries a plain umount while the file system is busy, for up to `timeout`
    seconds, then falls back to a lazy unmount (umount -l).  Does nothing if
    nothing is mounted there.  Paths are not canonicalised by umount(8) (-c),
    so a hung FUSE mount point is not touched."""
    target = _canon(target)
    deadline = time.monotonic() + timeout
    last = ""
    delay = 0.01
    while is_mounted(target):
        try:
            p = run(["umount", "-c", target], check=False, timeout=max(1.0, timeout))
            last = p.stderr.strip()
        except subprocess.TimeoutExpired:
            last = "umount timed out"
        if not is_mounted(target):
            return
        if time.monotonic() >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.2)
    else:
        return
    if not lazy_fallback:
        raise CommandError(["umount", target], 1, "", last)
    while is_mounted(target):
        p = run(["umount", "-c", "-l", target], check=False, timeout=30)
        if p.returncode != 0 and is_mounted(target):
            raise CommandError(["umount", "-l", target], p.returncode, p.stdout, p.stderr)


def tempdir(prefix="swtest-", cleanup=None, parent=None):
    """Create a temporary directory (in $SWTEST_TMPDIR or the default temp dir).
    With `cleanup`, it is removed (see remove_tree) when the stack closes."""
    parent = parent or os.environ.get("SWTEST_TMPDIR") or None
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    if cleanup is not None:
        cleanup.push(remove_tree, path)
    return path


def remove_tree(path):
    """Remove a directory tree, but never through a mount point: anything still
    mounted below `path` is unmounted first (lazily if needed); if that fails
    the tree is left alone and an error raised."""
    if not os.path.lexists(path):
        return
    for m in mounts_under(path):
        umount(m, timeout=2.0)
    left = mounts_under(path)
    if left:
        raise CleanupError(f"refusing to remove {path}: still mounted: {left}")
    shutil.rmtree(path)


# ---------------------------------------------------------------------------
# 5. Loop devices, images, mkfs, LoopFs
# ---------------------------------------------------------------------------

def make_image(path, size):
    """Create (or resize) a sparse image file of `size` bytes; returns path."""
    with open(path, "ab") as f:
        f.truncate(int(size))
    return path


def loop_attach(path, direct_io=None, read_only=False, cleanup=None, sector_size=None):
    """losetup -f --show PATH; returns "/dev/loopN".  direct_io: None (losetup
    default), True or False.  Registers loop_detach on `cleanup`."""
    cmd = ["losetup", "-f", "--show"]
    if direct_io is not None:
        cmd.append("--direct-io=" + ("on" if direct_io else "off"))
    if read_only:
        cmd.append("-r")
    if sector_size:
        cmd += ["-b", str(sector_size)]
    cmd.append(path)
    # Another test may grab the same free device concurrently; retry briefly.
    deadline = time.monotonic() + 10
    while True:
        p = run(cmd, check=False, timeout=30)
        if p.returncode == 0 and p.stdout.strip():
            dev = p.stdout.strip()
            break
        if time.monotonic() >= deadline:
            raise CommandError(cmd, p.returncode, p.stdout, p.stderr)
        time.sleep(0.05)
    if cleanup is not None:
        cleanup.push(loop_detach, dev)
    return dev


def loop_backing_file(dev):
    """Backing file of loop device `dev`, or None if it is not attached."""
    name = os.path.basename(os.path.realpath(dev))
    try:
        with open(f"/sys/block/{name}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except (FileNotFoundError, ProcessLookupError, OSError):
        return None


def loop_devices_for(path):
    """Loop devices whose backing file is `path` (or lies below `path`)."""
    p = _canon(path)
    devs = []
    for d in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(d) as f:
                b = f.read().rstrip("\n")
        except OSError:
            continue
        b = b[:-len(" (deleted)")] if b.endswith(" (deleted)") else b
        if b == p or b.startswith(p.rstrip("/") + "/"):
            devs.append("/dev/" + d.split("/")[3])
    return sorted(devs)


def loop_detach(dev, timeout=10.0):
    """losetup -d DEV and wait until the kernel has really released it.

    If the device is still held open (e.g. mounted), the kernel only marks it
    for auto-clear; that case raises after `timeout`."""
    backing = loop_backing_file(dev)
    if backing is None:
        return
    # Once released, a concurrently running test may attach the same device
    # to another file: "detached" means "no longer backed by our file".
    p = run(["losetup", "-d", dev], check=False, timeout=30)
    if p.returncode != 0 and loop_backing_file(dev) == backing:
        raise CommandError(["losetup", "-d", dev], p.returncode, p.stdout, p.stderr)
    wait_for(lambda: loop_backing_file(dev) != backing, timeout, f"{dev} to be detached")


_MKFS_FLAGS = {
    "ext2": ["-q", "-F"],
    "ext3": ["-q", "-F"],
    "ext4": ["-q", "-F"],
    "xfs": ["-q", "-f"],
    "btrfs": ["-q", "-f"],
}

# Smallest sizes mkfs accepts are ~300 MiB (xfs) and ~109 MiB (btrfs); images
# are sparse so generous defaults cost nothing.
DEFAULT_FS_SIZE = {"ext2": 64 << 20, "ext3": 64 << 20, "ext4": 64 << 20,
                   "xfs": 320 << 20, "btrfs": 256 << 20}


def mkfs(dev, fstype, extra_args=(), timeout=120):
    """Create a file system (quiet, forced) on a device or image file."""
    if fstype not in _MKFS_FLAGS:
        raise ValueError(f"mkfs: unsupported file system type {fstype}")
    run([f"mkfs.{fstype}"] + _MKFS_FLAGS[fstype] + list(extra_args) + [dev], timeout=timeout)


class LoopFs:
    """A file system on a loop device on a sparse image in a temp dir.

        with swtest.LoopFs("xfs") as fs:
            fs.dev, fs.mnt, fs.image

    Everything (mount, loop device, image, dirs) is released on exit."""

    def __init__(self, fstype="ext4", size=None, options=None, mkfs_args=(),
                 direct_io=None, tmpdir=None):
        self.fstype = fstype
        self.size = int(size or DEFAULT_FS_SIZE.get(fstype, 256 << 20))
        self.options = options
        self.mkfs_args = list(mkfs_args)
        self.direct_io = direct_io
        self.tmpdir = tmpdir
        self.dir = self.image = self.dev = self.mnt = None
        self._cl = None

    def __enter__(self):
        self._cl = Cleanup()
        try:
            self.dir = tempdir(prefix=f"swtest-{self.fstype}-", cleanup=self._cl,
                               parent=self.tmpdir)
            self.image = make_image(os.path.join(self.dir, "image"), self.size)
            self.dev = loop_attach(self.image, direct_io=self.direct_io, cleanup=self._cl)
            mkfs(self.dev, self.fstype, self.mkfs_args)
            self.mnt = os.path.join(self.dir, "mnt")
            os.mkdir(self.mnt)
            self.mount()
        except BaseException:
            self._cl.close(_propagating=True)
            raise
        return self

    def mount(self, options=None):
        """(Re)mount the file system on .mnt (unmounted by the context exit)."""
        mount(self.dev, self.mnt, self.fstype,
              options if options is not None else self.options, cleanup=self._cl)

    def umount(self):
        umount(self.mnt)

    def __exit__(self, exc_type, exc, tb):
        self._cl.close(_propagating=exc_type is not None)
        return False


# ---------------------------------------------------------------------------
# 6. FUSE test file system (TestFs)
# ---------------------------------------------------------------------------

FUSECTL_DIR = "/sys/fs/fuse/connections"


def find_testfs(binary=None):
    """Locate the storwatch-testfs binary: `binary`, $STORWATCH_TESTFS, or a
    build directory of this source tree (build*/.../storwatch-testfs)."""
    candidates = []
    if binary:
        candidates.append(binary)
    env = os.environ.get("STORWATCH_TESTFS")
    if env:
        candidates.append(env)
    if not candidates:
        for pattern in ("build*/tests/support/testfs/storwatch-testfs",
                        "build*/*/tests/support/testfs/storwatch-testfs",
                        "build*/**/storwatch-testfs",
                        "out/**/storwatch-testfs"):
            candidates += sorted(glob.glob(os.path.join(REPO_ROOT, pattern), recursive=True))
    for c in candidates:
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return os.path.abspath(c)
    return None


def ensure_fusectl():
    """Make sure the fusectl file system is mounted on /sys/fs/fuse/connections
    (systemd normally does it; minimal VMs/containers may not).  It is left
    mounted: it is system-wide state shared by concurrently running tests."""
    if any(m["fstype"] == "fusectl" and m["mountpoint"] == FUSECTL_DIR for m in mountinfo()):
        return
    if not os.path.isdir(FUSECTL_DIR):
        raise RuntimeError(f"{FUSECTL_DIR} does not exist (fuse not loaded?)")
    p = run(["mount", "-t", "fusectl", "fusectl", FUSECTL_DIR], check=False)
    if not any(m["fstype"] == "fusectl" for m in mountinfo()):
        raise CommandError(["mount", "-t", "fusectl"], p.returncode, p.stdout, p.stderr)


def fuse_conn_id(mountpoint):
    """Number N of /sys/fs/fuse/connections/N for a FUSE mount: its st_dev as
    the kernel prints it, i.e. (major << 20) | minor; major is 0 for FUSE, so
    this is the device minor number."""
    st_dev = None
    p = _canon(mountpoint)
    for m in mountinfo():
        if m["mountpoint"] == p:
            major, minor = (int(x) for x in m["dev"].split(":"))
            st_dev = (major << 20) | minor  # last (top-most) mount wins
    if st_dev is None:
        st = os.stat(mountpoint)
        st_dev = (os.major(st.st_dev) << 20) | os.minor(st.st_dev)
    return st_dev


def fuse_abort(conn_id):
    """Abort FUSE connection `conn_id`: every pending and future request fails
    (ECONNABORTED/ENOTCONN) and the daemon's /dev/fuse reads fail."""
    ensure_fusectl()
    path = os.path.join(FUSECTL_DIR, str(conn_id), "abort")
    try:
        with open(path, "w") as f:
            f.write("1")
    except FileNotFoundError:
        pass  # connection already gone


def _die_with_parent():
    """preexec_fn: ask for SIGTERM when the parent (thread) dies."""
    import ctypes
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)


def _process_state(pid):
    """State letter from /proc/PID/stat (R, S, D, T, Z, ...), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return None


class TestFs:
    """Runs storwatch-testfs on a temporary mount point.

        with swtest.TestFs() as fs:
            fs.control("eio 4096 512")
            fs.image, fs.data, fs.mnt, fs.conn_id, fs.abort()

    On exit: pending statfs blocks are released, the file system unmounted
    (connection aborted and lazily unmounted if that does not work), the
    process stopped (SIGTERM, then SIGKILL) and the temp dir removed.
    Anything built on top (loop devices, mounts) must be released before;
    register it on the same Cleanup stack after the TestFs.

    With die_with_parent (default) the program gets SIGTERM when the thread
    that started it dies (PR_SET_PDEATHSIG), so a test killed by a CTest
    timeout does not leave it running; it then unmounts itself (lazily).
    Start TestFs from the main thread, or pass die_with_parent=False."""

    __test__ = False  # not a unittest/pytest test class

    def __init__(self, binary=None, image_size=None, backing=None, data_size=None,
                 fuse_options=("allow_other",), extra_args=(), start_timeout=10.0,
                 tmpdir=None, die_with_parent=True):
        self.binary = binary
        self.image_size = image_size
        self.backing = backing
        self.data_size = data_size
        self.fuse_options = list(fuse_options or ())
        self.extra_args = list(extra_args)
        self.start_timeout = start_timeout
        self.tmpdir = tmpdir
        self.die_with_parent = die_with_parent
        self.proc = None
        self.mnt = None
        self.conn_id = None
        self.log_path = None
        self.aborted = False
        self._cl = None

    # -- paths -----------------------------------------------------------
    @property
    def image(self):
        return os.path.join(self.mnt, "disk.img")

    @property
    def data(self):
        return os.path.join(self.mnt, "data")

    @property
    def control_path(self):
        return os.path.join(self.mnt, "control")

    @property
    def conn_dir(self):
        return os.path.join(FUSECTL_DIR, str(self.conn_id))

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # -- lifecycle -------------------------------------------------------
    def __enter__(self):
        binary = require_testfs(self.binary)
        ensure_fusectl()
        self._cl = Cleanup()
        try:
            d = tempdir(prefix="swtest-testfs-", cleanup=self._cl, parent=self.tmpdir)
            self.mnt = os.path.join(d, "mnt")
            os.mkdir(self.mnt)
            self.log_path = os.path.join(d, "testfs.log")
            cmd = [binary, "-f"]
            if self.fuse_options:
                cmd += ["-o", ",".join(self.fuse_options)]
            if self.image_size is not None:
                cmd.append(f"--image-size={int(self.image_size)}")
            if self.backing is not None:
                cmd.append(f"--backing={self.backing}")
            if self.data_size is not None:
                cmd.append(f"--data-size={int(self.data_size)}")
            cmd += self.extra_args + [self.mnt]
            with open(self.log_path, "wb") as log:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent if self.die_with_parent else None)
            self._cl.push(self._stop)

            def ready():
                return self.proc.poll() is not None or is_mounted(self.mnt)
            wait_for(ready, self.start_timeout, f"storwatch-testfs to mount {self.mnt}")
            if self.proc.poll() is not None:
                raise RuntimeError(f"storwatch-testfs exited with {self.proc.returncode}: "
                                   f"{self.log().strip()}")
            self.conn_id = fuse_conn_id(self.mnt)
        except BaseException:
            self._cl.close(_propagating=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._cl.close(_propagating=exc_type is not None)
        return False

    def _stop(self):
        if (self.proc.poll() is None and not self.aborted and is_mounted(self.mnt)
                and _process_state(self.proc.pid) not in ("T", "t", "Z", None)):
            # Release statfs callers that may still be blocked (possibly
            # inside the program under test) before unmounting.  (Skipped
            # for a stopped process: the write would never be answered.)
            try:
                self.control("clear")
            except OSError:
                pass
        if is_mounted(self.mnt):
            try:
                umount(self.mnt, timeout=3.0, lazy_fallback=False)
            except (CommandError, subprocess.TimeoutExpired):
                self.abort()
                umount(self.mnt, timeout=1.0, lazy_fallback=True)
        # Unmounting ends the FUSE session, so the process normally exits on
        # its own; give it a moment before signalling.
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            terminate_process(self.proc)
        text = self.log().strip()
        if text:
            print(f"swtest: storwatch-testfs output:\n{text}", file=sys.stderr, flush=True)

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    # -- control ---------------------------------------------------------
    def control(self, *commands):
        """Send one or more commands (each may itself contain newlines) in a
        single write(2).  A rejected command raises OSError(EINVAL)."""
        text = "\n".join(commands) + "\n"
        fd = os.open(self.control_path, os.O_WRONLY)
        try:
            data = text.encode()
            n = os.write(fd, data)
            if n != len(data):
                raise OSError(errno.EIO, f"short write to control ({n} of {len(data)})")
        finally:
            os.close(fd)

    def settings(self):
        """Text of /control: current settings and '# name value' counters."""
        with open(self.control_path) as f:
            return f.read()

    def counters(self):
        """The '# name value' lines of /control as a dict of ints."""
        out = {}
        for line in self.settings().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "#":
                try:
                    out[parts[1]] = int(parts[2])
                except ValueError:
                    pass
        return out

    def counter(self, name):
        return self.counters()[name]

    def waiting(self):
        """Requests the kernel has in flight for this connection (fusectl)."""
        with open(os.path.join(self.conn_dir, "waiting")) as f:
            return int(f.read())

    def abort(self):
        """Abort the FUSE connection (/sys/fs/fuse/connections/N/abort)."""
        fuse_abort(self.conn_id)
        self.aborted = True


# ---------------------------------------------------------------------------
# 7. Space helpers
# ---------------------------------------------------------------------------

def fill_file(path, nbytes, chunk=1 << 20, append=False, fsync=True,
              stop_errnos=(errno.ENOSPC,)):
    """Write up to `nbytes` to `path` (created; truncated unless `append`),
    stopping early at ENOSPC (or another errno in `stop_errnos`).  Returns the
    number of bytes written."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    buf = b"\xa5" * min(chunk, max(nbytes, 1))
    written = 0
    fd = os.open(path, flags, 0o644)
    try:
        while written < nbytes:
            try:
                n = os.write(fd, buf[:min(len(buf), nbytes - written)])
            except OSError as e:
                if e.errno in stop_errnos:
                    break
                raise
            if n == 0:
                break
            written += n
        if fsync:
            try:
                os.fsync(fd)
            except OSError as e:
                if e.errno not in stop_errnos:
                    raise
    finally:
        os.close(fd)
    return written


def free_bytes(path):
    """Bytes available to unprivileged users (f_bavail * f_frsize)."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---------------------------------------------------------------------------
# 8. TestCase base class and main()
# ---------------------------------------------------------------------------

class TestTimeout(AssertionError):
    pass


class TestCase(unittest.TestCase):
    """unittest.TestCase with a Cleanup stack (self.cleanup, closed after the
    test, LIFO, also when the run is interrupted by SIGINT/SIGTERM) and a
    per-test time limit (class attribute `timeout`, seconds, enforced with
    SIGALRM in the main thread; 0 disables it).  The alarm stays armed while
    the cleanup stack runs.

    The alarm cannot break a system call the main thread has blocked in a
    FUSE request (e.g. statvfs on a TestFs with statfs-block on): the kernel
    only lets fatal signals through there.  Do such calls in a child process
    or thread; CTest's TIMEOUT is the last line of defence."""

    timeout = 120

    def run(self, result=None):
        try:
            return super().run(result)
        except KeyboardInterrupt:
            # unittest lets KeyboardInterrupt escape without running cleanups.
            self.doCleanups()
            raise

    def setUp(self):
        super().setUp()
        if self.timeout and threading.current_thread() is threading.main_thread():
            def on_alarm(signum, frame):
                raise TestTimeout(f"test exceeded its time limit of "
                                  f"{self.timeout * SANITIZED_SLOWDOWN} s")
            old = signal.signal(signal.SIGALRM, on_alarm)
            signal.alarm(int(self.timeout * SANITIZED_SLOWDOWN))

            def disarm():
                signal.alarm(0)
                signal.signal(signal.SIGALRM, old)
            self.addCleanup(disarm)
        self.cleanup = Cleanup()
        self.addCleanup(self.cleanup.close)


def main(argv=None, verbosity=2):
    """Run the unittest tests of __main__ and exit: 0 on success, 77 when
    every test was skipped (or a requirement failed at module level), 1 on
    failure."""
    def on_term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    # SIGTERM (e.g. from a test driver) unwinds like Ctrl-C, so that cleanups run.
    signal.signal(signal.SIGTERM, on_term)
    try:
        prog = unittest.main(module="__main__", argv=argv, exit=False, verbosity=verbosity)
    except Skip:
        sys.exit(SKIP_RETURN_CODE)
    except KeyboardInterrupt as e:
        print(f"swtest: interrupted ({e})", file=sys.stderr, flush=True)
        sys.exit(1)
    result = prog.result
    if not result.wasSuccessful():
        sys.exit(1)
    if result.skipped and len(result.skipped) >= result.testsRun:
        reasons = sorted({str(r) for _, r in result.skipped} - _announced_skips)
        if reasons:
            print(f"SKIP: {'; '.join(reasons)}", flush=True)
        sys.exit(SKIP_RETURN_CODE)
    if result.testsRun == 0:
        print("swtest: no tests ran", file=sys.stderr)
        sys.exit(1)
    sys.exit(0)


# ---------------------------------------------------------------------------
# 9. Daemon helpers (storwatch itself) go below this line.
# ---------------------------------------------------------------------------

import json  # noqa: E402  (section 9 only)
import re  # noqa: E402

__all__ += [
    # 9
    "find_storwatch", "require_storwatch", "test_config", "toml_str", "Daemon", "Monitor",
    "event_matcher", "parse_time", "set_free_bytes", "DaemonTestCase",
]


def _find_build_binary(env, names):
    """$env, else the first executable build*/<name> of this source tree."""
    p = os.environ.get(env)
    if p:
        return os.path.abspath(p) if os.path.isfile(p) and os.access(p, os.X_OK) else None
    for name in names:
        for c in sorted(glob.glob(os.path.join(REPO_ROOT, "build*", name))):
            if os.path.isfile(c) and os.access(c, os.X_OK):
                return os.path.abspath(c)
    return None


def find_storwatch():
    """(storwatchd, storwatch): from $STORWATCHD and $STORWATCH (set by CTest), else a
    build directory of this source tree; None for what is not found."""
    return (_find_build_binary("STORWATCHD", ["src/daemon/storwatchd"]),
            _find_build_binary("STORWATCH", ["src/cli/storwatch"]))


def require_storwatch():
    """Skip unless storwatchd and the storwatch CLI can be found; returns both paths."""
    daemon, cli = find_storwatch()
    if daemon is None:
        skip("storwatchd not found (build it, or set STORWATCHD)")
    if cli is None:
        skip("storwatch CLI not found (build it, or set STORWATCH)")
    return daemon, cli


def toml_str(s):
    """A TOML basic string for `s` (JSON's escapes are valid TOML)."""
    return json.dumps(str(s))


def _toml_levels(levels):
    out = []
    for lv in levels:
        if isinstance(lv, str):  # "blocks<10%:warning" shorthand
            m = re.fullmatch(r"(blocks|inodes)<([^:]+)(?::(\w+))?", lv)
            if not m:
                raise ValueError(f"bad level shorthand {lv!r}: expected e.g. 'blocks<10%:warning'")
            lv = {"resource": m.group(1), "below": m.group(2)}
            if m.group(3):
                lv["severity"] = m.group(3)
        out.append("{ " + ", ".join(f"{k} = {toml_str(v)}" for k, v in lv.items()) + " }")
    return "[" + ", ".join(out) + "]"


def test_config(levels=(), rules=None, poll_min="20ms", poll_max="200ms", statfs_timeout="1s",
                watch_fstypes=(), skip_fstypes=(), skip_paths=(), extra=""):
    """TOML text of a test configuration: fast polling, no default levels (so the host's own
    filesystems are not polled and produce no events), and rules only where a test asks.

    levels: the [thresholds] default levels; rules: {mount point: [levels]}.  A level is a
    dict (resource, below, severity, hysteresis) or the shorthand "blocks<10%:warning"."""
    lines = ["[watch]",
             f"watch_fstypes = [{', '.join(toml_str(t) for t in watch_fstypes)}]",
             f"skip_fstypes = [{', '.join(toml_str(t) for t in skip_fstypes)}]",
             f"skip_paths = [{', '.join(toml_str(p) for p in skip_paths)}]",
             "",
             "[thresholds]",
             f"statfs_timeout = {toml_str(statfs_timeout)}",
             f"poll_min = {toml_str(poll_min)}",
             f"poll_max = {toml_str(poll_max)}",
             f"levels = {_toml_levels(levels)}",
             ""]
    for path, lv in (rules or {}).items():
        lines += ["[[rule]]", f"path = {toml_str(path)}", f"levels = {_toml_levels(lv)}", ""]
    return "\n".join(lines) + ("\n" + extra if extra else "")


test_config.__test__ = False  # not a test, whatever its name says


def parse_time(text):
    """Seconds since the epoch of an RFC 3339 UTC time as the daemon writes it
    ("2026-11-21T23:00:00.123456Z")."""
    import datetime
    t = text.rstrip("Z")
    dt = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%f" if "." in t else "%Y-%m-%dT%H:%M:%S")
    return dt.replace(tzinfo=datetime.timezone.utc).timestamp()


def event_matcher(type=None, mount=None, **detail):
    """A predicate on event dicts: type (exact, or a glob with '*'), a mount point listed in
    fs.mounts, and detail fields equal to the given values.  Its __name__ describes it, for
    the messages of wait_event and assert_no_event."""
    import fnmatch

    def pred(e):
        if type is not None and not fnmatch.fnmatchcase(e.get("type", ""), type):
            return False
        if mount is not None and mount not in ((e.get("fs") or {}).get("mounts") or []):
            return False
        d = e.get("detail") or {}
        return all(k in d and d[k] == v for k, v in detail.items())
    parts = ([type] if type else []) + ([f"on {mount}"] if mount else []) + \
        [f"{k}={v}" for k, v in detail.items()]
    pred.__name__ = " ".join(parts) or "any event"
    return pred


def _describe(pred, what):
    return what or getattr(pred, "__name__", "matching event")


def _short_event(e):
    d = e.get("detail") or {}
    keys = ("resource", "level", "direction", "kind", "avail")
    det = " ".join(f"{k}={d[k]}" for k in keys if k in d)
    mounts = (e.get("fs") or {}).get("mounts") or []
    return f"#{e.get('seq')} {e.get('type')} {mounts[0] if mounts else ''} {det}".rstrip()


def set_free_bytes(path, mnt, target, tolerance=None, max_rounds=20):
    """Grow or shrink file `path` (on the filesystem mounted at `mnt`) until the free
    space (f_bavail) of that filesystem is `target` bytes, within `tolerance` (default
    16 blocks, for metadata the filesystem allocates along the way).  Writes are
    fsync'ed.  Returns the free bytes reached."""
    st = os.statvfs(mnt)
    tolerance = tolerance if tolerance is not None else 16 * st.f_frsize
    if not os.path.exists(path):
        open(path, "wb").close()
    for _ in range(max_rounds):
        free = free_bytes(mnt)
        if abs(free - target) <= tolerance:
            return free
        size = os.stat(path).st_size
        if free > target:
            fill_file(path, free - target, append=True)
        else:
            with open(path, "r+b") as f:
                f.truncate(max(0, size - (target - free)))
                os.fsync(f.fileno())
        if free_bytes(mnt) == free and size == os.stat(path).st_size:
            break  # no progress (full, or nothing left to free)
    free = free_bytes(mnt)
    if abs(free - target) > tolerance:
        raise AssertionError(f"could not bring free space on {mnt} to {target} bytes "
                             f"(within {tolerance}): it is {free}")
    return free


class Daemon:
    """A storwatchd on a temporary socket and state directory, with a test configuration.

        with swtest.Daemon(swtest.test_config(rules={mnt: ["blocks<10%"]})) as d:
            d.cli("status", "--json"); d.status_json(); d.monitor()

    Layout of its temp dir: config.toml, s (the socket), state/, stdout.log (the --print
    lines), stderr.log.  start() returns once `storwatch doctor` answers on the socket;
    stop() sends SIGTERM and asserts the daemon exits (status 0) within `stop_timeout`
    seconds, SIGKILLing it if not; restart() = stop() + start() on the same state dir.
    The logs are printed when the daemon misbehaves (does not start, does not stop in time,
    exits non-zero) and, through DaemonTestCase, when the test fails."""

    def __init__(self, config=None, binary=None, cli=None, start_timeout=15.0, stop_timeout=5.0,
                 print_events=True, extra_args=(), tmpdir=None, die_with_parent=True):
        self.config = test_config() if config is None else config
        self.binary = binary
        self.cli_binary = cli
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.print_events = print_events
        self.extra_args = list(extra_args)
        self.tmpdir = tmpdir
        self.die_with_parent = die_with_parent
        self.dir = self.socket = self.state_dir = self.config_path = None
        self.proc = None
        self.started_at = None  # time.time() just before the last start
        self.starts = 0
        self._cl = None
        self._other_cli = None
        self._logs_shown = False

    # -- lifecycle -------------------------------------------------------
    def __enter__(self):
        found_daemon, found_cli = find_storwatch()
        self.binary = self.binary or found_daemon
        self.cli_binary = self.cli_binary or found_cli
        if not self.binary or not self.cli_binary:
            require_storwatch()
        self._cl = Cleanup()
        try:
            self.dir = tempdir(prefix="swtest-daemon-", cleanup=self._cl, parent=self.tmpdir)
            os.chmod(self.dir, 0o755)  # other uids reach the socket (rule permission tests)
            self.socket = os.path.join(self.dir, "s")
            self.state_dir = os.path.join(self.dir, "state")
            self.config_path = os.path.join(self.dir, "config.toml")
            self.write_config(self.config)
            self._cl.push(self._final_stop)
            self.start()
        except BaseException:
            self.show_logs("storwatchd failed to start")
            self._cl.close(_propagating=True)
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._cl.close(_propagating=exc_type is not None)
        return False

    def write_config(self, text):
        self.config = text
        with open(self.config_path, "w") as f:
            f.write(text)

    @property
    def stdout_path(self):
        return os.path.join(self.dir, "stdout.log")

    @property
    def stderr_path(self):
        return os.path.join(self.dir, "stderr.log")

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def start(self):
        if self.alive:
            raise RuntimeError("storwatchd is already running")
        cmd = [self.binary, "--config", self.config_path, "--socket", self.socket,
               "--state-dir", self.state_dir] + (["--print"] if self.print_events else []) + \
            self.extra_args
        self.starts += 1
        with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
            marker = f"==== start #{self.starts}: {' '.join(cmd)}\n".encode()
            out.write(marker)
            err.write(marker)
            out.flush()
            err.flush()
            self.started_at = time.time()
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                preexec_fn=_die_with_parent if self.die_with_parent else None)

        def answering():
            if self.proc.poll() is not None:
                return True
            if not os.path.exists(self.socket):
                return False
            return self.cli("doctor", timeout=5)[0] == 0
        try:
            wait_for(answering, self.start_timeout, f"storwatchd to answer on {self.socket}",
                     interval=0.01)
        except AssertionError:
            self.show_logs("storwatchd did not answer in time")
            raise
        if self.proc.poll() is not None:
            self.show_logs("storwatchd exited during start")
            raise AssertionError(f"storwatchd exited with status {self.proc.returncode} at start")
        return self

    def stop(self, timeout=None, sig=signal.SIGTERM):
        """Send `sig` (SIGTERM) and wait; asserts exit status 0 within `timeout` (default
        stop_timeout) seconds.  A daemon that does not exit in time is SIGKILLed, then the
        assertion fails.  Returns the seconds it took."""
        if self.proc is None or self.proc.poll() is not None:
            return 0.0
        timeout = (self.stop_timeout if timeout is None else timeout) * SANITIZED_SLOWDOWN
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.show_logs(f"storwatchd did not exit within {timeout} s of signal {int(sig)}")
            raise AssertionError(f"storwatchd did not exit within {timeout} s of signal "
                                 f"{int(sig)} (killed)")
        took = time.monotonic() - t0
        if rc != 0:
            self.show_logs(f"storwatchd exited with status {rc}")
            raise AssertionError(f"storwatchd exited with status {rc} after signal {int(sig)}")
        return took

    def kill(self):
        """SIGKILL, no questions asked."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, config=None):
        """stop() then start() on the same socket and state directory (and `config`, if given)."""
        self.stop()
        if config is not None:
            self.write_config(config)
        return self.start()

    def _final_stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            self.stop()
        finally:
            self.kill()

    # -- logs ------------------------------------------------------------
    def _read(self, path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    def stdout(self):
        return self._read(self.stdout_path)

    def stderr(self):
        return self._read(self.stderr_path)

    def show_logs(self, why=""):
        if self._logs_shown or self.dir is None:
            return
        self._logs_shown = True
        print(f"swtest: storwatchd logs{' (' + why + ')' if why else ''}:\n"
              f"--- stderr:\n{self.stderr().rstrip()}\n--- stdout (--print):\n"
              f"{self.stdout().rstrip()}\n---", file=sys.stderr, flush=True)

    _LINE = re.compile(r"^(?P<time>\S+) #(?P<seq>\d+) (?P<severity>\S+)\s+(?P<type>\S+)"
                       r"(?: (?P<where>\S+) \((?P<dev>\d+:\d+) (?P<fstype>\S+)\))?(?P<rest>.*)$")

    def printed_events(self, start=None):
        """Events of the --print lines (of the start number `start`, default every start),
        as dicts: seq, severity, type, mount (the first mount point), dev, fstype, detail
        (a dict of strings)."""
        out, n = [], 0
        for line in self.stdout().splitlines():
            if line.startswith("==== start #"):
                n = int(line.split("#")[1].split(":")[0])
                continue
            if start is not None and n != start:
                continue
            m = self._LINE.match(line)
            if not m:
                continue
            detail = {}
            for tok in m.group("rest").split():
                k, sep, v = tok.partition("=")
                if sep:
                    detail[k] = v
            out.append({"seq": int(m.group("seq")), "severity": m.group("severity"),
                        "type": m.group("type"), "mount": m.group("where"), "dev": m.group("dev"),
                        "fstype": m.group("fstype"), "detail": detail, "start": n})
        return out

    # -- CLI ---------------------------------------------------------------
    def _cli_for(self, user):
        if user is None:
            return self.cli_binary
        if self._other_cli is None:
            # The build tree may not be reachable for other uids; the CLI links libstorwatch
            # statically, so a copy next to the socket works.
            self._other_cli = os.path.join(self.dir, "storwatch")
            shutil.copy(self.cli_binary, self._other_cli)
            os.chmod(self._other_cli, 0o755)
        return self._other_cli

    def command(self, *args, user=None):
        """The storwatch command line for `args` with --socket inserted after the
        subcommand ("rules add" has two words)."""
        args = [str(a) for a in args]
        n = 2 if args[:1] == ["rules"] and len(args) > 1 and not args[1].startswith("-") else 1
        return [self._cli_for(user)] + args[:n] + ["--socket", self.socket] + args[n:]

    def cli(self, *args, user=None, timeout=30, input=None):
        """Run `storwatch ARGS --socket S`, optionally as uid `user` (gid = uid, no
        supplementary groups); returns (rc, stdout, stderr)."""
        preexec = None
        if user is not None:
            uid = int(user)

            def preexec():
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
        p = subprocess.run(self.command(*args, user=user), capture_output=True, text=True,
                           timeout=timeout, preexec_fn=preexec, input=input,
                           stdin=None if input is not None else subprocess.DEVNULL,
                           env={k: v for k, v in os.environ.items() if k != "STORWATCH_SOCKET"},
                           cwd="/")
        return p.returncode, p.stdout, p.stderr

    def cli_ok(self, *args, **kwargs):
        """cli(), asserting exit status 0; returns stdout."""
        rc, out, err = self.cli(*args, **kwargs)
        if rc != 0:
            raise AssertionError(f"storwatch {' '.join(map(str, args))} exited with {rc}: "
                                 f"{err.strip()}")
        return out

    def cli_json(self, *args, **kwargs):
        return json.loads(self.cli_ok(*args, "--json", **kwargs))

    def status_json(self, all=False):
        """The filesystems of `storwatch status --json [--all]` (a list)."""
        return self.cli_json("status", *(["--all"] if all else []))["filesystems"]

    def fs_status(self, mount, all=False):
        """The status entry listing mount point `mount`, or None."""
        mount = _canon(mount)
        for fs in self.status_json(all=all):
            if mount in fs.get("mounts", []):
                return fs
        return None

    def wait_sample(self, mount, after, timeout=10.0, what=None):
        """Polls status until the filesystem mounted at `mount` has a statfs sample taken
        after `after` (time.time() seconds); returns its status entry.  Every event of that
        sample was published before the sample shows in the status."""
        def fresh():
            fs = self.fs_status(mount)
            if fs and fs.get("sampled") and parse_time(fs["sampled"]) > after:
                return fs
            return None
        return wait_for(fresh, timeout, what or f"a statfs sample of {mount} newer than {after}")

    def last_seq(self):
        """The sequence number of the newest event (Doctor's last_seq)."""
        return int(self.cli_json("doctor")["last_seq"])

    def monitor(self, *args, cleanup=None, **kwargs):
        """Start `storwatch monitor --json ARGS` (see Monitor); stopped with the daemon or
        by `cleanup`."""
        m = Monitor(self, args, **kwargs)
        (cleanup or self._cl).enter(m)
        return m


class Monitor:
    """`storwatch --socket S monitor --json ARGS` in the background; a thread parses each
    line into the list of events seen.

    __enter__ returns once the subscription is confirmed: the CLI subscribes (and gets the
    daemon's first reply) before it creates the signalfd of its print loop, so a signalfd
    among its descriptors is the positive sign.  Events published after that reach it.

    wait_event(pred) returns the first matching event (failing with every event seen);
    assert_no_event(pred) first synchronises: it asks the daemon for its newest sequence
    number and waits until this monitor has seen it (only for a monitor without filters,
    which sees every event), so it never relies on a blind sleep.  Call it after another
    positive sign that the action it is about was observed, e.g. Daemon.wait_sample()."""

    def __init__(self, daemon, args=(), start_timeout=10.0):
        self.daemon = daemon
        self.args = [str(a) for a in args]
        self.start_timeout = start_timeout
        self.proc = None
        self.start_no = daemon.starts  # the daemon run this monitor is subscribed to
        self.base_seq = 0  # events up to this one may predate the subscription
        self._events = []
        self._bad = []
        self._cond = threading.Condition()
        self._thread = None
        self._err_path = None

    def __enter__(self):
        cmd = self.daemon.command("monitor", "--json", *self.args)
        fd, self._err_path = tempfile.mkstemp(prefix="monitor-", suffix=".err", dir=self.daemon.dir)
        os.close(fd)
        with open(self._err_path, "wb") as err:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                         stderr=err, preexec_fn=_die_with_parent, cwd="/")
        self._thread = threading.Thread(target=self._reader, daemon=True)
        self._thread.start()
        try:
            wait_for(lambda: self.proc.poll() is not None or self._subscribed(),
                     self.start_timeout, "storwatch monitor to subscribe")
            if self.proc.poll() is not None:
                raise AssertionError(f"storwatch monitor exited with {self.proc.returncode}: "
                                     f"{self.stderr().strip()}")
            self.base_seq = self.daemon.last_seq()
        except BaseException:
            self._stop()
            raise
        return self

    def __exit__(self, exc_type, exc, tb):
        self._stop()
        return False

    def _subscribed(self):
        try:
            fds = os.listdir(f"/proc/{self.proc.pid}/fd")
        except OSError:
            return False
        for fd in fds:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/fd/{fd}") == "anon_inode:[signalfd]":
                    return True
            except OSError:
                pass
        return False

    def _reader(self):
        for line in self.proc.stdout:
            line = line.decode(errors="replace").strip()
            if not line:
                continue
            with self._cond:
                try:
                    self._events.append(json.loads(line))
                except ValueError:
                    self._bad.append(line)
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _stop(self):
        if self.proc is None:
            return
        rc = terminate_process(self.proc, 5.0, 5.0)
        if self._thread:
            self._thread.join(5)
        self.proc.stdout.close()
        if rc not in (0, -signal.SIGKILL) and self.daemon.alive and \
                self.daemon.starts == self.start_no:
            print(f"swtest: storwatch monitor exited with {rc}: {self.stderr().strip()}",
                  file=sys.stderr, flush=True)

    def stderr(self):
        try:
            with open(self._err_path, errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return ""

    @property
    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def events(self, pred=None):
        """Events seen so far (dicts), oldest first, optionally only matching `pred`."""
        with self._cond:
            evs = list(self._events)
        if self._bad:
            raise AssertionError(f"storwatch monitor printed lines that are not JSON: {self._bad[:3]}")
        return [e for e in evs if pred is None or pred(e)]

    def _report(self, text):
        evs = self.events()
        seen = "\n  ".join(_short_event(e) for e in evs) or "(none)"
        status = "" if self.alive else f"\nmonitor exited: {self.proc.returncode} {self.stderr().strip()}"
        return f"{text}; events seen ({len(evs)}):\n  {seen}{status}"

    def wait_event(self, pred, timeout=10.0, what=None, after_seq=0):
        """The first event (with seq > after_seq) matching pred, waiting up to `timeout`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for e in self._events:
                    if e.get("seq", 0) > after_seq and pred(e):
                        return e
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (not self.alive and not self._thread.is_alive()):
                    break
                self._cond.wait(min(remaining, 0.5))
        raise AssertionError(self._report(
            f"timed out after {timeout} s waiting for: {_describe(pred, what)}"))

    def sync(self, timeout=10.0):
        """Waits until this (unfiltered) monitor has seen every event the daemon published so
        far; returns that sequence number."""
        if self.args:
            raise RuntimeError("Monitor.sync needs a monitor without filters")
        target = self.daemon.last_seq()
        if target <= self.base_seq:
            return target

        def caught_up():
            return any(e.get("seq", 0) >= target for e in self.events())
        try:
            wait_for(caught_up, timeout, f"the monitor to see event #{target}")
        except AssertionError as e:
            raise AssertionError(self._report(str(e))) from None
        return target

    def assert_no_event(self, pred, after_seq=0, what=None):
        """Asserts that no event with seq > after_seq matches pred, after sync()ing with the
        daemon; returns the sequence number synchronised to."""
        upto = self.sync()
        bad = [e for e in self.events(pred) if e.get("seq", 0) > after_seq]
        if bad:
            raise AssertionError(self._report(
                f"unexpected event(s) {_describe(pred, what)}: "
                + ", ".join(_short_event(e) for e in bad)))
        return upto


class DaemonTestCase(TestCase):
    """TestCase that prints the logs of every Daemon it made with self.daemon() when the test
    fails (before they are stopped)."""

    def setUp(self):
        super().setUp()
        self._daemons = []
        # unittest keeps no "this test failed" flag that cleanups can read; its result object
        # counts failures (subtests included), so compare the counts.
        self._result = getattr(getattr(self, "_outcome", None), "result", None)
        self._bad_before = self._bad_count()
        self.addCleanup(self._show_logs_on_failure)  # runs before self.cleanup closes

    def _bad_count(self):
        r = self._result
        if r is None:
            return None
        return len(r.failures) + len(r.errors) + len(getattr(r, "unexpectedSuccesses", ()))

    def daemon(self, config=None, **kwargs):
        """A Daemon(config, **kwargs) registered on self.cleanup."""
        d = self.cleanup.enter(Daemon(config, **kwargs))
        self._daemons.append(d)
        return d

    def _show_logs_on_failure(self):
        before = self._bad_before
        if before is None or self._bad_count() != before:
            for d in self._daemons:
                d.show_logs("test failed")
