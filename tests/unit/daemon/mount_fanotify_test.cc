// The fanotify mount-record parser, on buffers laid out as the kernel writes them (checked on
// 6.18: a 24-byte metadata header, then a 16-byte FAN_EVENT_INFO_TYPE_MNT record with the id at
// offset 8).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "daemon/mount/fanotify_mnt.h"
#include "daemon/mount/mount_api.h"

namespace storwatch::daemon {
namespace {

void put32(std::vector<unsigned char>& b, uint32_t v) { b.insert(b.end(), (unsigned char*)&v, (unsigned char*)&v + 4); }
void put64(std::vector<unsigned char>& b, uint64_t v) { b.insert(b.end(), (unsigned char*)&v, (unsigned char*)&v + 8); }

// One event as the kernel writes it: event_len, vers 3, reserved, metadata_len 24, mask, fd, pid.
void event(std::vector<unsigned char>& b, uint64_t mask, uint64_t id, bool with_record = true) {
  uint32_t len = 24 + (with_record ? 16 : 0);
  put32(b, len);
  b.push_back(3);
  b.push_back(0);
  b.push_back(24);
  b.push_back(0);
  put64(b, mask);
  put32(b, static_cast<uint32_t>(-1));  // FAN_NOFD
  put32(b, 4242);
  if (!with_record) return;
  b.push_back(mntapi::kFanEventInfoTypeMnt);
  b.push_back(0);
  b.push_back(16);
  b.push_back(0);
  put32(b, 0);
  put64(b, id);
}

TEST(FanotifyMnt, AttachDetachAndMove) {
  std::vector<unsigned char> b;
  event(b, mntapi::kFanMntAttach, 0x80001060);
  event(b, mntapi::kFanMntAttach | mntapi::kFanMntDetach, 0x80001061);
  event(b, mntapi::kFanMntDetach, 0x80001060);
  auto r = parse_fanotify_mnt(b);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->records.size(), 3u);
  EXPECT_EQ(r->records[0].mask, mntapi::kFanMntAttach);
  EXPECT_EQ(r->records[0].mnt_id, 0x80001060u);
  EXPECT_EQ(r->records[1].mask, mntapi::kFanMntAttach | mntapi::kFanMntDetach);
  EXPECT_EQ(r->records[2].mask, mntapi::kFanMntDetach);
  EXPECT_FALSE(r->overflow);
  EXPECT_EQ(r->skipped, 0u);
}

TEST(FanotifyMnt, OverflowIsReported) {
  std::vector<unsigned char> b;
  event(b, mntapi::kFanMntAttach, 0x80000001);
  event(b, mntapi::kFanQOverflow, 0, false);
  auto r = parse_fanotify_mnt(b);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->overflow);
  EXPECT_EQ(r->records.size(), 1u);
}

TEST(FanotifyMnt, EventWithoutMountRecordIsSkipped) {
  std::vector<unsigned char> b;
  event(b, mntapi::kFanMntAttach, 0, false);
  auto r = parse_fanotify_mnt(b);
  ASSERT_TRUE(r);
  EXPECT_TRUE(r->records.empty());
  EXPECT_EQ(r->skipped, 1u);
}

TEST(FanotifyMnt, BadLengthsFail) {
  std::vector<unsigned char> b;
  event(b, mntapi::kFanMntAttach, 1);
  auto truncated = b;
  truncated.resize(30);
  EXPECT_FALSE(parse_fanotify_mnt(truncated));
  auto long_len = b;
  long_len[0] = 200;  // event_len beyond the buffer
  EXPECT_FALSE(parse_fanotify_mnt(long_len));
  auto bad_record = b;
  bad_record[24 + 2] = 60;  // record longer than its event
  EXPECT_FALSE(parse_fanotify_mnt(bad_record));
  auto short_record = b;
  short_record[24 + 2] = 8;  // a mount record without room for the id
  EXPECT_FALSE(parse_fanotify_mnt(short_record));
  auto version = b;
  version[4] = 2;
  EXPECT_FALSE(parse_fanotify_mnt(version));
  EXPECT_TRUE(parse_fanotify_mnt({}));  // nothing read: nothing to report
}

}  // namespace
}  // namespace storwatch::daemon
