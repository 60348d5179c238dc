// Policy: who may do what over the socket (config [policy], docs/security.md). Anyone who can
// open the socket is a client; the policy decides per call from the peer's credentials, and
// decides what each subscriber may see of an event: the process fields of events other users
// caused, and text copied from the kernel log (readable only with CAP_SYSLOG otherwise).
//
// Pure data and pure functions: cheap to copy, no I/O after parse_policy() (which resolves user
// and group names once). uid 0 is always allowed everything: it can read and change the state
// directory anyway, and a policy that locks root out only breaks administration.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <storwatch/event.h>

#include "base/result.h"

namespace storwatch::daemon {

struct Peer;

// One entry of a [policy] list: "*" (everyone), "uid:N", "gid:N", "user:NAME", "group:NAME",
// or a bare user name.
struct Principal {
  enum class Kind { anyone, uid, gid };
  Kind kind = Kind::anyone;
  uint32_t id = 0;
  std::string text;  // as written, for messages
  bool operator==(const Principal&) const = default;
};

[[nodiscard]] Result<Principal> parse_principal(const std::string& text);

enum class Operation {
  subscribe,     // Subscribe
  query,         // ListFilesystems, GetFilesystem, ListMounts, ListRules, ListEvents, Doctor
  change_rules,  // AddRule, RemoveRule
};

// What one client may see of events; derived from the Policy once per subscription.
struct Grants {
  uid_t uid = static_cast<uid_t>(-1);
  bool all_processes = false;  // process fields of events other uids caused
  bool kernel_text = false;    // detail fields copied from the kernel log
  bool everything() const { return all_processes && kernel_text; }
  bool operator==(const Grants&) const = default;
};

class Policy {
 public:
  // The safe default: anyone may subscribe and query, root alone changes rules, sees every
  // process's fields and the kernel's text.
  Policy();

  bool allows(Operation op, const Peer& peer) const;
  // Why `peer` may not do `op`, for PermissionDenied's `reason`: names the operation, the
  // caller's ids and who may.
  std::string denial(Operation op, const Peer& peer) const;
  Grants grants(const Peer& peer) const;

  std::vector<Principal> subscribe, query, rules, process_fields, kernel_text;

  bool operator==(const Policy&) const = default;
};

// The [policy] table as JSON (converted from TOML by the config reader): keys subscribe, query,
// rules, process_fields, kernel_text, each an array of principals. Missing keys keep `base`.
[[nodiscard]] Result<Policy> parse_policy(const nlohmann::json& table, Policy base = Policy());

// The detail fields of fs.* events that carry kernel log text (the kernel's line, and the
// process name the kernel printed in it).
bool is_kernel_text_field(std::string_view key);

// True when `e` must be changed before a client with `g` sees it (so the common case, nothing to
// hide, costs one look at two fields).
bool needs_redaction(const Event& e, const Grants& g);
// Removes what `g` does not allow: `process` of an event another uid caused (or whose uid is
// unknown), and the kernel-text detail fields of fs.* events.
void redact(Event& e, const Grants& g);

}  // namespace storwatch::daemon
