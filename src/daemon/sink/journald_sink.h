// JournaldSink: every event as a structured journald entry through sd_journal_sendv (libsystemd's
// native protocol on /run/systemd/journal/socket): MESSAGE (the readable line `storwatchd
// --print` shows), MESSAGE_ID (per event type, event_fields.h), PRIORITY (from the severity),
// SYSLOG_IDENTIFIER=storwatchd, the STORWATCH_* fields and STORWATCH_JSON (the whole event).
// Runs on its SinkRunner's thread.
#pragma once

#include <string>

#include "daemon/sink/sink.h"

namespace storwatch::daemon {

// journald's native socket; the sink is on by default when it exists.
inline constexpr const char* kJournaldSocket = "/run/systemd/journal/socket";

class JournaldSink final : public Sink {
 public:
  std::string name() const override { return "journald"; }
  [[nodiscard]] Result<size_t> deliver(std::span<const EventPtr> events) override;
};

// syslog priority of a severity: critical 2, error 3, warning 4, info 6.
int journald_priority(Severity s);

}  // namespace storwatch::daemon
