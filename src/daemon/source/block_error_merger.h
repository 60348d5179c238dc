// BlockErrorMerger: folds the block layer's per-request error reports of one burst into ranges.
// Pure (no I/O, no timers): the caller feeds reports and asks for what is due, with the time taken
// from a Clock, so unit tests drive it with a FakeClock.
//
// Reports on the same device, op and subtype whose sectors are contiguous with or overlap the open
// range, and that come within `window` of the previous report of that range, extend it: one merged
// report with the first sector, the length of the range and a count of requests. A report that does
// not fit closes the open range of its key (it is returned at once) and opens a new one. A range is
// also closed `window` after its last report, or `max_hold` after its first (a continuing burst
// yields one report per max_hold).
//
// Lengths: the kernel's "I/O error" lines give no request length. A report without one counts as
// one sector for the range's length, but a next request starting up to `assumed_sectors` after it
// is still taken as adjacent (a 4 KiB request is 8 sectors).
//
// "N callbacks suppressed" counts (lines the kernel's rate limit did not print) are added to the
// next report of that device: the kernel prints them right before the first line it lets through.
// A merged report's `count` includes them (`suppressed` says how many).
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "base/clock.h"

namespace storwatch::daemon {

class BlockErrorMerger {
 public:
  struct Options {
    std::chrono::milliseconds window{200};
    std::chrono::milliseconds max_hold{1000};
    uint64_t assumed_sectors = 8;
  };
  struct Report {
    std::string device;  // kernel name, "loop0"
    std::string op;      // READ, WRITE, ...
    std::string subtype;
    int err = 0;
    uint64_t sector = 0;
    std::optional<uint64_t> sectors;  // request length, when known
  };
  struct Merged {
    std::string device, op, subtype;
    int err = 0;
    uint64_t sector = 0;   // first sector of the range
    uint64_t sectors = 0;  // length of the range
    bool sectors_known = true;  // false when a report without length ends the range
    uint64_t requests = 0;      // reports merged
    uint64_t suppressed = 0;    // suppressed counts added
    uint64_t count() const { return requests + suppressed; }
    MonoTime first{}, last{};
  };

  explicit BlockErrorMerger(const Clock& clock) : BlockErrorMerger(clock, Options{}) {}
  BlockErrorMerger(const Clock& clock, Options options) : clock_(clock), options_(options) {}

  // Adds a report; returns the ranges it closed (at most one: the open range of its key).
  std::vector<Merged> add(const Report& r);
  // A "callbacks suppressed" count for a device (before its next report).
  void suppressed(const std::string& device, uint64_t n);
  // Ranges whose time is up, oldest first.
  std::vector<Merged> expire();
  // Every open range (shutdown). Suppressed counts that found no report are dropped.
  std::vector<Merged> flush_all();
  // When expire() next has something to return; nullopt when nothing is open.
  std::optional<MonoTime> next_deadline() const;
  size_t open() const { return open_.size(); }

 private:
  using Key = std::tuple<std::string, std::string, std::string>;  // device, op, subtype
  struct Open {
    Merged m;
    uint64_t end = 0;        // one past the last known failing sector
    uint64_t reach = 0;      // a next request starting before this is adjacent
  };
  MonoTime deadline(const Open& o) const;

  const Clock& clock_;
  Options options_;
  std::map<Key, Open> open_;
  std::map<std::string, uint64_t> suppressed_;  // device -> count waiting for its next report
};

}  // namespace storwatch::daemon
