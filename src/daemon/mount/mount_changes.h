// MountChanges: what a MountSource saw change in a mount table since its last report, in the
// form the Inventory applies and the MountTracker turns into mount.* events. Passive data.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "daemon/mount/mountinfo.h"

namespace storwatch::daemon {

struct MountChanges {
  // `attached` is the whole table, to replace the previous one (the first report, a resync).
  bool full = false;
  // A full table read because notifications were lost (fanotify queue overflow): reported.
  bool resync = false;
  std::string source;  // the events' source: "fanotify" or "mountinfo"
  std::vector<MountEntry> attached, detached;
  // Same mount (same reusable id, place and device), new state: (old, new).
  std::vector<std::pair<MountEntry, MountEntry>> changed;

  bool empty() const { return !full && attached.empty() && detached.empty() && changed.empty(); }
};

}  // namespace storwatch::daemon
