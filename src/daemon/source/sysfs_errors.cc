#include "daemon/source/sysfs_errors.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/ioctl.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstring>
#include <fstream>

#include <fmt/format.h>

#include "base/fd.h"
#include "base/log.h"
#include "base/time_format.h"

namespace storwatch::daemon {

namespace {

// FS_IOC_GETFSUUID (Linux 6.5; newer than Debian 12's headers): the superblock's UUID, no I/O.
struct FsUuid2 {
  uint8_t len;
  uint8_t uuid[16];
};
constexpr unsigned long kFsIocGetFsUuid = _IOR(0x15, 0, FsUuid2);

std::string dev_key(uint32_t major, uint32_t minor) { return fmt::format("{}:{}", major, minor); }

std::string read_attr(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

std::optional<uint64_t> parse_u64(const std::string& s) {
  if (s.empty()) return std::nullopt;
  char* end = nullptr;
  errno = 0;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str()) return std::nullopt;
  return v;
}

// ext4 keeps error codes of its own in the superblock (EXT4_ERR_*); map them back to errno.
int ext4_errcode_to_errno(uint64_t code) {
  // EXT4_ERR_UNKNOWN is 1, EXT4_ERR_EIO 2, ... (fs/ext4/ext4.h).
  static constexpr int kMap[] = {0,      0,      EIO,       ENOMEM, EBADMSG, EUCLEAN,   ENOSPC,    ENOKEY, EROFS,
                                 EFBIG,  EEXIST, ERANGE,    EOVERFLOW, EBUSY, ENOTDIR, ENOTEMPTY, ESHUTDOWN, EFAULT};
  return code < std::size(kMap) ? kMap[code] : 0;
}

std::string basename_of(const std::string& p) {
  auto slash = p.rfind('/');
  return slash == std::string::npos ? p : p.substr(slash + 1);
}

std::string uuid_text(const uint8_t* u) {
  return fmt::format("{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
                     u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13],
                     u[14], u[15]);
}

// The filesystem's UUID through FS_IOC_GETFSUUID on its mount point, else its statfs fsid (which
// ext4 derives from the UUID). The directory fd is closed right away.
std::string fs_identity(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NONBLOCK | O_NOFOLLOW));
  if (!fd) return {};
  FsUuid2 u{};
  u.len = sizeof u.uuid;
  if (::ioctl(fd.get(), kFsIocGetFsUuid, &u) == 0 && u.len == 16) return uuid_text(u.uuid);
  struct statfs sf{};
  if (::fstatfs(fd.get(), &sf) == 0)
    return fmt::format("fsid-{:08x}{:08x}", static_cast<uint32_t>(sf.f_fsid.__val[0]),
                       static_cast<uint32_t>(sf.f_fsid.__val[1]));
  return {};
}

std::string wall_text(uint64_t epoch_seconds) {
  return format_time(WallTime(std::chrono::seconds(epoch_seconds)));
}

}  // namespace

struct SysfsErrorSource::Fs {
  std::string dev;
  uint32_t major = 0, minor = 0;
  std::string fstype;
  std::string key;   // in the state db
  std::string dir;   // ext4: /sys/fs/ext4/<name>; btrfs: /sys/fs/btrfs/<fsid>
  UniqueFd fd;       // ext4: errors_count, polled for POLLPRI
  bool polled = false;
  uint64_t last = 0;  // the count as last read
};

SysfsErrorSource::SysfsErrorSource(EventLoop& loop, StateDb* db, ReportCallback on_report,
                                   CatchUpCallback on_catch_up, Options options)
    : loop_(loop), db_(db), on_report_(std::move(on_report)), on_catch_up_(std::move(on_catch_up)),
      options_(std::move(options)) {
  if (db_) {
    auto saved = db_->load_error_counters();
    if (saved)
      saved_ = std::move(*saved);
    else
      log_warning("loading filesystem error counters: {}", saved.error().message());
  }
}

SysfsErrorSource::~SysfsErrorSource() {
  loop_.cancel_timer(persist_timer_);
  for (auto& [dev, fs] : fss_) close_fs(*fs);
}

void SysfsErrorSource::close_fs(Fs& fs) {
  if (fs.polled) loop_.remove_fd(fs.fd.get());
  fs.polled = false;
  fs.fd.reset();
}

std::unique_ptr<SysfsErrorSource::Fs> SysfsErrorSource::open_ext4(const Target& t) {
  // /sys/dev/block/M:m -> .../block/loop1: ext4 names its sysfs directory after the device.
  char link[PATH_MAX];
  std::string dev_link = fmt::format("{}/dev/block/{}:{}", options_.sysfs_root, t.major, t.minor);
  ssize_t n = ::readlink(dev_link.c_str(), link, sizeof link - 1);
  if (n <= 0) return nullptr;
  std::string name = basename_of(std::string(link, static_cast<size_t>(n)));
  auto fs = std::make_unique<Fs>();
  fs->dir = fmt::format("{}/fs/ext4/{}", options_.sysfs_root, name);
  fs->fd.reset(::open((fs->dir + "/errors_count").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fs->fd) return nullptr;
  std::string id = fs_identity(t.path);
  if (id.empty()) return nullptr;
  fs->key = "ext4:" + id;
  return fs;
}

std::unique_ptr<SysfsErrorSource::Fs> SysfsErrorSource::open_btrfs(const Target& t) {
  // The superblock dev is anonymous; the mount source names a member device, and
  // /sys/fs/btrfs/<fsid>/devices/ lists the members by kernel name.
  if (t.source.empty() || t.source.front() != '/') return nullptr;
  char real[PATH_MAX];
  if (!::realpath(t.source.c_str(), real)) return nullptr;
  std::string name = basename_of(real);
  std::string root = options_.sysfs_root + "/fs/btrfs";
  DIR* d = ::opendir(root.c_str());
  if (!d) return nullptr;
  std::string found;
  while (dirent* e = ::readdir(d)) {
    std::string fsid = e->d_name;
    if (fsid.size() != 36) continue;  // a UUID; skips "features" and the like
    if (::access(fmt::format("{}/{}/devices/{}", root, fsid, name).c_str(), F_OK) == 0) {
      found = fsid;
      break;
    }
  }
  ::closedir(d);
  if (found.empty()) return nullptr;
  auto fs = std::make_unique<Fs>();
  fs->dir = root + "/" + found;
  fs->key = "btrfs:" + found;
  return fs;
}

std::optional<uint64_t> SysfsErrorSource::read_count(Fs& fs) {
  if (fs.fstype == "btrfs") {
    // Sum of every member device's statistics (write, read, flush, corruption, generation).
    std::string devinfo = fs.dir + "/devinfo";
    DIR* d = ::opendir(devinfo.c_str());
    if (!d) return std::nullopt;
    uint64_t sum = 0;
    bool any = false;
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream in(fmt::format("{}/{}/error_stats", devinfo, e->d_name));
      std::string k;
      uint64_t v;
      while (in >> k >> v) {
        sum += v;
        any = true;
      }
    }
    ::closedir(d);
    if (!any) return std::nullopt;
    return sum;
  }
  char buf[32];
  ssize_t n = ::pread(fs.fd.get(), buf, sizeof buf - 1, 0);
  if (n <= 0) return std::nullopt;  // ENODEV: the filesystem went away
  return parse_u64(std::string(buf, static_cast<size_t>(n)));
}

void SysfsErrorSource::catch_up(Fs& fs, uint64_t now_count) {
  auto it = saved_.find(fs.key);
  uint64_t missed = 0;
  bool first_seen = it == saved_.end();
  if (first_seen)
    missed = now_count;  // never seen: everything it recorded is news
  else if (now_count >= it->second)
    missed = now_count - it->second;
  else
    missed = now_count;  // the counter was reset (e2fsck clears it): the rest is new
  if (first_seen || it->second != now_count) {
    saved_[fs.key] = now_count;
    if (db_) {
      if (auto r = db_->save_error_counter(fs.key, now_count); !r)
        log_warning("saving the error counter of {}: {}", fs.key, r.error().message());
    }
  }
  if (missed == 0 || !on_catch_up_) return;
  FsErrorReport r;
  r.kind = FsErrorReport::Kind::error;
  r.source = "sysfs";
  r.sb_dev = std::pair(fs.major, fs.minor);
  r.count = missed;
  r.when = loop_.clock().now();
  nlohmann::json detail = {{"catch_up", true}};
  if (first_seen) detail["first_seen"] = true;
  if (fs.fstype == "btrfs") {
    detail["counter"] = "btrfs device error statistics";
    r.message = "btrfs device error statistics rose while storwatchd was not running";
  } else {
    detail["counter"] = "ext4 errors_count";
    auto attr = [&](const char* name) { return read_attr(fs.dir + "/" + name); };
    if (auto t = parse_u64(attr("first_error_time")); t && *t) detail["first_error_time"] = wall_text(*t);
    if (auto t = parse_u64(attr("last_error_time")); t && *t) detail["last_error_time"] = wall_text(*t);
    std::string func = attr("last_error_func");
    if (!func.empty()) r.function = func;
    if (auto l = parse_u64(attr("last_error_line")); l && *l) r.line = static_cast<int>(*l);
    if (auto i = parse_u64(attr("last_error_ino")); i && *i) r.inode = *i;
    if (auto c = parse_u64(attr("last_error_errcode")); c) r.err = ext4_errcode_to_errno(*c);
    std::string first_func = attr("first_error_func");
    if (!first_func.empty()) detail["first_error_function"] = first_func;
    r.message = "ext4 counted errors while storwatchd was not running";
  }
  on_catch_up_(std::move(r), std::move(detail));
}

void SysfsErrorSource::sync(const std::vector<Target>& targets) {
  std::set<std::string> keep;
  for (const Target& t : targets) {
    std::string dev = dev_key(t.major, t.minor);
    bool ext = t.fstype == "ext4" || t.fstype == "ext3" || t.fstype == "ext2";
    if (!ext && t.fstype != "btrfs") continue;
    keep.insert(dev);
    if (auto it = fss_.find(dev); it != fss_.end()) {
      // Still the same superblock? After umount + mount between two reads of the mount table
      // the old errors_count reads ENODEV: start over with the new one.
      Fs& old = *it->second;
      if (old.fstype == "btrfs") continue;
      if (old.fd) {
        if (auto c = read_count(old)) {
          if (*c > old.last) on_pollpri(dev);  // reading consumed a pending POLLPRI: report it
          continue;
        }
      }
      saved_[old.key] = old.last;
      if (db_) (void)db_->save_error_counter(old.key, old.last);
      dirty_.erase(dev);
      close_fs(old);
      fss_.erase(it);
    }
    auto fs = ext ? open_ext4(t) : open_btrfs(t);
    if (!fs) {
      log_debug("sysfs: no error counter for {} ({})", dev, t.fstype);
      continue;
    }
    fs->dev = dev;
    fs->major = t.major;
    fs->minor = t.minor;
    fs->fstype = t.fstype;
    auto count = read_count(*fs);
    if (!count) continue;
    fs->last = *count;
    catch_up(*fs, *count);
    if (fs->fd) {
      auto r = loop_.add_fd(fs->fd.get(), EPOLLPRI, [this, dev](uint32_t) { on_pollpri(dev); });
      fs->polled = static_cast<bool>(r);
    }
    fss_[dev] = std::move(fs);
  }
  for (auto it = fss_.begin(); it != fss_.end();) {
    if (keep.count(it->first)) {
      ++it;
      continue;
    }
    // Gone: its last value is saved (the next mount compares against it).
    if (dirty_.count(it->first)) {
      saved_[it->second->key] = it->second->last;
      if (db_) (void)db_->save_error_counter(it->second->key, it->second->last);
      dirty_.erase(it->first);
    }
    close_fs(*it->second);
    it = fss_.erase(it);
  }
}

void SysfsErrorSource::mark_dirty(Fs& fs) {
  dirty_.insert(fs.dev);
  if (persist_timer_) return;
  persist_timer_ = loop_.add_timer_after(options_.persist_delay, [this] {
    persist_timer_ = 0;
    persist();
  });
}

void SysfsErrorSource::persist() {
  for (const auto& dev : dirty_) {
    auto it = fss_.find(dev);
    if (it == fss_.end()) continue;
    Fs& fs = *it->second;
    if (saved_.count(fs.key) && saved_[fs.key] == fs.last) continue;
    saved_[fs.key] = fs.last;
    if (db_) {
      if (auto r = db_->save_error_counter(fs.key, fs.last); !r)
        log_warning("saving the error counter of {}: {}", fs.key, r.error().message());
    }
  }
  dirty_.clear();
}

std::optional<uint64_t> SysfsErrorSource::read_now(uint32_t major, uint32_t minor) {
  auto it = fss_.find(dev_key(major, minor));
  if (it == fss_.end()) return std::nullopt;
  Fs& fs = *it->second;
  auto count = read_count(fs);
  if (!count) {
    close_fs(fs);  // gone (ENODEV): stop polling a dead file; sync() forgets it
    return 0;
  }
  if (*count < fs.last) {  // reset under us (not expected while mounted)
    fs.last = *count;
    mark_dirty(fs);
    return 0;
  }
  uint64_t delta = *count - fs.last;
  if (delta) {
    fs.last = *count;
    mark_dirty(fs);
  }
  return delta;
}

void SysfsErrorSource::on_pollpri(const std::string& dev) {
  auto it = fss_.find(dev);
  if (it == fss_.end()) return;
  Fs& fs = *it->second;
  auto delta = read_now(fs.major, fs.minor);
  if (!delta || *delta == 0 || !on_report_) return;
  FsErrorReport r;
  r.kind = FsErrorReport::Kind::error;
  r.source = "sysfs";
  r.sb_dev = std::pair(fs.major, fs.minor);
  r.count = *delta;
  r.when = loop_.clock().now();
  on_report_(std::move(r));
}

std::optional<uint64_t> SysfsErrorSource::counter(uint32_t major, uint32_t minor) const {
  auto it = fss_.find(dev_key(major, minor));
  if (it == fss_.end()) return std::nullopt;
  return it->second->last;
}

}  // namespace storwatch::daemon
