#include "daemon/view/client_view.h"

namespace storwatch::daemon {

bool ClientView::accepts(const Event& e) const {
  if (ns_) return ns_->sees(e);
  // Mount events of other namespaces' views are journaled, but describe tables these clients
  // do not have.
  return !(e.type.rfind("mount.", 0) == 0 && e.detail.contains("mnt_ns"));
}

EventPtr ClientView::present(const EventPtr& e) {
  if (!e) return e;
  const bool redact_it = needs_redaction(e->event, grants_);
  if (!redact_it && !ns_) return e;
  const uint64_t seq = e->event.seq;
  if (seq != 0)
    for (auto it = recent_.rbegin(); it != recent_.rend(); ++it)
      if (it->first == seq) return it->second;
  Event copy = e->event;
  bool changed = false;
  if (ns_) changed = ns_->rewrite(copy);
  if (redact_it) {
    redact(copy, grants_);
    changed = true;
  }
  EventPtr out = changed ? make_bus_event(std::move(copy)) : e;
  // stream.lost events are made per subscriber and have no number of their own (seq 0).
  if (seq != 0) {
    recent_.emplace_back(seq, out);
    if (recent_.size() > kCached) recent_.pop_front();
  }
  return out;
}

}  // namespace storwatch::daemon
