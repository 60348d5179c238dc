// KmsgSource: reads the kernel log (/dev/kmsg) on the event loop and turns filesystem error lines
// into FsErrorReports (source "kmsg") and block-layer error lines into BlockErrorLines
// (kmsg_parser.h says which lines).
//
// /dev/kmsg gives one record per read(). Reading starts at the end of the log (only what happens
// from now on) unless Options::from_start. When the kernel overwrote records before we read them,
// read() fails with EPIPE once; the lost records are counted in missed() and reading goes on. Each
// loop turn reads a bounded number of records so a flood cannot starve the other sources.
//
// The kernel often prints one error as several lines; reports are held for a few milliseconds
// so that follow-up lines are merged into the first (is_follow_up) and "callbacks suppressed"
// counts get the device of the line the kernel printed right after them. Reports are delivered
// in the kernel's order.
//
// Owned by the manager; callbacks run on the loop thread. Loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <utility>
#include <vector>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/loop/event_loop.h"
#include "daemon/source/fs_error_report.h"
#include "daemon/source/kmsg_parser.h"

namespace storwatch::daemon {

class KmsgSource {
 public:
  using OnFs = std::function<void(FsErrorReport)>;
  using OnBlock = std::function<void(const BlockErrorLine&, const KmsgRecord&)>;
  struct Options {
    bool from_start = false;  // replay the whole kernel log buffer first
  };

  // Opens /dev/kmsg. Fails with the errno of open() (EPERM without CAP_SYSLOG or with
  // kernel.dmesg_restrict, ENOENT without /dev/kmsg) so the caller can report
  // source.unavailable with the reason.
  [[nodiscard]] static Result<std::unique_ptr<KmsgSource>> create(EventLoop& loop, OnFs on_fs, OnBlock on_block,
                                                                  Options options);
  [[nodiscard]] static Result<std::unique_ptr<KmsgSource>> create(EventLoop& loop, OnFs on_fs, OnBlock on_block) {
    return create(loop, std::move(on_fs), std::move(on_block), Options{});
  }
  // Reads records from `fd` instead: one record per read(), like /dev/kmsg (tests use a
  // SOCK_SEQPACKET socketpair). The fd is made non-blocking; nothing is seeked.
  [[nodiscard]] static Result<std::unique_ptr<KmsgSource>> create_from_fd(EventLoop& loop, UniqueFd fd, OnFs on_fs,
                                                                          OnBlock on_block);
  ~KmsgSource();
  KmsgSource(const KmsgSource&) = delete;
  KmsgSource& operator=(const KmsgSource&) = delete;

  // Records the kernel overwrote before we could read them (gaps in the sequence numbers).
  uint64_t missed() const { return missed_; }
  // Records that did not parse as kmsg records (never expected from the kernel).
  uint64_t bad_records() const { return bad_; }
  // Records read so far, bad ones included.
  uint64_t records() const { return records_; }
  // False once reading stopped: end of file (a test's socket closed) or an unexpected read error.
  bool watching() const { return watching_; }

  // How long a report waits for its follow-up lines.
  static constexpr std::chrono::milliseconds kHold{20};
  // Records read per loop turn at most.
  static constexpr size_t kMaxRecordsPerTurn = 512;

 private:
  KmsgSource(EventLoop& loop, OnFs on_fs, OnBlock on_block)
      : loop_(loop), on_fs_(std::move(on_fs)), on_block_(std::move(on_block)) {}
  [[nodiscard]] Result<void> start(UniqueFd fd);
  void on_readable();
  void handle(const KmsgRecord& rec);
  void handle_fs(FsErrorReport r);
  void handle_block(BlockErrorLine b, const KmsgRecord& rec);
  void stop_watching();
  void arm_flush();
  // Delivers held reports; without `all`, suppressed counts still waiting for their device stay.
  void flush(bool all);

  EventLoop& loop_;
  OnFs on_fs_;
  OnBlock on_block_;
  UniqueFd fd_;
  bool watching_ = false;
  // Reports waiting for follow-up lines, in kernel order. Suppressed counts without a device wait
  // for the next report that names one.
  struct Held {
    FsErrorReport report;
    bool absorbed = false;  // an error takes one follow-up line, a shutdown any number
  };
  std::vector<Held> pending_fs_;
  std::vector<std::pair<BlockErrorLine, KmsgRecord>> pending_block_;
  std::optional<EventLoop::TimerId> flush_timer_;
  bool overrun_ = false;  // EPIPE seen: count the gap at the next record
  std::optional<uint64_t> last_seq_;
  uint64_t missed_ = 0;
  uint64_t bad_ = 0;
  uint64_t records_ = 0;
};

}  // namespace storwatch::daemon
