#include "daemon/source/enospc_source.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include <fmt/format.h>

#include "base/log.h"
#include "daemon/bpf/bpf_support.h"

#if STORWATCH_HAVE_BPF
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "enospc.skel.h"
#endif

namespace storwatch::daemon {

namespace {

constexpr int kEnospc = 28;

struct NamedNumber {
  uint32_t nr;
  const char* name;
};

// The syscalls enospc.bpf.c classifies (x86_64 numbers).
constexpr NamedNumber kSyscalls[] = {
    {1, "write"},         {2, "open"},           {3, "close"},        {18, "pwrite64"},
    {20, "writev"},       {40, "sendfile"},      {74, "fsync"},       {75, "fdatasync"},
    {76, "truncate"},     {77, "ftruncate"},     {82, "rename"},      {83, "mkdir"},
    {85, "creat"},        {86, "link"},          {88, "symlink"},     {133, "mknod"},
    {188, "setxattr"},    {189, "lsetxattr"},    {190, "fsetxattr"},  {257, "openat"},
    {258, "mkdirat"},     {259, "mknodat"},      {264, "renameat"},   {265, "linkat"},
    {266, "symlinkat"},   {275, "splice"},       {277, "sync_file_range"},
    {285, "fallocate"},   {296, "pwritev"},      {316, "renameat2"},  {326, "copy_file_range"},
    {328, "pwritev2"},    {437, "openat2"},      {463, "setxattrat"},
};

// IORING_OP_* the program reports.
constexpr NamedNumber kIoUringOps[] = {
    {2, "writev"},     {3, "fsync"},     {5, "write_fixed"}, {8, "sync_file_range"}, {17, "fallocate"},
    {18, "openat"},    {23, "write"},    {28, "openat2"},    {30, "splice"},         {35, "renameat"},
    {37, "mkdirat"},   {38, "symlinkat"}, {39, "linkat"},    {41, "fsetxattr"},      {42, "setxattr"},
    {55, "ftruncate"}, {61, "writev_fixed"},
};

const char* unresolved_reason(uint32_t how) {
  switch (how) {
    case ENOSPC_HOW_CLOSED: return "close(): the descriptor is gone when the call returns";
    case ENOSPC_HOW_NOFILE: return "the io_uring request has no file to name the filesystem";
    case ENOSPC_HOW_BADFD: return "the descriptor was no longer open when the call returned";
    default: return "the kernel side could not name the filesystem";
  }
}

}  // namespace

std::string enospc_syscall_name(uint32_t syscall) {
  if (syscall & ENOSPC_IO_URING) {
    uint32_t op = syscall & 0xff;
    for (const auto& n : kIoUringOps)
      if (n.nr == op) return std::string("io_uring:") + n.name;
    return fmt::format("io_uring:op{}", op);
  }
  for (const auto& n : kSyscalls)
    if (n.nr == syscall) return n.name;
  return fmt::format("syscall {}", syscall);
}

// ---------------------------------------------------------------------------------------------
// EnospcTracker

Event::Time EnospcTracker::wall_of(uint64_t ns) const {
  uint64_t now = hooks_.mono_ns();
  auto wall = hooks_.wall_now();
  if (ns == 0 || ns > now) return wall;
  return wall - std::chrono::duration_cast<Event::Time::duration>(std::chrono::nanoseconds(now - ns));
}

void EnospcTracker::on_record(const enospc_record& rec) {
  std::string path(rec.path, strnlen(rec.path, sizeof rec.path));
  if (rec.flags & ENOSPC_REC_UNFOLDED) {  // the map was full: this one failure, on its own
    send(rec.key, rec.value, 1, path);
    return;
  }
  auto t = tuple(rec.key);
  pending_.erase(t);
  KeyState& s = keys_[t];
  s = KeyState{};
  s.path = std::move(path);
  s.sent = 1;
  s.last_count = 1;
  s.idle_since_ns = rec.value.last_ns;
  s.last_read_ns = rec.value.last_ns;
  send(rec.key, rec.value, 1, s.path);
}

std::vector<enospc_key> EnospcTracker::sweep(const std::vector<std::pair<enospc_key, enospc_value>>& entries,
                                             std::chrono::milliseconds idle) {
  std::vector<enospc_key> expired;
  const uint64_t now = hooks_.mono_ns();
  std::set<KeyTuple> untracked;
  for (const auto& [key, v] : entries) {
    auto t = tuple(key);
    auto it = keys_.find(t);
    if (it == keys_.end()) {
      // Its first record is either still in the ring (created after we drained it) or was never
      // sent (ring full). Seen twice without a record: adopt it with its whole count.
      if (!pending_.count(t)) {
        untracked.insert(t);
        continue;
      }
      it = keys_.emplace(t, KeyState{}).first;
      it->second.idle_since_ns = v.last_ns;
      it->second.last_read_ns = v.first_ns;
    }
    KeyState& s = it->second;
    if (v.count > s.sent) {
      uint64_t n = v.count - s.sent;
      s.sent = v.count;
      send(key, v, n, s.path, s.last_read_ns);
    }
    s.last_read_ns = now;
    if (v.count != s.last_count) {
      s.last_count = v.count;
      s.idle_since_ns = now;
    } else if (now - s.idle_since_ns >= static_cast<uint64_t>(idle.count()) * 1000000ull) {
      expired.push_back(key);
    }
  }
  pending_ = std::move(untracked);
  return expired;
}

void EnospcTracker::removed(const enospc_key& key, const enospc_value& last) {
  auto it = keys_.find(tuple(key));
  if (it == keys_.end()) return;
  if (last.count > it->second.sent) send(key, last, last.count - it->second.sent, it->second.path, it->second.last_read_ns);
  keys_.erase(it);
}

void EnospcTracker::send(const enospc_key& key, const enospc_value& v, uint64_t count, const std::string& path,
                         uint64_t since_ns) {
  Event e;
  e.type = key.err == kEnospc ? "space.enospc" : "space.edquot";
  e.severity = key.err == kEnospc ? Severity::error : Severity::warning;
  e.source = "ebpf";
  e.count = count;
  e.last_time = wall_of(v.last_ns);
  e.first_time = count == 1 ? e.last_time : wall_of(since_ns ? since_ns : v.first_ns);
  ProcessRef p;
  p.pid = key.tgid;
  p.uid = v.uid;
  p.comm = std::string(v.comm, strnlen(v.comm, sizeof v.comm));
  if (hooks_.cgroup_path) p.cgroup = hooks_.cgroup_path(v.cgroup_id);
  e.process = std::move(p);
  e.detail["kind"] = key.kind == ENOSPC_KIND_METADATA ? "metadata" : "data";
  e.detail["syscall"] = enospc_syscall_name(v.syscall);
  e.detail["errno"] = key.err;
  e.detail["error"] = key.err == kEnospc ? "ENOSPC" : "EDQUOT";
  if (v.tid != key.tgid) e.detail["tid"] = v.tid;
  if (e.process->cgroup.empty()) e.detail["cgroup_id"] = v.cgroup_id;

  std::optional<EnospcFs> fs;
  if (key.dev != 0) {
    uint32_t major = key.dev >> 20, minor = key.dev & 0xfffff;
    bool ignored = false;
    fs = hooks_.by_dev(major, minor, ignored);
    if (ignored) return;  // a filesystem the configuration does not watch
    if (!fs) e.detail["dev"] = fmt::format("{}:{}", major, minor);
  } else if (v.how == ENOSPC_HOW_PATH && !path.empty()) {
    e.detail["path"] = path;
    bool ignored = false;
    fs = hooks_.by_path(path, ignored);
    if (ignored) return;
    if (!fs) e.detail["fs_unresolved"] = "no mounted filesystem holds this path any more";
  } else {
    e.detail["fs_unresolved"] = unresolved_reason(v.how);
  }
  if (fs) e.fs = fs->ref;
  ++events_;
  classify_and_emit(std::move(e), std::move(fs));
}

void EnospcTracker::classify_and_emit(Event e, std::optional<EnospcFs> fs) {
  // "inodes": an ENOSPC while blocks remain but no inode is free. Only statfs can say, and it
  // runs off the loop; events of one filesystem wait in order for the answer.
  if (e.type != "space.enospc" || !fs || !hooks_.statfs || fs->probe_path.empty()) {
    hooks_.emit(std::move(e));
    return;
  }
  std::string dev = fs->ref.dev();
  auto& q = waiting_[dev];
  q.push_back(std::move(e));
  if (q.size() > 1) return;  // a statfs is under way; this one goes out with its answer
  std::weak_ptr<bool> alive = alive_;
  hooks_.statfs(dev, fs->probe_path, [this, alive, dev](std::optional<Usage> u) {
    if (!alive.lock()) return;
    auto it = waiting_.find(dev);
    if (it == waiting_.end()) return;
    std::deque<Event> ready = std::move(it->second);
    waiting_.erase(it);
    bool inodes = u && u->bavail > 0 && u->files > 0 && u->favail == 0;
    for (auto& ev : ready) {
      if (inodes) ev.detail["kind"] = "inodes";
      hooks_.emit(std::move(ev));
    }
  });
}

// ---------------------------------------------------------------------------------------------
// CgroupResolver

CgroupResolver::CgroupResolver() {
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    auto dash = line.find(" - ");
    if (dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype;
    rest >> fstype;
    if (fstype != "cgroup2") continue;
    std::istringstream head(line.substr(0, dash));
    std::string id, parent, dev, root, point;
    head >> id >> parent >> dev >> root >> point;
    if (root != "/") continue;  // a bind of a subtree would shift every path
    mount_point_ = point;
    break;
  }
  if (!mount_point_.empty()) mount_fd_ = ::open(mount_point_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

CgroupResolver::~CgroupResolver() {
  if (mount_fd_ >= 0) ::close(mount_fd_);
}

std::string CgroupResolver::path(uint64_t id) {
  if (mount_fd_ < 0 || id == 0) return {};
  if (auto it = cache_.find(id); it != cache_.end()) return it->second;
  // A kernfs file handle (FILEID_KERNFS) is the 64-bit id itself.
  struct {
    file_handle h;
    uint64_t id;
  } handle{};
  handle.h.handle_bytes = sizeof(uint64_t);
  handle.h.handle_type = 0xfe;
  std::memcpy(handle.h.f_handle, &id, sizeof id);
  std::string out;
  int fd = ::open_by_handle_at(mount_fd_, &handle.h, O_PATH | O_CLOEXEC);
  if (fd >= 0) {
    char buf[4096];
    ssize_t n = ::readlink(fmt::format("/proc/self/fd/{}", fd).c_str(), buf, sizeof buf - 1);
    ::close(fd);
    if (n > 0) {
      std::string p(buf, static_cast<size_t>(n));
      if (p == mount_point_)
        out = "/";
      else if (p.size() > mount_point_.size() && p.compare(0, mount_point_.size(), mount_point_) == 0 &&
               p[mount_point_.size()] == '/')
        out = p.substr(mount_point_.size());
    }
  }
  if (cache_.size() >= 4096) cache_.clear();  // cgroups come and go; ids are never reused
  cache_[id] = out;
  return out;
}

// ---------------------------------------------------------------------------------------------
// EnospcSource

#if STORWATCH_HAVE_BPF

Result<std::unique_ptr<EnospcSource>> EnospcSource::create(EventLoop& loop, EnospcTracker::Hooks hooks) {
#if !defined(__x86_64__)
  // The program classifies syscalls by number and reads their arguments from x86_64 registers.
  return fail(Error::from_errno(ENOTSUP, "the ENOSPC probe knows only x86_64 syscall numbers"));
#endif
  if (auto ok = bpf_supported(); !ok) return fail(ok.error());
  std::unique_ptr<EnospcSource> s(new EnospcSource(loop, std::move(hooks)));
  s->skel_ = enospc__open_and_load();
  if (!s->skel_) return fail(bpf_error(errno, "loading the ENOSPC probe (enospc.bpf.c)"));
  if (int err = enospc__attach(s->skel_); err != 0)
    return fail(bpf_error(err, "attaching the ENOSPC probe to tp_btf/sys_exit and io_uring_complete"));
  EnospcSource* self = s.get();
  auto ring = BpfRingReader::create(loop, bpf_map__fd(s->skel_->maps.events), [self](const void* data, size_t size) {
    if (size < sizeof(enospc_record)) return;
    enospc_record rec;
    std::memcpy(&rec, data, sizeof rec);
    self->tracker_.on_record(rec);
  });
  if (!ring) return fail(ring.error());
  s->ring_ = std::move(*ring);
  s->arm();
  return s;
}

EnospcSource::~EnospcSource() {
  if (timer_) loop_.cancel_timer(timer_);
  ring_.reset();
  if (skel_) enospc__destroy(skel_);
}

void EnospcSource::arm() {
  timer_ = loop_.add_timer_after(kSweep, [this] {
    timer_ = 0;
    sweep();
    arm();
  });
}

void EnospcSource::flush() { sweep(); }

void EnospcSource::sweep() {
  if (ring_) ring_->drain();  // first records before counts, so no key looks unknown
  int fd = bpf_map__fd(skel_->maps.folds);
  std::vector<std::pair<enospc_key, enospc_value>> entries;
  enospc_key key{}, next{};
  const void* prev = nullptr;
  while (bpf_map_get_next_key(fd, prev, &next) == 0) {
    enospc_value v{};
    if (bpf_map_lookup_elem(fd, &next, &v) == 0) entries.emplace_back(next, v);
    key = next;
    prev = &key;
  }
  for (const auto& k : tracker_.sweep(entries, kIdle)) {
    enospc_value v{};
    if (bpf_map_lookup_and_delete_elem(fd, &k, &v) == 0) tracker_.removed(k, v);
  }
  uint64_t lost = skel_->bss->stats.lost;
  if (lost > lost_reported_) {
    log_warning("ebpf-enospc: {} failed calls could not be counted (fold map and ring buffer full)",
                lost - lost_reported_);
    lost_reported_ = lost;
  }
}

EnospcSource::Counters EnospcSource::counters() const {
  Counters c;
  c.failures = skel_->bss->stats.failures;
  c.lost = skel_->bss->stats.lost;
  c.events = tracker_.events_sent();
  c.keys = tracker_.tracked();
  for (const bpf_program* p : {skel_->progs.enospc_sys_exit, skel_->progs.enospc_io_uring_complete}) {
    bpf_prog_info info{};
    uint32_t len = sizeof info;
    if (bpf_obj_get_info_by_fd(bpf_program__fd(p), &info, &len) == 0) {
      c.runs += info.run_cnt;
      c.run_time_ns += info.run_time_ns;
    }
  }
  return c;
}

std::string EnospcSource::describe() const {
  Counters c = counters();
  return fmt::format(
      "loaded on tp_btf/sys_exit and tp_btf/io_uring_complete: {} failed filesystem calls seen, {} events "
      "sent, {} keys folding, {} lost; [sources] ebpf_enospc = false turns it off",
      c.failures, c.events, c.keys, c.lost);
}

std::string EnospcSource::cost() const {
  Counters c = counters();
  std::string own = c.runs > 0 ? fmt::format("; the program itself: {:.1f} ns per run over {} runs", 
                                             static_cast<double>(c.run_time_ns) / static_cast<double>(c.runs), c.runs)
                               : "; the program's own time is counted while sysctl kernel.bpf_stats_enabled = 1";
  return std::string(kCostMeasured) + own;
}

#else

Result<std::unique_ptr<EnospcSource>> EnospcSource::create(EventLoop&, EnospcTracker::Hooks) {
  return fail(Error::from_errno(ENOTSUP, "built without eBPF: " STORWATCH_BPF_MISSING));
}
EnospcSource::~EnospcSource() = default;
void EnospcSource::arm() {}
void EnospcSource::flush() {}
void EnospcSource::sweep() {}
std::string EnospcSource::describe() const { return {}; }
EnospcSource::Counters EnospcSource::counters() const { return {}; }
std::string EnospcSource::cost() const { return {}; }

#endif

}  // namespace storwatch::daemon
