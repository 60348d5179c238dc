#include "daemon/source/kmsg_source.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "base/log.h"

namespace storwatch::daemon {

namespace {

// /dev/kmsg formats each record into at most CONSOLE_EXT_LOG_MAX (8 KiB) bytes, so one read into
// this buffer always gets a whole record.
constexpr size_t kRecordBuffer = 8192;
// Reports held at most; more (a flood of device-less suppressed lines) are delivered at once.
constexpr size_t kMaxPending = 64;

// Whether the device-less "NAME: N callbacks suppressed" report `sup` belongs to `r`, the next
// report: ext4's ratelimits are per filesystem and named after the kind of line they limit, so
// "EXT4-fs error: 16 callbacks suppressed" goes with the next "EXT4-fs error (device X)" line.
// Other ratelimits are per call site and shared by all devices: the next line is the best guess.
bool suppressed_belongs_to(const FsErrorReport& sup, const FsErrorReport& r) {
  if (r.kind == FsErrorReport::Kind::suppressed || r.device_name.empty()) return false;
  std::string_view msg = r.message;
  if (sup.function == "EXT4-fs error") return msg.substr(0, 13) == "EXT4-fs error";
  if (sup.function == "EXT4-fs warning") return msg.substr(0, 15) == "EXT4-fs warning";
  if (sup.function == "EXT4-fs") return msg.substr(0, 9) == "EXT4-fs (";
  return true;
}

}  // namespace

Result<std::unique_ptr<KmsgSource>> KmsgSource::create(EventLoop& loop, OnFs on_fs, OnBlock on_block, Options options) {
  UniqueFd fd(::open("/dev/kmsg", O_RDONLY | O_NONBLOCK | O_CLOEXEC));
  if (!fd) return fail_errno(errno, "opening /dev/kmsg");
  if (!options.from_start && ::lseek(fd.get(), 0, SEEK_END) < 0) return fail_errno(errno, "seeking /dev/kmsg");
  std::unique_ptr<KmsgSource> s(new KmsgSource(loop, std::move(on_fs), std::move(on_block)));
  auto r = s->start(std::move(fd));
  if (!r) return fail(r.error());
  return s;
}

Result<std::unique_ptr<KmsgSource>> KmsgSource::create_from_fd(EventLoop& loop, UniqueFd fd, OnFs on_fs,
                                                               OnBlock on_block) {
  if (!fd) return fail_errno(EBADF, "kmsg source fd");
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags < 0 || ::fcntl(fd.get(), F_SETFL, flags | O_NONBLOCK) < 0) return fail_errno(errno, "kmsg source fd");
  std::unique_ptr<KmsgSource> s(new KmsgSource(loop, std::move(on_fs), std::move(on_block)));
  auto r = s->start(std::move(fd));
  if (!r) return fail(r.error());
  return s;
}

Result<void> KmsgSource::start(UniqueFd fd) {
  fd_ = std::move(fd);
  auto r = loop_.add_fd(fd_.get(), EPOLLIN, [this](uint32_t) { on_readable(); });
  if (!r) return fail(r.error());
  watching_ = true;
  return {};
}

KmsgSource::~KmsgSource() {
  // Held reports are dropped: the owner is going away and may not want callbacks any more.
  if (flush_timer_) loop_.cancel_timer(*flush_timer_);
  if (watching_) loop_.remove_fd(fd_.get());
}

void KmsgSource::on_readable() {
  char buf[kRecordBuffer];
  for (size_t i = 0; i < kMaxRecordsPerTurn; ++i) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      if (errno == EPIPE) {  // overwritten before we read them; the next read goes on
        overrun_ = true;
        continue;
      }
      // Nothing else is expected from /dev/kmsg; stop watching rather than spin on it.
      log_debug("kmsg: read failed, stopping: {}", std::strerror(errno));
      stop_watching();
      break;
    }
    if (n == 0) {  // a test's socket was closed
      stop_watching();
      break;
    }
    ++records_;
    auto rec = parse_kmsg_record(std::string_view(buf, static_cast<size_t>(n)));
    if (!rec) {
      ++bad_;
      log_debug("kmsg: skipping a record: {}", rec.error().message());
      continue;
    }
    // The kernel numbers records without gaps, so a gap is what was overwritten before we read
    // it (read() said EPIPE once). After EPIPE with nothing to compare to, count at least one.
    if (last_seq_ && rec->seq > *last_seq_ + 1)
      missed_ += rec->seq - *last_seq_ - 1;
    else if (overrun_)
      missed_ += 1;
    overrun_ = false;
    last_seq_ = rec->seq;
    handle(*rec);
  }
}

void KmsgSource::stop_watching() {
  if (!watching_) return;
  loop_.remove_fd(fd_.get());
  watching_ = false;
}

void KmsgSource::handle(const KmsgRecord& rec) {
  if (auto f = parse_fs_line(rec)) handle_fs(std::move(*f));
  if (auto b = parse_block_line(rec)) handle_block(std::move(*b), rec);
}

void KmsgSource::handle_fs(FsErrorReport r) {
  using Kind = FsErrorReport::Kind;
  r.when = loop_.clock().now();
  if (r.kind == Kind::suppressed && r.device_name.empty()) {
    pending_fs_.push_back(Held{std::move(r)});
    if (pending_fs_.size() >= kMaxPending) flush(true);
    arm_flush();
    return;
  }
  for (auto& h : pending_fs_)
    if (h.report.kind == Kind::suppressed && h.report.device_name.empty() && suppressed_belongs_to(h.report, r))
      h.report.device_name = r.device_name;
  auto anchor = std::find_if(pending_fs_.rbegin(), pending_fs_.rend(),
                             [](const Held& h) { return h.report.kind != Kind::suppressed; });
  if (anchor != pending_fs_.rend() && (anchor->report.kind == Kind::shutdown || !anchor->absorbed) &&
      is_follow_up(anchor->report, r)) {
    merge_follow_up(anchor->report, r);
    anchor->absorbed = true;
    return;
  }
  flush(false);
  pending_fs_.push_back(Held{std::move(r)});
  // Each new report waits the full hold time for its follow-ups.
  if (flush_timer_) {
    loop_.cancel_timer(*flush_timer_);
    flush_timer_.reset();
  }
  arm_flush();
}

void KmsgSource::handle_block(BlockErrorLine b, const KmsgRecord& rec) {
  if (b.subtype == "suppressed" && b.device.empty()) {
    pending_block_.emplace_back(std::move(b), rec);
    if (pending_block_.size() >= kMaxPending) flush(true);
    arm_flush();
    return;
  }
  auto held = std::move(pending_block_);
  pending_block_.clear();
  for (auto& [p, prec] : held) {
    if (p.device.empty()) p.device = b.device;
    if (on_block_) on_block_(p, prec);
  }
  if (on_block_) on_block_(b, rec);
}

void KmsgSource::arm_flush() {
  if (flush_timer_ || (pending_fs_.empty() && pending_block_.empty())) return;
  flush_timer_ = loop_.add_timer_after(kHold, [this] {
    flush_timer_.reset();
    flush(true);
  });
}

void KmsgSource::flush(bool all) {
  // Take the lists first: a callback must not see them half-delivered.
  std::vector<Held> fs;
  std::vector<Held> keep;
  for (auto& h : pending_fs_) {
    bool waiting = h.report.kind == FsErrorReport::Kind::suppressed && h.report.device_name.empty();
    (waiting && !all ? keep : fs).push_back(std::move(h));
  }
  pending_fs_ = std::move(keep);
  std::vector<std::pair<BlockErrorLine, KmsgRecord>> block;
  if (all) block = std::exchange(pending_block_, {});
  if (pending_fs_.empty() && pending_block_.empty() && flush_timer_) {
    loop_.cancel_timer(*flush_timer_);
    flush_timer_.reset();
  }
  for (auto& h : fs)
    if (on_fs_) on_fs_(std::move(h.report));
  for (auto& [b, rec] : block)
    if (on_block_) on_block_(b, rec);
}

}  // namespace storwatch::daemon
