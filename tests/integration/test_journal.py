#!/usr/bin/env python3
"""The event journal end to end (issue 3): a real storwatchd fed through its replay FIFO
(`[replay] fifo`, the test source), observed through `storwatch history`, `storwatch monitor`,
`storwatch doctor` and raw Varlink.

- kill -9 at random moments while thousands of distinct events flow, several rounds: the database
  passes PRAGMA integrity_check, sequence numbers are strictly increasing and never reused, every
  event at or below the journaled_seq the daemon acknowledged before the kill is in the history,
  every number is accounted for (an event, or a journal stream.lost row after a crash), and a
  client resuming with `monitor --after` sees each journaled event exactly once.
- JournalMismatch for a Subscribe with `after` and another journal's id.
- history filters (--type, --fs, --since, --limit, --after) and ListEvents paging by next_after.

Subscribers that stop reading and floods are in test_journal_flow.py; a full disk and retention in
test_journal_disk.py.  Needs root (tmpfs mount); exits 77 ("SKIP: ...") otherwise.  The random
moments come from $JOURNAL_TEST_SEED (printed) to replay a run.

    sudo STORWATCHD=build/src/daemon/storwatchd STORWATCH=build/src/cli/storwatch \\
        python3 tests/integration/test_journal.py
"""

import json
import os
import random
import shutil
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import swtest  # noqa: E402
from journal_helpers import (Feeder, JournalDaemon, RawSubscriber, VarlinkError,  # noqa: E402
                             error_line, history, integrity_check, journal_config, list_events,
                             seed)

MiB = 1 << 20


def setUpModule():
    swtest.require_root()
    swtest.require_storwatch()


def fed(e):
    """An event of the replay FIFO (other sources of the daemon may add events of their own)."""
    return e.get("source") == "replay"


def wait_seen(mon, seq, timeout=60):
    """Waits until storwatch monitor `mon` printed event #seq (or a later one)."""
    swtest.wait_for(lambda: any(e["seq"] >= seq for e in mon.events()), timeout,
                    f"the monitor to print event #{seq}")


def same_event(a, b):
    return (a["seq"], a["type"], a.get("detail"), a.get("time"), a.get("count")) == \
        (b["seq"], b["type"], b.get("detail"), b.get("time"), b.get("count"))


class JournalCase(swtest.DaemonTestCase):
    def journal_daemon(self, config_fn, **kwargs):
        d = self.cleanup.enter(JournalDaemon(config_fn, **kwargs))
        self._daemons.append(d)
        return d


class CrashTest(JournalCase):
    timeout = 240
    # Kill moments: while a paced feed flows (at a random time within it), during an unpaced
    # burst (the loop busy with the FIFO), when everything is journaled and the daemon idle, and
    # straight after a restart (before any event).
    MODES = ["flow"] * 4 + ["burst"] * 2 + ["idle", "startup"]

    def test_kill_9_at_random_moments(self):
        rng = random.Random(seed())
        # Queues large enough that the client (storwatch monitor) never loses events to its own
        # slowness: every gap it sees is the crash's.
        d = self.journal_daemon(lambda fifo: journal_config(fifo, queue_events=1 << 20),
                                print_events=False)
        fs = d.dir  # on the root filesystem, which is watched
        n = 0
        runs = []
        client = []  # what the resuming client (storwatch monitor --after) received, run after run
        resume_after = None
        # A second client, on raw Varlink, follows protocol.md to the letter: it remembers a seq
        # only once the stream's journaled_seq has reached it, and resumes after that.
        careful = []
        careful_after = None

        def careful_client():
            params = {} if careful_after is None else {"after": careful_after,
                                                        "journal_id": start["journal_id"]}
            sub = RawSubscriber(d.socket, params)
            self.cleanup.push(sub.close)
            return sub
        modes = list(self.MODES)
        rng.shuffle(modes)
        if modes[0] == "startup":  # the first run has no crash to recover from
            modes[0], modes[1] = modes[1], modes[0]
        for k, mode in enumerate(modes):
            start = d.doctor()
            if mode == "startup":
                # Straight after the restart: the previous crash's gap record is being written
                # (or is written), nothing else happened yet.
                d.kill()
                self.assertEqual(integrity_check(d.db_path), ["ok"], f"after kill #{k + 1}")
                runs.append({"mode": mode, "start": start["last_seq"], "acked": start["journaled_seq"],
                             "published": start["last_seq"], "seen": [], "resume_after": resume_after})
                d.start()
                self.assertGreaterEqual(d.doctor()["last_seq"], start["last_seq"])
                continue
            count = rng.randint(3000, 12000)
            lines = [error_line(fs, n + i, k) for i in range(count)]
            n += count
            rate = rng.choice([10000, 20000, 40000]) if mode == "flow" else None
            feeder = Feeder(d.fifo, lines, chunk_lines=rng.choice([20, 100, 500]), rate=rate)
            if resume_after is None:
                mon = d.monitor(cleanup=self.cleanup)
                raw = careful_client()
                feeder.start()
            else:
                # Resume while events flow: the seam between the journal and live delivery
                # falls in the middle of the feed.
                feeder.start()
                mon = d.monitor("--after", resume_after, cleanup=self.cleanup)
                raw = careful_client()
            if mode in ("flow", "burst"):
                # A random moment of the feed; the journaled_seq acknowledged last before the kill
                # is that of the last Doctor reply (polled until then).
                span = count / rate if rate else 0.15
                kill_at = time.monotonic() + rng.uniform(0.0, span)
                doc = d.doctor()
                while time.monotonic() < kill_at:
                    doc = d.doctor()
            else:  # idle
                feeder.join(60)
                swtest.wait_for(lambda: d.doctor()["last_seq"] >= start["last_seq"] + count, 60,
                                "every line to be published")
                doc = d.wait_journaled()
                wait_seen(mon, doc["last_seq"])
            acked = doc["journaled_seq"]
            d.kill()
            feeder.join(30)
            swtest.wait_for(lambda: not mon.alive, 10, "storwatch monitor to see the daemon go")
            seen = mon.events()
            self.assertEqual([e for e in seen if e["seq"] == 0], [],
                             "the client lost events to its own queue")
            self.assertEqual(integrity_check(d.db_path), ["ok"], f"after kill #{k + 1}")
            client += seen
            if seen:
                resume_after = max(e["seq"] for e in seen)
            elif resume_after is None:
                resume_after = 0
            raw.wait_end()
            careful += raw.durable()
            if careful:
                careful_after = careful[-1]["seq"]
            runs.append({"mode": mode, "start": start["last_seq"], "acked": acked,
                         "published": doc["last_seq"], "seen": seen, "resume_after": resume_after})
            d.start()
            after = d.doctor()
            # Numbering goes on past everything handed out before the crash.
            self.assertGreaterEqual(after["last_seq"], doc["last_seq"], f"after kill #{k + 1}")
            self.assertGreaterEqual(after["last_seq"], max([e["seq"] for e in seen], default=0))
            self.assertEqual(after["journal_id"], start["journal_id"])

        # A last, clean run: feed, let the client catch up, stop with SIGTERM, start again.
        start = d.doctor()
        count = 2000
        lines = [error_line(fs, n + i, len(modes)) for i in range(count)]
        n += count
        feeder = Feeder(d.fifo, lines).start()
        mon = d.monitor("--after", resume_after, cleanup=self.cleanup)
        raw = careful_client()
        feeder.join(60)
        swtest.wait_for(lambda: d.doctor()["last_seq"] >= start["last_seq"] + count, 60,
                        "every line to be published")
        last = d.wait_journaled()["last_seq"]
        wait_seen(mon, last)
        swtest.wait_for(lambda: raw.replies and raw.replies[-1][0]["seq"] >= last, 60,
                        "the raw client to receive every event")
        # Up to `last` only: what other sources of the daemon publish afterwards is not checked.
        seen = [e for e in mon.events() if e["seq"] <= last]
        client += seen
        careful += [e for e in raw.durable() if e["seq"] <= last]
        raw.close()
        runs.append({"mode": "clean", "start": start["last_seq"], "acked": last, "published": last,
                     "seen": seen, "resume_after": max(e["seq"] for e in seen)})
        d.stop()
        self.assertEqual(integrity_check(d.db_path), ["ok"], "after the clean stop")
        d.start()
        # A clean stop reserves nothing: numbering continues right after it, with no gap record.
        Feeder(d.fifo, [error_line(fs, n, len(runs))]).start().join()
        swtest.wait_for(lambda: d.doctor()["last_seq"] > last, 10, "an event after the clean restart")
        d.wait_journaled()
        after_clean = [r for r in history(d, after=last)]
        self.assertEqual(after_clean[0]["seq"], last + 1, after_clean[:3])
        self.assertEqual([r for r in after_clean if r["type"] == "stream.lost"], [])
        rows = [r for r in history(d) if r["seq"] <= last]
        self.check_history(rows, runs, client, fed_lines=n)
        self.check_careful_client(rows, careful)
        # stream.lost records match every filter.
        lost_rows = [r for r in rows if r["type"] == "stream.lost"]
        only_lost = [r for r in history(d, "--type", "fs.readonly") if r["type"] == "stream.lost"]
        self.assertEqual([r["seq"] for r in only_lost], [r["seq"] for r in lost_rows])
        for k, run in enumerate(runs):
            fed_in_run = sum(1 for r in rows if fed(r) and r["detail"]["round"] == k)
            nxt = runs[k + 1]["start"] if k + 1 < len(runs) else float("inf")
            gap = [g for g in self.gaps if run["start"] < g[0] <= nxt]
            note = ""
            if gap:
                f, l = gap[0]
                note = f"; crash gap #{f}..#{l}"
                s = run["resume_after"]
                if f <= s < run["published"]:
                    note += (f", client resumed after #{s}, never told about #{s + 1}..#{run['published']}"
                             " (published, not delivered, not journaled)")
            print(f"  run {k + 1} ({run['mode']}): numbers from #{run['start'] + 1}, published up to "
                  f"#{run['published']} (journaled_seq {run['acked']}) at the kill, client saw "
                  f"{len(run['seen'])}, {fed_in_run} of this run's events journaled{note}",
                  file=sys.stderr, flush=True)
        print(f"crash test: {len(runs) - 1} kills ({', '.join(r['mode'] for r in runs[:-1])}), "
              f"{n} lines fed, {len(rows)} rows, {len(lost_rows)} crash gaps, "
              f"{sum(1 for r in rows if fed(r))} events journaled",
              file=sys.stderr, flush=True)

    def check_careful_client(self, rows, careful):
        """The client that follows protocol.md: what it remembered is durable and unchanged,
        nothing twice, and every number from its first to its last is an event it got or lies in
        a stream.lost range it got: no gap goes untold."""
        by_seq = {r["seq"]: r for r in rows}
        seqs = [e["seq"] for e in careful]
        self.assertEqual([e for e in careful if e["seq"] == 0], [])
        self.assertEqual(seqs, sorted(set(seqs)), "the careful client got an event twice or out of order")
        for e in careful:
            self.assertIn(e["seq"], by_seq, f"#{e['seq']} was acknowledged in the stream, then lost")
            self.assertTrue(same_event(e, by_seq[e["seq"]]), e)
        told = set(seqs)
        for e in careful:
            if e["type"] == "stream.lost":
                told.update(range(e["detail"]["first_seq"], e["detail"]["last_seq"] + 1))
        untold = sorted(set(range(seqs[0], seqs[-1] + 1)) - told)
        self.assertEqual(untold[:10], [], f"{len(untold)} numbers the careful client was never told about")
        gaps = [r["seq"] for r in rows if r["type"] == "stream.lost" and seqs[0] <= r["seq"] <= seqs[-1]]
        self.assertEqual([s for s in gaps if s not in set(seqs)], [])

    def check_history(self, rows, runs, client, fed_lines):
        seqs = [r["seq"] for r in rows]
        self.assertTrue(all(s > 0 for s in seqs), "a journal row without a sequence number")
        self.assertEqual(seqs, sorted(set(seqs)), "sequence numbers not strictly increasing")
        by_seq = {r["seq"]: r for r in rows}
        events = [r for r in rows if fed(r)]
        ns = [r["detail"]["n"] for r in events]
        self.assertEqual(len(ns), len(set(ns)), "an event journaled twice")
        self.assertTrue(all(0 <= x < fed_lines for x in ns))

        # Every number is accounted for: an event row, or inside the range of a journal
        # stream.lost row (written for numbers reserved before a crash and never journaled).
        gaps = []
        for r in rows:
            if r["type"] != "stream.lost":
                continue
            self.assertEqual(r["source"], "journal", r)
            dt = r["detail"]
            self.assertEqual(r["seq"], dt["first_seq"], r)
            self.assertEqual(dt["count"], dt["last_seq"] - dt["first_seq"] + 1, r)
            gaps.append((dt["first_seq"], dt["last_seq"]))
        for (f1, l1), (f2, l2) in zip(gaps, gaps[1:]):
            self.assertLess(l1, f2, f"stream.lost ranges {f1}..{l1} and {f2}..{l2} overlap")
        covered = set(seqs)
        for f, l in gaps:
            inside = [s for s in seqs if f < s <= l]
            self.assertEqual(inside, [], f"events inside the lost range {f}..{l}")
            covered.update(range(f, l + 1))
        top = max(seqs)
        missing = sorted(set(range(1, top + 1)) - covered)
        self.assertEqual(missing[:20], [], f"{len(missing)} sequence numbers neither journaled nor "
                                           "recorded as lost")
        self.assertLessEqual(len(gaps), sum(1 for r in runs if r["mode"] != "clean"))
        self.gaps = gaps

        def in_gap(s):
            return any(f <= s <= l for f, l in gaps)

        for k, run in enumerate(runs):
            # Acknowledged means durable: every number of this run up to the journaled_seq
            # observed before the kill is an event row, with what the client saw live.
            acked = [s for s in range(run["start"] + 1, run["acked"] + 1)]
            not_there = [s for s in acked if s not in by_seq or by_seq[s]["type"] == "stream.lost"]
            self.assertEqual(not_there[:10], [], f"run {k + 1} ({run['mode']}): {len(not_there)} "
                                                 f"acknowledged events (journaled_seq {run['acked']}) "
                                                 "missing after the crash")
            for e in run["seen"]:
                r = by_seq.get(e["seq"])
                if r is not None and r["type"] == "stream.lost" and e["type"] != "stream.lost":
                    # Delivered live, never journaled, and the crash's record took its number
                    # (docs/events.md: a journal stream.lost has seq = first_seq).
                    self.assertEqual(e["seq"], r["detail"]["first_seq"])
                    self.assertGreater(e["seq"], run["acked"], "an acknowledged event was lost")
                elif r is not None:
                    self.assertTrue(same_event(e, r), f"#{e['seq']} live {e} but journaled {r}")
                elif e["seq"] <= run["acked"]:
                    self.fail(f"run {k + 1}: acknowledged event #{e['seq']} seen live is not in "
                              "the history")
                else:
                    # Delivered live, never journaled: the crash's gap must say so.
                    self.assertTrue(in_gap(e["seq"]), f"#{e['seq']} seen live, neither journaled "
                                                      "nor in a stream.lost range")
            # No reuse: the next run numbers above everything this one handed out.
            if k + 1 < len(runs):
                nxt = runs[k + 1]["start"]
                self.assertGreaterEqual(nxt, run["published"])
                for e in run["seen"]:
                    self.assertLessEqual(e["seq"], nxt, "a number handed out again after a crash")
                fed_in_run = [r["seq"] for r in events if r["detail"]["round"] == k]
                if fed_in_run:
                    self.assertGreater(min(fed_in_run), run["start"])
                    self.assertLessEqual(max(fed_in_run), nxt)

        # The resuming client: strictly increasing across every seam (no duplicate), and it saw
        # every journaled event (no gap).
        cseqs = [e["seq"] for e in client]
        dups = sorted({s for s in cseqs if cseqs.count(s) > 1}) if len(cseqs) != len(set(cseqs)) else []
        self.assertEqual(dups[:10], [], "the resuming client got events twice")
        self.assertEqual(cseqs, sorted(cseqs), "the resuming client got events out of order")
        cset = set(cseqs)
        unseen = [r["seq"] for r in rows
                  if r["type"] != "stream.lost" and r["seq"] > cseqs[0] and r["seq"] not in cset]
        self.assertEqual(unseen[:10], [], f"{len(unseen)} journaled events the resuming client "
                                          "never received")
        # Crash gaps: the client receives the record, unless it had already seen events past its
        # start live (then the record lies before where it resumed).
        resumes = [r["resume_after"] for r in runs]
        for f, l in gaps:
            if f not in cset:
                self.assertTrue(any(f <= a for a in resumes),
                                f"the client never got the stream.lost record #{f}")


class JournalMismatchTest(JournalCase):
    timeout = 60

    def test_wrong_journal_id_is_refused(self):
        d = self.journal_daemon(lambda fifo: journal_config(fifo))
        lines = [error_line(d.dir, i) for i in range(10)]
        Feeder(d.fifo, lines).start().join()
        doc = swtest.wait_for(lambda: (lambda x: x if x["last_seq"] >= 10 else None)(d.doctor()),
                              10, "10 events")
        jid = doc["journal_id"]
        self.assertRegex(jid, r"^[0-9a-f]{32}$")
        d.wait_journaled()
        mine = [r["seq"] for r in history(d) if fed(r)]
        self.assertEqual(len(mine), 10)

        def subscribe(params):
            v = d.varlink()
            self.cleanup.push(v.close)
            return v, v.call("io.storwatch.Subscribe", params, more=True)

        # The right id (or none): the journaled events after `after`, then live.
        for params in ({"after": mine[3], "journal_id": jid}, {"after": mine[3]}):
            v, first = subscribe(params)
            self.assertNotIn("error", first)
            self.assertTrue(first.get("continues"))
            self.assertEqual(first["parameters"]["journal_id"], jid)
            got = []
            while not got or got[-1]["seq"] < mine[-1]:
                got.append(v.receive()["parameters"]["event"])
            self.assertEqual([e["seq"] for e in got if fed(e)], mine[4:])
            seqs = [e["seq"] for e in got]
            self.assertEqual(seqs, sorted(set(seqs)))
            self.assertGreater(seqs[0], mine[3])
        # Another id: refused, never a silent skip.
        wrong = "0" * 32
        _, reply = subscribe({"after": 4, "journal_id": wrong})
        self.assertEqual(reply.get("error"), "io.storwatch.JournalMismatch", reply)
        self.assertEqual(reply["parameters"], {"expected": wrong, "actual": jid})

        # The journal recreated (state directory lost): the old id no longer matches.
        d.stop()
        shutil.rmtree(d.state_dir)
        d.start()
        new_id = d.doctor()["journal_id"]
        self.assertNotEqual(new_id, jid)
        _, reply = subscribe({"after": 4, "journal_id": jid})
        self.assertEqual(reply.get("error"), "io.storwatch.JournalMismatch", reply)
        self.assertEqual(reply["parameters"], {"expected": jid, "actual": new_id})
        # A malformed id is a bad parameter, not a mismatch.
        _, reply = subscribe({"after": 4, "journal_id": 7})
        self.assertEqual(reply.get("error"), "io.storwatch.InvalidParameter", reply)


class HistoryFilterTest(JournalCase):
    timeout = 90

    def test_history_follows_pages_past_the_daemon_maximum(self):
        # ListEvents returns at most 10,000 events a call; `storwatch history` without --limit
        # prints the whole journal, following next_after, also when a filter leaves pages short.
        d = self.journal_daemon(lambda fifo: journal_config(fifo, fold_window="0s"))
        lines = [error_line(d.dir, i) for i in range(12500)]
        before = d.doctor()["last_seq"]
        Feeder(d.fifo, lines, chunk_lines=2500).start().join()
        swtest.wait_for(lambda: d.doctor()["last_seq"] >= before + len(lines), 30, "12,500 events")
        d.wait_journaled()
        text = d.cli_ok("history", "--json", "--type", "fs.error", timeout=60)
        mine = [json.loads(x) for x in text.splitlines() if x.strip()]
        mine = [r for r in mine if fed(r)]
        self.assertEqual([r["detail"]["n"] for r in mine], list(range(12500)))
        text = d.cli_ok("history", "--json", "--type", "fs.error", "--limit", 10500, timeout=60)
        self.assertEqual(len(text.splitlines()), 10500)

    def test_filters_and_paging(self):
        b = swtest.tempdir(prefix="swtest-journal-tmpfs-", cleanup=self.cleanup)
        swtest.mount_tmpfs(b, 4 * MiB, cleanup=self.cleanup)
        # Folding off: every line is an event of its own.
        d = self.journal_daemon(lambda fifo: journal_config(fifo, fold_window="0s"))
        a = d.dir

        def feed(lines):
            before = d.doctor()["last_seq"]
            Feeder(d.fifo, lines).start().join()
            swtest.wait_for(lambda: d.doctor()["last_seq"] >= before + len(lines), 10,
                            f"{len(lines)} events")
            d.wait_journaled()

        batch1 = [error_line(a, i) for i in range(30)] + \
            [json.dumps({"type": "fs.readonly", "fs": b, "detail": {"cause": "errors", "n": i}}) + "\n"
             for i in range(20)]
        feed(batch1)
        batch2 = [error_line(b, 100 + i) for i in range(25)] + \
            [json.dumps({"type": "space.enospc", "fs": a, "detail": {"kind": "data", "n": i}}) + "\n"
             for i in range(15)]
        feed(batch2)
        rows = history(d)
        # Only the fed events are known here; other sources of the daemon may add their own, so
        # every expectation is computed from the journal's rows, up to the last fed event.
        mine = [r for r in rows if fed(r)]
        self.assertEqual(len(mine), 90)
        self.assertEqual([r["detail"]["n"] for r in mine],
                         list(range(30)) + list(range(20)) + list(range(100, 125)) + list(range(15)))
        top = mine[-1]["seq"]
        rows = [r for r in rows if r["seq"] <= top]
        first, second = mine[0], mine[50]
        self.assertEqual((second["type"], second["detail"]["n"]), ("fs.error", 100))
        b_dev = mine[30]["fs"]["dev"]
        self.assertNotEqual(b_dev, first["fs"]["dev"])

        def seqs(*args):
            text = d.cli_ok("history", "--json", *args)
            return [s for s in (json.loads(x)["seq"] for x in text.splitlines() if x.strip()) if s <= top]

        def where(pred):
            return [r["seq"] for r in rows if pred(r)]

        def is_b(r):
            return (r.get("fs") or {}).get("dev") == b_dev

        self.assertEqual(seqs("--type", "fs.error"), where(lambda r: r["type"] == "fs.error"))
        self.assertEqual(seqs("--type", "fs.*"), where(lambda r: r["type"].startswith("fs.")))
        self.assertEqual(seqs("--type", "fs.readonly", "--type", "space.enospc"),
                         where(lambda r: r["type"] in ("fs.readonly", "space.enospc")))
        self.assertEqual(seqs("--fs", b), where(is_b))
        self.assertGreaterEqual(len(seqs("--fs", b)), 45)
        self.assertEqual(seqs("--fs", b, "--type", "fs.error"),
                         where(lambda r: is_b(r) and r["type"] == "fs.error"))
        self.assertEqual([s for s in seqs("--fs", b, "--type", "fs.error") if s in {r["seq"] for r in mine}],
                         [r["seq"] for r in mine[50:75]])
        # --since: the time of the first event of the second batch.
        since = where(lambda r: r["time"] >= second["time"])
        self.assertEqual(since[0], second["seq"])
        self.assertEqual(seqs("--since", second["time"]), since)
        self.assertEqual(seqs("--since", second["time"], "--type", "space.enospc"),
                         where(lambda r: r["time"] >= second["time"] and r["type"] == "space.enospc"))
        self.assertEqual(seqs("--since", "1h"), where(lambda r: True))
        self.assertEqual(seqs("--since", "2099-01-01T00:00:00Z"), [])
        # --limit and --after.
        every = where(lambda r: True)
        self.assertEqual(seqs("--limit", 7), every[:7])
        self.assertEqual(seqs("--after", every[6], "--limit", 5), every[7:12])
        self.assertEqual(seqs("--after", mine[-3]["seq"])[:2], [mine[-2]["seq"], top])
        self.assertEqual(seqs("--type", "fs.readonly", "--limit", 3),
                         where(lambda r: r["type"] == "fs.readonly")[:3])
        # The text form prints the same events, one line each.
        text = d.cli_ok("history", "--type", "space.enospc", "--after", first["seq"] - 1)
        self.assertGreaterEqual(len(text.splitlines()), 15)

        # ListEvents paging: next_after continues a filtered listing until it is exhausted.
        def listed(params):
            got, pages = list_events(d.socket, params)
            return [e["seq"] for e in got if e["seq"] <= top], pages

        got, pages = listed({"filter": {"types": ["fs.readonly"]}, "limit": 4})
        self.assertEqual(got, where(lambda r: r["type"] == "fs.readonly"))
        self.assertGreaterEqual(pages, 5)
        got, pages = listed({"filter": {"fs": [b]}, "since": second["time"], "limit": 7})
        self.assertEqual(got, where(lambda r: is_b(r) and r["time"] >= second["time"]))
        self.assertGreaterEqual(pages, 4)
        got, _ = listed({"limit": 10000})
        self.assertEqual(got, every)
        with d.varlink() as v:
            reply = v.call_ok("io.storwatch.ListEvents", {"limit": 10})
            self.assertEqual([e["seq"] for e in reply["events"]], every[:10])
            self.assertEqual(reply["next_after"], every[9])
            self.assertGreaterEqual(reply["journaled_seq"], top)
            self.assertEqual(reply["journal_id"], d.doctor()["journal_id"])
            reply = v.call_ok("io.storwatch.ListEvents", {"after": d.doctor()["last_seq"]})
            self.assertEqual(reply["events"], [])
            self.assertNotIn("next_after", reply)
            for bad in ({"limit": 0}, {"after": -1}, {"since": "yesterday"}):
                with self.assertRaises(VarlinkError) as cm:
                    v.call_ok("io.storwatch.ListEvents", bad)
                self.assertEqual(cm.exception.error, "io.storwatch.InvalidParameter")


if __name__ == "__main__":
    swtest.main()
