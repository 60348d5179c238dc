// The kernel's quota warnings as generic netlink messages (family VFS_DQUOT, multicast group
// "events", the messages quota_nld reads), and the generic netlink controller's answer that
// names the family's id and the group's id. Pure functions over bytes, safe on any input
// (fuzzed: fuzz/quota_fuzz.cc); the socket is in quota_netlink.h.
//
// What fs/quota/netlink.c sends (one message per warning, from port 0): nlmsghdr with the
// family's id as type, genlmsghdr {cmd QUOTA_NL_C_WARNING, version 1}, then the attributes
// QTYPE u32, EXCESS_ID u64, WARNING u32, DEV_MAJOR u32, DEV_MINOR u32, CAUSED_ID u64. The u64s go
// through nla_put_u64_64bit, which on architectures without efficient unaligned access inserts a
// zero-length QUOTA_NL_A_PAD attribute before them: PAD is skipped wherever it stands.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <storwatch/event.h>

#include "base/result.h"

namespace storwatch::daemon {

struct QuotaWarning {
  uint32_t qtype = 0;  // USRQUOTA 0, GRPQUOTA 1, PRJQUOTA 2
  uint64_t id = 0;     // the user, group or project over (or back under) its limit
  uint32_t warning = 0;  // QUOTA_NL_IHARDWARN (1) .. QUOTA_NL_BSOFTBELOW (10)
  uint32_t dev_major = 0, dev_minor = 0;  // the superblock's device
  uint64_t caused_uid = 0;                // the uid of the process whose write caused it
};

// "user", "group", "project"; nullptr for anything else.
const char* quota_type_name(uint32_t qtype);
// The `warning` names of docs/events.md ("bhard", "bgrace", "bsoft", "ihard", ..., "bsoft_below");
// nullptr outside 1..10 (0, QUOTA_NL_NOWARN, is never sent).
const char* quota_warning_name(uint32_t warning);

// Parses one netlink message (the whole of `msg`, as nlmsg_len says; trailing alignment padding
// is allowed). `family_id` is VFS_DQUOT's id as resolved at start. Fails with EINVAL and the
// reason: truncated, a length that does not fit, another family or command, an attribute of the
// wrong size, a missing or repeated attribute, an unknown quota type or warning.
[[nodiscard]] Result<QuotaWarning> parse_quota_message(std::string_view msg, uint16_t family_id);

// The netlink messages of one datagram, split by their nlmsg_len. Fails when a length is
// smaller than a header or runs past the datagram.
[[nodiscard]] Result<std::vector<std::string_view>> split_netlink_messages(std::string_view datagram);

// The quota.warning event for one warning, without `fs` (the manager adds the filesystem on
// that device from its inventory).
Event quota_warning_event(const QuotaWarning& w);

// The generic netlink controller (GENL_ID_CTRL): the CTRL_CMD_GETFAMILY request for `name`, and
// its answer's family id and the id of the multicast group `group`.
std::string genl_getfamily_request(std::string_view name, uint32_t seq);
struct GenlFamily {
  uint16_t id = 0;
  std::optional<uint32_t> group;  // absent when the family has no group of that name
};
// Parses the controller's reply to genl_getfamily_request. An NLMSG_ERROR reply fails with its
// errno (ENOENT: no such family on this kernel).
[[nodiscard]] Result<GenlFamily> parse_genl_family(std::string_view msg, std::string_view group);

}  // namespace storwatch::daemon
