// EnospcSource: space.enospc and space.edquot the moment a syscall (or an io_uring request) on a
// filesystem fails with ENOSPC or EDQUOT, from the eBPF probe bpf/enospc.bpf.c on the syscall
// exit and io_uring completion tracepoints.
//
// The kernel side folds per (device, process, errno, kind): the first failure of a key arrives as
// a ring record and is sent at once with count 1; later failures only raise the key's counter in
// the fold map, which sweep() reads every second and sends as one event per key with the count of
// failures since the last one. The counter only grows, so the counts sent add up to the failed
// calls exactly. Keys idle for a while are removed from the map.
//
// EnospcTracker is that logic without the kernel (unit-tested with hand-made records); the
// EnospcSource around it loads the program and owns the ring buffer and the sweep timer.
// Loop-thread only.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include <storwatch/event.h>

#include "base/result.h"
#include "daemon/bpf/bpf_support.h"
#include "daemon/bpf/enospc_record.h"
#include "daemon/loop/event_loop.h"
#include "daemon/threshold/threshold_machine.h"

struct enospc;  // the libbpf skeleton (enospc.skel.h), a C struct

namespace storwatch::daemon {

// "write", "openat", "io_uring:write", or "syscall 123" for a number we do not name.
std::string enospc_syscall_name(uint32_t syscall);

// What the manager knows about the filesystem an occurrence hit.
struct EnospcFs {
  FsRef ref;
  std::string probe_path;  // a mount point to statfs
};

class EnospcTracker {
 public:
  struct Hooks {
    std::function<void(Event)> emit;
    // The filesystem with this superblock device. `ignored` is set when it is known but not watched
    // (the event is then dropped).
    std::function<std::optional<EnospcFs>(uint32_t major, uint32_t minor, bool& ignored)> by_dev;
    // The filesystem holding an absolute path (longest mount point prefix); `ignored` as above.
    std::function<std::optional<EnospcFs>(const std::string& path, bool& ignored)> by_path;
    // statfs of `path` off the loop; `done` runs on the loop, with nullopt on failure or timeout.
    // Used to tell "inodes" from data/metadata ENOSPC.
    std::function<void(const std::string& dev, const std::string& path,
                       std::function<void(std::optional<Usage>)> done)> statfs;
    // The cgroup v2 path of a cgroup id, "" when unknown.
    std::function<std::string(uint64_t id)> cgroup_path;
    // CLOCK_MONOTONIC now (ns) and the wall clock, to turn bpf_ktime_get_ns() into times.
    std::function<uint64_t()> mono_ns;
    std::function<Event::Time()> wall_now;
  };
  explicit EnospcTracker(Hooks hooks) : hooks_(std::move(hooks)) {}

  // A ring record: the first failure of a key (or, map full, one unfolded failure).
  void on_record(const enospc_record& rec);
  // The fold map as it is now. Sends the failures counted since the last event of each key, and
  // returns the keys idle for at least `idle` (no new failure) for the caller to delete, after
  // which it calls removed().
  std::vector<enospc_key> sweep(const std::vector<std::pair<enospc_key, enospc_value>>& entries,
                                std::chrono::milliseconds idle);
  // A key deleted from the map, with its last value: sends what it counted since the last event.
  void removed(const enospc_key& key, const enospc_value& last);
  size_t tracked() const { return keys_.size(); }
  uint64_t events_sent() const { return events_; }

 private:
  struct KeyState {
    uint64_t sent = 0;  // failures of this map entry already in events
    uint64_t last_count = 0;
    uint64_t idle_since_ns = 0;
    uint64_t last_read_ns = 0;  // when the map was last read: later failures happened after it
    std::string path;           // the first record's path, for unresolved filesystems
  };
  using KeyTuple = std::tuple<uint32_t, uint32_t, int32_t, uint32_t, uint32_t>;
  static KeyTuple tuple(const enospc_key& k) { return {k.dev, k.tgid, k.err, k.kind, k.dir_hash}; }
  void send(const enospc_key& key, const enospc_value& v, uint64_t count, const std::string& path,
            uint64_t since_ns = 0);
  void classify_and_emit(Event e, std::optional<EnospcFs> fs);
  Event::Time wall_of(uint64_t ns) const;

  Hooks hooks_;
  std::map<KeyTuple, KeyState> keys_;
  std::set<KeyTuple> pending_;  // in the map at the last sweep, no record yet
  std::map<std::string, std::deque<Event>> waiting_;  // per dev, for a statfs answer
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);
  uint64_t events_ = 0;
};

class EnospcSource {
 public:
  // Loads and attaches the program. Fails with the reason for source.unavailable.
  [[nodiscard]] static Result<std::unique_ptr<EnospcSource>> create(EventLoop& loop, EnospcTracker::Hooks hooks);
  ~EnospcSource();
  EnospcSource(const EnospcSource&) = delete;
  EnospcSource& operator=(const EnospcSource&) = delete;

  // Reads the ring buffer and sweeps the fold map now (also at shutdown).
  void flush();
  // For `storwatch doctor`: what is attached and what it counted, and what it costs.
  std::string describe() const;
  struct Counters {
    uint64_t failures = 0;  // failing filesystem calls the program saw
    uint64_t events = 0;    // events sent for them (each with its count)
    uint64_t keys = 0;      // keys folding in the kernel now
    uint64_t lost = 0;      // failures neither folded nor sent (map and ring buffer full)
    // The program's own runs and time, when the kernel keeps them (sysctl kernel.bpf_stats_enabled).
    uint64_t runs = 0, run_time_ns = 0;
  };
  Counters counters() const;
  std::string cost() const;

  // bench_enospc_probe's figures (docs/performance.md): nearly all of it is the kernel's slow
  // syscall path, which any sys_exit program costs; the probe's own compare adds little.
  static constexpr const char* kCostMeasured =
      "while loaded every syscall of every process takes the kernel's slow syscall path: about +90 ns "
      "per syscall measured (1-byte write to /dev/null: x1.44), +0.5 to 7% CPU on 4 KiB buffered writes "
      "(docs/performance.md)";
  static constexpr std::chrono::milliseconds kSweep{1000};
  static constexpr std::chrono::milliseconds kIdle{30000};

 private:
  EnospcSource(EventLoop& loop, EnospcTracker::Hooks hooks) : loop_(loop), tracker_(std::move(hooks)) {}
  void sweep();
  void arm();

  EventLoop& loop_;
  EnospcTracker tracker_;
  ::enospc* skel_ = nullptr;
  std::unique_ptr<BpfRingReader> ring_;
  EventLoop::TimerId timer_ = 0;
  uint64_t lost_reported_ = 0;
};

// Resolves cgroup v2 ids (kernfs inode numbers, as bpf_get_current_cgroup_id() gives them) to
// paths, with open_by_handle_at on the cgroup2 mount. Cached; "" when it cannot.
class CgroupResolver {
 public:
  CgroupResolver();
  ~CgroupResolver();
  std::string path(uint64_t id);

 private:
  int mount_fd_ = -1;
  std::string mount_point_;
  std::map<uint64_t, std::string> cache_;
};

}  // namespace storwatch::daemon
