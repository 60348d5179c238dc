#include "daemon/threshold/poll_interval.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace storwatch::daemon {
namespace {

constexpr double kRateTimeConstantS = 10;
constexpr double kSecondsPerSizeFraction = 50;  // 1 s per 2% of the size
constexpr double kPollsBeforeEdge = 4;
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Side {
  uint64_t avail = 0;
  uint64_t size = 0;
};

std::optional<Side> side(const Usage& u, Resource r) {
  if (u.blocks == 0 || u.frsize == 0) return std::nullopt;
  if (r == Resource::inodes) {
    if (u.files == 0) return std::nullopt;
    return Side{u.favail, u.files};
  }
  auto bytes = [&](uint64_t n) {
    auto b = static_cast<unsigned __int128>(n) * u.frsize;
    return b > std::numeric_limits<uint64_t>::max() ? std::numeric_limits<uint64_t>::max()
                                                    : static_cast<uint64_t>(b);
  };
  return Side{bytes(u.bavail), bytes(u.blocks)};
}

}  // namespace

PollScheduler::PollScheduler(Config c) : config_(c) {
  config_.max = std::max(config_.max, config_.min);
}

double PollScheduler::rate(Resource r) const {
  const Track& t = tracks_[static_cast<int>(r)];
  return t.have_rate ? t.rate : 0;
}

std::chrono::milliseconds PollScheduler::next(MonoTime now, const Usage& u,
                                              const std::vector<Level>& levels) {
  bool advance = !last_ || now > *last_;
  double dt = last_ && advance ? std::chrono::duration<double>(now - *last_).count() : 0;
  if (advance) last_ = now;

  double wait_s = kInf;
  for (Resource res : {Resource::blocks, Resource::inodes}) {
    Track& t = tracks_[static_cast<int>(res)];
    auto s = side(u, res);
    if (!s) {
      t = Track{};
      continue;
    }
    if (advance) {
      if (t.have_sample && dt > 0) {
        double inst = (static_cast<double>(t.avail) - static_cast<double>(s->avail)) / dt;
        if (!t.have_rate) {
          t.rate = inst;
          t.have_rate = true;
        } else {
          t.rate += (1 - std::exp(-dt / kRateTimeConstantS)) * (inst - t.rate);
        }
      }
      t.avail = s->avail;
      t.have_sample = true;
    }

    double down = s->avail > 0 ? static_cast<double>(s->avail) : kInf;
    double up = kInf;
    for (const Level& l : levels) {
      if (l.resource != res) continue;
      auto r = resolve_level(l, u);
      if (!r) continue;
      if (r->level <= r->avail) down = std::min(down, static_cast<double>(r->avail - r->level + 1));
      if (r->rearm > r->avail) up = std::min(up, static_cast<double>(r->rearm - r->avail));
    }

    double nearest = std::min(down, up);
    if (nearest < kInf) {
      wait_s = std::min(wait_s, nearest / static_cast<double>(s->size) * kSecondsPerSizeFraction);
    }
    if (t.have_rate && t.rate > 0 && down < kInf) {
      wait_s = std::min(wait_s, down / t.rate / kPollsBeforeEdge);
    } else if (t.have_rate && t.rate < 0 && up < kInf) {
      wait_s = std::min(wait_s, up / -t.rate / kPollsBeforeEdge);
    }
  }

  double ms = std::clamp(wait_s * 1000, static_cast<double>(config_.min.count()),
                         static_cast<double>(config_.max.count()));
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

}  // namespace storwatch::daemon
