#include "daemon/source/quota_message.h"

#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/quota.h>

#include <cerrno>
#include <cstring>

#include <fmt/format.h>

namespace storwatch::daemon {

namespace {

constexpr size_t kNlHdr = NLMSG_HDRLEN;                 // 16
constexpr size_t kGenlHdr = NLMSG_ALIGN(GENL_HDRLEN);   // 4
constexpr size_t align4(size_t n) { return (n + 3) & ~size_t{3}; }

template <class T>
T load(std::string_view b, size_t at) {
  T v;
  std::memcpy(&v, b.data() + at, sizeof v);
  return v;
}

struct Attr {
  uint16_t type;
  std::string_view payload;
};

// The attributes of `b`, strictly: every length must fit. Type flags (nested, byte order) are
// masked off.
Result<std::vector<Attr>> attributes(std::string_view b) {
  std::vector<Attr> out;
  size_t at = 0;
  while (at < b.size()) {
    if (b.size() - at < NLA_HDRLEN) return fail_errno(EINVAL, "quota netlink: a truncated attribute header");
    uint16_t len = load<uint16_t>(b, at);
    uint16_t type = load<uint16_t>(b, at + 2) & NLA_TYPE_MASK;
    if (len < NLA_HDRLEN || len > b.size() - at)
      return fail_errno(EINVAL, fmt::format("quota netlink: attribute {} has length {} ({} bytes left)", type,
                                            len, b.size() - at));
    out.push_back({type, b.substr(at + NLA_HDRLEN, len - NLA_HDRLEN)});
    at += align4(len);
  }
  return out;
}

// The header of one netlink message: checks nlmsg_len against the bytes and returns the payload.
Result<std::string_view> payload(std::string_view msg, uint16_t* type) {
  if (msg.size() < kNlHdr) return fail_errno(EINVAL, "quota netlink: shorter than a netlink header");
  uint32_t len = load<uint32_t>(msg, 0);
  if (len < kNlHdr || len > msg.size() || align4(len) < msg.size())
    return fail_errno(EINVAL, fmt::format("quota netlink: nlmsg_len {} does not match the {} bytes received", len,
                                          msg.size()));
  *type = load<uint16_t>(msg, 4);
  return msg.substr(kNlHdr, len - kNlHdr);
}

}  // namespace

const char* quota_type_name(uint32_t qtype) {
  switch (qtype) {
    case 0: return "user";
    case 1: return "group";
    case 2: return "project";
    default: return nullptr;
  }
}

const char* quota_warning_name(uint32_t warning) {
  switch (warning) {
    case QUOTA_NL_IHARDWARN: return "ihard";
    case QUOTA_NL_ISOFTLONGWARN: return "igrace";
    case QUOTA_NL_ISOFTWARN: return "isoft";
    case QUOTA_NL_BHARDWARN: return "bhard";
    case QUOTA_NL_BSOFTLONGWARN: return "bgrace";
    case QUOTA_NL_BSOFTWARN: return "bsoft";
    case QUOTA_NL_IHARDBELOW: return "ihard_below";
    case QUOTA_NL_ISOFTBELOW: return "isoft_below";
    case QUOTA_NL_BHARDBELOW: return "bhard_below";
    case QUOTA_NL_BSOFTBELOW: return "bsoft_below";
    default: return nullptr;
  }
}

Result<QuotaWarning> parse_quota_message(std::string_view msg, uint16_t family_id) {
  uint16_t type = 0;
  auto body = payload(msg, &type);
  if (!body) return fail(body.error());
  if (type != family_id)
    return fail_errno(EINVAL, fmt::format("quota netlink: message type {} is not VFS_DQUOT ({})", type, family_id));
  if (body->size() < kGenlHdr) return fail_errno(EINVAL, "quota netlink: no generic netlink header");
  uint8_t cmd = static_cast<uint8_t>((*body)[0]);
  if (cmd != QUOTA_NL_C_WARNING) return fail_errno(EINVAL, fmt::format("quota netlink: unknown command {}", cmd));
  auto attrs = attributes(body->substr(kGenlHdr));
  if (!attrs) return fail(attrs.error());

  QuotaWarning w;
  unsigned seen = 0;
  for (const Attr& a : *attrs) {
    if (a.type == QUOTA_NL_A_PAD || a.type == QUOTA_NL_A_UNSPEC || a.type > QUOTA_NL_A_PAD) continue;
    if (seen & (1u << a.type)) return fail_errno(EINVAL, fmt::format("quota netlink: attribute {} given twice", a.type));
    seen |= 1u << a.type;
    const bool wide = a.type == QUOTA_NL_A_EXCESS_ID || a.type == QUOTA_NL_A_CAUSED_ID;
    const size_t want = wide ? 8 : 4;
    if (a.payload.size() != want)
      return fail_errno(EINVAL, fmt::format("quota netlink: attribute {} has {} bytes, expected {}", a.type,
                                            a.payload.size(), want));
    switch (a.type) {
      case QUOTA_NL_A_QTYPE: w.qtype = load<uint32_t>(a.payload, 0); break;
      case QUOTA_NL_A_EXCESS_ID: w.id = load<uint64_t>(a.payload, 0); break;
      case QUOTA_NL_A_WARNING: w.warning = load<uint32_t>(a.payload, 0); break;
      case QUOTA_NL_A_DEV_MAJOR: w.dev_major = load<uint32_t>(a.payload, 0); break;
      case QUOTA_NL_A_DEV_MINOR: w.dev_minor = load<uint32_t>(a.payload, 0); break;
      case QUOTA_NL_A_CAUSED_ID: w.caused_uid = load<uint64_t>(a.payload, 0); break;
    }
  }
  static constexpr const char* kNames[] = {"", "QTYPE", "EXCESS_ID", "WARNING", "DEV_MAJOR", "DEV_MINOR", "CAUSED_ID"};
  for (int t = QUOTA_NL_A_QTYPE; t <= QUOTA_NL_A_CAUSED_ID; ++t)
    if (!(seen & (1u << t))) return fail_errno(EINVAL, fmt::format("quota netlink: no QUOTA_NL_A_{}", kNames[t]));
  if (!quota_type_name(w.qtype)) return fail_errno(EINVAL, fmt::format("quota netlink: unknown quota type {}", w.qtype));
  if (!quota_warning_name(w.warning))
    return fail_errno(EINVAL, fmt::format("quota netlink: unknown warning {}", w.warning));
  return w;
}

Result<std::vector<std::string_view>> split_netlink_messages(std::string_view datagram) {
  std::vector<std::string_view> out;
  size_t at = 0;
  while (at < datagram.size()) {
    if (datagram.size() - at < kNlHdr) return fail_errno(EINVAL, "netlink: a truncated message header");
    uint32_t len = load<uint32_t>(datagram, at);
    if (len < kNlHdr || len > datagram.size() - at)
      return fail_errno(EINVAL, fmt::format("netlink: nlmsg_len {} does not fit ({} bytes left)", len,
                                            datagram.size() - at));
    out.push_back(datagram.substr(at, len));
    at += std::min<size_t>(align4(len), datagram.size() - at);
  }
  return out;
}

Event quota_warning_event(const QuotaWarning& w) {
  // The kernel's own words, as quota_nld prints them.
  static constexpr const char* kMessages[] = {
      "",
      "file (inode) hard limit reached",
      "file (inode) soft limit exceeded too long",
      "file (inode) soft limit exceeded",
      "block hard limit reached",
      "block soft limit exceeded too long",
      "block soft limit exceeded",
      "usage got below the file (inode) hard limit",
      "usage got below the file (inode) soft limit",
      "usage got below the block hard limit",
      "usage got below the block soft limit"};
  Event e;
  e.type = "quota.warning";
  e.source = "netlink";
  const bool below = w.warning >= QUOTA_NL_IHARDBELOW;
  e.severity = below ? Severity::info : Severity::warning;
  const char* name = quota_warning_name(w.warning);
  const char* qtype = quota_type_name(w.qtype);
  e.detail["quota_type"] = qtype ? qtype : "unknown";
  e.detail["id"] = w.id;
  e.detail["warning"] = name ? name : "unknown";
  const bool inodes = w.warning == QUOTA_NL_IHARDWARN || w.warning == QUOTA_NL_ISOFTLONGWARN ||
                      w.warning == QUOTA_NL_ISOFTWARN || w.warning == QUOTA_NL_IHARDBELOW ||
                      w.warning == QUOTA_NL_ISOFTBELOW;
  e.detail["resource"] = inodes ? "inodes" : "blocks";
  e.detail["dev"] = fmt::format("{}:{}", w.dev_major, w.dev_minor);
  if (w.warning < std::size(kMessages)) e.detail["message"] = kMessages[w.warning];
  ProcessRef p;
  p.uid = static_cast<int64_t>(w.caused_uid);
  e.process = p;
  return e;
}

std::string genl_getfamily_request(std::string_view name, uint32_t seq) {
  std::string attr_name(name);
  attr_name.push_back('\0');
  const uint16_t alen = static_cast<uint16_t>(NLA_HDRLEN + attr_name.size());
  const uint32_t total = static_cast<uint32_t>(kNlHdr + kGenlHdr + align4(alen));
  std::string out(total, '\0');
  nlmsghdr h{};
  h.nlmsg_len = total;
  h.nlmsg_type = GENL_ID_CTRL;
  h.nlmsg_flags = NLM_F_REQUEST;
  h.nlmsg_seq = seq;
  std::memcpy(out.data(), &h, sizeof h);
  genlmsghdr g{};
  g.cmd = CTRL_CMD_GETFAMILY;
  g.version = 1;
  std::memcpy(out.data() + kNlHdr, &g, sizeof g);
  nlattr a{};
  a.nla_len = alen;
  a.nla_type = CTRL_ATTR_FAMILY_NAME;
  std::memcpy(out.data() + kNlHdr + kGenlHdr, &a, sizeof a);
  std::memcpy(out.data() + kNlHdr + kGenlHdr + NLA_HDRLEN, attr_name.data(), attr_name.size());
  return out;
}

Result<GenlFamily> parse_genl_family(std::string_view msg, std::string_view group) {
  uint16_t type = 0;
  auto body = payload(msg, &type);
  if (!body) return fail(body.error());
  if (type == NLMSG_ERROR) {
    if (body->size() < sizeof(int32_t)) return fail_errno(EINVAL, "genetlink: a truncated error reply");
    // The kernel sends -errno; anything else (INT_MIN included, found by the fuzzer) is not one.
    int64_t err = -static_cast<int64_t>(load<int32_t>(*body, 0));
    if (err == 0) return fail_errno(EINVAL, "genetlink: an acknowledgement instead of the family");
    if (err < 1 || err > 4095) return fail_errno(EINVAL, fmt::format("genetlink: an error reply with code {}", -err));
    return fail_errno(static_cast<int>(err), "genetlink: CTRL_CMD_GETFAMILY");
  }
  if (type != GENL_ID_CTRL) return fail_errno(EINVAL, fmt::format("genetlink: reply of type {}", type));
  if (body->size() < kGenlHdr) return fail_errno(EINVAL, "genetlink: no generic netlink header");
  auto attrs = attributes(body->substr(kGenlHdr));
  if (!attrs) return fail(attrs.error());
  GenlFamily f;
  bool have_id = false;
  for (const Attr& a : *attrs) {
    if (a.type == CTRL_ATTR_FAMILY_ID) {
      if (a.payload.size() != 2) return fail_errno(EINVAL, "genetlink: CTRL_ATTR_FAMILY_ID is not a u16");
      f.id = load<uint16_t>(a.payload, 0);
      have_id = true;
    } else if (a.type == CTRL_ATTR_MCAST_GROUPS) {
      auto groups = attributes(a.payload);
      if (!groups) return fail(groups.error());
      for (const Attr& g : *groups) {
        auto fields = attributes(g.payload);
        if (!fields) return fail(fields.error());
        std::optional<std::string_view> gname;
        std::optional<uint32_t> gid;
        for (const Attr& x : *fields) {
          if (x.type == CTRL_ATTR_MCAST_GRP_NAME) {
            std::string_view s = x.payload;
            if (auto nul = s.find('\0'); nul != std::string_view::npos) s = s.substr(0, nul);
            gname = s;
          } else if (x.type == CTRL_ATTR_MCAST_GRP_ID && x.payload.size() == 4) {
            gid = load<uint32_t>(x.payload, 0);
          }
        }
        if (gname && gid && *gname == group) f.group = *gid;
      }
    }
  }
  if (!have_id || f.id == 0) return fail_errno(EINVAL, "genetlink: no family id in the reply");
  return f;
}

}  // namespace storwatch::daemon
