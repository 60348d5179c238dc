#!/usr/bin/env python3
"""The systemd units in systemd/: hardening score, validity, agreement with the daemon.

- `systemd-analyze security --offline=true` rates storwatchd.service at most MAX_EXPOSURE (the
  value measured when the unit was written, plus a little slack): a change that weakens the
  hardening fails here until the threshold is raised on purpose.
- `systemd-analyze verify` finds nothing wrong but the missing /usr/sbin/storwatchd (the tests
  run from the build tree, nothing is installed).
- The units agree with the daemon's embedded defaults (socket path, state and configuration
  directories) and keep what its sources need (no ProtectKernelLogs=, /dev/kmsg readable, ...).
- Under strace, a storwatchd session (start, calls, a subscription, hostile input, reload, stop)
  makes only system calls that the unit's SystemCallFilter= allows, so the daemon does not fail
  with EPERM once systemd runs it. (Skipped without strace or ptrace.)
- Capabilities (as root, with setpriv): a daemon started without some of the unit's capabilities
  names each missing one in `storwatch doctor` with what it disables, and the sources that need
  it report why they are unavailable; a daemon without any capability names exactly the unit's
  CapabilityBoundingSet=, so the unit grants what the sources need and nothing else.
  (Skipped without root or setpriv.)
- statmount and listmount, which systemd 252 cannot name in SystemCallFilter=, fail under the
  unit's filter (EPERM up to systemd 254, ENOSYS from 255): under a seccomp filter doing just
  that, storwatchd still starts and reports mount changes (the mountinfo fallback).

Exit 77 (skipped) only if systemd-analyze is missing.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

UNIT_DIR = os.path.join(swtest.REPO_ROOT, "systemd")
SERVICE = os.path.join(UNIT_DIR, "storwatchd.service")
SOCKET_UNIT = os.path.join(UNIT_DIR, "storwatchd.socket")

# Measured 3.3 ("OK") with systemd 252 when the unit was written, 3.7 once the network sinks
# needed AF_INET/AF_INET6 and IPAddressDeny= went (a site sets it in a drop-in). Raise it only on
# purpose, with the reason in the unit file.
MAX_EXPOSURE = 3.8
ACCEPTABLE_LEVELS = ("PERFECT", "SAFE", "OK")

# What `systemd-analyze verify` may say in a source tree: the daemon is not installed.
VERIFY_ALLOWED = [re.compile(r"storwatchd\.service: Command /usr/sbin/storwatchd is not "
                             r"executable: No such file or directory")]

SYSTEMD_ANALYZE = swtest.which("systemd-analyze")


def parse_unit(path):
    """{section: {key: [values...]}} of a unit file (no line continuations in ours)."""
    out, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("[") and line.endswith("]"):
                section = out.setdefault(line[1:-1], {})
                continue
            key, _, value = line.partition("=")
            section.setdefault(key.strip(), []).append(value.strip())
    return out


def analyze(*args, timeout=60):
    return subprocess.run([SYSTEMD_ANALYZE] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


class UnitFileTest(swtest.TestCase):
    timeout = 120

    def setUp(self):
        super().setUp()
        self.service = parse_unit(SERVICE)
        self.socket = parse_unit(SOCKET_UNIT)

    def test_security_exposure(self):
        p = analyze("security", "--offline=true", "--no-pager", SERVICE)
        text = p.stdout + p.stderr
        m = re.search(r"Overall exposure level for storwatchd\.service: (\d+(?:\.\d+)?) (\w+)",
                      text)
        self.assertTrue(m, f"no overall exposure level in:\n{text}")
        score, level = float(m.group(1)), m.group(2)
        print(f"systemd-analyze security: {score} {level}", flush=True)
        self.assertIn(level, ACCEPTABLE_LEVELS, text)
        self.assertLessEqual(score, MAX_EXPOSURE, text)

    def test_verify(self):
        p = analyze("verify", "--man=no", SERVICE, SOCKET_UNIT)
        problems = [line for line in (p.stdout + p.stderr).splitlines()
                    if line.strip() and not any(rx.search(line) for rx in VERIFY_ALLOWED)]
        self.assertEqual(problems, [], "systemd-analyze verify:\n" + p.stdout + p.stderr)

    def test_units_agree_with_the_daemon(self):
        svc = self.service["Service"]
        sock = self.socket["Socket"]
        defaults = {"socket": "/run/storwatch/io.storwatch", "state_dir": "/var/lib/storwatch"}
        daemon = swtest.find_storwatch()[0]
        if daemon:
            text = subprocess.run([daemon, "--print-default-config"], capture_output=True,
                                  text=True, timeout=30, check=True).stdout
            for key in defaults:
                m = re.search(rf'^{key} = "([^"]*)"', text, re.M)
                self.assertTrue(m, f"{key} not in the default configuration")
                defaults[key] = m.group(1)
        self.assertEqual(svc["Type"], ["notify"])
        self.assertEqual(svc["ExecStart"], ["/usr/sbin/storwatchd"])
        self.assertEqual(svc["ExecReload"], ["kill -HUP $MAINPID"])
        self.assertEqual(sock["ListenStream"], [defaults["socket"]])
        self.assertEqual(sock["SocketMode"], ["0666"])
        run_dir, _, _ = defaults["socket"].rpartition("/")
        self.assertEqual(run_dir, "/run/" + svc["RuntimeDirectory"][0])
        # The socket unit's file lives in the runtime directory: a stop must not remove it.
        self.assertEqual(svc["RuntimeDirectoryPreserve"], ["yes"])
        self.assertEqual(defaults["state_dir"], "/var/lib/" + svc["StateDirectory"][0])
        self.assertEqual(svc["ConfigurationDirectory"], ["storwatch"])  # /etc/storwatch/*.toml
        # What the sources need, kept on purpose (see the comments in the unit).
        self.assertNotIn("ProtectKernelLogs", svc)  # /dev/kmsg
        self.assertNotIn("PrivateNetwork", svc)     # uevents and quota netlink: init netns only
        self.assertNotIn("PrivateDevices", svc)     # /dev/kmsg, block devices
        self.assertIn("/dev/kmsg r", svc["DeviceAllow"])
        self.assertEqual(svc["RestrictNamespaces"], ["mnt"])
        families = " ".join(svc["RestrictAddressFamilies"]).split()
        self.assertEqual(sorted(families), ["AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"])
        caps = " ".join(svc["CapabilityBoundingSet"]).split()
        self.assertEqual(sorted(caps), sorted(["CAP_SYS_ADMIN", "CAP_DAC_READ_SEARCH",
                                               "CAP_SYSLOG", "CAP_BPF", "CAP_PERFMON"]))
        # Settings that would change which mounts the daemon sees as writable or reachable stay
        # off until the daemon judges writability by the superblock (see the unit's comment).
        for key in ("ProtectSystem", "ProtectHome", "PrivateTmp"):
            self.assertNotIn(key, svc, f"{key}= hides or write-protects mounts from storwatchd")


# ---------------------------------------------------------------------------
# Capabilities: what doctor says the daemon lacks
# ---------------------------------------------------------------------------

class CapabilitiesTest(swtest.DaemonTestCase):
    timeout = 120

    def setUp(self):
        super().setUp()
        if os.geteuid() != 0:
            self.skipTest("needs root (to start storwatchd with a reduced capability set)")
        self.setpriv = swtest.which("setpriv")
        if self.setpriv is None:
            self.skipTest("setpriv (util-linux) not installed")
        self.daemon_binary = swtest.find_storwatch()[0]
        if self.daemon_binary is None:
            self.skipTest("storwatchd not found (build it, or set STORWATCHD)")
        self.bin_dir = swtest.tempdir(prefix="swtest-caps-", cleanup=self.cleanup)
        os.chmod(self.bin_dir, 0o755)

    def start_with_bounding_set(self, spec):
        """A storwatchd (as root) whose capability bounding set is changed by setpriv's `spec`
        ("-sys_admin,-bpf", "-all,+syslog"): what it has left is what systemd would leave it."""
        wrapper = os.path.join(self.bin_dir, f"storwatchd-{len(os.listdir(self.bin_dir))}")
        with open(wrapper, "w") as f:
            f.write(f"#!/bin/sh\nexec {self.setpriv} --inh-caps=-all --bounding-set={spec} "
                    f"{self.daemon_binary} \"$@\"\n")
        os.chmod(wrapper, 0o755)
        return self.daemon(binary=wrapper)

    def test_doctor_names_what_each_missing_capability_disables(self):
        d = self.start_with_bounding_set("-sys_admin,-dac_read_search")
        doc = d.cli_json("doctor")
        self.assertNotIn("CAP_SYS_ADMIN", doc["capabilities"])
        self.assertNotIn("CAP_DAC_READ_SEARCH", doc["capabilities"])
        missing = {m["name"]: m["disables"] for m in doc["missing_capabilities"]}
        self.assertIn("FAN_FS_ERROR", missing.get("CAP_SYS_ADMIN", ""), missing)
        self.assertIn("open_by_handle_at", missing.get("CAP_DAC_READ_SEARCH", ""), missing)
        # Present ones are not listed, and CAP_SYSLOG is present here.
        self.assertNotIn("CAP_SYSLOG", missing)
        sources = {s["name"]: s for s in doc["sources"]}
        self.assertFalse(sources["fanotify-fs-error"]["available"])
        self.assertIn("CAP_SYS_ADMIN", sources["fanotify-fs-error"]["reason"])
        text = d.cli_ok("doctor")
        self.assertIn("missing capabilities", text)
        self.assertRegex(text, r"CAP_SYS_ADMIN\s+disables fanotify FAN_FS_ERROR")
        self.assertRegex(text, r"CAP_DAC_READ_SEARCH\s+disables open_by_handle_at")

    def test_without_any_capability_the_missing_ones_are_the_units_set(self):
        d = self.start_with_bounding_set("-all")
        doc = d.cli_json("doctor")
        self.assertEqual(doc["capabilities"], [])
        missing = sorted(m["name"] for m in doc["missing_capabilities"])
        unit = sorted(" ".join(parse_unit(SERVICE)["Service"]["CapabilityBoundingSet"]).split())
        self.assertEqual(missing, unit, "storwatch doctor and the unit's CapabilityBoundingSet= "
                         "disagree about what the sources need")
        for m in doc["missing_capabilities"]:
            self.assertTrue(m["disables"], m)

    def test_with_the_units_capabilities_nothing_is_missing(self):
        unit = " ".join(parse_unit(SERVICE)["Service"]["CapabilityBoundingSet"]).split()
        d = self.start_with_bounding_set(",".join(["-all"] + [f"+{c[4:].lower()}" for c in unit]))
        doc = d.cli_json("doctor")
        # What the machine itself withholds (e.g. a container without CAP_SYS_ADMIN) may stay
        # missing; nothing the unit grants and the machine has is.
        granted = set(doc["capabilities"])
        self.assertTrue(granted <= set(unit), f"capabilities beyond the unit's set: {granted - set(unit)}")
        expected = set(unit) - granted
        if "CAP_SYS_ADMIN" in granted:  # it stands in for these
            expected -= {"CAP_BPF", "CAP_PERFMON", "CAP_SYSLOG"}
        self.assertEqual({m["name"] for m in doc["missing_capabilities"]}, expected)


# ---------------------------------------------------------------------------
# statmount/listmount refused as the unit's filter refuses them
# ---------------------------------------------------------------------------

# A wrapper that installs a seccomp filter failing statmount (457) and listmount (458) with the
# given errno, as systemd's allow-list filter does for system calls it cannot name, checks that it
# works, and execs storwatchd.
SECCOMP_WRAPPER = r"""#!/usr/bin/env python3
import ctypes, errno, os, struct, sys
ERR = int(sys.argv[1])
DAEMON = sys.argv[2]
AUDIT_ARCH_X86_64 = 0xC000003E
insns = [
    (0x20, 0, 0, 4),                    # A = arch
    (0x15, 0, 4, AUDIT_ARCH_X86_64),    # other arch: allow
    (0x20, 0, 0, 0),                    # A = nr
    (0x15, 1, 0, 457),                  # statmount
    (0x15, 0, 1, 458),                  # listmount
    (0x06, 0, 0, 0x00050000 | ERR),     # SECCOMP_RET_ERRNO
    (0x06, 0, 0, 0x7FFF0000),           # SECCOMP_RET_ALLOW
]
prog = ctypes.create_string_buffer(b"".join(struct.pack("=HBBI", *i) for i in insns))
class Fprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
fprog = Fprog(len(insns), ctypes.addressof(prog))
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(22, 2, ctypes.byref(fprog), 0, 0) != 0:
    sys.exit("seccomp: " + os.strerror(ctypes.get_errno()))
libc.syscall.restype = ctypes.c_long
if libc.syscall(458, 0, 0, 0, 0) != -1 or ctypes.get_errno() != ERR:
    sys.exit("seccomp: the filter does not refuse listmount")
os.execv(DAEMON, [DAEMON] + sys.argv[3:])
"""


class StatmountRefusedTest(swtest.DaemonTestCase):
    timeout = 120

    def check(self, err):
        if os.geteuid() != 0:
            self.skipTest("needs root (to mount)")
        if os.uname().machine != "x86_64":
            self.skipTest("the test's seccomp filter is written for x86_64")
        daemon = swtest.find_storwatch()[0]
        if daemon is None:
            self.skipTest("storwatchd not found (build it, or set STORWATCHD)")
        d = swtest.tempdir(prefix="swtest-seccomp-", cleanup=self.cleanup)
        os.chmod(d, 0o755)
        wrapper = os.path.join(d, "storwatchd")
        with open(wrapper, "w") as f:
            f.write(SECCOMP_WRAPPER)
        os.chmod(wrapper, 0o755)
        # Daemon runs [binary, args...]: a shell line puts the errno and the real binary first.
        launcher = os.path.join(d, "launch")
        with open(launcher, "w") as f:
            f.write(f"#!/bin/sh\nexec {sys.executable} {wrapper} {err} {daemon} \"$@\"\n")
        os.chmod(launcher, 0o755)
        sw = self.daemon(binary=launcher)
        mon = sw.monitor("--type", "mount.*")
        mnt = os.path.join(d, "mnt")
        os.mkdir(mnt)
        swtest.mount_tmpfs(mnt, 1 << 20, cleanup=self.cleanup)
        e = mon.wait_event(lambda e: e["type"] == "mount.attached" and
                           e["detail"].get("path") == os.path.realpath(mnt),
                           what="mount.attached of the new tmpfs")
        self.assertEqual(e["detail"]["fstype"], "tmpfs")
        self.assertTrue(sw.alive)

    def test_eperm_as_systemd_252(self):
        self.check(1)

    def test_enosys_as_systemd_255(self):
        self.check(38)


# ---------------------------------------------------------------------------
# System calls of a real session against the unit's filter
# ---------------------------------------------------------------------------

def syscall_groups():
    """{"@group": [entries]} from `systemd-analyze syscall-filter` (entries may be @groups)."""
    p = analyze("syscall-filter", "--no-pager")
    groups, current = {}, None
    for line in p.stdout.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif current is not None and line.startswith("    ") and not line.strip().startswith("#"):
            current.append(line.strip())
        elif not line.strip():
            current = None
    return groups


def expand(items, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for item in items:
        if item.startswith("@"):
            if item in seen:
                continue
            seen.add(item)
            out |= expand(groups.get(item, []), groups, seen)
        else:
            out.add(item)
    return out


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == ppid:
            out.append(int(d))
    return out


class Client:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.buf = b""

    def call(self, method, parameters=None, **flags):
        msg = dict(method=method, **flags)
        if parameters is not None:
            msg["parameters"] = parameters
        self.sock.sendall(json.dumps(msg).encode() + b"\0")
        return self.receive()

    def receive(self):
        while b"\0" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed")
            self.buf += chunk
        msg, _, self.buf = self.buf.partition(b"\0")
        return json.loads(msg)

    def close(self):
        self.sock.close()


class SyscallFilterTest(swtest.TestCase):
    timeout = 120

    def test_session_stays_inside_the_filter(self):
        if os.environ.get("STORWATCH_SANITIZED") == "1":
            # The daemon runs under strace, and LeakSanitizer cannot run under ptrace (it fails
            # the exit); the sanitizer runtime's own system calls are not the daemon's anyway.
            self.skipTest("ASan/UBSan build: the filter is checked in the normal build")
        strace = swtest.which("strace")
        if strace is None:
            self.skipTest("strace not installed")
        daemon = swtest.find_storwatch()[0]
        if daemon is None:
            self.skipTest("storwatchd not found (build it, or set STORWATCHD)")
        svc = parse_unit(SERVICE)["Service"]
        filters = " ".join(svc.get("SystemCallFilter", [])).split()
        self.assertTrue(filters and not any(f.startswith("~") for f in filters),
                        "expected an allow-list SystemCallFilter=")
        groups = syscall_groups()
        allowed = expand(filters, groups)
        # Settings that add their own deny lists on top.
        for key, denied in (("ProtectClock", ["@clock"]), ("ProtectKernelModules", ["@module"]),
                            ("ProtectHostname", ["sethostname", "setdomainname"])):
            if svc.get(key) == ["yes"]:
                allowed -= expand(denied, groups)
        known = expand(["@known"], groups)

        d = swtest.tempdir(prefix="swtest-unit-", cleanup=self.cleanup)
        sock_path, trace = os.path.join(d, "s"), os.path.join(d, "trace")
        notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.cleanup.push(notify.close)
        notify.bind(os.path.join(d, "notify"))
        notify.settimeout(20)
        config = os.path.join(d, "config.toml")
        with open(config, "w") as f:
            f.write("[thresholds]\nlevels = []\npoll_min = \"20ms\"\n")
        err = open(os.path.join(d, "stderr"), "wb")
        self.cleanup.push(err.close)
        tracer = subprocess.Popen([strace, "-f", "-qq", "-o", trace, daemon, "--config", config,
                                   "--socket", sock_path, "--state-dir", os.path.join(d, "st")],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                  env=dict(os.environ, NOTIFY_SOCKET=notify.getsockname()))
        self.cleanup.push(swtest.terminate_process, tracer)

        def kill_tracee():
            # Stopping strace only detaches it: the daemon must be stopped on its own.
            for child in children_of(tracer.pid):
                try:
                    os.kill(child, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.cleanup.push(kill_tracee)

        def expect(assignment):
            while True:
                try:
                    data = notify.recv(4096).decode()
                except socket.timeout:
                    with open(os.path.join(d, "stderr"), errors="replace") as f:
                        log = f.read()
                    if "ptrace" in log or "Operation not permitted" in log:
                        self.skipTest(f"strace cannot trace here: {log.strip()}")
                    raise AssertionError(f"no {assignment} from storwatchd under strace:\n{log}")
                if assignment in data.split("\n"):
                    return
        expect("READY=1")
        pids = children_of(tracer.pid)
        self.assertEqual(len(pids), 1, f"children of strace: {pids}")
        pid = pids[0]

        # A session that touches every code path a client can reach today.
        c = Client(sock_path)
        self.cleanup.push(c.close)
        c.call("org.varlink.service.GetInfo")
        c.call("org.varlink.service.GetInterfaceDescription", {"interface": "io.storwatch"})
        fs = c.call("io.storwatch.GetFilesystem", {"path": os.path.realpath(d)})
        c.call("io.storwatch.ListFilesystems", {"all": True})
        c.call("io.storwatch.ListRules")
        c.call("io.storwatch.Doctor")
        c.call("io.storwatch.AddRule", {"line": "/ G T 1"})  # refused when not root: fine
        sub = Client(sock_path)
        self.cleanup.push(sub.close)
        sub.call("io.storwatch.Subscribe", {}, more=True)
        bad = Client(sock_path)
        self.cleanup.push(bad.close)
        self.assertIn("error", bad.call("garbage"))
        # Reload with a rule, so statfs polling runs and an event reaches the subscriber.
        if "parameters" in fs and fs["parameters"]["filesystem"]["watched"]:
            mount = fs["parameters"]["filesystem"]["mounts"][0]
            with open(config, "a") as f:
                f.write(f'[[rule]]\npath = {json.dumps(mount)}\n'
                        'levels = [ { resource = "blocks", below = "1P" } ]\n')
        os.kill(pid, signal.SIGHUP)
        expect("READY=1")
        if "parameters" in fs and fs["parameters"]["filesystem"]["watched"]:
            # Other events may come first: kernel messages of other tests on this machine.
            while sub.receive()["parameters"]["event"]["type"] != "space.threshold":
                pass
        os.kill(pid, signal.SIGTERM)
        expect("STOPPING=1")
        self.assertEqual(tracer.wait(timeout=20), 0)

        used = set()
        with open(trace) as f:
            for line in f:
                m = re.match(r"^\d+\s+([a-z_][a-z0-9_]*)\(", line)
                if m:
                    used.add(m.group(1))
        if "parameters" in fs and fs["parameters"]["filesystem"]["watched"]:
            self.assertIn("statfs", used, "the session did not exercise statfs")
        forbidden = sorted(s for s in used - allowed if s in known)
        unknown = sorted(s for s in used - allowed if s not in known)
        if unknown:
            # Unknown to this systemd (statmount and listmount for systemd 252): up to systemd
            # 254 its allow-list filter fails them with SystemCallErrorNumber= (EPERM), from 255
            # on with ENOSYS; the caller must treat either as "not available here" and fall back
            # (the unit's comment says how storwatchd does).
            print(f"note: system calls unknown to this systemd (EPERM or ENOSYS under the filter): "
                  f"{unknown}", flush=True)
        self.assertEqual(forbidden, [], "storwatchd made system calls that the unit's "
                         "SystemCallFilter= forbids (EPERM under systemd); allow them in "
                         "systemd/storwatchd.service with the reason, or avoid them")


if __name__ == "__main__":
    if SYSTEMD_ANALYZE is None:
        swtest.skip("systemd-analyze not installed")
    swtest.main()
