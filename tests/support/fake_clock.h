// FakeClock: a Clock whose time moves only when the test calls advance(), so timers, poll
// intervals and timeouts are driven deterministically (never by sleeping). Both the monotonic and
// the wall clock move together. Thread-safe: the daemon's worker threads may read it.
#pragma once

#include <chrono>
#include <mutex>

#include "base/clock.h"

namespace storwatch::test {

class FakeClock final : public Clock {
 public:
  // Arbitrary but fixed starting points: far from zero so "unset" times stand out.
  FakeClock()
      : mono_(MonoTime(std::chrono::hours(1000))),
        wall_(WallTime(std::chrono::seconds(1'800'000'000))) {}

  MonoTime now() const override {
    std::lock_guard lock(mu_);
    return mono_;
  }
  WallTime wall_now() const override {
    std::lock_guard lock(mu_);
    return wall_;
  }

  void advance(std::chrono::nanoseconds d) {
    std::lock_guard lock(mu_);
    mono_ += d;
    wall_ += std::chrono::duration_cast<WallTime::duration>(d);
  }

 private:
  mutable std::mutex mu_;
  MonoTime mono_;
  WallTime wall_;
};

}  // namespace storwatch::test
