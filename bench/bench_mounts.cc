// bench_mounts: what a mount change costs the daemon's mount tracking as the table grows, in one
// run: 1,000, 10,000, 50,000 and 90,000 tmpfs mounts (fs.mount-max permitting) in a private mount
// namespace of this process. Per table size and per method it measures
//  - CPU time of the thread doing the tracking, per attach/detach (single changes, each waited
//    for), per change in a burst of 1,000 mounts then 1,000 unmounts, and per remount;
//  - latency from the mount() call to the change reaching the subscriber (median of singles;
//    for a burst, from the first mount() to the last change, with the syscalls' own time).
// Methods:
//  - fanotify:  the daemon's fast path (FanotifyMountSource -> Inventory::apply -> MountTracker),
//               on its own EventLoop thread; the subscriber is the tracker's event output (the
//               bus and socket hop after it is bench_bus_fanout's subject);
//  - mountinfo: the daemon's fallback (MountinfoSource: POLLPRI + incremental diff), same pipeline;
//  - reread:    a plain re-read: POLLPRI, read and parse all of /proc/self/mountinfo, look for the
//               change (the daemon before issue 6);
//  - findmnt:   libmount's monitor plus a full table re-parse (`findmnt --poll`, a child process;
//               its CPU from /proc/PID/stat, 10 ms ticks), at 1,000 and 10,000 mounts only.
//
// Needs root (mount, unshare). Usage: bench_mounts [--sizes 1000,10000,50000,90000] [--singles N]
// [--methods fanotify,mountinfo,reread,findmnt] (a subset: the slow ones take minutes at 90,000)
// Prints a Markdown table (docs/performance.md).
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <future>
#include <set>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "base/clock.h"
#include "daemon/loop/event_loop.h"
#include "daemon/mount/fanotify_mount_source.h"
#include "daemon/mount/inventory.h"
#include "daemon/mount/mount_tracker.h"
#include "daemon/mount/mountinfo.h"
#include "daemon/mount/mountinfo_source.h"

namespace {

using namespace storwatch;
using namespace storwatch::daemon;
using Steady = std::chrono::steady_clock;

std::string g_arena;  // a tmpfs holding the mount points
pid_t g_child = -1;   // findmnt, killed on the way out

std::string point(size_t i) { return g_arena + "/m" + std::to_string(i); }

void die(const std::string& what) {
  std::fprintf(stderr, "bench_mounts: %s: %s\n", what.c_str(), std::strerror(errno));
  if (g_child > 0) ::kill(g_child, SIGKILL);
  // The mounts go with this process's namespace; the directory would stay.
  if (!g_arena.empty() && ::umount2(g_arena.c_str(), MNT_DETACH) == 0) ::rmdir(g_arena.c_str());
  std::exit(1);
}

void do_mount(size_t i) {
  if (::mount("bench", point(i).c_str(), "tmpfs", 0, "size=4k") != 0) die("mount " + point(i));
}
void do_umount(size_t i) {
  if (::umount(point(i).c_str()) != 0) die("umount " + point(i));
}
void do_remount(size_t i, bool ro) {
  unsigned long f = MS_REMOUNT | MS_BIND | (ro ? MS_RDONLY : 0);
  if (::mount(nullptr, point(i).c_str(), nullptr, f, nullptr) != 0) die("remount " + point(i));
}

uint64_t cpu_ns(clockid_t c) {
  timespec ts{};
  ::clock_gettime(c, &ts);
  return uint64_t(ts.tv_sec) * 1000000000u + uint64_t(ts.tv_nsec);
}

// What the subscriber side saw: changes about the bench's mount points, with their arrival time.
class Seen {
 public:
  void add(size_t n) {
    if (n == 0) return;
    std::lock_guard lk(mu_);
    count_ += n;
    last_ = Steady::now();
    cv_.notify_all();
  }
  size_t count() {
    std::lock_guard lk(mu_);
    return count_;
  }
  // Waits until `n` changes in all; returns the arrival time of the last, or nullopt on timeout.
  std::optional<Steady::time_point> wait(size_t n, std::chrono::seconds limit = std::chrono::seconds(120)) {
    std::unique_lock lk(mu_);
    if (!cv_.wait_for(lk, limit, [&] { return count_ >= n; })) return std::nullopt;
    return last_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  size_t count_ = 0;
  Steady::time_point last_;
};

bool ours(const std::string& path) { return path.starts_with(g_arena + "/m"); }

// A tracker under test, on a thread of its own; cpu() reads that thread's CPU clock.
class Method {
 public:
  virtual ~Method() = default;
  virtual void start(Seen& seen) = 0;
  virtual uint64_t cpu() = 0;  // ns
  virtual void stop() = 0;
};

// The daemon's pipeline: a MountSource, the Inventory, the MountTracker.
class DaemonPipeline final : public Method {
 public:
  explicit DaemonPipeline(bool fast) : fast_(fast) {}
  void start(Seen& seen) override {
    std::promise<void> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, &seen, &ready] {
      auto loop = EventLoop::create(clock_);
      if (!loop) die("event loop");
      loop_ = loop->get();
      std::unique_ptr<MountSource> src;
      if (fast_) {
        auto f = FanotifyMountSource::create({});
        if (!f) {
          std::fprintf(stderr, "bench_mounts: fanotify: %s\n", f.error().message().c_str());
          std::exit(1);
        }
        src = std::move(*f);
      } else {
        auto t = ProcMountTable::open("/proc/self/mountinfo");
        if (!t) die("mountinfo");
        src = std::make_unique<MountinfoSource>(std::move(*t));
      }
      Inventory inv;
      MountTracker tracker;
      auto r = src->start(**loop, [&](Result<MountChanges> c) {
        if (!c) return;
        std::string source = c->source;
        auto diff = inv.apply(std::move(*c));
        size_t n = 0;
        for (const auto& e : tracker.apply(diff, nullptr, source))
          if (ours(e.detail.value("path", ""))) ++n;
        seen.add(n);
      });
      if (!r) die("start");
      ready.set_value();
      (*loop)->run();
    });
    started.wait();
    ::pthread_getcpuclockid(thread_.native_handle(), &clock_id_);
  }
  uint64_t cpu() override { return cpu_ns(clock_id_); }
  void stop() override {
    loop_->post([this] { loop_->stop(); });
    thread_.join();
  }

 private:
  bool fast_;
  RealClock clock_;
  EventLoop* loop_ = nullptr;
  std::thread thread_;
  clockid_t clock_id_{};
};

// The plain re-read: POLLPRI, read everything, parse everything, diff our mount points.
class Reread final : public Method {
 public:
  void start(Seen& seen) override {
    fd_ = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (::pipe2(stop_, O_CLOEXEC) != 0) die("pipe");
    std::promise<void> ready;
    auto started = ready.get_future();
    thread_ = std::thread([this, &seen, &ready] {
      std::vector<std::string> before = ours_in(read_all());
      ready.set_value();
      for (;;) {
        pollfd p[2] = {{fd_, POLLPRI, 0}, {stop_[0], POLLIN, 0}};
        ::poll(p, 2, -1);
        if (p[1].revents) return;
        std::vector<std::string> now = ours_in(read_all());
        std::vector<std::string> diff;
        std::set_symmetric_difference(before.begin(), before.end(), now.begin(), now.end(),
                                      std::back_inserter(diff));
        before = std::move(now);
        std::set<std::string> points;  // a remount shows as two lines of one mount point
        for (const auto& d : diff) points.insert(d.substr(0, d.find(' ')));
        seen.add(points.size());
      }
    });
    started.wait();
    ::pthread_getcpuclockid(thread_.native_handle(), &clock_id_);
  }
  uint64_t cpu() override { return cpu_ns(clock_id_); }
  void stop() override {
    (void)!::write(stop_[1], "x", 1);
    thread_.join();
    ::close(fd_);
    ::close(stop_[0]);
    ::close(stop_[1]);
  }

 private:
  std::string read_all() {
    std::string out;
    char buf[65536];
    ::lseek(fd_, 0, SEEK_SET);
    for (ssize_t n; (n = ::read(fd_, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
    return out;
  }
  // Mount point + options of our mounts, sorted: a remount changes the options.
  static std::vector<std::string> ours_in(const std::string& text) {
    std::vector<std::string> out;
    auto table = parse_mountinfo(text);
    if (!table) return out;
    for (const auto& m : *table)
      if (ours(m.mount_point)) out.push_back(m.mount_point + " " + m.mount_options);
    std::sort(out.begin(), out.end());
    return out;
  }
  int fd_ = -1;
  int stop_[2] = {-1, -1};
  std::thread thread_;
  clockid_t clock_id_{};
};

// findmnt --poll: libmount's monitor and a full libmount re-parse on every change.
class Findmnt final : public Method {
 public:
  void start(Seen& seen) override {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) die("pipe");
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      // Line-buffered: findmnt writes to a pipe, which stdio would otherwise buffer whole.
      ::execlp("stdbuf", "stdbuf", "-oL", "findmnt", "--poll", "-n", "-r", "-o", "ACTION,TARGET", nullptr);
      _exit(127);
    }
    ::close(out[1]);
    out_ = out[0];
    g_child = pid_;
    reader_ = std::thread([this, &seen] {
      FILE* f = ::fdopen(out_, "r");
      char line[4096];
      while (std::fgets(line, sizeof line, f)) {
        std::string s(line);
        if (s.find(point(0) + "\n") != std::string::npos) {
          ++probes_;
        } else if (s.find(g_arena + "/m") != std::string::npos) {
          seen.add(1);
        }
      }
      std::fclose(f);
    });
    // Started when it reports a change: mount and unmount one probe point until it does.
    // A mount and unmount between two of its re-reads show as nothing: leave each in place
    // until it is reported. Startup only, not measured.
    auto reported = [&](int n) {
      // findmnt needs seconds per change at 10,000 mounts (libmount's table diff).
      for (int i = 0; i < 1200 && probes_ < n; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      return probes_ >= n;
    };
    for (int round = 0;; ++round) {
      if (round == 5) die("findmnt --poll reported nothing");
      int base = probes_;
      do_mount(0);
      bool seen_mount = reported(base + 1);
      do_umount(0);
      if (reported(probes_ + (seen_mount ? 1 : 0) + (seen_mount ? 0 : 1)) && seen_mount) break;
    }
  }
  uint64_t cpu() override {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream fields(s.substr(s.rfind(')') + 2));
    std::string x;
    uint64_t utime = 0, stime = 0;
    for (int i = 3; i <= 15; ++i) {
      fields >> x;
      if (i == 14) utime = std::stoull(x);
      if (i == 15) stime = std::stoull(x);
    }
    return (utime + stime) * (1000000000u / uint64_t(::sysconf(_SC_CLK_TCK)));
  }
  void stop() override {
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
    g_child = -1;
    reader_.join();
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::atomic<int> probes_{0};
  std::thread reader_;
};

struct Row {
  std::string method;
  size_t n = 0;
  double first_cpu_us = 0, single_cpu_us = 0, single_lat_us = 0;
  double burst_cpu_us = 0, burst_lat_ms = 0, burst_syscalls_ms = 0;
  double remount_cpu_us = 0, remount_lat_us = 0;
};

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// Mount points 1..n are mounted; n+1..n+1000 are free for the burst; 0 is findmnt's probe.
Row measure(const std::string& name, Method& m, size_t n, int singles) {
  Seen seen;
  m.start(seen);
  Row row;
  row.method = name;
  row.n = n;
  size_t expect = seen.count();
  auto wait = [&](size_t more) {
    expect += more;
    auto t = seen.wait(expect);
    if (!t) {
      errno = ETIMEDOUT;
      die(name + " at " + std::to_string(n) + ": waiting for change " + std::to_string(expect) + " (saw " +
          std::to_string(seen.count()) + ")");
    }
    return *t;
  };

  // The first attach and detach after the start, on their own: they pay once for the start's
  // full table read (the allocator sorts the chunks its temporaries freed, O(table)), which
  // averaged into the singles would hide what each later change costs.
  uint64_t c0 = m.cpu();
  do_mount(n + 1);
  wait(1);
  do_umount(n + 1);
  wait(1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  row.first_cpu_us = double(m.cpu() - c0) / 1000.0 / 2.0;

  // Single attach and detach, each waited for.
  std::vector<double> lat;
  c0 = m.cpu();
  for (int k = 0; k < singles; ++k) {
    // From the call: the fast path often has the change before mount() has returned.
    size_t i = n + 1;
    auto t0 = Steady::now();
    do_mount(i);
    lat.push_back(std::chrono::duration<double, std::micro>(wait(1) - t0).count());
    t0 = Steady::now();
    do_umount(i);
    lat.push_back(std::chrono::duration<double, std::micro>(wait(1) - t0).count());
  }
  // Let the fast path's deferred check run inside the measurement.
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  row.single_cpu_us = double(m.cpu() - c0) / 1000.0 / (2.0 * singles);
  row.single_lat_us = median(lat);

  // Burst: 1,000 mounts then 1,000 unmounts, as fast as the syscalls go.
  c0 = m.cpu();
  double burst_lat = 0;
  for (int phase = 0; phase < 2; ++phase) {
    auto t0 = Steady::now();
    for (size_t i = n + 1; i <= n + 1000; ++i) phase == 0 ? do_mount(i) : do_umount(i);
    row.burst_syscalls_ms += std::chrono::duration<double, std::milli>(Steady::now() - t0).count() / 2;
    burst_lat = std::max(burst_lat, std::chrono::duration<double, std::milli>(wait(1000) - t0).count());
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  row.burst_cpu_us = double(m.cpu() - c0) / 1000.0 / 2000.0;
  row.burst_lat_ms = burst_lat;

  // Remounts (read-only, then back): a bind remount of one mount, each waited for.
  lat.clear();
  c0 = m.cpu();
  int remounts = std::max(2, singles / 2);
  for (int k = 0; k < remounts; ++k) {
    auto t0 = Steady::now();
    do_remount(1, k % 2 == 0);
    lat.push_back(std::chrono::duration<double, std::micro>(wait(1) - t0).count());
  }
  if (remounts % 2) {
    do_remount(1, false);
    wait(1);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  row.remount_cpu_us = double(m.cpu() - c0) / 1000.0 / remounts;
  row.remount_lat_us = median(lat);
  m.stop();
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<size_t> sizes = {1000, 10000, 50000, 90000};
  int singles = 20;
  std::string methods = "fanotify,mountinfo,reread,findmnt";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--methods") {
      methods = argv[i + 1];
    } else if (a == "--singles") {
      singles = std::atoi(argv[i + 1]);
    } else if (a == "--sizes") {
      sizes.clear();
      std::stringstream ss(argv[i + 1]);
      for (std::string x; std::getline(ss, x, ',');) sizes.push_back(std::stoul(x));
    } else {
      std::fprintf(stderr,
                   "usage: bench_mounts [--sizes 1000,10000,50000,90000] [--singles N] "
                   "[--methods fanotify,mountinfo,reread,findmnt]\n");
      return 2;
    }
  }
  if (::geteuid() != 0) {
    std::fprintf(stderr, "bench_mounts: needs root (mount, unshare)\n");
    return 77;
  }
  // Everything mounted here goes away with this process's namespace.
  if (::unshare(CLONE_NEWNS) != 0) die("unshare(CLONE_NEWNS)");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making / private");
  char dir[] = "/tmp/bench-mounts-XXXXXX";
  if (!::mkdtemp(dir)) die("mkdtemp");
  g_arena = dir;
  if (::mount("bench-arena", dir, "tmpfs", 0, "size=64m") != 0) die("mounting the arena");

  size_t mount_max = 100000;
  std::ifstream("/proc/sys/fs/mount-max") >> mount_max;
  size_t present = 0;
  {
    std::ifstream mi("/proc/self/mountinfo");
    for (std::string l; std::getline(mi, l);) ++present;
  }
  size_t largest = *std::max_element(sizes.begin(), sizes.end());
  for (size_t i = 0; i <= largest + 1001; ++i) ::mkdir(point(i).c_str(), 0755);

  std::vector<Row> rows;
  size_t mounted = 0;
  for (size_t n : sizes) {
    if (present + n + 1001 > mount_max) {
      std::fprintf(stderr, "bench_mounts: skipping %zu: fs.mount-max %zu, %zu mounts already\n", n, mount_max,
                   present);
      continue;
    }
    for (; mounted < n; ++mounted) do_mount(mounted + 1);
    std::fprintf(stderr, "bench_mounts: %zu mounts (+%zu already there)\n", n, present);
    int k = n >= 50000 ? std::max(2, singles / 4) : singles;
    auto wanted = [&](const char* m) {
      return ("," + methods + ",").find("," + std::string(m) + ",") != std::string::npos;
    };
    if (wanted("fanotify")) {
      DaemonPipeline fast(true);
      rows.push_back(measure("fanotify (storwatchd)", fast, n, singles));
    }
    if (wanted("mountinfo")) {
      DaemonPipeline fallback(false);
      rows.push_back(measure("mountinfo (storwatchd fallback)", fallback, n, k));
    }
    if (wanted("reread")) {
      Reread reread;
      rows.push_back(measure("plain mountinfo re-read", reread, n, k));
    }
    if (n <= 10000 && wanted("findmnt")) {
      Findmnt findmnt;
      rows.push_back(measure("findmnt --poll (libmount)", findmnt, n, n > 1000 ? 2 : k));
    }
  }
  std::printf("| mounts | method | CPU per attach/detach | latency (median) | first attach/detach after start: CPU | "
              "burst of 1,000: CPU per change | burst: first syscall to last change (syscalls alone) | "
              "CPU per remount | remount latency (median) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %zu | %s | %.1f us | %.0f us | %.0f us | %.1f us | %.1f ms (%.1f ms) | %.0f us | %.0f us |\n", r.n,
                r.method.c_str(), r.single_cpu_us, r.single_lat_us, r.first_cpu_us, r.burst_cpu_us,
                r.burst_lat_ms, r.burst_syscalls_ms, r.remount_cpu_us, r.remount_lat_us);
  // Unmount everything (the namespace would take it along too) and remove the points.
  ::umount2(dir, MNT_DETACH);
  ::rmdir(dir);
  return 0;
}
