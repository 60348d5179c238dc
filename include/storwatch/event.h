// Event: one thing that happened to storage, as storwatchd reports it. The same structure is
// used inside the daemon, on the wire (as JSON, docs/events.md) and by libstorwatch users.
// Plain data; copy freely.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include <storwatch/result.h>

namespace storwatch {

enum class Severity { info = 0, warning = 1, error = 2, critical = 3 };

std::string_view severity_name(Severity s);
std::optional<Severity> parse_severity(std::string_view name);

// The filesystem an event concerns, keyed by its superblock's device number.
struct FsRef {
  uint32_t major = 0;
  uint32_t minor = 0;
  std::string fstype;
  std::string uuid;
  std::string source;               // e.g. /dev/loop0, tmpfs, server:/export
  std::vector<std::string> mounts;  // every mount point of this superblock
  std::string dev() const { return std::to_string(major) + ":" + std::to_string(minor); }
};

// The block device an event concerns (block-layer and device events).
struct DeviceRef {
  uint32_t major = 0;
  uint32_t minor = 0;
  std::string name;  // kernel name, e.g. loop0, sda1
  std::string dev() const { return std::to_string(major) + ":" + std::to_string(minor); }
};

// The process that caused the event, when the kernel says.
struct ProcessRef {
  int64_t pid = 0;
  int64_t uid = -1;
  std::string comm;
  std::string cgroup;
};

struct Event {
  using Time = std::chrono::system_clock::time_point;

  uint64_t seq = 0;        // set by the bus; 0 before
  std::string journal_id;  // set by the bus
  Time time{};             // when the event was emitted (the last occurrence, for folded events)
  std::string type;        // a name from the vocabulary, e.g. "space.threshold"
  Severity severity = Severity::info;
  std::string source;      // which source saw it: statfs, mountinfo, fanotify, kmsg, ebpf, ...
  uint64_t count = 1;      // kernel occurrences this event stands for
  Time first_time{};
  Time last_time{};
  std::optional<FsRef> fs;
  std::optional<DeviceRef> device;
  std::optional<ProcessRef> process;
  nlohmann::json detail = nlohmann::json::object();
};

// The JSON form documented in docs/events.md (exactly the fields of architecture.md).
nlohmann::json event_to_json(const Event& e);
[[nodiscard]] Result<Event> event_from_json(const nlohmann::json& j);

// One readable line, as `storwatchd --print` and `storwatch monitor` print it.
std::string event_to_line(const Event& e);

}  // namespace storwatch
