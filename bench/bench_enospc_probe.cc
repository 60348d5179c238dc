// bench_enospc_probe: what the ENOSPC/EDQUOT probe (src/daemon/bpf/enospc.bpf.c) costs the rest
// of the machine. Attaching any program to the sys_exit tracepoint moves every syscall of every
// task onto the kernel's slow syscall path, and the program then runs once per syscall (one
// compare for a call that did not fail). Three loops, each timed with no program, with an empty
// program on the same tracepoint (the floor of any syscall-exit probe: bench_enospc_probe_noop.bpf.c)
// and with the probe, in turn within every round of the same run:
//   devnull   1-byte write() to /dev/null: almost nothing but syscall entry and exit (worst case)
//   ext4      4 KiB buffered write()s appending to a file on a loop-mounted ext4
//   tmpfs     the same on tmpfs
// The program is loaded once, as storwatchd loads it, and attached and detached between runs.
// Time per call is the thread's CPU time (user + kernel), which other load on the machine hardly
// disturbs; wall time is printed too. Per loop: the median over the rounds of the ratio to the
// run without a program, and its spread (min .. max over rounds).
//
// Needs root (BPF, mount). It makes its own ext4 (mkfs.ext4 on a sparse image in $TMPDIR, mounted
// with -o loop) and tmpfs in a private mount namespace, so nothing outlives it.
//
// Usage: bench_enospc_probe [--rounds N] [--scale X]   (prints a Markdown table)
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <bpf/libbpf.h>

#include "daemon/bpf/enospc_record.h"  // before the skeleton: its .bss has struct enospc_stats
#include "enospc.skel.h"
#include "enospc_noop.skel.h"

namespace {

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "bench_enospc_probe: %s\n", what.c_str());
  std::exit(1);
}

double now(clockid_t c) {
  timespec ts{};
  ::clock_gettime(c, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct Sample {
  double cpu_ns = 0, wall_ns = 0;  // per call
};

Sample devnull_loop(long calls) {
  int fd = ::open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (fd < 0) die("open /dev/null");
  char c = 0;
  double c0 = now(CLOCK_THREAD_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
  for (long i = 0; i < calls; ++i)
    if (::write(fd, &c, 1) != 1) die("write /dev/null");
  double c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
  ::close(fd);
  return {(c1 - c0) * 1e9 / calls, (w1 - w0) * 1e9 / calls};
}

// Appends `calls` 4 KiB writes to a fresh file in `dir`; the file is removed afterwards (not
// timed), so every run allocates as a real writer does.
Sample file_loop(const std::string& dir, long calls) {
  std::string path = dir + "/bench";
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) die("open " + path + ": " + std::strerror(errno));
  static char buf[4096];
  std::memset(buf, 0x5a, sizeof buf);
  double c0 = now(CLOCK_THREAD_CPUTIME_ID), w0 = now(CLOCK_MONOTONIC);
  for (long i = 0; i < calls; ++i)
    if (::write(fd, buf, sizeof buf) != static_cast<ssize_t>(sizeof buf)) die("write " + path + ": " + std::strerror(errno));
  double c1 = now(CLOCK_THREAD_CPUTIME_ID), w1 = now(CLOCK_MONOTONIC);
  ::close(fd);
  ::unlink(path.c_str());
  // Writeback of this run does not spill into the next.
  if (int d = ::open(dir.c_str(), O_RDONLY | O_CLOEXEC); d >= 0) {
    ::syncfs(d);
    ::close(d);
  }
  return {(c1 - c0) * 1e9 / calls, (w1 - w0) * 1e9 / calls};
}

void run_cmd(const std::string& cmd) {
  if (std::system(cmd.c_str()) != 0) die("failed: " + cmd);
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 11;
  double scale = 1.0;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--rounds" && i + 1 < argc) rounds = std::atoi(argv[++i]);
    else if (a == "--scale" && i + 1 < argc) scale = std::atof(argv[++i]);
    else die("usage: bench_enospc_probe [--rounds N] [--scale X]");
  }
  if (rounds < 3) die("--rounds must be at least 3");

  // A private mount namespace: the filesystems vanish with this process.
  if (::unshare(CLONE_NEWNS) != 0) die(std::string("unshare(CLONE_NEWNS): ") + std::strerror(errno) + " (needs root)");
  if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) die("making / private");
  const char* tmp = std::getenv("TMPDIR");
  std::string base = std::string(tmp && *tmp ? tmp : "/tmp") + "/bench-enospc-XXXXXX";
  if (!::mkdtemp(base.data())) die("mkdtemp " + base);
  std::string ext4 = base + "/ext4", tmpfs = base + "/tmpfs", image = base + "/ext4.img";
  ::mkdir(ext4.c_str(), 0755);
  ::mkdir(tmpfs.c_str(), 0755);
  run_cmd("truncate -s 1G " + image + " && mkfs.ext4 -q -F " + image + " && mount -o loop " + image + " " + ext4);
  if (::mount("tmpfs", tmpfs.c_str(), "tmpfs", 0, "size=512m") != 0) die("mount tmpfs");

  libbpf_set_print([](enum libbpf_print_level, const char*, va_list) { return 0; });
  enospc* skel = enospc__open_and_load();
  if (!skel) die(std::string("loading enospc.bpf.o: ") + std::strerror(errno));
  enospc_noop* noop = enospc_noop__open_and_load();
  if (!noop) die(std::string("loading the empty program: ") + std::strerror(errno));

  const long devnull_calls = static_cast<long>(2'000'000 * scale);
  const long file_calls = static_cast<long>(16384 * scale);  // 64 MiB per run
  enum State { kNone, kNoop, kProbe, kStates };
  struct Loop {
    const char* name;
    std::vector<double> cpu[kStates], wall[kStates], ratio[kStates];  // ratio: CPU, to kNone
  } loops[3] = {{"devnull (1-byte write to /dev/null)", {}, {}, {}},
                {"ext4 (4 KiB buffered append)", {}, {}, {}},
                {"tmpfs (4 KiB buffered append)", {}, {}, {}}};
  auto measure = [&](int which) -> Sample {
    if (which == 0) return devnull_loop(devnull_calls);
    return file_loop(which == 1 ? ext4 : tmpfs, file_calls);
  };
  for (int w = 0; w < 3; ++w) measure(w);  // warm up caches and the allocator

  for (int r = 0; r < rounds; ++r) {
    // Rotate which state goes first, so a drift of the machine's load favours none.
    for (int k = 0; k < kStates; ++k) {
      int state = (r + k) % kStates;
      if (state == kNoop && enospc_noop__attach(noop) != 0) die("attaching the empty program");
      if (state == kProbe && enospc__attach(skel) != 0) die("attaching the probe");
      for (int w = 0; w < 3; ++w) {
        Sample smp = measure(w);
        loops[w].cpu[state].push_back(smp.cpu_ns);
        loops[w].wall[state].push_back(smp.wall_ns);
      }
      if (state == kNoop) enospc_noop__detach(noop);
      if (state == kProbe) enospc__detach(skel);
    }
    for (auto& l : loops)
      for (int st = kNoop; st < kStates; ++st) l.ratio[st].push_back(l.cpu[st].back() / l.cpu[kNone].back());
  }

  std::printf("%d rounds. Per call: the thread's CPU time (user + kernel) in ns, median over rounds (wall time in\n"
              "parentheses). Ratios: CPU time to the run without any program in the same round, median [min .. max].\n\n",
              rounds);
  std::printf("| loop | no program | empty sys_exit program | ENOSPC probe | ratio empty | ratio probe |\n");
  std::printf("|---|---|---|---|---|---|\n");
  for (auto& l : loops) {
    auto spread = [](const std::vector<double>& v) {
      auto [lo, hi] = std::minmax_element(v.begin(), v.end());
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.3f [%.3f .. %.3f]", median(v), *lo, *hi);
      return std::string(buf);
    };
    std::printf("| %s | %.0f (%.0f) | %.0f (%.0f) | %.0f (%.0f) | %s | %s |\n", l.name, median(l.cpu[kNone]),
                median(l.wall[kNone]), median(l.cpu[kNoop]), median(l.wall[kNoop]), median(l.cpu[kProbe]),
                median(l.wall[kProbe]), spread(l.ratio[kNoop]).c_str(), spread(l.ratio[kProbe]).c_str());
  }
  std::printf("\nprobe counters: %llu failing filesystem calls seen\n",
              static_cast<unsigned long long>(skel->bss->stats.failures));
  enospc_noop__destroy(noop);
  enospc__destroy(skel);
  ::umount2(ext4.c_str(), MNT_DETACH);
  ::umount2(tmpfs.c_str(), MNT_DETACH);
  ::unlink(image.c_str());
  ::rmdir(ext4.c_str());
  ::rmdir(tmpfs.c_str());
  ::rmdir(base.c_str());
  return 0;
}
