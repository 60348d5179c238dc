// Logging to stderr for the daemon and CLI mains. Library code logs at debug level only;
// the manager and main log once per failure (see docs/architecture.md).
#pragma once

#include <fmt/format.h>

#include <string_view>

namespace storwatch {

enum class LogLevel { debug = 0, info = 1, warning = 2, error = 3 };

void set_log_level(LogLevel level);
LogLevel log_level();
void log_write(LogLevel level, std::string_view message);

template <class... Args>
void log_debug(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::debug) log_write(LogLevel::debug, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_info(fmt::format_string<Args...> f, Args&&... args) {
  if (log_level() <= LogLevel::info) log_write(LogLevel::info, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_warning(fmt::format_string<Args...> f, Args&&... args) {
  log_write(LogLevel::warning, fmt::format(f, std::forward<Args>(args)...));
}
template <class... Args>
void log_error(fmt::format_string<Args...> f, Args&&... args) {
  log_write(LogLevel::error, fmt::format(f, std::forward<Args>(args)...));
}

}  // namespace storwatch
