// Parsers for /dev/kmsg: one record as read() returns it, and the filesystem and block-layer error
// lines in it. Pure functions over strings, no I/O, safe on any input (they are fuzzed).
//
// Which lines mean what was decided from lines captured on Linux 6.18 with ext4, xfs and btrfs on
// loop devices (tests/fixtures/kmsg/, checked line by line in tests/unit/daemon/kmsg_test.cc):
//  - ext4: every "EXT4-fs error" shape (error); "EXT4-fs warning" lines only when they carry an
//    I/O error ("error -5 reading directory block", "I/O error 10 writing to inode"), the others
//    (htree full, mount advice) are not errors; "EXT4-fs (X):" messages at KERN_ERR or worse that
//    speak of an error ("I/O error while writing superblock", "... potential data loss! (inode 13,
//    error -5)") but not mount complaints ("no journal found", "Unrecognized mount option");
//    "Remounting filesystem read-only" (readonly, cause errors: 6.18 only sets emergency_ro and
//    prints no other line for it); "shut down requested (N)" and "Aborting journal on device
//    X-8." (shutdown; X is the device before "-8"); "JBD2: ... error ... for|on X-8" (error).
//    Ignored: "error count since last fsck: N" and "initial/last error at time" (the sysfs
//    source owns ext4's counters) and mount/unmount chatter.
//  - xfs: "Metadata corruption|CRC error detected at F+0x.., ... block 0xB|inode 0xI ...",
//    "Corruption detected.", "Internal error ... Caller F", "metadata I/O error in "F" at daddr
//    0xB len N error E", "log I/O error -5" (error); "... Shutting down filesystem.", "Filesystem
//    has been shut down due to ...", "User initiated shutdown received.", "Please unmount the
//    filesystem and rectify the problem(s)" (shutdown). The hex dump, "Unmount and run
//    xfs_repair", mount failures and "Uncorrected metadata errors detected" are ignored.
//  - btrfs: "BTRFS error|critical|alert|emergency (device X[ state S]): ..." and "BTRFS: error
//    (device X[ state S]) in F:L: errno=-5 IO failure" (error); warnings about checksums ("csum
//    failed root R ino I ...", "checksum verify failed"), I/O errors and corruption (error);
//    "bdev /dev/X errs: wr A, rd B, flush C, corrupt D, gen E" (error); "forced readonly"
//    (readonly, cause errors). Info lines ("read error corrected", mount chatter) are ignored.
//  - iomap (xfs and others): "X: writeback error on inode N, offset O, sector S" (error).
//  - "NAME: N callbacks suppressed": kind suppressed, count N, function NAME, when NAME is a
//    filesystem's ratelimit (EXT4-fs error, ext4_*, xfs*, XFS*, btrfs_*, iomap_*...; for
//    parse_fs_line) or the block layer's (blk_print_req_error, buffer_io_error; for
//    parse_block_line). The line names no device: the kernel prints it right before the message
//    it lets through, so KmsgSource takes the device from the next line.
// errno: a number the line states wins ("errno=-5", "error -117", "log I/O error -5", "error
// 117", ": -5" at the end); else EBADMSG for checksum failures (ext4 and xfs report those as
// EFSBADCRC = EBADMSG), EUCLEAN for other corruption, EIO for I/O failures; an "EXT4-fs error" line
// that says none of these is EUCLEAN, which is what ext4 then reports to fanotify. btrfs' "errs:"
// line does not say which counter rose: EIO when only wr/rd/flush are set, EBADMSG when only
// corrupt, EUCLEAN when only gen, else 0.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "base/result.h"
#include "daemon/source/fs_error_report.h"

namespace storwatch::daemon {

// One /dev/kmsg record: "PRI,SEQ,USEC,FLAGS[,...];TEXT\n" then " KEY=VALUE\n" dictionary lines.
struct KmsgRecord {
  int priority = 0;  // syslog level 0 (emerg) .. 7 (debug)
  int facility = 0;  // 0 for the kernel's own messages
  uint64_t seq = 0;
  uint64_t usec = 0;                        // since boot (the kernel's local clock)
  bool continuation = false;                // flag 'c' or '+': a fragment of a longer message
  std::string text;                         // as kmsg gives it: non-printable bytes are escaped as \xNN
  std::map<std::string, std::string> dict;  // SUBSYSTEM=block, DEVICE=b7:1 (dev_printk lines)
};

// A block-layer error line. A later consumer (per-device I/O error events) uses these; the kmsg
// source only recognises and forwards them. The lines give no request length (only phys_seg).
struct BlockErrorLine {
  std::string device;  // "loop0", "sda"; empty for a "callbacks suppressed" line
  // The kernel's blk_errors name, shortened: io, medium, timeout, transport, target, nexus,
  // reservation_conflict, protection, kernel_resource, device_resource, no_space,
  // not_supported, again, offline, dm_requeue, zone_open_resource, zone_active_resource,
  // duration_limit, invalid. Also "buffer" ("Buffer I/O error on dev X, logical block N": the
  // buffer layer repeating an I/O error the block layer already printed) and "suppressed".
  std::string subtype;
  // The errno the block layer maps that status to (EIO, ENODATA, EOPNOTSUPP...).
  int err = 0;
  // READ, WRITE, FLUSH, DISCARD, WRITE_ZEROES...; "" when the line has none.
  std::string op;
  std::optional<uint32_t> op_code;  // the number before the name: 0x3 for DISCARD
  std::optional<uint64_t> sector;   // first 512-byte sector of the failed request
  // "Buffer I/O error" lines: the block number, in the device's block size.
  std::optional<uint64_t> logical_block;
  std::optional<uint32_t> flags;  // request flags (REQ_*), as printed
  std::optional<uint32_t> phys_segments;
  std::optional<uint32_t> prio_class;
  uint64_t count = 1;    // "suppressed": how many lines the kernel did not print
  std::string function;  // "suppressed": the ratelimit's name (blk_print_req_error, buffer_io_error)
};

// Parses one record. Fails (EINVAL with the reason) on anything that is not a kmsg record.
// Both line parsers below ignore records whose facility is not the kernel's (0): root can write
// any text to /dev/kmsg, and such lines are not kernel errors.
[[nodiscard]] Result<KmsgRecord> parse_kmsg_record(std::string_view raw);

// The filesystem error, read-only, shutdown or suppressed-count report a record stands for, or
// nullopt. source is "kmsg", message the record's text; `when` is left to the caller; sb_dev is
// never set and path only when the line names one (ext4's "path /x:").
std::optional<FsErrorReport> parse_fs_line(const KmsgRecord& rec);

// The block-layer error a record stands for, or nullopt.
std::optional<BlockErrorLine> parse_block_line(const KmsgRecord& rec);

// The kernel often prints one error as two lines: btrfs "csum failed ... ino 257" then "bdev
// /dev/loop1 errs: ..."; btrfs "Transaction aborted (error -5)" then "BTRFS: error (device X) in
// F:L: errno=-5"; xfs "Metadata corruption detected at ..., block 0x140" then "metadata I/O error
// ... daddr 0x140 ... error 117"; xfs "Internal error" then "Corruption detected"; an xfs or ext4
// shutdown line then "Please unmount ..." or a second shutdown line. True when `next` only
// repeats `first` (same device, printed right after it): KmsgSource then merges it into `first`
// with merge_follow_up() instead of reporting it again.
bool is_follow_up(const FsErrorReport& first, const FsErrorReport& next);
// Fills what `first` lacks from `next` (errno, function and line).
void merge_follow_up(FsErrorReport& first, const FsErrorReport& next);

}  // namespace storwatch::daemon
