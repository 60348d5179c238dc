// Clock is the seam for time: the daemon reads monotonic time (timers, polling intervals, fold
// windows) and wall time (event timestamps) only through it, so unit tests use FakeClock and
// never sleep. Implementations must be safe to call from any thread.
#pragma once

#include <chrono>

namespace storwatch {

using MonoTime = std::chrono::steady_clock::time_point;
using WallTime = std::chrono::system_clock::time_point;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual MonoTime now() const = 0;
  virtual WallTime wall_now() const = 0;
};

class RealClock final : public Clock {
 public:
  MonoTime now() const override { return std::chrono::steady_clock::now(); }
  WallTime wall_now() const override { return std::chrono::system_clock::now(); }
};

}  // namespace storwatch
