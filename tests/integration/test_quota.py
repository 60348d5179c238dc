#!/usr/bin/env python3
"""quota.warning from the kernel's VFS_DQUOT generic netlink family (issue 5).

This kernel has no quota format (CONFIG_QFMT_V2 unset, tmpfs without quota options), so no real
limit can be crossed here. The test sends, as root, messages laid out exactly as
fs/quota/netlink.c builds them to the family's "events" multicast group, where storwatchd listens
like quota_nld does, and checks:

- every quota type and every warning kind gives a quota.warning with each field right (the
  filesystem on the device the message names, the quota type, id, warning, the uid that caused
  it);
- malformed messages (truncated, wrong attribute sizes, missing attributes, lengths past the end,
  another command) give no event, are counted in `storwatch doctor`, and the daemon keeps
  answering;
- only a privileged process can send to the group (so a message that did not come from the
  kernel came from root);
- `[sources] quota_netlink = false` turns the listener off, and doctor says so;
- where the family does not exist (a network namespace of its own: the kernel registers VFS_DQUOT
  in the initial one only), the daemon runs on and reports source.unavailable with the reason.

Exit 77 (skipped) without root or when the kernel has no VFS_DQUOT family.
"""

import json
import os
import socket
import struct
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME, CTRL_ATTR_MCAST_GROUPS = 1, 2, 7
CTRL_ATTR_MCAST_GRP_NAME, CTRL_ATTR_MCAST_GRP_ID = 1, 2
NLMSG_ERROR = 2

# include/uapi/linux/quota.h
QUOTA_NL_C_WARNING = 1
A_QTYPE, A_EXCESS_ID, A_WARNING, A_DEV_MAJOR, A_DEV_MINOR, A_CAUSED_ID, A_PAD = range(1, 8)
WARNINGS = {1: "ihard", 2: "igrace", 3: "isoft", 4: "bhard", 5: "bgrace", 6: "bsoft",
            7: "ihard_below", 8: "isoft_below", 9: "bhard_below", 10: "bsoft_below"}
QTYPES = {0: "user", 1: "group", 2: "project"}


def nla(atype, payload):
    data = struct.pack("=HH", 4 + len(payload), atype) + payload
    return data + b"\0" * (-len(data) % 4)


def nlmsg(mtype, payload, flags=0, seq=0):
    return struct.pack("=IHHII", 16 + len(payload), mtype, flags, seq, 0) + payload


def parse_attrs(data):
    out, at = {}, 0
    while at + 4 <= len(data):
        length, atype = struct.unpack_from("=HH", data, at)
        if length < 4:
            break
        out.setdefault(atype & 0x3fff, []).append(data[at + 4:at + length])
        at += (length + 3) & ~3
    return out


def resolve_family():
    """(family id, "events" group id) of VFS_DQUOT, or None when the kernel has no such family."""
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
    try:
        s.bind((0, 0))
        s.settimeout(5)
        body = struct.pack("=BBH", CTRL_CMD_GETFAMILY, 1, 0) + nla(CTRL_ATTR_FAMILY_NAME, b"VFS_DQUOT\0")
        s.send(nlmsg(GENL_ID_CTRL, body, flags=1, seq=1))
        reply = s.recv(65536)
    finally:
        s.close()
    mtype = struct.unpack_from("=H", reply, 4)[0]
    if mtype == NLMSG_ERROR:
        return None
    attrs = parse_attrs(reply[20:])
    family = struct.unpack("=H", attrs[CTRL_ATTR_FAMILY_ID][0][:2])[0]
    for group in parse_attrs(attrs.get(CTRL_ATTR_MCAST_GROUPS, [b""])[0]).values():
        fields = parse_attrs(group[0])
        if fields.get(CTRL_ATTR_MCAST_GRP_NAME, [b""])[0].rstrip(b"\0") == b"events":
            return family, struct.unpack("=I", fields[CTRL_ATTR_MCAST_GRP_ID][0])[0]
    return None


def warning_message(family, qtype, excess_id, warning, major, minor, caused, pad=False):
    """A message as quota_send_warning() builds it (u64s via nla_put_u64_64bit; `pad` adds the
    zero-length QUOTA_NL_A_PAD that architectures without efficient unaligned access get)."""
    padding = nla(A_PAD, b"") if pad else b""
    attrs = (nla(A_QTYPE, struct.pack("=I", qtype)) + padding
             + nla(A_EXCESS_ID, struct.pack("=Q", excess_id))
             + nla(A_WARNING, struct.pack("=I", warning))
             + nla(A_DEV_MAJOR, struct.pack("=I", major))
             + nla(A_DEV_MINOR, struct.pack("=I", minor)) + padding
             + nla(A_CAUSED_ID, struct.pack("=Q", caused)))
    return nlmsg(family, struct.pack("=BBH", QUOTA_NL_C_WARNING, 1, 0) + attrs)


class Sender:
    """A generic netlink socket that sends to the VFS_DQUOT "events" group."""

    def __init__(self, group):
        if group > 32:
            # sendto() names groups by a 32-bit mask: groups above 32 cannot be sent to.
            swtest.skip(f'the VFS_DQUOT "events" group is {group}; a test can send only to groups 1..32')
        self.group = group
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        self.sock.bind((0, 0))

    def send(self, data):
        self.sock.sendto(data, (0, 1 << (self.group - 1)))

    def close(self):
        self.sock.close()


def setUpModule():
    swtest.require_root()
    global FAMILY, GROUP
    found = resolve_family()
    if found is None:
        swtest.skip("the kernel has no VFS_DQUOT generic netlink family (CONFIG_QUOTA_NETLINK_INTERFACE)")
    FAMILY, GROUP = found


def history(daemon, etype):
    """`storwatch history --json --type ETYPE`: one event per line."""
    out = daemon.cli_ok("history", "--type", etype, "--json")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def quota_source(daemon):
    for s in daemon.cli_json("doctor")["sources"]:
        if s["name"] == "quota-netlink":
            return s
    raise AssertionError("doctor lists no quota-netlink source")


class QuotaTest(swtest.DaemonTestCase):
    timeout = 120

    def setUp(self):
        super().setUp()
        top = swtest.tempdir(prefix="swtest-quota-", cleanup=self.cleanup)
        self.mnt = os.path.join(top, "mnt")
        os.mkdir(self.mnt)
        swtest.mount_tmpfs(self.mnt, 4 << 20, cleanup=self.cleanup)
        st = os.stat(self.mnt)
        self.major, self.minor = os.major(st.st_dev), os.minor(st.st_dev)
        self.sender = Sender(GROUP)
        self.cleanup.push(self.sender.close)

    def test_every_type_and_warning(self):
        d = self.daemon(swtest.test_config(watch_fstypes=["tmpfs"]))
        self.assertTrue(quota_source(d)["available"], quota_source(d))
        mon = d.monitor("--type", "quota.warning")
        sent = {}
        for qtype, qname in QTYPES.items():
            for warning, wname in WARNINGS.items():
                excess = 1000 + 100 * qtype + warning
                caused = 2000 + 100 * qtype + warning
                # The 64-bit fields carry values above 2^32 once, to catch truncation.
                if qtype == 2 and warning == 10:
                    excess, caused = (1 << 40) + 5, (1 << 33) + 7
                self.sender.send(warning_message(FAMILY, qtype, excess, warning, self.major,
                                                 self.minor, caused, pad=(warning % 2 == 0)))
                sent[(qname, wname)] = (excess, caused, warning)
        for (qname, wname), (excess, caused, warning) in sent.items():
            e = mon.wait_event(lambda e, q=qname, w=wname: e["detail"].get("quota_type") == q
                               and e["detail"].get("warning") == w, what=f"{qname} {wname}")
            with self.subTest(quota_type=qname, warning=wname):
                self.assertEqual(e["type"], "quota.warning")
                self.assertEqual(e["source"], "netlink")
                self.assertEqual(e["severity"], "info" if warning >= 7 else "warning")
                self.assertEqual(e["count"], 1)
                self.assertEqual(e["detail"]["id"], excess)
                self.assertEqual(e["detail"]["dev"], f"{self.major}:{self.minor}")
                self.assertEqual(e["detail"]["resource"],
                                 "inodes" if wname.startswith("i") else "blocks")
                self.assertTrue(e["detail"]["message"])
                self.assertEqual(e["process"]["uid"], caused)
                self.assertEqual(e["fs"]["dev"], f"{self.major}:{self.minor}")
                self.assertEqual(e["fs"]["fstype"], "tmpfs")
                self.assertIn(os.path.realpath(self.mnt), e["fs"]["mounts"])
        # A device no filesystem is on: the event still names it, without `fs`.
        self.sender.send(warning_message(FAMILY, 0, 77, 4, 4095, 1048575, 0))
        e = mon.wait_event(lambda e: e["detail"].get("id") == 77, what="the warning on no filesystem")
        self.assertNotIn("fs", e)
        self.assertEqual(e["detail"]["dev"], "4095:1048575")
        # The monitor's output is what `storwatch history` keeps.
        hist = history(d, "quota.warning")
        self.assertEqual(len(hist), 31)
        self.assertEqual(sorted(e["detail"]["id"] for e in hist),
                         sorted([x[0] for x in sent.values()] + [77]))
        counters = quota_source(d)["counters"]
        self.assertEqual(counters["warnings"], 31)
        self.assertEqual(counters["from_user_space"], 31)
        self.assertEqual(counters["malformed"], 0)

    def test_malformed_messages_are_counted_and_dropped(self):
        d = self.daemon(swtest.test_config(watch_fstypes=["tmpfs"]))
        mon = d.monitor("--type", "quota.warning")
        good = warning_message(FAMILY, 0, 500, 4, self.major, self.minor, 1000)
        genl = struct.pack("=BBH", QUOTA_NL_C_WARNING, 1, 0)
        all_attrs = good[20:]
        bad = [
            good[:10],                                            # shorter than a netlink header
            good[:16],                                            # no generic netlink header
            nlmsg(FAMILY, genl + all_attrs[:-6]),                 # the last attribute cut short
            nlmsg(FAMILY, struct.pack("=BBH", 2, 1, 0) + all_attrs),  # another command
            nlmsg(FAMILY, genl + nla(A_QTYPE, struct.pack("=Q", 0)) + all_attrs[8:]),  # QTYPE as u64
            nlmsg(FAMILY, genl + all_attrs[8:]),                  # no QTYPE
            nlmsg(FAMILY, genl + all_attrs + nla(A_WARNING, struct.pack("=I", 4))),  # WARNING twice
            nlmsg(FAMILY, genl + struct.pack("=HH", 0xfff0, A_QTYPE) + all_attrs),  # length past the end
            nlmsg(FAMILY, genl + all_attrs.replace(struct.pack("=HHI", 8, A_WARNING, 4),
                                                   struct.pack("=HHI", 8, A_WARNING, 99))),  # unknown warning
            struct.pack("=IHHII", 0xffffffff, FAMILY, 0, 0, 0) + genl + all_attrs,  # huge nlmsg_len
            os.urandom(64),
        ]
        for b in bad:
            self.sender.send(b)
        # Messages of one socket arrive in order: once this one is reported, all the bad ones
        # before it were read.
        self.sender.send(warning_message(FAMILY, 1, 501, 6, self.major, self.minor, 1001))
        e = mon.wait_event(lambda e: e["detail"].get("id") == 501, what="the good message after the bad ones")
        self.assertEqual(e["detail"]["quota_type"], "group")
        self.assertEqual(e["detail"]["warning"], "bsoft")
        src = quota_source(d)  # the daemon still answers
        self.assertTrue(src["available"])
        self.assertEqual(src["counters"]["malformed"], len(bad), src)
        self.assertEqual(src["counters"]["warnings"], 1, src)
        self.assertIn(f"{len(bad)} malformed messages dropped", src["reason"])
        text = d.cli_ok("doctor")
        self.assertIn(f"malformed {len(bad)}", text)
        self.assertEqual([x["detail"]["id"] for x in mon.events()], [501])
        self.assertTrue(d.alive)

    def test_unprivileged_processes_cannot_send(self):
        # What makes accepting messages from other ports than the kernel's safe: only a process
        # with CAP_NET_ADMIN can send to a generic netlink multicast group.
        pid = os.fork()
        if pid == 0:
            code = 3
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
                s.bind((0, 0))
                try:
                    s.sendto(warning_message(FAMILY, 0, 1, 4, 1, 1, 1), (0, 1 << (GROUP - 1)))
                    code = 1
                except PermissionError:
                    code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(os.waitstatus_to_exitcode(status), 0,
                         "an unprivileged process could send to the VFS_DQUOT group")

    def test_turned_off_in_the_configuration(self):
        d = self.daemon(swtest.test_config(extra="[sources]\nquota_netlink = false\n"))
        src = quota_source(d)
        self.assertFalse(src["available"])
        self.assertIn("quota_netlink = false", src["reason"])
        events = history(d, "source.unavailable")
        self.assertTrue(any(e["detail"]["source"] == "quota-netlink" for e in events), events)

    def test_unavailable_where_the_family_does_not_exist(self):
        unshare = swtest.which("unshare")
        if unshare is None:
            self.skipTest("unshare (util-linux) not installed")
        daemon = swtest.find_storwatch()[0]
        if daemon is None:
            self.skipTest("storwatchd not found (build it, or set STORWATCHD)")
        d = swtest.tempdir(prefix="swtest-quota-netns-", cleanup=self.cleanup)
        os.chmod(d, 0o755)
        launcher = os.path.join(d, "storwatchd")
        with open(launcher, "w") as f:
            f.write(f"#!/bin/sh\nexec {unshare} --net {daemon} \"$@\"\n")
        os.chmod(launcher, 0o755)
        sw = self.daemon(swtest.test_config(), binary=launcher)
        src = quota_source(sw)
        self.assertFalse(src["available"], src)
        self.assertIn("no VFS_DQUOT generic netlink family", src["reason"])
        events = [e for e in history(sw, "source.unavailable") if e["detail"]["source"] == "quota-netlink"]
        self.assertEqual(len(events), 1, events)
        self.assertIn("no quota.warning", events[0]["detail"]["reason"])
        self.assertTrue(sw.alive)


if __name__ == "__main__":
    swtest.main()
