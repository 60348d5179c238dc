// The event vocabulary: every event type storwatch can emit, its default severity, its fold key
// and a one-line meaning. The single source of truth; docs/events.md mirrors it and a unit test
// checks that they agree.
#pragma once

#include <span>
#include <string_view>

#include <storwatch/event.h>

namespace storwatch {

struct EventTypeInfo {
  std::string_view name;
  Severity severity;         // default; some sources raise it (threshold levels carry their own)
  std::string_view fold_key; // fields besides type and filesystem that make two events "equal"
  std::string_view meaning;
};

std::span<const EventTypeInfo> vocabulary();
const EventTypeInfo* find_event_type(std::string_view name);

}  // namespace storwatch
