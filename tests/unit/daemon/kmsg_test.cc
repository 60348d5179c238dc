// Tests of the /dev/kmsg parsers against lines captured from real ext4, xfs and btrfs filesystems
// on loop devices (kernel 6.18, tests/fixtures/kmsg/*.txt: one raw record per line, as read()
// returned them), and of KmsgSource over a SOCK_SEQPACKET socketpair (one record per read(), like
// /dev/kmsg), stepped with a FakeClock.
#include <errno.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/loop/event_loop.h"
#include "daemon/source/kmsg_parser.h"
#include "daemon/source/kmsg_source.h"
#include "support/fake_clock.h"

#ifndef STORWATCH_FIXTURES_DIR
#define STORWATCH_FIXTURES_DIR "tests/fixtures"
#endif

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;
using Kind = FsErrorReport::Kind;

// The raw records of a fixture. A record is a header line plus the dictionary lines after it
// (they start with a space), as /dev/kmsg gives them.
std::vector<std::string> fixture_records(const std::string& name) {
  std::ifstream in(std::string(STORWATCH_FIXTURES_DIR) + "/kmsg/" + name);
  EXPECT_TRUE(in) << "missing fixture " << name;
  std::vector<std::string> out;
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line[0] == ' ' && !out.empty())
      out.back() += line + "\n";
    else
      out.push_back(line + "\n");
  }
  return out;
}

KmsgRecord record(std::string_view raw) {
  auto r = parse_kmsg_record(raw);
  EXPECT_TRUE(r) << raw << ": " << r.error().message();
  return r ? *r : KmsgRecord{};
}

// A kernel record with `text` at priority `prio`.
KmsgRecord kernel_line(std::string text, int prio = 3) {
  KmsgRecord r;
  r.priority = prio;
  r.text = std::move(text);
  return r;
}

std::optional<FsErrorReport> fs(std::string text, int prio = 3) {
  return parse_fs_line(kernel_line(std::move(text), prio));
}
std::optional<BlockErrorLine> blk(std::string text) { return parse_block_line(kernel_line(std::move(text))); }

// ---------------------------------------------------------------------------------------------
// Records

TEST(KmsgRecord, ParsesHeaderTextAndDictionary) {
  auto r = parse_kmsg_record(
      "2,353,12345678,-;EXT4-fs error (device loop1): ext4_lookup:1805: inode #12: comm ls: iget: checksum "
      "invalid\n SUBSYSTEM=block\n DEVICE=b7:1\n");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->priority, 2);
  EXPECT_EQ(r->facility, 0);
  EXPECT_EQ(r->seq, 353u);
  EXPECT_EQ(r->usec, 12345678u);
  EXPECT_FALSE(r->continuation);
  EXPECT_EQ(r->text, "EXT4-fs error (device loop1): ext4_lookup:1805: inode #12: comm ls: iget: checksum invalid");
  EXPECT_EQ(r->dict.size(), 2u);
  EXPECT_EQ(r->dict.at("SUBSYSTEM"), "block");
  EXPECT_EQ(r->dict.at("DEVICE"), "b7:1");
}

TEST(KmsgRecord, FacilityContinuationCallerAndMissingNewline) {
  auto user = record("14,7,8,-;hello world\n");
  EXPECT_EQ(user.priority, 6);
  EXPECT_EQ(user.facility, 1);
  EXPECT_EQ(user.text, "hello world");
  EXPECT_TRUE(record("4,1,2,c;part").continuation);
  EXPECT_TRUE(record("4,1,2,+;part\n").continuation);
  auto caller = record("6,5,6,-,caller=T1234;with caller id\n");
  EXPECT_EQ(caller.text, "with caller id");
  EXPECT_EQ(record("6,5,6,-;\n").text, "");
  EXPECT_EQ(record("6,5,6,-;semi;colons;kept\n").text, "semi;colons;kept");
  // Non-printable bytes arrive escaped and stay so.
  EXPECT_EQ(record("6,5,6,-;a\\x0ab\n").text, "a\\x0ab");
}

TEST(KmsgRecord, MalformedRecordsFail) {
  for (std::string_view bad : {
           "",
           "no header at all\n",
           "2,353,1234;missing flags\n",
           "2,353;too short\n",
           "x,1,2,-;not a number\n",
           "2,-1,2,-;negative\n",
           "2,1,2,?;bad flags\n",
           "2,1,2,--;bad flags\n",
           "2,1,2,;empty flags\n",
           "99999999999999999999999,1,2,-;overflow\n",
           "2,99999999999999999999999,2,-;overflow\n",
           "1024,1,2,-;priority out of range\n",
           "2,1,2\n,-;newline in header\n",
           "2,1,2,-;text\nno leading space\n",
           "2,1,2,-;text\n =no key\n",
           "2,1,2,-;text\n no equals sign\n",
       }) {
    auto r = parse_kmsg_record(bad);
    EXPECT_FALSE(r) << "accepted: " << bad;
    if (!r) {
      EXPECT_EQ(r.error().code(), std::errc::invalid_argument);
    }
  }
}

TEST(KmsgRecord, EveryFixtureRecordParses) {
  size_t n = 0;
  for (const char* name : {"ext4.txt", "ext4-counters.txt", "xfs.txt", "btrfs.txt", "block.txt"}) {
    for (const auto& raw : fixture_records(name)) {
      auto r = parse_kmsg_record(raw);
      EXPECT_TRUE(r) << name << ": " << raw;
      if (r) {
        EXPECT_EQ(r->facility, 0) << raw;
      }
      ++n;
    }
  }
  EXPECT_GT(n, 300u);
}

// ---------------------------------------------------------------------------------------------
// Fixture lines

struct Expect {
  std::string_view text;  // a substring picking the records this applies to (all must match)
  Kind kind = Kind::error;
  std::string_view device;
  int err = 0;
  std::optional<uint64_t> inode = std::nullopt;
  std::string_view function = "";
  int line = 0;
  std::string_view comm = "";
  uint64_t count = 1;
  std::string_view cause = "";
};

void check_fixture(const std::string& name, const std::vector<Expect>& expects,
                   const std::vector<std::string_view>& ignored) {
  auto raws = fixture_records(name);
  std::vector<KmsgRecord> recs;
  for (const auto& raw : raws) recs.push_back(record(raw));
  for (const auto& e : expects) {
    size_t matched = 0;
    for (const auto& rec : recs) {
      if (rec.text.find(e.text) == std::string::npos) continue;
      ++matched;
      SCOPED_TRACE(rec.text);
      auto r = parse_fs_line(rec);
      ASSERT_TRUE(r.has_value());
      EXPECT_EQ(r->kind, e.kind);
      EXPECT_EQ(r->source, "kmsg");
      EXPECT_EQ(r->device_name, e.device);
      EXPECT_EQ(r->err, e.err);
      EXPECT_EQ(r->inode, e.inode);
      EXPECT_EQ(r->function, e.function);
      EXPECT_EQ(r->line, e.line);
      EXPECT_EQ(r->comm, e.comm);
      EXPECT_EQ(r->count, e.count);
      EXPECT_EQ(r->cause, e.cause);
      EXPECT_EQ(r->message, rec.text);
      EXPECT_FALSE(r->sb_dev.has_value());
    }
    EXPECT_GT(matched, 0u) << name << ": no record contains \"" << e.text << "\"";
  }
  for (auto text : ignored) {
    size_t matched = 0;
    for (const auto& rec : recs) {
      if (rec.text.find(text) == std::string::npos) continue;
      ++matched;
      EXPECT_FALSE(parse_fs_line(rec).has_value()) << rec.text;
    }
    EXPECT_GT(matched, 0u) << name << ": no record contains \"" << text << "\"";
  }
}

// How many records of a fixture give an fs report of each kind, and block lines: catches lines
// reported that no expectation above names.
struct Totals {
  size_t error = 0, readonly = 0, shutdown = 0, suppressed = 0, block = 0, nothing = 0;
  bool operator==(const Totals&) const = default;
};
std::ostream& operator<<(std::ostream& os, const Totals& t) {
  return os << "{error " << t.error << ", readonly " << t.readonly << ", shutdown " << t.shutdown << ", suppressed "
            << t.suppressed << ", block " << t.block << ", nothing " << t.nothing << "}";
}
Totals totals(const std::string& name) {
  Totals t;
  for (const auto& raw : fixture_records(name)) {
    auto rec = record(raw);
    auto f = parse_fs_line(rec);
    auto b = parse_block_line(rec);
    EXPECT_FALSE(f && b) << "both an fs and a block line: " << rec.text;
    if (b) ++t.block;
    if (!f && !b) ++t.nothing;
    if (!f) continue;
    switch (f->kind) {
      case Kind::error:
        ++t.error;
        break;
      case Kind::readonly:
        ++t.readonly;
        break;
      case Kind::shutdown:
        ++t.shutdown;
        break;
      case Kind::suppressed:
        ++t.suppressed;
        break;
      case Kind::writable:
        ADD_FAILURE() << "writable from kmsg: " << rec.text;
        break;
    }
  }
  return t;
}

TEST(KmsgFixtures, Ext4) {
  check_fixture(
      "ext4.txt",
      {
          // echo ... > /sys/fs/ext4/loopN/trigger_fs_error: no errno given, ext4 reports EFSCORRUPTED.
          {.text = "trigger_test_error:129: comm python3: storwatch test error one",
           .device = "loop1",
           .err = EUCLEAN,
           .function = "trigger_test_error",
           .line = 129,
           .comm = "python3"},
          {.text = "comm python3: burst",
           .device = "loop1",
           .err = EUCLEAN,
           .function = "trigger_test_error",
           .line = 129,
           .comm = "python3"},
          // 25 errors in a burst: ext4 printed 10 and counted the rest.
          {.text = "EXT4-fs error: 16 callbacks suppressed",
           .kind = Kind::suppressed,
           .device = "",
           .function = "EXT4-fs error",
           .count = 16},
          // xfs_io -x -c 'shutdown -f' on ext4, and the journal abort it causes.
          {.text = "EXT4-fs (loop1): shut down requested (1)", .kind = Kind::shutdown, .device = "loop1"},
          {.text = "Aborting journal on device loop1-8.", .kind = Kind::shutdown, .device = "loop1"},
          // errors=remount-ro (6.18 sets emergency_ro; the line still says "Remounting").
          {.text = "EXT4-fs (loop1): Remounting filesystem read-only",
           .kind = Kind::readonly,
           .device = "loop1",
           .cause = "errors"},
          // debugfs set_inode_field /f checksum 0xdead, then ls / stat / cat.
          {.text = "inode #13: comm ls: iget: checksum invalid",
           .device = "loop1",
           .err = EBADMSG,
           .inode = 13,
           .function = "ext4_lookup",
           .line = 1787,
           .comm = "ls"},
          {.text = "inode #14: comm cat: iget: checksum invalid",
           .device = "loop1",
           .err = EBADMSG,
           .inode = 14,
           .function = "ext4_lookup",
           .line = 1787,
           .comm = "cat"},
          // EIO from the FUSE-backed image under the inode table and a directory block.
          {.text = "inode #8: block 276: comm mount: unable to read itable block",
           .device = "loop1",
           .err = EIO,
           .inode = 8,
           .function = "__ext4_get_inode_loc_noinmem",
           .line = 4996,
           .comm = "mount"},
          {.text = "inode #72: block 292: comm stat: unable to read itable block",
           .device = "loop1",
           .err = EIO,
           .inode = 72,
           .function = "__ext4_get_inode_loc_noinmem",
           .line = 4996,
           .comm = "stat"},
          {.text = "htree_dirblock_to_tree:1051: inode #2049: lblock 2: comm ls: error -5 reading directory block",
           .device = "loop1",
           .err = EIO,
           .inode = 2049,
           .function = "htree_dirblock_to_tree",
           .line = 1051,
           .comm = "ls"},
          // Write errors.
          {.text = "ext4_end_bio:368: I/O error 10 writing to inode 13 starting block 8451)",
           .device = "loop1",
           .err = EIO,
           .inode = 13,
           .function = "ext4_end_bio",
           .line = 368},
          {.text = "failed to convert unwritten extents to written extents -- potential data loss!",
           .device = "loop1",
           .err = EIO,
           .inode = 13},
          {.text = "JBD2: I/O error when updating journal superblock for loop1-8.", .device = "loop1", .err = EIO},
          {.text = "Detected aborted journal",
           .device = "loop1",
           .err = EUCLEAN,
           .function = "ext4_journal_check_start",
           .line = 87,
           .comm = "touch"},
          {.text = "EXT4-fs (loop1): I/O error while writing superblock", .device = "loop1", .err = EIO},
      },
      {"mounted filesystem", "unmounting filesystem", "detected capacity change", "no journal found",
       "warning: mounting fs with errors", "I/O error, dev loop1", "Buffer I/O error on"});
  EXPECT_EQ(totals("ext4.txt"),
            (Totals{.error = 27, .readonly = 3, .shutdown = 5, .suppressed = 1, .block = 32, .nothing = 24}));
}

TEST(KmsgFixtures, Ext4CountersAreLeftToSysfs) {
  check_fixture("ext4-counters.txt",
                {{.text = "comm python3: before remount",
                  .device = "loop0",
                  .err = EUCLEAN,
                  .function = "trigger_test_error",
                  .line = 129,
                  .comm = "python3"}},
                {"error count since last fsck: 1", "initial error at time", "last error at time",
                 "warning: mounting fs with errors"});
  EXPECT_EQ(totals("ext4-counters.txt"), (Totals{.error = 1, .nothing = 10}));
}

TEST(KmsgFixtures, Xfs) {
  check_fixture(
      "xfs.txt",
      {
          // xfs_io -x -c shutdown
          {.text = "User initiated shutdown received.", .kind = Kind::shutdown, .device = "loop1"},
          {.text = "Log I/O Error (0x6) detected at xfs_fs_goingdown+0x63/0xb0",
           .kind = Kind::shutdown,
           .device = "loop1",
           .function = "xfs_fs_goingdown"},
          {.text = "Please unmount the filesystem and rectify the problem(s)",
           .kind = Kind::shutdown,
           .device = "loop1"},
          // xfs_db write -d core.magic 0 on an inode, then mount / ls.
          {.text = "Metadata corruption detected at __xfs_buf_ioend+0x185/0x580, xfs_inode block",
           .device = "loop1",
           .err = EUCLEAN,
           .function = "__xfs_buf_ioend"},
          {.text = "metadata I/O error in \"xfs_imap_to_bp+0x5c/0xe0\" at daddr 0x80 len 32 error 117",
           .device = "loop1",
           .err = EUCLEAN,
           .function = "xfs_imap_to_bp"},
          // xfs_db write -c core.gen (bad CRC) on another inode: xfs names the inode.
          {.text = "Metadata corruption detected at xfs_dinode_verify.part.0+0x2b8/0x810, inode 0x19c dinode",
           .device = "loop1",
           .err = EUCLEAN,
           .inode = 0x19c,
           .function = "xfs_dinode_verify.part.0"},
          // EIO from the FUSE-backed image: inode cluster read, data writeback, log write.
          {.text = "at daddr 0x140 len 32 error 5", .device = "loop1", .err = EIO, .function = "xfs_imap_to_bp"},
          {.text = "loop1: writeback error on inode 142, offset 0, sector 592",
           .device = "loop1",
           .err = EIO,
           .inode = 142},
          {.text = "XFS (loop1): log I/O error -5", .device = "loop1", .err = EIO},
          {.text = "Filesystem has been shut down due to log error (0x2).", .kind = Kind::shutdown, .device = "loop1"},
      },
      {"Mounting V5 Filesystem", "Ending clean mount", "Unmount and run xfs_repair",
       "First 128 bytes of corrupted metadata buffer:", "00000000: ", "Failed to read root inode 0x80, error 117",
       "Uncorrected metadata errors detected", "drop_caches", "I/O error, dev loop1"});
  EXPECT_EQ(totals("xfs.txt"), (Totals{.error = 11, .shutdown = 5, .block = 8, .nothing = 63}));
}

TEST(KmsgFixtures, Btrfs) {
  check_fixture(
      "btrfs.txt",
      {
          // Data block overwritten in the image (single data profile): checksum mismatch.
          {.text = "csum failed root 5 ino 257 off 4096", .device = "loop1", .err = EBADMSG, .inode = 257},
          {.text = "bdev /dev/loop1 errs: wr 0, rd 0, flush 0, corrupt 1, gen 0", .device = "loop1", .err = EBADMSG},
          {.text = "btrfs_print_data_csum_error: 94 callbacks suppressed",
           .kind = Kind::suppressed,
           .device = "",
           .function = "btrfs_print_data_csum_error",
           .count = 94},
          {.text = "btrfs_dev_stat_inc_and_print: 94 callbacks suppressed",
           .kind = Kind::suppressed,
           .device = "",
           .function = "btrfs_dev_stat_inc_and_print",
           .count = 94},
          // Tree block overwritten (metadata single).
          {.text = "checksum verify failed on logical 5799936 mirror 1", .device = "loop2", .err = EBADMSG},
          {.text = "open_ctree failed: -5", .device = "loop1", .err = EIO},
          // EIO from the FUSE-backed image: reads, then writes until the transaction aborts.
          {.text = "errs: wr 0, rd 1, flush 0, corrupt 0, gen 0", .device = "loop1", .err = EIO},
          {.text = "errs: wr 7, rd 4, flush 0, corrupt 0, gen 0", .device = "loop1", .err = EIO},
          {.text = "Transaction aborted (error -5)", .device = "loop1", .err = EIO},
          {.text = "BTRFS: error (device loop1 state A) in __btrfs_free_extent:3233: errno=-5 IO failure",
           .device = "loop1",
           .err = EIO,
           .function = "__btrfs_free_extent",
           .line = 3233},
          {.text = "failed to run delayed ref for logical 22036480", .device = "loop1", .err = EIO},
          {.text = "forced readonly", .kind = Kind::readonly, .device = "loop1", .cause = "errors"},
      },
      {"first mount of filesystem", "scanned by mount", "checking UUID tree", "turning on async discard",
       "last unmount of filesystem", "failed to read fs tree: -5", "I/O error, dev loop1"});
  EXPECT_EQ(totals("btrfs.txt"), (Totals{.error = 49, .readonly = 1, .suppressed = 2, .block = 12, .nothing = 59}));
}

TEST(KmsgFixtures, BlockLines) {
  auto recs = fixture_records("block.txt");
  std::vector<BlockErrorLine> lines;
  for (const auto& raw : recs) {
    auto rec = record(raw);
    EXPECT_FALSE(parse_fs_line(rec)) << rec.text;
    if (auto b = parse_block_line(rec)) lines.push_back(*b);
  }
  ASSERT_EQ(lines.size(), 21u);
  // O_DIRECT read of a sector the FUSE image fails.
  EXPECT_EQ(lines[0].device, "loop1");
  EXPECT_EQ(lines[0].subtype, "io");
  EXPECT_EQ(lines[0].err, EIO);
  EXPECT_EQ(lines[0].op, "READ");
  EXPECT_EQ(lines[0].op_code, 0u);
  EXPECT_EQ(lines[0].sector, 16384u);
  EXPECT_EQ(lines[0].flags, 0x800u);
  EXPECT_EQ(lines[0].phys_segments, 1u);
  EXPECT_EQ(lines[0].prio_class, 2u);
  EXPECT_FALSE(lines[0].logical_block);
  // Buffered read: the buffer layer repeats it.
  EXPECT_EQ(lines[3].subtype, "buffer");
  EXPECT_EQ(lines[3].device, "loop1");
  EXPECT_EQ(lines[3].logical_block, 2048u);
  EXPECT_EQ(lines[3].op, "READ");
  EXPECT_FALSE(lines[3].sector);
  // Writes.
  EXPECT_EQ(lines[4].op, "WRITE");
  EXPECT_EQ(lines[4].op_code, 1u);
  EXPECT_EQ(lines[4].sector, 32768u);
  EXPECT_EQ(lines[6].subtype, "buffer");
  EXPECT_EQ(lines[6].op, "WRITE");
  EXPECT_EQ(lines[6].logical_block, 4096u);
  // 25 failing reads: 10 printed, then the count of the others.
  EXPECT_EQ(lines[17].subtype, "suppressed");
  EXPECT_EQ(lines[17].count, 15u);
  EXPECT_EQ(lines[17].function, "blk_print_req_error");
  EXPECT_EQ(lines[17].device, "");
  // blkdiscard -z and blkdiscard on loop devices whose backing file cannot do them: EOPNOTSUPP,
  // not a media error.
  EXPECT_EQ(lines[19].subtype, "not_supported");
  EXPECT_EQ(lines[19].err, EOPNOTSUPP);
  EXPECT_EQ(lines[19].op, "WRITE_ZEROES");
  EXPECT_EQ(lines[19].op_code, 9u);
  EXPECT_EQ(lines[19].flags, 0x20000800u);
  EXPECT_EQ(lines[20].subtype, "not_supported");
  EXPECT_EQ(lines[20].device, "loop2");
  EXPECT_EQ(lines[20].op, "DISCARD");
  EXPECT_EQ(lines[20].op_code, 3u);
  EXPECT_EQ(lines[20].sector, 2048u);
}

// ---------------------------------------------------------------------------------------------
// Formats from the kernel source that the captures above did not produce.

TEST(KmsgLines, Ext4ShapesNotCaptured) {
  auto std_err = fs("EXT4-fs error (device sda1) in ext4_reserve_inode_write:5762: Journal has aborted", 2);
  ASSERT_TRUE(std_err);
  EXPECT_EQ(std_err->device_name, "sda1");
  EXPECT_EQ(std_err->function, "ext4_reserve_inode_write");
  EXPECT_EQ(std_err->line, 5762);
  EXPECT_EQ(std_err->err, EROFS);
  EXPECT_EQ(fs("EXT4-fs error (device sda1) in ext4_free_blocks:6379: Corrupt filesystem")->err, EUCLEAN);
  EXPECT_EQ(fs("EXT4-fs error (device sda1) in ext4_orphan_add:188: Filesystem failed CRC")->err, EBADMSG);
  EXPECT_EQ(fs("EXT4-fs error (device sda1) in ext4_do_update_inode:5230: IO failure")->err, EIO);
  EXPECT_EQ(fs("EXT4-fs error (device sda1) in ext4_x:1: error 28")->err, 28);

  auto file =
      fs("EXT4-fs error (device nvme0n1p2): ext4_readdir:253: inode #2: block 1234: comm ls: path /srv/x: "
         "bad entry in directory: rec_len is smaller than minimal - offset=0");
  ASSERT_TRUE(file);
  EXPECT_EQ(file->device_name, "nvme0n1p2");
  EXPECT_EQ(file->inode, 2u);
  EXPECT_EQ(file->comm, "ls");
  EXPECT_EQ(file->path, "/srv/x");
  EXPECT_EQ(file->function, "ext4_readdir");
  EXPECT_EQ(file->err, EUCLEAN);

  auto grp =
      fs("EXT4-fs error (device dm-0): ext4_mb_generate_buddy:1217: group 5, block bitmap and bg descriptor "
         "inconsistent: 100 vs 99 free clusters");
  ASSERT_TRUE(grp);
  EXPECT_EQ(grp->device_name, "dm-0");
  EXPECT_EQ(grp->function, "ext4_mb_generate_buddy");
  EXPECT_FALSE(grp->inode);

  auto no_inode = fs("EXT4-fs error (device loop1): ext4_lookup:1805: comm ls: deleted inode referenced: 12");
  ASSERT_TRUE(no_inode);
  EXPECT_EQ(no_inode->comm, "ls");
  EXPECT_FALSE(no_inode->inode);

  auto sup = fs("ext4_lookup: 5 callbacks suppressed", 4);
  ASSERT_TRUE(sup);
  EXPECT_EQ(sup->kind, Kind::suppressed);
  EXPECT_EQ(sup->count, 5u);
  EXPECT_EQ(sup->function, "ext4_lookup");

  // Warnings without an error, and mount-option complaints, are not filesystem errors.
  EXPECT_FALSE(
      fs("EXT4-fs warning (device sda1): ext4_dx_add_entry:2498: Directory (ino: 2) index full, reach max "
         "htree level :2",
         4));
  EXPECT_FALSE(fs("EXT4-fs (sda1): Unrecognized mount option \"errors=bogus\" or missing value", 3));
  EXPECT_FALSE(fs("EXT4-fs (sda1): mounted filesystem 0f0e r/w with ordered data mode. Quota mode: none.", 6));
  auto jbd = fs("JBD2: Detected IO errors while flushing file data on sdb1-8", 3);
  ASSERT_TRUE(jbd);
  EXPECT_EQ(jbd->device_name, "sdb1");
  EXPECT_EQ(jbd->err, EIO);
  auto jbd_err = fs("JBD2: Error -5 detected when updating journal superblock for dm-3-8.", 3);
  ASSERT_TRUE(jbd_err);
  EXPECT_EQ(jbd_err->device_name, "dm-3");
  EXPECT_EQ(jbd_err->err, EIO);
}

TEST(KmsgLines, XfsShapesNotCaptured) {
  auto incore =
      fs("XFS (sda1): Corruption of in-memory data (0x8) detected at xfs_defer_finish_noroll+0x100c/0x19e0 "
         "(fs/xfs/libxfs/xfs_defer.c:573).  Shutting down filesystem.",
         1);
  ASSERT_TRUE(incore);
  EXPECT_EQ(incore->kind, Kind::shutdown);
  EXPECT_EQ(incore->function, "xfs_defer_finish_noroll");
  auto crc =
      fs("XFS (sdb): Metadata CRC error detected at xfs_agf_read_verify+0x10a/0x120 [xfs], xfs_agf block 0x1 ", 1);
  ASSERT_TRUE(crc);
  EXPECT_EQ(crc->err, EBADMSG);
  EXPECT_EQ(crc->function, "xfs_agf_read_verify");
  auto internal =
      fs("XFS (dm-0): Internal error ltbno + ltlen > bno at line 1957 of file fs/xfs/libxfs/xfs_alloc.c.  "
         "Caller xfs_free_ag_extent+0x3f6/0x870 [xfs]",
         1);
  ASSERT_TRUE(internal);
  EXPECT_EQ(internal->err, EUCLEAN);
  EXPECT_EQ(internal->function, "xfs_free_ag_extent");
  auto corrupt = fs("XFS (dm-0): Corruption detected. Unmount and run xfs_repair", 1);
  ASSERT_TRUE(corrupt);
  EXPECT_TRUE(is_follow_up(*internal, *corrupt));
  EXPECT_EQ(fs("XFS (dm-0): metadata I/O error in \"xfs_btree_read_buf_block+0xb7/0x170 [xfs]\" at daddr 0x14669bc "
               "len 2 error 5")
                ->function,
            "xfs_btree_read_buf_block");
}

TEST(KmsgLines, BlockShapesNotCaptured) {
  struct Case {
    std::string_view text, device, subtype, op;
    int err;
    uint64_t sector;
  };
  for (const Case& c : {
           Case{"critical medium error, dev sda, sector 12345 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sda",
                "medium", "READ", ENODATA, 12345},
           Case{"timeout error, dev nvme0n1, sector 8 op 0x1:(WRITE) flags 0x8800 phys_seg 1 prio class 2", "nvme0n1",
                "timeout", "WRITE", ETIMEDOUT, 8},
           Case{"recoverable transport error, dev sdb, sector 1 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdb",
                "transport", "READ", ENOLINK, 1},
           Case{"critical target error, dev sdc, sector 2 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0", "sdc",
                "target", "WRITE", EREMOTEIO, 2},
           Case{"critical nexus error, dev sdc, sector 3 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdc",
                "nexus", "READ", EBADE, 3},
           Case{"reservation conflict error, dev sdc, sector 3 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdc",
                "reservation_conflict", "READ", EBADE, 3},
           Case{"protection error, dev sdd, sector 4 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdd",
                "protection", "READ", EILSEQ, 4},
           Case{"kernel resource error, dev sdd, sector 5 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdd",
                "kernel_resource", "READ", ENOMEM, 5},
           Case{"device resource error, dev sdd, sector 6 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 0", "sdd",
                "device_resource", "READ", EBUSY, 6},
           Case{"critical space allocation error, dev dm-1, sector 7 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0",
                "dm-1", "no_space", "WRITE", ENOSPC, 7},
           Case{"I/O error, dev mmcblk0, sector 9 op 0x2:(FLUSH) flags 0x800 phys_seg 0 prio class 0", "mmcblk0", "io",
                "FLUSH", EIO, 9},
           Case{
               "blk_update_request: I/O error, dev sdb, sector 2048 op 0x1:(WRITE) flags 0x800 phys_seg 1 prio class 0",
               "sdb", "io", "WRITE", EIO, 2048},
           Case{"end_request: I/O error, dev sda, sector 100", "sda", "io", "", EIO, 100},
       }) {
    SCOPED_TRACE(c.text);
    auto b = blk(std::string(c.text));
    ASSERT_TRUE(b);
    EXPECT_EQ(b->device, c.device);
    EXPECT_EQ(b->subtype, c.subtype);
    EXPECT_EQ(b->op, c.op);
    EXPECT_EQ(b->err, c.err);
    EXPECT_EQ(b->sector, c.sector);
  }
  EXPECT_EQ(blk("buffer_io_error: 3 callbacks suppressed")->subtype, "suppressed");
  EXPECT_FALSE(blk("bogus error, dev sda, sector 1 op 0x0:(READ)"));
  EXPECT_FALSE(blk("I/O error, dev , sector 1"));
  EXPECT_FALSE(blk("I/O error, dev sda, sector x"));
  EXPECT_FALSE(blk("random_func: 3 callbacks suppressed"));
  EXPECT_FALSE(fs("blk_print_req_error: 3 callbacks suppressed", 4));
}

TEST(KmsgLines, UnrelatedAndSpoofedLinesGiveNothing) {
  for (std::string_view text : {
           "",
           "Linux version 6.18.0 (gcc) #1 SMP",
           "loop0: detected capacity change from 0 to 131072",
           "EXT4-fs (loop0): mounted filesystem 2ba7 r/w with ordered data mode. Quota mode: none.",
           "XFS (loop1): Mounting V5 Filesystem a3a6",
           "BTRFS info (device loop1): first mount of filesystem c248",
           "00000000: 49 4e 81 a4 03 02 00 00 00 00 00 00 00 00 00 00  IN..............",
           "eth0: 3 callbacks suppressed",
           "EXT4-fs error (device ): f:1: comm x: empty device",
           "EXT4-fs error (device with space): f:1: comm x: bad device",
           "XFS (",
           "BTRFS",
           "BTRFS error (device loop1",
           ": writeback error on inode 5, offset 0, sector 1",
       }) {
    EXPECT_FALSE(fs(std::string(text), 2)) << text;
    EXPECT_FALSE(blk(std::string(text))) << text;
  }
  // Root can write anything to /dev/kmsg; such records carry the user facility (1).
  auto spoofed = record("10,99,1,-;EXT4-fs error (device sda1): f:1: comm x: fake\n");
  EXPECT_EQ(spoofed.facility, 1);
  EXPECT_FALSE(parse_fs_line(spoofed));
  EXPECT_FALSE(parse_block_line(record("11,99,1,-;I/O error, dev sda, sector 1 op 0x0:(READ)\n")));
}

TEST(KmsgLines, ErrnoStatedWins) {
  EXPECT_EQ(fs("BTRFS: error (device sda) in btrfs_commit_transaction:2494: errno=-28 No space left")->err, ENOSPC);
  EXPECT_EQ(fs("XFS (sda): log I/O error -117", 1)->err, EUCLEAN);
  // "I/O error 10" is ext4_end_bio's block status (BLK_STS_IOERR), not errno 10.
  EXPECT_EQ(
      fs("EXT4-fs warning (device sda): ext4_end_bio:1: I/O error 10 writing to inode 5 starting block 9)", 4)->err,
      EIO);
  // Absurd numbers are not errnos.
  EXPECT_EQ(fs("EXT4-fs error (device sda): f:1: comm x: error -99999999999999999999999")->err, EUCLEAN);
}

// ---------------------------------------------------------------------------------------------
// Merging the lines of one error

TEST(KmsgFollowUp, PairsFromTheFixtures) {
  auto csum =
      fs("BTRFS warning (device loop1): csum failed root 5 ino 257 off 0 csum 0xeac5d6fa expected csum "
         "0x7ff9d4f2 mirror 1",
         4);
  auto stats = fs("BTRFS error (device loop1): bdev /dev/loop1 errs: wr 0, rd 0, flush 0, corrupt 1, gen 0");
  ASSERT_TRUE(csum && stats);
  EXPECT_TRUE(is_follow_up(*csum, *stats));
  EXPECT_FALSE(is_follow_up(*stats, *csum));
  auto other = *stats;
  other.device_name = "loop2";
  EXPECT_FALSE(is_follow_up(*csum, other));

  auto verifier =
      fs("XFS (loop1): Metadata corruption detected at __xfs_buf_ioend+0x185/0x580, xfs_inode block 0x140 "
         "xfs_inode_buf_verify",
         1);
  auto ioerr = fs("XFS (loop1): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xe0\" at daddr 0x140 len 32 error 117", 1);
  auto elsewhere =
      fs("XFS (loop1): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xe0\" at daddr 0x80 len 32 error 117", 1);
  auto eio = fs("XFS (loop1): metadata I/O error in \"xfs_imap_to_bp+0x5c/0xe0\" at daddr 0x140 len 32 error 5", 1);
  ASSERT_TRUE(verifier && ioerr && elsewhere && eio);
  EXPECT_TRUE(is_follow_up(*verifier, *ioerr));
  EXPECT_FALSE(is_follow_up(*verifier, *elsewhere));
  EXPECT_FALSE(is_follow_up(*verifier, *eio));

  auto aborted = fs("BTRFS error (device loop1 state A): Transaction aborted (error -5)");
  auto where = fs("BTRFS: error (device loop1 state A) in __btrfs_free_extent:3233: errno=-5 IO failure", 2);
  ASSERT_TRUE(aborted && where);
  EXPECT_TRUE(is_follow_up(*aborted, *where));
  merge_follow_up(*aborted, *where);
  EXPECT_EQ(aborted->function, "__btrfs_free_extent");
  EXPECT_EQ(aborted->line, 3233);
  EXPECT_EQ(aborted->err, EIO);

  auto shut = fs("XFS (loop1): User initiated shutdown received.", 1);
  auto tail = fs("XFS (loop1): Please unmount the filesystem and rectify the problem(s)", 1);
  ASSERT_TRUE(shut && tail);
  EXPECT_TRUE(is_follow_up(*shut, *tail));
  auto ext4_err = fs("EXT4-fs error (device loop1): trigger_test_error:129: comm python3: x", 2);
  auto ext4_abort = fs("Aborting journal on device loop1-8.");
  ASSERT_TRUE(ext4_err && ext4_abort);
  EXPECT_FALSE(is_follow_up(*ext4_err, *ext4_abort));
  EXPECT_FALSE(is_follow_up(*ext4_err, *ext4_err));  // two errors are two errors
}

// ---------------------------------------------------------------------------------------------
// KmsgSource

class KmsgSourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto l = EventLoop::create(clock_);
    ASSERT_TRUE(l) << l.error().message();
    loop_ = std::move(*l);
    int sv[2];
    ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    writer_.reset(sv[1]);
    auto s = KmsgSource::create_from_fd(
        *loop_, UniqueFd(sv[0]), [this](FsErrorReport r) { reports_.push_back(std::move(r)); },
        [this](const BlockErrorLine& b, const KmsgRecord& rec) {
          blocks_.push_back(b);
          block_seqs_.push_back(rec.seq);
        });
    ASSERT_TRUE(s) << s.error().message();
    source_ = std::move(*s);
  }

  // Writes records one per send(), like the kernel's one record per read().
  void send(const std::vector<std::string>& raws) {
    for (const auto& raw : raws) ASSERT_EQ(::send(writer_.get(), raw.data(), raw.size(), 0), ssize_t(raw.size()));
  }
  void send_text(uint64_t seq, std::string text, int prio = 3) {
    send({std::to_string(prio) + "," + std::to_string(seq) + ",1000,-;" + text + "\n"});
  }
  // Steps until every sent record is read (the socket is drained), then lets the hold time pass.
  void drain(uint64_t expected_records) {
    auto deadline = std::chrono::steady_clock::now() + 10s;
    while (source_->records() < expected_records &&
           std::chrono::steady_clock::now() < deadline)
      loop_->step(10ms);
    ASSERT_EQ(source_->records(), expected_records);
    clock_.advance(KmsgSource::kHold);
    loop_->step(0ms);
  }

  test::FakeClock clock_;
  std::unique_ptr<EventLoop> loop_;
  UniqueFd writer_;
  std::unique_ptr<KmsgSource> source_;
  std::vector<FsErrorReport> reports_;
  std::vector<BlockErrorLine> blocks_;
  std::vector<uint64_t> block_seqs_;
};

TEST_F(KmsgSourceTest, DeliversReportsOnTheLoopAfterTheHoldTime) {
  send_text(1, "EXT4-fs error (device loop1): ext4_lookup:1787: inode #13: comm ls: iget: checksum invalid", 2);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (source_->records() < 1 && std::chrono::steady_clock::now() < deadline) loop_->step(10ms);
  ASSERT_EQ(source_->records(), 1u);
  EXPECT_TRUE(reports_.empty());  // held for follow-up lines
  clock_.advance(KmsgSource::kHold - 1ms);
  loop_->step(0ms);
  EXPECT_TRUE(reports_.empty());
  clock_.advance(1ms);
  loop_->step(0ms);
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(reports_[0].device_name, "loop1");
  EXPECT_EQ(reports_[0].inode, 13u);
  EXPECT_EQ(reports_[0].err, EBADMSG);
  EXPECT_EQ(reports_[0].source, "kmsg");
  EXPECT_EQ(reports_[0].when, clock_.now() - KmsgSource::kHold);
}

TEST_F(KmsgSourceTest, Ext4FixtureInKernelOrder) {
  auto raws = fixture_records("ext4.txt");
  send(raws);
  drain(raws.size());
  // 36 lines give reports; "shut down requested (1)" and the "Aborting journal" it causes are one.
  ASSERT_EQ(reports_.size(), 35u);
  auto shut = std::find_if(reports_.begin(), reports_.end(), [](auto& r) { return r.kind == Kind::shutdown; });
  ASSERT_NE(shut, reports_.end());
  EXPECT_NE(shut->message.find("shut down requested"), std::string::npos);
  ASSERT_NE(shut + 1, reports_.end());
  EXPECT_NE((shut + 1)->message.find("remount-ro test"), std::string::npos);
  // The suppressed count took the device of the ext4 error printed right after it.
  auto sup = std::find_if(reports_.begin(), reports_.end(), [](auto& r) { return r.kind == Kind::suppressed; });
  ASSERT_NE(sup, reports_.end());
  EXPECT_EQ(sup->count, 16u);
  EXPECT_EQ(sup->device_name, "loop1");
  ASSERT_NE(sup + 1, reports_.end());
  EXPECT_NE((sup + 1)->message.find("after the burst"), std::string::npos);
  // Block lines go to the block callback, the suppressed one with the next line's device.
  EXPECT_EQ(blocks_.size(), 32u);
  for (const auto& b : blocks_) EXPECT_EQ(b.device, "loop1");
}

TEST_F(KmsgSourceTest, XfsLinesOfOneErrorBecomeOneReport) {
  auto raws = fixture_records("xfs.txt");
  send(raws);
  drain(raws.size());
  ASSERT_EQ(reports_.size(), 10u);
  // xfs_io shutdown: "User initiated", "Log I/O Error ... Shutting down", "Please unmount": one.
  EXPECT_EQ(reports_[0].kind, Kind::shutdown);
  EXPECT_EQ(reports_[0].function, "xfs_fs_goingdown");
  // Verifier line + "metadata I/O error ... error 117" for the same block: one report each time.
  for (int i : {1, 2, 3}) {
    EXPECT_EQ(reports_[i].kind, Kind::error);
    EXPECT_NE(reports_[i].message.find("Metadata corruption detected"), std::string::npos);
    EXPECT_EQ(reports_[i].err, EUCLEAN);
  }
  EXPECT_EQ(reports_[4].inode, 0x19cu);
  EXPECT_EQ(reports_[5].inode, 0x19cu);
  EXPECT_EQ(reports_[6].err, EIO);     // metadata read EIO
  EXPECT_EQ(reports_[7].inode, 142u);  // writeback error
  EXPECT_EQ(reports_[8].message, "XFS (loop1): log I/O error -5");
  EXPECT_EQ(reports_[9].kind, Kind::shutdown);
  EXPECT_NE(reports_[9].message.find("shut down due to log error"), std::string::npos);
}

TEST_F(KmsgSourceTest, BtrfsChecksumErrorIsOneReportWithItsInode) {
  send_text(10,
            "BTRFS warning (device loop1): csum failed root 5 ino 257 off 0 csum 0xeac5d6fa expected csum "
            "0x7ff9d4f2 mirror 1",
            4);
  send_text(11, "btrfs_dev_stat_inc_and_print: 13 callbacks suppressed", 4);
  send_text(12, "BTRFS error (device loop1): bdev /dev/loop1 errs: wr 0, rd 0, flush 0, corrupt 1, gen 0");
  send_text(13, "BTRFS error (device loop1): bdev /dev/loop1 errs: wr 0, rd 1, flush 0, corrupt 1, gen 0");
  drain(4);
  ASSERT_EQ(reports_.size(), 3u);
  EXPECT_EQ(reports_[0].inode, 257u);
  EXPECT_EQ(reports_[0].err, EBADMSG);
  EXPECT_EQ(reports_[1].kind, Kind::suppressed);
  EXPECT_EQ(reports_[1].count, 13u);
  EXPECT_EQ(reports_[1].device_name, "loop1");
  EXPECT_EQ(reports_[2].kind, Kind::error);  // a second, separate error
  EXPECT_FALSE(reports_[2].inode);
  EXPECT_EQ(source_->missed(), 0u);
}

TEST_F(KmsgSourceTest, Ext4SuppressedCountWaitsForAnExt4ErrorLine) {
  send_text(1, "EXT4-fs error: 7 callbacks suppressed", 4);
  send_text(2, "XFS (sdb): log I/O error -5", 1);  // another filesystem's line in between
  send_text(3, "EXT4-fs error (device sda2): ext4_lookup:1: comm ls: x", 2);
  drain(3);
  ASSERT_EQ(reports_.size(), 3u);
  EXPECT_EQ(reports_[0].kind, Kind::suppressed);
  EXPECT_EQ(reports_[0].device_name, "sda2");
  EXPECT_EQ(reports_[1].device_name, "sdb");
  EXPECT_EQ(reports_[2].device_name, "sda2");
}

TEST_F(KmsgSourceTest, SuppressedWithoutAFollowingLineKeepsNoDevice) {
  send_text(1, "EXT4-fs error: 7 callbacks suppressed", 4);
  send_text(2, "blk_print_req_error: 3 callbacks suppressed", 4);
  drain(2);
  ASSERT_EQ(reports_.size(), 1u);
  EXPECT_EQ(reports_[0].device_name, "");
  EXPECT_EQ(reports_[0].count, 7u);
  ASSERT_EQ(blocks_.size(), 1u);
  EXPECT_EQ(blocks_[0].device, "");
  EXPECT_EQ(blocks_[0].count, 3u);
}

TEST_F(KmsgSourceTest, BlockSuppressedTakesTheNextBlockLinesDevice) {
  send_text(1, "blk_print_req_error: 15 callbacks suppressed", 4);
  send_text(2, "I/O error, dev sdc, sector 16384 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2");
  drain(2);
  ASSERT_EQ(blocks_.size(), 2u);
  EXPECT_EQ(blocks_[0].subtype, "suppressed");
  EXPECT_EQ(blocks_[0].device, "sdc");
  EXPECT_EQ(block_seqs_, (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(blocks_[1].sector, 16384u);
}

TEST_F(KmsgSourceTest, CountsSequenceGapsAsMissedAndBadRecords) {
  send_text(10, "x", 6);
  send_text(11, "x", 6);
  send_text(15, "x", 6);  // 12..14 were overwritten
  send({"garbage without a header\n"});
  send_text(16, "x", 6);
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (source_->records() < 5 && std::chrono::steady_clock::now() < deadline) loop_->step(10ms);
  EXPECT_EQ(source_->records(), 5u);
  EXPECT_EQ(source_->bad_records(), 1u);
  EXPECT_EQ(source_->missed(), 3u);
}

TEST_F(KmsgSourceTest, BoundedWorkPerTurnAndEofStopsWatching) {
  std::vector<std::string> many;
  for (size_t i = 0; i < KmsgSource::kMaxRecordsPerTurn + 10; ++i)
    many.push_back("6," + std::to_string(i + 1) + ",1,-;line\n");
  // The socket buffer may not hold them all: send from a thread while the loop reads.
  std::thread t([&] { send(many); });
  auto deadline = std::chrono::steady_clock::now() + 10s;
  size_t max_per_step = 0;
  while (source_->records() < many.size() && std::chrono::steady_clock::now() < deadline) {
    uint64_t before = source_->records();
    loop_->step(10ms);
    max_per_step = std::max<size_t>(max_per_step, source_->records() - before);
  }
  t.join();
  EXPECT_EQ(source_->records(), many.size());
  EXPECT_LE(max_per_step, KmsgSource::kMaxRecordsPerTurn);
  EXPECT_TRUE(source_->watching());
  writer_.reset();
  loop_->step(10ms);  // EOF: the source stops watching instead of spinning
  EXPECT_FALSE(source_->watching());
  EXPECT_EQ(loop_->step(0ms), 0u);
}

TEST(KmsgSourceReal, ReadsDevKmsgWhenAllowed) {
  test::FakeClock clock;
  auto loop = EventLoop::create(clock);
  ASSERT_TRUE(loop);
  auto s = KmsgSource::create(
      **loop, [](FsErrorReport) {}, [](const BlockErrorLine&, const KmsgRecord&) {});
  if (!s) {
    int e = s.error().errno_value();
    ASSERT_TRUE(e == EPERM || e == EACCES || e == ENOENT) << s.error().message();
    GTEST_SKIP() << "cannot read /dev/kmsg here: " << s.error().message();
  }
  // Started at the end of the log: a line written now is the next record read.
  int fd = ::open("/dev/kmsg", O_WRONLY | O_CLOEXEC);
  if (fd < 0) GTEST_SKIP() << "cannot write /dev/kmsg";
  std::string line = "<6>storwatch kmsg_test marker\n";
  ssize_t n = ::write(fd, line.data(), line.size());
  ::close(fd);
  if (n < 0) GTEST_SKIP() << "write to /dev/kmsg refused (ratelimited?)";
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while ((*s)->records() < 1 && std::chrono::steady_clock::now() < deadline) (*loop)->step(10ms);
  EXPECT_GE((*s)->records(), 1u);
  EXPECT_EQ((*s)->bad_records(), 0u);
}

}  // namespace
}  // namespace storwatch::daemon
