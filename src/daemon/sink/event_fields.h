// The STORWATCH_* fields of an event: journald entries carry them as journal fields and hooks get
// them as environment variables, so both spell an event the same way (docs/sinks.md). Pure
// functions; any thread.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <storwatch/event.h>

namespace storwatch::daemon {

// STORWATCH_TYPE, _SEQ, _JOURNAL_ID, _SEVERITY, _SOURCE, _TIME, _COUNT, _FS_DEV, _FS_TYPE,
// _FS_SOURCE, _FS_UUID, _FS_MOUNT (the first mount point), _DEVICE, _DEVICE_DEV, _PID, _UID,
// _COMM, _CGROUP, and STORWATCH_DETAIL_<KEY> for each scalar detail field (key upper-cased, any
// character outside [A-Z0-9_] as '_'). Absent parts give no field.
std::vector<std::pair<std::string, std::string>> event_fields(const Event& e);

// A stable 128-bit id for an event type, as 32 lowercase hex digits: FNV-1a (128-bit) of
// "storwatch:" + type. journald's MESSAGE_ID; the same on every machine and version.
std::string message_id(std::string_view type);

}  // namespace storwatch::daemon
