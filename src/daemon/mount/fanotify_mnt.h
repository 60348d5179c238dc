// Parsing a read() of a fanotify group initialised with FAN_REPORT_MNT: each event is the
// metadata header, then info records; the one of type FAN_EVENT_INFO_TYPE_MNT carries the unique
// mount id. A pure function over bytes so tests and fuzz/fanotify_mnt_fuzz.cc feed it directly.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "base/result.h"

namespace storwatch::daemon {

struct FanotifyMntRecord {
  uint64_t mask = 0;    // FAN_MNT_ATTACH and/or FAN_MNT_DETACH (both: a move)
  uint64_t mnt_id = 0;  // unique mount id
};

struct FanotifyMntBatch {
  std::vector<FanotifyMntRecord> records;  // in queue order
  bool overflow = false;                   // FAN_Q_OVERFLOW: events were lost, resync
  size_t skipped = 0;                      // events without a mount record (unknown kinds)
};

// Fails when an event's length does not fit the buffer or its header: the kernel wrote it, so a
// bad length means we misread the format and nothing after it can be trusted.
[[nodiscard]] Result<FanotifyMntBatch> parse_fanotify_mnt(std::span<const unsigned char> buf);

}  // namespace storwatch::daemon
