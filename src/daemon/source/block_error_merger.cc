#include "daemon/source/block_error_merger.h"

#include <algorithm>

namespace storwatch::daemon {

MonoTime BlockErrorMerger::deadline(const Open& o) const {
  return std::min(o.m.last + options_.window, o.m.first + options_.max_hold);
}

std::vector<BlockErrorMerger::Merged> BlockErrorMerger::add(const Report& r) {
  std::vector<Merged> out;
  const MonoTime now = clock_.now();
  const uint64_t len = r.sectors.value_or(1);
  const uint64_t end = r.sector + std::max<uint64_t>(len, 1);
  const uint64_t reach = r.sectors ? end : r.sector + std::max<uint64_t>(options_.assumed_sectors, 1);
  uint64_t supp = 0;
  if (auto it = suppressed_.find(r.device); it != suppressed_.end()) {
    supp = it->second;
    suppressed_.erase(it);
  }
  Key key{r.device, r.op, r.subtype};
  auto it = open_.find(key);
  if (it != open_.end()) {
    Open& o = it->second;
    bool timely = now < deadline(o);
    // Contiguous or overlapping: starts inside [first, reach] of the range.
    bool adjacent = r.sector >= o.m.sector && r.sector <= o.reach;
    if (timely && adjacent) {
      o.end = std::max(o.end, end);
      o.reach = std::max(o.reach, reach);
      o.m.sectors = o.end - o.m.sector;
      if (end == o.end) o.m.sectors_known = r.sectors.has_value();
      ++o.m.requests;
      o.m.suppressed += supp;
      o.m.last = now;
      return out;
    }
    out.push_back(std::move(o.m));
    open_.erase(it);
  }
  Open o;
  o.m.device = r.device;
  o.m.op = r.op;
  o.m.subtype = r.subtype;
  o.m.err = r.err;
  o.m.sector = r.sector;
  o.m.sectors = end - r.sector;
  o.m.sectors_known = r.sectors.has_value();
  o.m.requests = 1;
  o.m.suppressed = supp;
  o.m.first = o.m.last = now;
  o.end = end;
  o.reach = reach;
  open_.emplace(std::move(key), std::move(o));
  return out;
}

void BlockErrorMerger::suppressed(const std::string& device, uint64_t n) { suppressed_[device] += n; }

std::vector<BlockErrorMerger::Merged> BlockErrorMerger::expire() {
  const MonoTime now = clock_.now();
  std::vector<Merged> out;
  for (auto it = open_.begin(); it != open_.end();) {
    if (now >= deadline(it->second)) {
      out.push_back(std::move(it->second.m));
      it = open_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(out.begin(), out.end(), [](const Merged& a, const Merged& b) { return a.first < b.first; });
  return out;
}

std::vector<BlockErrorMerger::Merged> BlockErrorMerger::flush_all() {
  std::vector<Merged> out;
  for (auto& [k, o] : open_) out.push_back(std::move(o.m));
  open_.clear();
  suppressed_.clear();
  std::sort(out.begin(), out.end(), [](const Merged& a, const Merged& b) { return a.first < b.first; });
  return out;
}

std::optional<MonoTime> BlockErrorMerger::next_deadline() const {
  std::optional<MonoTime> d;
  for (const auto& [k, o] : open_) {
    MonoTime t = deadline(o);
    if (!d || t < *d) d = t;
  }
  return d;
}

}  // namespace storwatch::daemon
