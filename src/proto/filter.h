// Filter: which events a subscriber or history query wants (the Varlink type io.storwatch.Filter).
// The fs paths are resolved to filesystems by the daemon; everything else matches here.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include <storwatch/event.h>
#include <storwatch/result.h>

namespace storwatch::proto {

inline constexpr size_t kMaxFilterEntries = 64;
inline constexpr size_t kMaxFilterString = 4096;

struct Filter {
  std::vector<std::string> types;  // globs on the event type; empty: all
  std::vector<std::string> fs;     // paths; empty: all filesystems
  std::optional<Severity> min_severity;
  std::vector<std::string> subtypes;  // detail.subtype values; empty: all
  bool empty() const { return types.empty() && fs.empty() && !min_severity && subtypes.empty(); }
};

nlohmann::json filter_to_json(const Filter& f);
// Bounded: at most kMaxFilterEntries entries per list and kMaxFilterString bytes per string.
[[nodiscard]] Result<Filter> filter_from_json(const nlohmann::json& j);

// Shell-style glob ("space.*", "fs.[er]*"), as fnmatch(3) without flags.
bool glob_match(const std::string& pattern, const std::string& text);

// Everything but the fs part.
bool matches_type_severity_subtype(const Filter& f, const Event& e);

}  // namespace storwatch::proto
