#!/usr/bin/env python3
"""The journal and its disk (issue 3), with a real storwatchd fed through its replay FIFO:

- the state directory on a small loop-mounted ext4 filled to ENOSPC: live events keep flowing to a
  subscriber, `daemon.degraded` (source journal) appears and `storwatch doctor` shows
  journal_healthy false; once space is freed `daemon.recovered` follows and the journal holds every
  event (the memory buffer was big enough), or records the overflow of a small buffer
  (`[journal] buffer_events = 1000`) as a stream.lost row with the exact count and range;
- retention: with `[journal] max_size = "1M"` and many events the journal stays bounded (pages in
  use, file size, rows) and the oldest events go first; with `max_age` events older than it go.

Needs root, loop devices and mkfs.ext4; exits 77 ("SKIP: ...") otherwise.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/test_journal_disk.py
"""

import os
import sqlite3
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402
from journal_helpers import (Feeder, JournalDaemon, error_line, history,  # noqa: E402
                             integrity_check, journal_config)

MiB = 1 << 20
ev = swtest.event_matcher


def setUpModule():
    swtest.require_root()
    swtest.require_loop()
    swtest.require_cmd("mkfs.ext4", "mount", "umount")
    swtest.require_fstype("ext4")
    swtest.require_storwatch()


def fill_up(path, mnt):
    """Appends to `path` until not even one more block can be written (ENOSPC; root may use every
    block: mkfs -m 0). statfs may still count a block or two that ext4 keeps for itself or that
    the daemon's own writes hold for a moment."""
    chunk = 1 << 20
    for _ in range(50):
        written = swtest.fill_file(path, 1 << 40, append=True, chunk=chunk)
        if written == 0 and chunk == 4096:
            return
        if written == 0:
            chunk = 4096
    raise AssertionError(f"could not fill {mnt}: {swtest.free_bytes(mnt)} bytes free")


def same_event(a, b):
    return (a["seq"], a["type"], a.get("detail"), a.get("time")) == \
        (b["seq"], b["type"], b.get("detail"), b.get("time"))


class JournalCase(swtest.DaemonTestCase):
    def journal_daemon(self, config_fn, **kwargs):
        d = self.cleanup.enter(JournalDaemon(config_fn, **kwargs))
        self._daemons.append(d)
        return d

    def feed(self, d, lines, wait=True):
        before = d.doctor()["last_seq"]
        f = Feeder(d.fifo, lines, chunk_lines=200).start().join(60)
        self.assertIsNone(f.error)
        if wait:
            swtest.wait_for(lambda: d.doctor()["last_seq"] >= before + len(lines), 30,
                            f"{len(lines)} events to be published")


class DiskFullTest(JournalCase):
    timeout = 120

    def full_disk_run(self, buffer_events, after_degraded):
        """Runs storwatchd with its state on a 16 MiB ext4, fills that to ENOSPC, feeds events
        until daemon.degraded, then `after_degraded` more, frees the space and waits for
        daemon.recovered and the journal to catch up; returns (daemon, monitor events, history)."""
        fs = self.cleanup.enter(swtest.LoopFs("ext4", size=16 * MiB, mkfs_args=("-m", "0", "-b", "4096")))
        d = self.journal_daemon(lambda fifo: journal_config(fifo, buffer_events=buffer_events,
                                                            queue_events=100000),
                                state_dir=os.path.join(fs.mnt, "state"), print_events=False)
        mon = d.monitor(cleanup=self.cleanup)
        fsdir = d.dir  # the events are about the root filesystem, the journal is on fs.mnt
        n = 0
        self.feed(d, [error_line(fsdir, n + i) for i in range(100)])
        n += 100
        d.wait_journaled()

        fill = os.path.join(fs.mnt, "fill")
        fill_up(fill, fs.mnt)
        t0 = time.monotonic()
        # The journal notices when a commit needs space (SQLite's WAL may have some room left).
        while not mon.events(ev("daemon.degraded")):
            self.assertLess(time.monotonic() - t0, 30, "no daemon.degraded with the disk full")
            self.feed(d, [error_line(fsdir, n + i) for i in range(200)], wait=False)
            n += 200
        degraded = mon.wait_event(ev("daemon.degraded"))
        self.assertEqual(degraded["source"], "journal")
        self.assertEqual(degraded["severity"], "error")
        self.assertEqual(degraded["detail"]["source"], "journal")
        reason = degraded["detail"]["reason"]
        # SQLite says "database or disk is full", or "disk I/O error" when the failing write was
        # one it maps to an I/O error (its shared-memory index, a checkpoint).
        self.assertTrue("full" in reason or "I/O error" in reason, reason)
        doc = d.doctor()
        self.assertFalse(doc["journal_healthy"], doc)
        # Blocks ext4 had reserved may come back after a while: take them too, so that the journal
        # stays unable to write until the test frees the space.
        fill_up(fill, fs.mnt)
        # Live delivery goes on while the journal cannot be written.
        self.feed(d, [error_line(fsdir, n + i) for i in range(after_degraded)])
        n += after_degraded
        last = d.doctor()["last_seq"]
        swtest.wait_for(lambda: any(e["seq"] >= last for e in mon.events()), 30,
                        "the monitor to receive the events published while degraded")
        doc = d.doctor()
        self.assertEqual(mon.events(ev("daemon.recovered")), [],
                         f"the journal recovered with the disk still full ({swtest.free_bytes(fs.mnt)} "
                         "bytes free)")
        self.assertFalse(doc["journal_healthy"], doc)
        self.assertGreater(doc["journal_buffered"], 0)
        self.assertLessEqual(doc["journal_buffered"], buffer_events)
        self.assertLess(doc["journaled_seq"], last)
        text = d.cli_ok("doctor")
        self.assertIn("journal", text)

        os.remove(fill)
        recovered = mon.wait_event(ev("daemon.recovered"), timeout=30)
        self.assertEqual(recovered["detail"]["source"], "journal")
        self.assertGreater(recovered["seq"], degraded["seq"])
        d.wait_journaled()
        doc = d.doctor()
        self.assertTrue(doc["journal_healthy"], doc)
        self.assertEqual(doc["journal_buffered"], 0)
        seen = [e for e in mon.events() if e["seq"] > 0]
        rows = history(d)
        self.assertEqual(integrity_check(d.db_path), ["ok"])
        self.assertEqual([e for e in mon.events() if e["seq"] == 0], [], "the monitor lost events")
        return d, seen, rows

    def test_full_disk_within_the_buffer(self):
        d, seen, rows = self.full_disk_run(buffer_events=100000, after_degraded=3000)
        self.assertEqual([r for r in rows if r["type"] == "stream.lost"], [])
        by_seq = {r["seq"]: r for r in rows}
        missing = [e["seq"] for e in seen if e["seq"] not in by_seq]
        self.assertEqual(missing, [], "events delivered live but not journaled")
        for e in seen:
            self.assertTrue(same_event(e, by_seq[e["seq"]]), e)
        self.assertEqual([r["seq"] for r in rows], list(range(1, rows[-1]["seq"] + 1)))
        types = [r["type"] for r in rows]
        self.assertEqual(types.count("daemon.degraded"), 1)
        self.assertEqual(types.count("daemon.recovered"), 1)
        print(f"disk full, within the buffer: {len(rows)} rows, every event journaled",
              file=sys.stderr, flush=True)

    def test_full_disk_buffer_overflow(self):
        d, seen, rows = self.full_disk_run(buffer_events=1000, after_degraded=3000)
        by_seq = {r["seq"]: r for r in rows}
        lost = [r for r in rows if r["type"] == "stream.lost"]
        self.assertGreater(len(lost), 0, "no stream.lost record for the overflowing buffer")
        ranges = []
        for r in lost:
            dt = r["detail"]
            self.assertEqual(r["source"], "journal")
            self.assertEqual(r["seq"], dt["first_seq"])
            self.assertEqual(dt["count"], dt["last_seq"] - dt["first_seq"] + 1)
            self.assertIn("buffer", dt["reason"])
            ranges.append((dt["first_seq"], dt["last_seq"]))

        def in_lost(s):
            return any(f <= s <= l for f, l in ranges)
        # Each live event is journaled, or inside a lost range (and then not journaled); the
        # ranges hold exactly the events missing from the journal.
        not_journaled = []
        for e in seen:
            r = by_seq.get(e["seq"])
            if r is not None and r["type"] != "stream.lost":
                self.assertTrue(same_event(e, r), e)
                self.assertFalse(in_lost(e["seq"]), f"#{e['seq']} journaled and recorded as lost")
            else:
                self.assertTrue(in_lost(e["seq"]), f"#{e['seq']} neither journaled nor recorded lost")
                not_journaled.append(e["seq"])
        self.assertEqual(len(not_journaled), sum(r["detail"]["count"] for r in lost),
                         "the lost count is not the number of events missing")
        top = max(e["seq"] for e in seen)
        covered = {s for s in by_seq if s <= top}
        for f, l in ranges:
            covered.update(range(f, l + 1))
        self.assertEqual(sorted(set(range(1, top + 1)) - covered), [])
        self.assertGreaterEqual(len(not_journaled), 1000)
        print(f"disk full, buffer of 1000 overflowing: {len(rows)} rows, {len(not_journaled)} events "
              f"recorded lost in {len(lost)} stream.lost record(s) {ranges}",
              file=sys.stderr, flush=True)


class RetentionTest(JournalCase):
    timeout = 120

    def pages_in_use(self, db):
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            pc = con.execute("PRAGMA page_count").fetchone()[0]
            fl = con.execute("PRAGMA freelist_count").fetchone()[0]
            ps = con.execute("PRAGMA page_size").fetchone()[0]
            return (pc - fl) * ps
        finally:
            con.close()

    def test_max_size_keeps_the_newest(self):
        d = self.journal_daemon(lambda fifo: journal_config(fifo, max_size="1M"), print_events=False)
        n = 0
        sizes = []
        # ~10 MiB of events in all, in rounds: the journal stays near 1 MiB throughout.
        for _ in range(5):
            self.feed(d, [error_line(d.dir, n + i) for i in range(5000)])
            n += 5000
            d.wait_journaled()
            used = self.pages_in_use(d.db_path)
            size = os.path.getsize(d.db_path)
            wal = os.path.getsize(d.db_path + "-wal")
            sizes.append((used, size, wal))
        last = d.doctor()["last_seq"]

        def settled():
            # Retention runs on the writer thread after the commit that journaled_seq reports,
            # so it may still be deleting: a listing taken meanwhile is not a snapshot (rows
            # returned first may be gone by the end of the call). Read until it is done.
            rows = history(d)
            seqs = [r["seq"] for r in rows]
            return rows if seqs == list(range(seqs[0], last + 1)) else None
        rows = swtest.wait_for(settled, 30, "retention to finish")
        seqs = [r["seq"] for r in rows]
        print(f"retention max_size=1M: {n} events fed, {len(rows)} kept (#{seqs[0]}..#{last}); "
              f"(pages in use, db file, WAL file) after each 5000: "
              f"{[(round(u / MiB, 2), round(s / MiB, 2), round(w / MiB, 2)) for u, s, w in sizes]} MiB",
              file=sys.stderr, flush=True)
        # The newest survive, as one contiguous run up to the last; the oldest went first.
        self.assertEqual(seqs, list(range(seqs[0], last + 1)))
        self.assertGreater(seqs[0], 1)
        self.assertLess(len(rows), n / 2)
        for used, size, wal in sizes:
            # Retention runs after each batch that brings an eighth of max_size: pages in use stay
            # under max_size plus one batch (at most 4096 events, ~2.5 MiB of rows and index).
            # Deleted pages are reused, not returned: the file stays at its high-water mark. The
            # WAL is checkpointed every 1000 pages (4 MiB) and keeps its size; a checkpoint cannot
            # restart the WAL while a reader (a sink's runner, reading the journal after each
            # commit) still uses its end, so it may grow by a batch or two more (seen: 8.1 MiB
            # under ASan, where the readers are slow).
            self.assertLess(used, 4 * MiB)
            self.assertLess(size, 6 * MiB)
            self.assertLess(wal, 12 * MiB)

    def test_max_age_drops_old_events(self):
        d = self.journal_daemon(lambda fifo: journal_config(fifo, max_age="1d"), print_events=False)
        self.feed(d, [error_line(d.dir, i) for i in range(300)])
        d.wait_journaled()
        before = [r["seq"] for r in history(d)]
        cut = [r["seq"] for r in history(d) if r["source"] == "replay"][99]
        d.stop()
        # Make the first 100 events two days old (as if the daemon had been running that long).
        con = sqlite3.connect(d.db_path, timeout=30)
        old_us = int((time.time() - 2 * 86400) * 1e6)
        with con:
            con.execute("UPDATE events SET time_us = ? WHERE seq <= ?", (old_us, cut))
        con.close()
        d.start()
        # Retention runs with the first batch a (re)started daemon writes, right after its commit
        # (so after journaled_seq moved): poll.
        self.feed(d, [error_line(d.dir, 1000)])
        d.wait_journaled()
        expected = [s for s in before if s > cut]

        def old_ones_gone():
            rows = history(d)
            return rows if [r["seq"] for r in rows if r["seq"] <= before[-1]] == expected else None
        rows = swtest.wait_for(old_ones_gone, 30, "the events older than max_age to go")
        self.assertEqual([r["detail"]["n"] for r in rows if r["source"] == "replay"],
                         list(range(100, 300)) + [1000])


if __name__ == "__main__":
    swtest.main()
