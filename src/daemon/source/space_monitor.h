// SpaceMonitor: the threshold source. For each watched filesystem that has levels it polls statfs
// (off the loop, through StatfsRunner) at an adaptive interval, feeds the samples to a
// ThresholdMachine and emits space.threshold, space.enospc (no free blocks or inodes left),
// fs.unresponsive and fs.responsive. Crossed levels are persisted so a restart neither repeats
// nor misses a crossing. Filesystems without levels are not polled. Loop-thread only.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <storwatch/event.h>

#include "daemon/loop/event_loop.h"
#include "daemon/mount/inventory.h"
#include "daemon/source/statfs_runner.h"
#include "daemon/state/state_db.h"
#include "daemon/threshold/poll_interval.h"
#include "daemon/threshold/threshold_machine.h"

namespace storwatch::daemon {

FsRef fs_ref(const Filesystem& fs);

class SpaceMonitor {
 public:
  struct Options {
    std::chrono::milliseconds statfs_timeout{5000};
    std::chrono::milliseconds poll_min{100};
    std::chrono::milliseconds poll_max{5000};
  };
  // What applies to one filesystem now.
  struct Plan {
    std::vector<Level> levels;
    bool thresholds = true;
  };
  struct Status {  // for ListFilesystems
    std::optional<Usage> usage;
    WallTime sampled{};
    bool stale = false;
    std::vector<Level> levels;
    std::set<std::string> crossed;
  };

  SpaceMonitor(EventLoop& loop, StatfsRunner& runner, StateDb* db, std::function<void(Event)> emit,
               Options options);
  ~SpaceMonitor();

  // Brings the set of polled filesystems in line with `plans` (keyed by dev "major:minor"):
  // new ones are polled at once, removed ones forgotten, changed levels applied.
  void sync(const std::vector<std::pair<Filesystem, Plan>>& plans);
  void set_options(const Options& o) { options_ = o; }
  const Status* status(const std::string& dev) const;
  // The eBPF probe reported an ENOSPC on this filesystem: its statfs-based space.enospc (blocks,
  // or inodes when `inodes`) is folded into that event and not sent, until space returns.
  void enospc_reported(const std::string& dev, bool inodes);
  static constexpr std::chrono::seconds kProbeFold{60};

 private:
  struct FsState;
  void schedule(FsState& s, std::chrono::milliseconds delay);
  void poll(const std::string& dev);
  void on_result(const std::string& dev, uint64_t generation, Result<Usage> r);
  void on_timeout(const std::string& dev, uint64_t generation);
  void process(FsState& s, const Usage& u);
  void persist_crossed(FsState& s);
  Event make_event(const FsState& s, std::string type, Severity sev);

  EventLoop& loop_;
  StatfsRunner& runner_;
  StateDb* db_;
  std::function<void(Event)> emit_;
  Options options_;
  std::map<std::string, std::unique_ptr<FsState>> fss_;
  std::set<std::pair<std::string, std::string>> persisted_;  // (fs key, level id), as in the db
  uint64_t next_generation_ = 1;
};

}  // namespace storwatch::daemon
