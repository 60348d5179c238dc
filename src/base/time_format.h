// RFC 3339 timestamps in UTC with microseconds ("2026-11-21T23:00:00.123456Z"), the form every
// event and API field uses.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/clock.h"

namespace storwatch {

std::string format_time(WallTime t);
// Accepts the form above, with or without fraction, 'Z' or +HH:MM; also a plain
// "YYYY-MM-DD[ HH:MM[:SS]]" (taken as UTC) and "@SECONDS" for scripts.
std::optional<WallTime> parse_time(std::string_view s);

}  // namespace storwatch
