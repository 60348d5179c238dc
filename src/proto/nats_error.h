// NATS failures as storwatch Errors, for the two users of libnats (the daemon's JetStream sink
// and libstorwatch's fleet component). Header-only so that storwatch_proto itself does not
// depend on libnats; includers link it.
#pragma once

#include <nats/nats.h>

#include <cerrno>
#include <string>
#include <string_view>

#include "base/result.h"

namespace storwatch::proto {

// NATS errors are not errno values: connection refused and timeouts map to their errno, the rest
// to EIO, with libnats' own text (more precise than the status name).
inline Error nats_error(natsStatus s, std::string_view what, jsErrCode jerr = static_cast<jsErrCode>(0)) {
  std::string text = natsStatus_GetText(s);
  natsStatus last_status = NATS_OK;
  if (const char* last = nats_GetLastError(&last_status); last && *last && last_status == s) {
    std::string_view l(last);
    if (l.front() == '(')  // "(file.c:123): text"
      if (auto p = l.find("): "); p != std::string_view::npos) l.remove_prefix(p + 3);
    text = std::string(l);
  }
  if (jerr != 0) text += " (JetStream error " + std::to_string(static_cast<int>(jerr)) + ")";
  int err = s == NATS_NO_SERVER ? ECONNREFUSED : s == NATS_TIMEOUT ? ETIMEDOUT : EIO;
  return Error::from_errno(err, std::string(what) + ": " + text);
}

}  // namespace storwatch::proto
