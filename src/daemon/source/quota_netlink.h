// QuotaNetlinkSource: listens to the kernel's quota warnings (generic netlink family VFS_DQUOT,
// multicast group "events": what quota_nld reads) and hands each one, parsed, to the manager,
// which adds the filesystem and emits quota.warning.
//
// The family and group ids are resolved at start with CTRL_CMD_GETFAMILY (the controller answers
// within sendmsg, so this never waits). The family exists only with CONFIG_QUOTA_NETLINK_INTERFACE;
// without it create() fails with ENOENT and the manager reports source.unavailable.
//
// Senders: the kernel sends from port 0. Sending to a generic netlink multicast group from user
// space needs CAP_NET_ADMIN in the initial network namespace, so a message from another port was
// sent by a privileged process (the tests do exactly this); it is accepted and counted apart.
// Messages that do not parse are counted and dropped, never passed on.
//
// Owned by the manager; callbacks run on the loop thread. Loop-thread only.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "base/fd.h"
#include "base/result.h"
#include "daemon/loop/event_loop.h"
#include "daemon/source/quota_message.h"

namespace storwatch::daemon {

struct QuotaFamily {
  uint16_t family_id = 0;
  uint32_t group_id = 0;
};

// Resolves VFS_DQUOT and its "events" group on a fresh socket. ENOENT: the kernel has no such
// family (or no group of that name).
[[nodiscard]] Result<QuotaFamily> resolve_quota_family();

class QuotaNetlinkSource {
 public:
  using OnWarning = std::function<void(const QuotaWarning&)>;
  [[nodiscard]] static Result<std::unique_ptr<QuotaNetlinkSource>> create(EventLoop& loop, OnWarning on_warning);
  ~QuotaNetlinkSource();
  QuotaNetlinkSource(const QuotaNetlinkSource&) = delete;
  QuotaNetlinkSource& operator=(const QuotaNetlinkSource&) = delete;

  const QuotaFamily& family() const { return family_; }
  uint64_t warnings() const { return warnings_; }     // parsed and passed on
  uint64_t malformed() const { return malformed_; }   // dropped
  uint64_t from_user_space() const { return user_; }  // of the warnings, sent by a process, not the kernel
  uint64_t overruns() const { return overruns_; }     // socket buffer overflows (warnings lost)
  const std::string& last_error() const { return last_error_; }  // why the last malformed one was dropped

 private:
  QuotaNetlinkSource(EventLoop& loop, OnWarning on_warning) : loop_(loop), on_warning_(std::move(on_warning)) {}
  void on_readable();

  EventLoop& loop_;
  OnWarning on_warning_;
  UniqueFd fd_;
  QuotaFamily family_;
  uint64_t warnings_ = 0, malformed_ = 0, user_ = 0, overruns_ = 0;
  std::string last_error_;
};

}  // namespace storwatch::daemon
