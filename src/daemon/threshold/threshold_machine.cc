#include "daemon/threshold/threshold_machine.h"

#include <algorithm>
#include <limits>
#include <utility>

namespace storwatch::daemon {
namespace {

uint64_t saturating_mul(uint64_t a, uint64_t b) {
  auto p = static_cast<unsigned __int128>(a) * b;
  return p > std::numeric_limits<uint64_t>::max() ? std::numeric_limits<uint64_t>::max()
                                                  : static_cast<uint64_t>(p);
}

uint64_t saturating_add(uint64_t a, uint64_t b) {
  return b > std::numeric_limits<uint64_t>::max() - a ? std::numeric_limits<uint64_t>::max()
                                                      : a + b;
}

}  // namespace

std::optional<ResolvedLevel> resolve_level(const Level& l, const Usage& u) {
  if (u.blocks == 0 || u.frsize == 0) return std::nullopt;
  uint64_t count = 0;      // what the amounts resolve against
  uint64_t unit_size = 1;  // bytes per counted unit
  ResolvedLevel r;
  if (l.resource == Resource::blocks) {
    count = u.blocks;
    unit_size = u.frsize;
    r.total = saturating_mul(u.blocks, u.frsize);
    r.avail = saturating_mul(u.bavail, u.frsize);
  } else {
    if (u.files == 0) return std::nullopt;
    count = u.files;
    r.total = u.files;
    r.avail = u.favail;
  }
  r.level = l.below.resolve(count, unit_size);
  Amount default_hysteresis{Amount::Unit::percent, 1, 0};
  uint64_t hysteresis = l.hysteresis.value_or(default_hysteresis).resolve(count, unit_size);
  r.rearm = saturating_add(r.level, hysteresis);
  return r;
}

void ThresholdMachine::set_levels(std::vector<Level> levels) {
  std::set<std::string> seen;
  levels_.clear();
  for (Level& l : levels) {
    if (seen.insert(l.id()).second) levels_.push_back(std::move(l));
  }
  have_levels_ = true;
  prune();
}

void ThresholdMachine::restore_crossed(const std::set<std::string>& ids) {
  crossed_ = ids;
  // Before the first set_levels there is nothing to check against; set_levels prunes then.
  if (have_levels_) prune();
}

void ThresholdMachine::prune() {
  std::set<std::string> ids;
  for (const Level& l : levels_) ids.insert(l.id());
  std::erase_if(crossed_, [&](const std::string& id) { return !ids.contains(id); });
}

std::vector<Crossing> ThresholdMachine::update(const Usage& u) {
  std::vector<Crossing> up;
  std::vector<Crossing> down;
  for (const Level& l : levels_) {
    auto r = resolve_level(l, u);
    if (!r) continue;
    std::string id = l.id();
    bool was_below = crossed_.contains(id);
    bool report = false;
    if (!was_below && r->avail < r->level) {
      crossed_.insert(id);
      report = true;
    } else if (was_below && r->avail >= r->rearm) {
      crossed_.erase(id);
      report = true;
    }
    if (!report) continue;
    Crossing c{.level_id = std::move(id),
               .resource = l.resource,
               .severity = l.severity,
               .below = !was_below,
               .level = r->level,
               .avail = r->avail,
               .total = r->total,
               .level_text = l.below.to_string()};
    (c.below ? down : up).push_back(std::move(c));
  }
  // Ties on the resolved level (a percentage and a size that happen to agree) fall back to
  // severity so the order never depends on the rule's level order.
  std::sort(down.begin(), down.end(), [](const Crossing& a, const Crossing& b) {
    if (a.resource != b.resource) return a.resource < b.resource;
    if (a.level != b.level) return a.level > b.level;
    if (a.severity != b.severity) return a.severity < b.severity;
    return a.level_id < b.level_id;
  });
  std::sort(up.begin(), up.end(), [](const Crossing& a, const Crossing& b) {
    if (a.resource != b.resource) return a.resource < b.resource;
    if (a.level != b.level) return a.level < b.level;
    if (a.severity != b.severity) return a.severity > b.severity;
    return a.level_id < b.level_id;
  });
  up.insert(up.end(), std::make_move_iterator(down.begin()), std::make_move_iterator(down.end()));
  return up;
}

}  // namespace storwatch::daemon
