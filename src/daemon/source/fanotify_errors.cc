#include "daemon/source/fanotify_errors.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/fanotify.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include <fmt/format.h>

#include "base/log.h"

namespace storwatch::daemon {

namespace {

// In Debian 12's 6.1 headers already; spelled out so older headers build too.
constexpr uint64_t kFanFsError = 0x00008000;
constexpr uint8_t kInfoTypeFid = 1;
constexpr uint8_t kInfoTypeError = 5;
constexpr int kFileidInvalid = 255;

struct InfoHeader {
  uint8_t info_type;
  uint8_t pad;
  uint16_t len;
};
struct InfoError {
  InfoHeader hdr;
  int32_t error;
  uint32_t error_count;
};
struct InfoFid {
  InfoHeader hdr;
  int32_t fsid[2];
  // struct file_handle follows: u32 handle_bytes, i32 handle_type, bytes
};

uint64_t fsid_key(const int32_t v[2]) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(v[0])) << 32) | static_cast<uint32_t>(v[1]);
}
uint64_t fsid_key(const fsid_t& f) { return fsid_key(f.__val); }

std::string dev_key(uint32_t major, uint32_t minor) { return fmt::format("{}:{}", major, minor); }

// The superblock devices this group has marks on, from /proc/self/fdinfo ("fanotify sdev:700001"
// per filesystem mark; the kernel's dev_t is major << 20 | minor).
std::optional<std::set<std::pair<uint32_t, uint32_t>>> kernel_marks(int fd) {
  std::ifstream in(fmt::format("/proc/self/fdinfo/{}", fd));
  if (!in) return std::nullopt;
  std::set<std::pair<uint32_t, uint32_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    auto p = line.find("sdev:");
    if (line.rfind("fanotify ", 0) != 0 || p == std::string::npos) continue;
    unsigned long long v = std::strtoull(line.c_str() + p + 5, nullptr, 16);
    out.emplace(static_cast<uint32_t>(v >> 20), static_cast<uint32_t>(v & 0xfffff));
  }
  return out;
}

}  // namespace

std::optional<uint64_t> inode_from_handle(int type, const unsigned char* b, size_t len) {
  auto u32 = [&] {
    uint32_t v;
    std::memcpy(&v, b, 4);
    return static_cast<uint64_t>(v);
  };
  auto u64 = [&] {
    uint64_t v;
    std::memcpy(&v, b, 8);
    return v;
  };
  switch (type) {
    case 1:  // FILEID_INO32_GEN: u32 ino, u32 gen
    case 2:  // FILEID_INO32_GEN_PARENT
      if (len >= 4) return u32();
      break;
    case 0x81:  // FILEID_INO64_GEN (xfs' 64-bit inodes): u64 ino, u32 gen
    case 0x82:  // FILEID_INO64_GEN_PARENT
    case 0x4d:  // FILEID_BTRFS_WITHOUT_PARENT: u64 objectid, u64 root, u32 gen
    case 0x4e:  // FILEID_BTRFS_WITH_PARENT
    case 0x4f:  // FILEID_BTRFS_WITH_PARENT_ROOT
      if (len >= 8) return u64();
      break;
    default:
      break;
  }
  return std::nullopt;
}

std::string probe_fanotify_fs_error(const std::string& probe_path) {
  int fd = ::fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_CLOEXEC | FAN_NONBLOCK,
                           O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    if (err == EPERM) return "fanotify_init: Operation not permitted (needs CAP_SYS_ADMIN)";
    if (err == EINVAL) return "fanotify_init(FAN_REPORT_FID): Invalid argument (needs Linux 5.1)";
    return fmt::format("fanotify_init(FAN_REPORT_FID): {}", std::strerror(err));
  }
  std::string why;
  if (::fanotify_mark(fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, kFanFsError, AT_FDCWD,
                      probe_path.c_str()) < 0) {
    // Only EINVAL speaks for the kernel; other errors are about the probed filesystem (e.g. an
    // overlay root without file handles) and say nothing of the others.
    if (errno == EINVAL)
      why = "fanotify_mark(FAN_FS_ERROR): Invalid argument: this kernel does not report filesystem "
            "errors through fanotify (FAN_FS_ERROR needs Linux 5.16)";
    else if (errno == EPERM)  // unprivileged fanotify exists, filesystem marks do not
      why = "fanotify_mark(FAN_MARK_FILESYSTEM): Operation not permitted (needs CAP_SYS_ADMIN)";
  } else {
    ::fanotify_mark(fd, FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, kFanFsError, AT_FDCWD,
                    probe_path.c_str());
  }
  ::close(fd);
  return why;
}

// ---------------------------------------------------------------------------------------------
// Resolver: one worker thread turning (mount point, handle) into a path and an inode number.

class FanotifyErrorSource::Resolver {
 public:
  struct Job {
    uint64_t id;
    std::string mount_path;
    int handle_type;
    std::string handle;  // the handle's bytes
  };
  struct Answer {
    uint64_t id;
    std::string path;
    std::optional<uint64_t> inode;
    int err = 0;
  };
  using Done = std::function<void(Answer)>;  // called on the worker thread

  Resolver(size_t max_queue, Done done) : max_queue_(max_queue), done_(std::move(done)) {
    thread_ = std::thread([this] { run(); });
  }
  ~Resolver() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  bool submit(Job job) {
    {
      std::lock_guard lock(mu_);
      if (queue_.size() >= max_queue_) return false;
      queue_.push_back(std::move(job));
    }
    cv_.notify_one();
    return true;
  }

 private:
  void run() {
    while (true) {
      Job job;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        job = std::move(queue_.front());
        queue_.pop_front();
      }
      done_(resolve(job));
    }
  }

  static Answer resolve(const Job& job) {
    Answer a{job.id, {}, std::nullopt, 0};
    // The mount fd lives for this call only: nothing here keeps the filesystem busy. (It cannot
    // be O_PATH: open_by_handle_at refuses those with EBADF, seen on 6.18.)
    UniqueFd mfd(::open(job.mount_path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK));
    if (!mfd) {
      a.err = errno;
      return a;
    }
    std::string buf(sizeof(struct file_handle) + job.handle.size(), '\0');
    auto* fh = reinterpret_cast<struct file_handle*>(buf.data());
    fh->handle_bytes = static_cast<unsigned>(job.handle.size());
    fh->handle_type = job.handle_type;
    std::memcpy(fh->f_handle, job.handle.data(), job.handle.size());
    UniqueFd fd(::open_by_handle_at(mfd.get(), fh, O_PATH | O_CLOEXEC));
    if (!fd) {
      a.err = errno;
      return a;
    }
    struct stat st{};
    if (::fstat(fd.get(), &st) == 0) a.inode = st.st_ino;
    char target[4096];
    std::string link = fmt::format("/proc/self/fd/{}", fd.get());
    ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
    if (n > 0) {
      a.path.assign(target, static_cast<size_t>(n));
      // An unlinked inode reads "/dir/name (deleted)"; "/" + "name" paths are what we want.
      if (a.path.empty() || a.path.front() != '/') a.path.clear();
    }
    return a;
  }

  size_t max_queue_;
  Done done_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stop_ = false;
  std::thread thread_;
};

// ---------------------------------------------------------------------------------------------

struct FanotifyErrorSource::Mark {
  uint32_t major = 0, minor = 0;
  std::string path;
  uint64_t fsid = 0;
  bool ok = false;        // the kernel holds our mark on it
  std::string failed;     // why the mark could not be added (for the debug log)
  bool refused = false;   // fanotify_mark itself failed: not retried until the mount point changes
};

struct FanotifyErrorSource::Waiting {
  FsErrorReport report;
  EventLoop::TimerId timer = 0;
};

FanotifyErrorSource::FanotifyErrorSource(EventLoop& loop, ReportCallback on_report,
                                         OverflowCallback on_overflow, Options options)
    : loop_(loop), on_report_(std::move(on_report)), on_overflow_(std::move(on_overflow)),
      options_(options) {}

FanotifyErrorSource::~FanotifyErrorSource() {
  *alive_ = false;
  resolver_.reset();  // joins the worker: nothing posts to the loop after this
  for (auto& [id, w] : waiting_) loop_.cancel_timer(w->timer);
  if (fd_) loop_.remove_fd(fd_.get());
}

std::unique_ptr<FanotifyErrorSource> FanotifyErrorSource::create(EventLoop& loop, ReportCallback on_report,
                                                                 OverflowCallback on_overflow,
                                                                 Options options) {
  std::unique_ptr<FanotifyErrorSource> s(
      new FanotifyErrorSource(loop, std::move(on_report), std::move(on_overflow), options));
  std::string why = probe_fanotify_fs_error();
  if (!why.empty()) {
    s->reason_ = std::move(why);
    return s;
  }
  s->fd_.reset(::fanotify_init(FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_CLOEXEC | FAN_NONBLOCK,
                               O_RDONLY | O_CLOEXEC));
  if (!s->fd_) {
    s->reason_ = fmt::format("fanotify_init(FAN_REPORT_FID): {}", std::strerror(errno));
    return s;
  }
  FanotifyErrorSource* self = s.get();
  auto r = loop.add_fd(s->fd_.get(), EPOLLIN, [self](uint32_t) { self->on_readable(); });
  if (!r) {
    s->reason_ = r.error().message();
    s->fd_.reset();
    return s;
  }
  std::weak_ptr<bool> alive = s->alive_;
  EventLoop* lp = &loop;
  s->resolver_ = std::make_unique<Resolver>(options.resolve_queue, [self, alive, lp](Resolver::Answer a) {
    lp->post([self, alive, a = std::move(a)]() mutable {
      if (!alive.lock()) return;
      if (a.err == EPERM && !self->no_handle_access_) {
        self->no_handle_access_ = true;
        log_debug("fanotify: open_by_handle_at: no CAP_DAC_READ_SEARCH; reports carry inode numbers only");
      } else if (a.err) {
        log_debug("fanotify: no path for an inode handle: {}", std::strerror(a.err));
      }
      self->on_resolved(a.id, std::move(a.path), a.inode);
    });
  });
  s->available_ = true;
  return s;
}

void FanotifyErrorSource::disable(std::string reason) {
  log_debug("fanotify: {}", reason);
  available_ = false;
  reason_ = std::move(reason);
  if (fd_) loop_.remove_fd(fd_.get());
  fd_.reset();
  marks_.clear();
}

bool FanotifyErrorSource::add_mark(Mark& m) {
  m.ok = false;
  m.refused = false;
  // Mark through an fd checked to be the right filesystem: the mount point may have changed
  // under us since the mount table was read.
  // (fanotify_mark takes no O_PATH fd: a plain directory fd, closed at the end of this call.)
  UniqueFd fd(::open(m.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    m.failed = fmt::format("opening {}: {}", m.path, std::strerror(errno));
    return false;
  }
  // btrfs subvolumes show anonymous devices of their own in stat: only block devices are checked.
  struct stat st{};
  if (::fstat(fd.get(), &st) < 0 ||
      (m.major != 0 && (::major(st.st_dev) != m.major || ::minor(st.st_dev) != m.minor))) {
    m.failed = fmt::format("{} is no longer the filesystem {}:{}", m.path, m.major, m.minor);
    return false;
  }
  struct statfs sf{};
  if (::fstatfs(fd.get(), &sf) < 0) {
    m.failed = fmt::format("statfs {}: {}", m.path, std::strerror(errno));
    return false;
  }
  if (::fanotify_mark(fd_.get(), FAN_MARK_ADD | FAN_MARK_FILESYSTEM, kFanFsError, fd.get(), nullptr) < 0) {
    // EXDEV: another marked filesystem has the same fsid (a cloned image); ENODEV/EOPNOTSUPP: no
    // file handles on this filesystem. Either way only this filesystem is affected.
    m.failed = fmt::format("fanotify_mark {}: {}", m.path, std::strerror(errno));
    m.refused = true;
    return false;
  }
  m.fsid = fsid_key(sf.f_fsid);
  m.ok = true;
  m.failed.clear();
  by_fsid_[m.fsid] = {m.major, m.minor};
  return true;
}

void FanotifyErrorSource::sync(const std::vector<Target>& targets) {
  if (!available_) return;
  auto in_kernel = kernel_marks(fd_.get());
  std::set<std::string> keep;
  for (const Target& t : targets) {
    std::string dev = dev_key(t.major, t.minor);
    keep.insert(dev);
    auto& slot = marks_[dev];
    bool fresh = !slot;
    if (fresh) slot = std::make_unique<Mark>();
    Mark& m = *slot;
    bool moved = m.path != t.path;
    // The kernel dropped our mark: that superblock went away and this is a new one on the same
    // device (umount + mount between two reads of the mount table).
    bool dropped = m.ok && in_kernel && !in_kernel->count({t.major, t.minor});
    // Retried: a mark the kernel dropped, a new mount point, and failures before fanotify_mark
    // (the mount point changed under us); not a filesystem that refused the mark.
    if (!fresh && !moved && !dropped && (m.ok || m.refused)) continue;
    m.major = t.major;
    m.minor = t.minor;
    m.path = t.path;
    if (!add_mark(m)) log_debug("fanotify: not watching {} for errors: {}", dev, m.failed);
  }
  for (auto it = marks_.begin(); it != marks_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    Mark& m = *it->second;
    if (m.ok && in_kernel && in_kernel->count({m.major, m.minor})) {
      // Still mounted but no longer wanted (the policy changed): unmark through the same kind of
      // checked fd. If that fails the mark stays until the superblock goes; harmless.
      UniqueFd fd(::open(m.path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
      struct stat st{};
      if (fd && ::fstat(fd.get(), &st) == 0 &&
          (m.major == 0 || (::major(st.st_dev) == m.major && ::minor(st.st_dev) == m.minor)))
        ::fanotify_mark(fd_.get(), FAN_MARK_REMOVE | FAN_MARK_FILESYSTEM, kFanFsError, fd.get(), nullptr);
    }
    if (m.ok) {
      // Keep the fsid a while: an error raised just before umount is read after it.
      retired_fsids_.push_back(m.fsid);
      if (retired_fsids_.size() > 64) {
        uint64_t old = retired_fsids_.front();
        retired_fsids_.erase(retired_fsids_.begin());
        bool in_use = false;
        for (const auto& [d, mk] : marks_)
          if (mk->ok && mk->fsid == old && d != it->first) in_use = true;
        if (!in_use) by_fsid_.erase(old);
      }
    }
    it = marks_.erase(it);
  }
}

bool FanotifyErrorSource::marked(uint32_t major, uint32_t minor) const {
  auto it = marks_.find(dev_key(major, minor));
  return it != marks_.end() && it->second->ok;
}

size_t FanotifyErrorSource::marks() const {
  size_t n = 0;
  for (const auto& [d, m] : marks_) n += m->ok ? 1 : 0;
  return n;
}

uint64_t FanotifyErrorSource::in_flight(uint32_t major, uint32_t minor) const {
  uint64_t n = 0;
  for (const auto& [id, w] : waiting_)
    if (w->report.sb_dev == std::pair(major, minor)) n += w->report.count;
  return n;
}

void FanotifyErrorSource::drain() {
  if (fd_) on_readable();
}

void FanotifyErrorSource::on_readable() {
  alignas(fanotify_event_metadata) unsigned char buf[16384];
  while (fd_) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) log_debug("fanotify: read: {}", std::strerror(errno));
      return;
    }
    if (n == 0) return;
    auto* m = reinterpret_cast<fanotify_event_metadata*>(buf);
    size_t len = static_cast<size_t>(n);
    for (; FAN_EVENT_OK(m, len); m = FAN_EVENT_NEXT(m, len)) {
      if (m->vers != FANOTIFY_METADATA_VERSION) {
        disable(fmt::format("fanotify metadata version {} (expected {})", m->vers, FANOTIFY_METADATA_VERSION));
        return;
      }
      if (m->fd >= 0) ::close(m->fd);  // never with FAN_REPORT_FID; be safe
      if (m->mask & FAN_Q_OVERFLOW) {
        if (on_overflow_) on_overflow_();
        continue;
      }
      if (m->mask & kFanFsError)
        handle_event(reinterpret_cast<const unsigned char*>(m), m->event_len);
    }
  }
}

void FanotifyErrorSource::handle_event(const unsigned char* data, size_t len) {
  FsErrorReport r;
  r.kind = FsErrorReport::Kind::error;
  r.source = "fanotify";
  r.when = loop_.clock().now();
  bool have_error = false, have_fsid = false;
  uint64_t fsid = 0;
  int handle_type = kFileidInvalid;
  std::string handle;
  size_t off = sizeof(fanotify_event_metadata);
  while (off + sizeof(InfoHeader) <= len) {
    InfoHeader h;
    std::memcpy(&h, data + off, sizeof h);
    if (h.len < sizeof(InfoHeader) || off + h.len > len) break;
    if (h.info_type == kInfoTypeError && h.len >= sizeof(InfoError)) {
      InfoError e;
      std::memcpy(&e, data + off, sizeof e);
      r.err = e.error;
      r.count = e.error_count;
      have_error = true;
    } else if (h.info_type == kInfoTypeFid && h.len >= sizeof(InfoFid) + 8) {
      InfoFid f;
      std::memcpy(&f, data + off, sizeof f);
      fsid = fsid_key(f.fsid);
      have_fsid = true;
      uint32_t bytes;
      int32_t type;
      std::memcpy(&bytes, data + off + sizeof(InfoFid), 4);
      std::memcpy(&type, data + off + sizeof(InfoFid) + 4, 4);
      size_t avail = h.len - sizeof(InfoFid) - 8;
      if (bytes <= avail && type != kFileidInvalid && bytes > 0) {
        handle_type = type;
        handle.assign(reinterpret_cast<const char*>(data + off + sizeof(InfoFid) + 8), bytes);
      }
    }
    off += h.len;
  }
  if (!have_error || !have_fsid) {
    log_debug("fanotify: FS_ERROR event without {} record", have_error ? "fid" : "error");
    return;
  }
  auto it = by_fsid_.find(fsid);
  if (it == by_fsid_.end()) {
    log_debug("fanotify: error on an unknown filesystem (fsid {:016x}), {} errors", fsid, r.count);
    return;
  }
  r.sb_dev = it->second;
  if (handle.empty()) {
    on_report_(std::move(r));
    return;
  }
  r.inode = inode_from_handle(handle_type, reinterpret_cast<const unsigned char*>(handle.data()),
                              handle.size());
  auto mk = marks_.find(dev_key(it->second.first, it->second.second));
  if (no_handle_access_ || !resolver_ || mk == marks_.end() || !mk->second->ok) {
    on_report_(std::move(r));
    return;
  }
  uint64_t id = next_id_++;
  if (!resolver_->submit({id, mk->second->path, handle_type, handle})) {
    on_report_(std::move(r));  // the worker is behind (or stuck on a dead disk): no path
    return;
  }
  auto w = std::make_unique<Waiting>();
  w->report = std::move(r);
  w->timer = loop_.add_timer_after(options_.resolve_timeout, [this, id] { on_resolve_timeout(id); });
  waiting_[id] = std::move(w);
}

void FanotifyErrorSource::on_resolved(uint64_t id, std::string path, std::optional<uint64_t> inode) {
  auto it = waiting_.find(id);
  if (it == waiting_.end()) return;  // timed out and sent already
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting_.erase(it);
  loop_.cancel_timer(w->timer);
  if (!w->report.inode && inode) w->report.inode = inode;
  w->report.path = std::move(path);
  on_report_(std::move(w->report));
}

void FanotifyErrorSource::on_resolve_timeout(uint64_t id) {
  auto it = waiting_.find(id);
  if (it == waiting_.end()) return;
  std::unique_ptr<Waiting> w = std::move(it->second);
  waiting_.erase(it);
  on_report_(std::move(w->report));
}

}  // namespace storwatch::daemon
