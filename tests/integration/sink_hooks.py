#!/usr/bin/env python3
"""The hooks sink end to end: a real storwatchd with [sinks.hooks] pointing at a temporary hooks
directory, events injected through its replay FIFO on a tmpfs.

  all-record     records its stdin and its STORWATCH_* environment: the fields are checked
  fs.error-hang  never ends: it is killed (its whole process group) at the configured timeout,
                 the kill is logged, and the events after it still reach all-record and the
                 subscribers meanwhile (a hung hook holds up nothing but its own sink).
  fs-family      selected by the family prefix ("fs" selects fs.*), not by other types.
  .hidden-x, all-notexec  ignored (hidden, not executable).

Needs root; exits 77 otherwise.
"""

import json
import os
import random
import stat
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402

MiB = 1 << 20
ev = swtest.event_matcher


def setUpModule():
    swtest.require_root()
    swtest.require_cmd("mount", "umount", "sh", "sleep")
    swtest.require_storwatch()


def write_hook(path, text, executable=True):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755 if executable else 0o644)


def processes_with(marker):
    """Pids whose command line contains `marker`."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


class HookSinkTest(swtest.DaemonTestCase):
    timeout = 120

    def test_record_hang_and_flow(self):
        work = swtest.tempdir(prefix="swtest-hooks-", cleanup=self.cleanup)
        hooks = os.path.join(work, "hooks.d")
        out = os.path.join(work, "out")
        os.mkdir(hooks)
        os.mkdir(out)
        # A sleep no other process on this machine runs: how the test finds the hung hook.
        marker = str(900000 + random.randrange(99999))
        write_hook(os.path.join(hooks, "all-record"), f"""#!/bin/sh
cat > {out}/$STORWATCH_SEQ.json.tmp
env | grep -E '^(STORWATCH_|PATH=)' | sort > {out}/$STORWATCH_SEQ.env
mv {out}/$STORWATCH_SEQ.json.tmp {out}/$STORWATCH_SEQ.json
echo recorded $STORWATCH_SEQ
""")
        write_hook(os.path.join(hooks, "fs.error-hang"), f"""#!/bin/sh
echo hanging
sleep {marker}
echo not reached
""")
        write_hook(os.path.join(hooks, "fs-family"), f"""#!/bin/sh
touch {out}/family-$STORWATCH_SEQ
""")
        write_hook(os.path.join(hooks, ".hidden-x"), f"#!/bin/sh\ntouch {out}/hidden\n")
        write_hook(os.path.join(hooks, "all-notexec"), f"#!/bin/sh\ntouch {out}/notexec\n", executable=False)
        self.cleanup.push(lambda: [os.kill(p, 9) for p in processes_with(marker)])

        mnt = swtest.tempdir(prefix="swtest-tmpfs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(mnt, 16 * MiB, cleanup=self.cleanup)
        fifo = os.path.join(work, "replay")
        extra = f"""[replay]
fifo = {swtest.toml_str(fifo)}
[sinks.hooks]
dir = {swtest.toml_str(hooks)}
timeout = "3s"
concurrency = 2
[sinks.journald]
enabled = false
"""
        d = self.daemon(swtest.test_config(extra=extra))
        mon = d.monitor()

        def inject(type, **detail):
            with open(fifo, "w") as f:
                f.write(json.dumps({"type": type, "fs": mnt, "detail": detail}) + "\n")

        inject("fs.error", inode=12, errno=117)
        first = mon.wait_event(ev("fs.error", mnt, inode=12))
        swtest.wait_for(lambda: processes_with(marker), 10, "the hanging hook to run")
        inject("space.enospc", kind="data")
        second = mon.wait_event(ev("space.enospc", mnt))
        # The subscriber got the next event while the hook still hangs.
        self.assertTrue(processes_with(marker), "the hanging hook ended before its timeout")

        def recorded(seq):
            p = os.path.join(out, f"{seq}.json")
            return os.path.exists(p) and p
        swtest.wait_for(lambda: recorded(second["seq"]), 10, "all-record to run for the second event")
        with open(recorded(first["seq"])) as f:
            got = json.load(f)
        self.assertEqual(got["seq"], first["seq"])
        self.assertEqual(got["type"], "fs.error")
        self.assertEqual(got["detail"]["inode"], 12)
        with open(os.path.join(out, f"{first['seq']}.env")) as f:
            env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        self.assertEqual(env["STORWATCH_TYPE"], "fs.error")
        self.assertEqual(env["STORWATCH_SEQ"], str(first["seq"]))
        self.assertEqual(env["STORWATCH_SEVERITY"], first["severity"])
        self.assertEqual(env["STORWATCH_FS_MOUNT"], mnt)
        self.assertEqual(env["STORWATCH_FS_DEV"], first["fs"]["dev"])
        self.assertEqual(env["STORWATCH_DETAIL_INODE"], "12")
        self.assertEqual(env["STORWATCH_HOOK"], "all-record")
        self.assertEqual(env["STORWATCH_JOURNAL_ID"], d.cli_json("doctor")["journal_id"])
        self.assertIn("fs.error", env["STORWATCH_MESSAGE"])
        self.assertIn("/usr/bin", env["PATH"])

        # Killed at its timeout, with its whole process group (the sleep is its child), and logged.
        swtest.wait_for(lambda: not processes_with(marker), 15, "the hanging hook to be killed")
        swtest.wait_for(lambda: "fs.error-hang: seq {}: timed out".format(first["seq"]) in d.stderr(), 10,
                        "the timeout in the daemon's log")
        self.assertIn("hanging", d.stderr())  # its output, logged
        self.assertIn("all-record: seq {}: exited with status 0: recorded".format(first["seq"]), d.stderr())

        # Events still flow after it.
        inject("fs.shutdown", message="test")
        third = mon.wait_event(ev("fs.shutdown", mnt))
        swtest.wait_for(lambda: recorded(third["seq"]), 10, "all-record to run after the killed hook")
        self.assertTrue(os.path.exists(os.path.join(out, f"family-{first['seq']}")))
        self.assertTrue(os.path.exists(os.path.join(out, f"family-{third['seq']}")))
        self.assertFalse(os.path.exists(os.path.join(out, f"family-{second['seq']}")), "fs- selected space.enospc")
        self.assertFalse(os.path.exists(os.path.join(out, "hidden")))
        self.assertFalse(os.path.exists(os.path.join(out, "notexec")))
        s = next(s for s in d.cli_json("doctor")["sinks"] if s["name"] == "hooks")
        self.assertEqual(s["state"], "ok", s)
        self.assertGreaterEqual(s["delivered"], 3, s)


if __name__ == "__main__":
    swtest.main()
