#include "base/log.h"

#include <unistd.h>

#include <atomic>
#include <string>

namespace storwatch {
namespace {
std::atomic<LogLevel> g_level{LogLevel::info};
}

void set_log_level(LogLevel level) { g_level = level; }
LogLevel log_level() { return g_level; }

void log_write(LogLevel level, std::string_view message) {
  if (level < g_level.load()) return;
  // sd-daemon style "<N>" prefixes let journald assign priorities when we run under systemd.
  static const char* kPrefix[] = {"<7>", "<6>", "<4>", "<3>"};
  std::string line = kPrefix[static_cast<int>(level)];
  line.append(message);
  line.push_back('\n');
  // One write() per line so concurrent threads never interleave within a line.
  ssize_t ignored = ::write(STDERR_FILENO, line.data(), line.size());
  (void)ignored;
}

}  // namespace storwatch
