#include "base/time_format.h"

#include <fmt/format.h>
#include <time.h>

#include <charconv>
#include <cstdlib>

namespace storwatch {

std::string format_time(WallTime t) {
  using namespace std::chrono;
  auto us = duration_cast<microseconds>(t.time_since_epoch()).count();
  time_t secs = static_cast<time_t>(us / 1000000);
  long frac = static_cast<long>(us % 1000000);
  if (frac < 0) {
    frac += 1000000;
    secs -= 1;
  }
  struct tm tm {};
  gmtime_r(&secs, &tm);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
}

namespace {

bool read_int(std::string_view& s, size_t digits, int& out) {
  if (s.size() < digits) return false;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + digits, v);
  if (ec != std::errc() || p != s.data() + digits) return false;
  out = v;
  s.remove_prefix(digits);
  return true;
}

bool eat(std::string_view& s, char c) {
  if (s.empty() || s.front() != c) return false;
  s.remove_prefix(1);
  return true;
}

}  // namespace

std::optional<WallTime> parse_time(std::string_view s) {
  using namespace std::chrono;
  if (!s.empty() && s.front() == '@') {
    s.remove_prefix(1);
    long long v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
    // system_clock counts nanoseconds in 64 bits: about 1678 to 2262.
    if (v < -9000000000LL || v > 9000000000LL) return std::nullopt;
    return WallTime(seconds(v));
  }
  struct tm tm {};
  int year, mon, day, hour = 0, min = 0, sec = 0;
  if (!read_int(s, 4, year) || !eat(s, '-') || !read_int(s, 2, mon) || !eat(s, '-') ||
      !read_int(s, 2, day))
    return std::nullopt;
  long micros = 0;
  int offset_min = 0;
  if (!s.empty()) {
    if (!eat(s, 'T') && !eat(s, ' ')) return std::nullopt;
    if (!read_int(s, 2, hour) || !eat(s, ':') || !read_int(s, 2, min)) return std::nullopt;
    if (eat(s, ':') && !read_int(s, 2, sec)) return std::nullopt;
    if (eat(s, '.')) {
      size_t n = 0;
      long scale = 100000;
      while (!s.empty() && s.front() >= '0' && s.front() <= '9') {
        if (n < 6) micros += (s.front() - '0') * scale;
        scale /= 10;
        ++n;
        s.remove_prefix(1);
      }
      if (n == 0) return std::nullopt;
    }
    if (eat(s, 'Z') || eat(s, 'z')) {
    } else if (!s.empty() && (s.front() == '+' || s.front() == '-')) {
      int sign = s.front() == '-' ? -1 : 1;
      s.remove_prefix(1);
      int oh, om;
      if (!read_int(s, 2, oh) || !eat(s, ':') || !read_int(s, 2, om)) return std::nullopt;
      offset_min = sign * (oh * 60 + om);
    }
    if (!s.empty()) return std::nullopt;
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60)
    return std::nullopt;
  // system_clock counts nanoseconds in 64 bits: about 1678 to 2262.
  if (year < 1700 || year > 2250) return std::nullopt;
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  time_t t = timegm(&tm);
  return WallTime(seconds(t) - minutes(offset_min) + microseconds(micros));
}

}  // namespace storwatch
