// Feature probes: what this kernel and these privileges let each event source do, found by trying
// (fanotify_init with the needed flags, opening /dev/kmsg, binding netlink sockets, BTF presence
// and the BPF capabilities), never by comparing kernel versions. Cheap (a few ms); run by Doctor.
#pragma once

#include <string>
#include <vector>

namespace storwatch::daemon {

struct SourceStatus {
  std::string name;                // e.g. "statfs", "mountinfo", "fanotify-fs-error"
  bool available = false;          // this daemon can run it here, now
  std::string reason;              // why not (or what limits it), for people
  std::vector<std::string> types;  // event types it produces
};

// Every source this storwatchd knows, implemented or not yet, with the kernel's answer.
std::vector<SourceStatus> probe_sources();
// The daemon's effective capabilities by name ("CAP_SYS_ADMIN", ...).
std::vector<std::string> effective_capabilities();

// A capability a source needs that this daemon does not have, and what its absence disables.
struct MissingCapability {
  std::string name;      // "CAP_SYS_ADMIN"
  std::string disables;  // for people: which sources and events are lost or reduced
};
// The capabilities storwatchd's sources use (systemd/storwatchd.service grants exactly these)
// that are not effective now. One that another effective capability stands in for (CAP_BPF by
// CAP_SYS_ADMIN) is not missing.
std::vector<MissingCapability> missing_capabilities();

}  // namespace storwatch::daemon
