#include "daemon/sink/journald_sink.h"

#include <sys/uio.h>
#include <systemd/sd-journal.h>

#include <vector>

#include "daemon/sink/event_fields.h"

namespace storwatch::daemon {

int journald_priority(Severity s) {
  switch (s) {
    case Severity::critical: return 2;
    case Severity::error: return 3;
    case Severity::warning: return 4;
    case Severity::info: return 6;
  }
  return 6;
}

Result<size_t> JournaldSink::deliver(std::span<const EventPtr> events) {
  size_t done = 0;
  for (const auto& ep : events) {
    const Event& e = ep->event;
    std::vector<std::string> items;
    items.push_back("MESSAGE=" + event_to_line(e));
    items.push_back("MESSAGE_ID=" + message_id(e.type));
    items.push_back("PRIORITY=" + std::to_string(journald_priority(e.severity)));
    items.push_back("SYSLOG_IDENTIFIER=storwatchd");
    for (auto& [k, v] : event_fields(e)) items.push_back(k + "=" + v);
    items.push_back("STORWATCH_JSON=" + ep->json);
    std::vector<iovec> iov;
    iov.reserve(items.size());
    for (auto& s : items) iov.push_back({s.data(), s.size()});
    int r = sd_journal_sendv(iov.data(), static_cast<int>(iov.size()));
    if (r < 0) {
      if (done) return done;  // the rest is offered again, and fails there if it still does
      return fail_errno(-r, "journald: sending the entry");
    }
    ++done;
  }
  return done;
}

}  // namespace storwatch::daemon
