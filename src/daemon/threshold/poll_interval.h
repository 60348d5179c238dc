// PollScheduler: how long to wait before the next statfs of one filesystem. statfs is the only
// way to see free space move, so it is polled; the scheduler polls fast when a level (or full)
// is near, in time or in space, and slowly otherwise. One per filesystem, owned by the caller;
// thread-compatible.
//
// For each resource (bytes of blocks; inodes when the filesystem counts them), with avail and
// size from the sample:
//   rate     consumption in units/s, an exponential moving average of the per-sample rate with a
//            10 s time constant (weight 1 - e^(-dt/10s) for the newest); negative while freeing.
//   down     distance to the nearest downward edge: avail - L + 1 for the nearest level L <= avail,
//            or avail itself (the zero-free point) when nearer and avail > 0.
//   up       distance to the nearest re-arm point above: L + hysteresis - avail, for levels whose
//            re-arm point is above avail (the levels that are, or may be, crossed).
//   by_rate  = down / rate / 4 when consuming, up / -rate / 4 when freeing: poll about four
//            times before the edge at the current rate.
//   by_space = min(down, up) / size * 50 s: 1 s per 2% of the size between avail and the nearest
//            edge, whatever the rate, because a rate estimate misses sudden bursts.
// wait = min over resources of min(by_rate, by_space), clamped to [min, max]; max when nothing
// applies (no levels and no data yet, or a zero-size filesystem).
#pragma once

#include <chrono>
#include <optional>
#include <vector>

#include "base/clock.h"
#include "daemon/threshold/threshold_machine.h"
#include "proto/rule.h"

namespace storwatch::daemon {

class PollScheduler {
 public:
  struct Config {
    std::chrono::milliseconds min{100}, max{30000};
  };
  // A max below min is raised to min.
  explicit PollScheduler(Config c);

  // Records a sample taken at `now` and returns how long to wait before the next statfs.
  // Samples at the same or an earlier time than the previous one don't change the rate.
  std::chrono::milliseconds next(MonoTime now, const Usage& u, const std::vector<Level>& levels);

  // The smoothed consumption rate (bytes/s or inodes/s, negative while freeing); 0 before two
  // samples. For status output and tests.
  double rate(Resource r) const;

 private:
  struct Track {
    bool have_sample = false;
    bool have_rate = false;
    uint64_t avail = 0;
    double rate = 0;
  };

  Config config_;
  std::optional<MonoTime> last_;
  Track tracks_[2];  // indexed by Resource
};

}  // namespace storwatch::daemon
