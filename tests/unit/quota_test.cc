// The quota netlink parsers: messages laid out byte for byte as fs/quota/netlink.c sends them,
// and the controller's CTRL_CMD_GETFAMILY reply as captured from a 6.18 kernel.
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/quota.h>

#include <climits>
#include <cstdint>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "daemon/source/quota_message.h"

namespace storwatch::daemon {
namespace {

constexpr uint16_t kFamily = 17;

// One netlink attribute, padded to 4 bytes.
std::string attr(uint16_t type, const void* data, size_t len) {
  std::string out(NLA_ALIGN(NLA_HDRLEN + len), '\0');
  nlattr a{static_cast<uint16_t>(NLA_HDRLEN + len), type};
  std::memcpy(out.data(), &a, sizeof a);
  if (len) std::memcpy(out.data() + NLA_HDRLEN, data, len);
  return out;
}
std::string u32(uint16_t type, uint32_t v) { return attr(type, &v, 4); }
std::string u64(uint16_t type, uint64_t v) { return attr(type, &v, 8); }

std::string message(const std::string& attrs, uint16_t type = kFamily, uint8_t cmd = QUOTA_NL_C_WARNING) {
  std::string out(NLMSG_HDRLEN + GENL_HDRLEN, '\0');
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(out.size() + attrs.size());
  h.nlmsg_type = type;
  h.nlmsg_seq = 7;
  std::memcpy(out.data(), &h, sizeof h);
  genlmsghdr g{cmd, 1, 0};
  std::memcpy(out.data() + NLMSG_HDRLEN, &g, sizeof g);
  return out + attrs;
}

struct Fields {
  uint32_t qtype = 0;
  uint64_t id = 1000;
  uint32_t warning = QUOTA_NL_BHARDWARN;
  uint32_t major = 7, minor = 3;
  uint64_t caused = 1001;
};

// In the kernel's order (quota_send_warning).
std::string kernel_message(const Fields& f, bool pad = false) {
  std::string a = u32(QUOTA_NL_A_QTYPE, f.qtype);
  if (pad) a += attr(QUOTA_NL_A_PAD, nullptr, 0);
  a += u64(QUOTA_NL_A_EXCESS_ID, f.id) + u32(QUOTA_NL_A_WARNING, f.warning) + u32(QUOTA_NL_A_DEV_MAJOR, f.major) +
       u32(QUOTA_NL_A_DEV_MINOR, f.minor);
  if (pad) a += attr(QUOTA_NL_A_PAD, nullptr, 0);
  a += u64(QUOTA_NL_A_CAUSED_ID, f.caused);
  return message(a);
}

TEST(QuotaMessage, EveryWarningAndType) {
  const char* names[] = {nullptr,  "ihard",       "igrace",      "isoft",       "bhard",      "bgrace",
                         "bsoft",  "ihard_below", "isoft_below", "bhard_below", "bsoft_below"};
  const char* types[] = {"user", "group", "project"};
  for (uint32_t qtype = 0; qtype < 3; ++qtype) {
    for (uint32_t warning = 1; warning <= 10; ++warning) {
      Fields f{qtype, 4000000000ull + warning, warning, 259, 65537, 1ull << 33};
      auto w = parse_quota_message(kernel_message(f), kFamily);
      ASSERT_TRUE(w) << w.error().message();
      EXPECT_EQ(w->qtype, qtype);
      EXPECT_EQ(w->id, f.id);
      EXPECT_EQ(w->warning, warning);
      EXPECT_EQ(w->dev_major, 259u);
      EXPECT_EQ(w->dev_minor, 65537u);
      EXPECT_EQ(w->caused_uid, 1ull << 33);

      Event e = quota_warning_event(*w);
      EXPECT_EQ(e.type, "quota.warning");
      EXPECT_EQ(e.source, "netlink");
      EXPECT_EQ(e.detail["quota_type"], types[qtype]);
      EXPECT_EQ(e.detail["warning"], names[warning]);
      EXPECT_EQ(e.detail["id"], f.id);
      EXPECT_EQ(e.detail["dev"], "259:65537");
      EXPECT_EQ(e.detail["resource"], (warning == 1 || warning == 2 || warning == 3 || warning == 7 || warning == 8)
                                          ? "inodes"
                                          : "blocks");
      EXPECT_TRUE(e.detail["message"].is_string());
      EXPECT_EQ(e.severity, warning >= 7 ? Severity::info : Severity::warning);
      ASSERT_TRUE(e.process);
      EXPECT_EQ(e.process->uid, static_cast<int64_t>(1ull << 33));
      EXPECT_FALSE(e.fs);
    }
  }
}

TEST(QuotaMessage, PadAttributesAndUnknownOnesAreSkipped) {
  auto w = parse_quota_message(kernel_message(Fields{}, /*pad=*/true), kFamily);
  ASSERT_TRUE(w) << w.error().message();
  EXPECT_EQ(w->id, 1000u);
  EXPECT_EQ(w->caused_uid, 1001u);
  // A newer kernel may add attributes: ignored.
  Fields f;
  std::string m = kernel_message(f);
  std::string extended = message(m.substr(NLMSG_HDRLEN + GENL_HDRLEN) + u32(QUOTA_NL_A_PAD + 1, 5));
  EXPECT_TRUE(parse_quota_message(extended, kFamily));
  // Attribute type flags (NLA_F_NET_BYTEORDER) do not hide the type.
  std::string flagged = message(u32(QUOTA_NL_A_QTYPE | NLA_F_NET_BYTEORDER, 1) + u64(QUOTA_NL_A_EXCESS_ID, 1) +
                                u32(QUOTA_NL_A_WARNING, 4) + u32(QUOTA_NL_A_DEV_MAJOR, 8) +
                                u32(QUOTA_NL_A_DEV_MINOR, 1) + u64(QUOTA_NL_A_CAUSED_ID, 0));
  auto fw = parse_quota_message(flagged, kFamily);
  ASSERT_TRUE(fw) << fw.error().message();
  EXPECT_EQ(fw->qtype, 1u);
}

TEST(QuotaMessage, TruncatedAtEveryLength) {
  std::string m = kernel_message(Fields{});
  for (size_t n = 0; n < m.size(); ++n) {
    std::string cut = m.substr(0, n);
    EXPECT_FALSE(parse_quota_message(cut, kFamily)) << "length " << n;
    // Also with nlmsg_len rewritten to match the cut: the attributes are then what is short.
    if (n >= NLMSG_HDRLEN) {
      uint32_t len = static_cast<uint32_t>(n);
      std::memcpy(cut.data(), &len, 4);
      EXPECT_FALSE(parse_quota_message(cut, kFamily)) << "length " << n;
    }
  }
}

TEST(QuotaMessage, WrongAttributeSizes) {
  Fields f;
  // QTYPE as a u64, EXCESS_ID as a u32: rejected, not read past.
  EXPECT_FALSE(parse_quota_message(
      message(u64(QUOTA_NL_A_QTYPE, 0) + u64(QUOTA_NL_A_EXCESS_ID, 1) + u32(QUOTA_NL_A_WARNING, 4) +
              u32(QUOTA_NL_A_DEV_MAJOR, 8) + u32(QUOTA_NL_A_DEV_MINOR, 1) + u64(QUOTA_NL_A_CAUSED_ID, 0)),
      kFamily));
  auto r = parse_quota_message(
      message(u32(QUOTA_NL_A_QTYPE, 0) + u32(QUOTA_NL_A_EXCESS_ID, 1) + u32(QUOTA_NL_A_WARNING, 4) +
              u32(QUOTA_NL_A_DEV_MAJOR, 8) + u32(QUOTA_NL_A_DEV_MINOR, 1) + u64(QUOTA_NL_A_CAUSED_ID, 0)),
      kFamily);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("expected 8"), std::string::npos) << r.error().message();
  // An attribute length below the header, and one past the end.
  std::string m = kernel_message(f);
  std::string small = m;
  uint16_t two = 2;
  std::memcpy(small.data() + NLMSG_HDRLEN + GENL_HDRLEN, &two, 2);
  EXPECT_FALSE(parse_quota_message(small, kFamily));
  std::string huge = m;
  uint16_t big = 0xffff;
  std::memcpy(huge.data() + NLMSG_HDRLEN + GENL_HDRLEN, &big, 2);
  EXPECT_FALSE(parse_quota_message(huge, kFamily));
}

TEST(QuotaMessage, MissingOrRepeatedAttributes) {
  const std::string parts[] = {u32(QUOTA_NL_A_QTYPE, 0),     u64(QUOTA_NL_A_EXCESS_ID, 1),
                               u32(QUOTA_NL_A_WARNING, 4),   u32(QUOTA_NL_A_DEV_MAJOR, 8),
                               u32(QUOTA_NL_A_DEV_MINOR, 1), u64(QUOTA_NL_A_CAUSED_ID, 0)};
  const char* names[] = {"QTYPE", "EXCESS_ID", "WARNING", "DEV_MAJOR", "DEV_MINOR", "CAUSED_ID"};
  for (size_t skip = 0; skip < 6; ++skip) {
    std::string a;
    for (size_t i = 0; i < 6; ++i)
      if (i != skip) a += parts[i];
    auto r = parse_quota_message(message(a), kFamily);
    ASSERT_FALSE(r) << names[skip];
    EXPECT_NE(r.error().message().find(names[skip]), std::string::npos) << r.error().message();
  }
  std::string all;
  for (const auto& p : parts) all += p;
  EXPECT_FALSE(parse_quota_message(message(all + u32(QUOTA_NL_A_WARNING, 6)), kFamily));
  EXPECT_FALSE(parse_quota_message(message(""), kFamily));
}

TEST(QuotaMessage, WrongFamilyCommandTypeOrWarning) {
  Fields f;
  std::string m = kernel_message(f);
  EXPECT_FALSE(parse_quota_message(m, kFamily + 1));
  EXPECT_FALSE(parse_quota_message(message(m.substr(NLMSG_HDRLEN + GENL_HDRLEN), kFamily, 2), kFamily));
  Fields bad_type = f;
  bad_type.qtype = 3;
  EXPECT_FALSE(parse_quota_message(kernel_message(bad_type), kFamily));
  for (uint32_t warning : {0u, 11u, 0xffffffffu}) {
    Fields bad = f;
    bad.warning = warning;
    EXPECT_FALSE(parse_quota_message(kernel_message(bad), kFamily)) << warning;
  }
}

TEST(QuotaMessage, HugeAndInconsistentLengths) {
  std::string m = kernel_message(Fields{});
  for (uint32_t len : {0u, 15u, 0x7fffffffu, 0xffffffffu, static_cast<uint32_t>(m.size() + 4)}) {
    std::string x = m;
    std::memcpy(x.data(), &len, 4);
    EXPECT_FALSE(parse_quota_message(x, kFamily)) << len;
  }
  // Bytes after the message that alignment does not explain.
  EXPECT_FALSE(parse_quota_message(m + std::string(8, '\0'), kFamily));
}

TEST(QuotaMessage, SplitDatagrams) {
  std::string a = kernel_message(Fields{});
  Fields g;
  g.qtype = 1;
  std::string b = kernel_message(g);
  std::string both = a + b;  // the parts are views into it: it must outlive them
  auto parts = split_netlink_messages(both);
  ASSERT_TRUE(parts);
  ASSERT_EQ(parts->size(), 2u);
  auto second = parse_quota_message((*parts)[1], kFamily);
  ASSERT_TRUE(second);
  EXPECT_EQ(second->qtype, 1u);
  EXPECT_FALSE(split_netlink_messages(a + std::string(5, 'x')));
  std::string lying = a;
  uint32_t len = 1u << 30;
  std::memcpy(lying.data(), &len, 4);
  EXPECT_FALSE(split_netlink_messages(lying));
  EXPECT_TRUE(split_netlink_messages(""));
}

// The controller's reply to CTRL_CMD_GETFAMILY "VFS_DQUOT", as a 6.18 kernel sent it.
std::string hex(const char* h) {
  std::string out;
  for (size_t i = 0; h[i] && h[i + 1]; i += 2) out.push_back(static_cast<char>(std::stoi(std::string(h + i, 2), nullptr, 16)));
  return out;
}

TEST(GenlFamily, CapturedReply) {
  std::string reply = hex(
      "600000001000000001000000526d0000010200000e0002005646535f4451554f5400000006000100110000000800030001000000"
      "080004000000000008000500070000001c0007001800010008000200110000000b0001006576656e74730000");
  auto f = parse_genl_family(reply, "events");
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_EQ(f->id, 17);
  ASSERT_TRUE(f->group);
  EXPECT_EQ(*f->group, 17u);
  auto none = parse_genl_family(reply, "other");
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->group);
  for (size_t n = 0; n < reply.size(); ++n) (void)parse_genl_family(reply.substr(0, n), "events");
}

TEST(GenlFamily, ErrorReplyGivesTheErrno) {
  std::string m(NLMSG_HDRLEN + sizeof(nlmsgerr), '\0');
  nlmsghdr h{};
  h.nlmsg_len = static_cast<uint32_t>(m.size());
  h.nlmsg_type = NLMSG_ERROR;
  std::memcpy(m.data(), &h, sizeof h);
  int32_t err = -ENOENT;
  std::memcpy(m.data() + NLMSG_HDRLEN, &err, 4);
  auto f = parse_genl_family(m, "events");
  ASSERT_FALSE(f);
  EXPECT_EQ(f.error().errno_value(), ENOENT);
  // Codes that are not -errno (the fuzzer found INT_MIN, whose negation overflows).
  for (int32_t code : {INT32_MIN, 5, -5000, INT32_MAX}) {
    std::memcpy(m.data() + NLMSG_HDRLEN, &code, 4);
    auto g = parse_genl_family(m, "events");
    ASSERT_FALSE(g) << code;
    EXPECT_EQ(g.error().errno_value(), EINVAL) << code;
  }
}

TEST(GenlFamily, RequestIsWellFormed) {
  std::string req = genl_getfamily_request("VFS_DQUOT", 9);
  ASSERT_EQ(req.size() % 4, 0u);
  nlmsghdr h;
  std::memcpy(&h, req.data(), sizeof h);
  EXPECT_EQ(h.nlmsg_len, req.size());
  EXPECT_EQ(h.nlmsg_type, GENL_ID_CTRL);
  EXPECT_EQ(h.nlmsg_seq, 9u);
  EXPECT_EQ(static_cast<uint8_t>(req[NLMSG_HDRLEN]), CTRL_CMD_GETFAMILY);
  EXPECT_EQ(req.substr(NLMSG_HDRLEN + GENL_HDRLEN + NLA_HDRLEN, 10), std::string("VFS_DQUOT\0", 10));
}

}  // namespace
}  // namespace storwatch::daemon
