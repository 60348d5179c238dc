// ClientView: one class of clients' view of the event stream: the policy's grants (process
// fields, kernel text) and, for clients in another mount namespace, that namespace's view. The
// bus serialises each event once; a client with nothing hidden gets that very object, others a
// changed copy, made once per class (the Manager shares one ClientView between the clients of
// a class) and kept for the last few events, so N equal subscribers cost one copy, not N.
// Loop-thread only.
#pragma once

#include <deque>
#include <memory>

#include "daemon/bus/bus.h"
#include "daemon/server/policy.h"
#include "daemon/view/mount_ns_view.h"

namespace storwatch::daemon {

class ClientView {
 public:
  ClientView(Grants grants, std::shared_ptr<MountNsView> ns) : grants_(grants), ns_(std::move(ns)) {}

  const Grants& grants() const { return grants_; }
  const std::shared_ptr<MountNsView>& ns() const { return ns_; }
  // Whether these clients receive `e` at all (applied before the subscriber's own filter).
  bool accepts(const Event& e) const;
  // `e` as these clients see it: the same object when nothing changes.
  EventPtr present(const EventPtr& e);

 private:
  static constexpr size_t kCached = 64;
  Grants grants_;
  std::shared_ptr<MountNsView> ns_;
  std::deque<std::pair<uint64_t, EventPtr>> recent_;  // seq -> the copy made for it
};

}  // namespace storwatch::daemon
