// The eBPF block error source's pure part: blk_status_t -> subtype and errno (the same as the kernel
// log's line for that status gives), request op names, and records -> BlockErrorMerger reports,
// folded as the manager folds them. No BPF is loaded here.
#include <gtest/gtest.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <string>
#include <string_view>

#include "daemon/source/block_error_merger.h"
#include "daemon/source/bpf_block_errors.h"
#include "daemon/source/kmsg_parser.h"
#include "support/fake_clock.h"

namespace storwatch::daemon {
namespace {

using namespace std::chrono_literals;

storwatch_block_error record(uint64_t sector, uint32_t sectors, uint8_t status = 10, uint32_t op = 0,
                             std::string_view disk = "loop3") {
  storwatch_block_error r;
  std::memset(&r, 0, sizeof r);
  r.sector = sector;
  r.sectors = sectors;
  r.major = 7;
  r.minor = 3;
  r.cmd_flags = op | 0x800;  // REQ_SYNC-like flag bits above the op must not matter
  r.status = status;
  std::memcpy(r.disk, disk.data(), std::min(disk.size(), sizeof r.disk));
  return r;
}

// The kernel's blk_errors[] names (block/blk-core.c, 6.18) by status number.
struct KernelName {
  uint8_t status;
  const char* name;
};
constexpr KernelName kKernelNames[] = {
    {1, "operation not supported"}, {2, "timeout"},           {3, "critical space allocation"},
    {4, "recoverable transport"},   {5, "critical target"},   {6, "reservation conflict"},
    {7, "critical medium"},         {8, "protection"},        {9, "kernel resource"},
    {10, "I/O"},                    {11, "dm internal retry"}, {12, "nonblocking retry"},
    {13, "device resource"},        {14, "open zones exceeded"}, {15, "active zones exceeded"},
    {16, "device offline"},         {17, "duration limit exceeded"}, {19, "invalid"},
};

TEST(BpfBlock, StatusGivesTheSubtypeAndErrnoTheKernelLogGives) {
  for (const auto& k : kKernelNames) {
    KmsgRecord rec;
    rec.priority = 3;
    rec.text = std::string(k.name) + " error, dev loop3, sector 2048 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2";
    auto line = parse_block_line(rec);
    ASSERT_TRUE(line) << rec.text;
    BlockStatusInfo info = block_status_info(k.status);
    EXPECT_EQ(info.subtype, line->subtype) << "status " << int(k.status);
    EXPECT_EQ(info.err, line->err) << "status " << int(k.status);
  }
  // Before Linux 6.5 status 6 was BLK_STS_NEXUS, printed "critical nexus".
  KmsgRecord rec;
  rec.text = "critical nexus error, dev sda, sector 8 op 0x1:(WRITE) flags 0x0 phys_seg 1 prio class 0";
  auto line = parse_block_line(rec);
  ASSERT_TRUE(line);
  EXPECT_EQ(block_status_info(6, false).subtype, line->subtype);
  EXPECT_EQ(std::string(block_status_info(6, false).subtype), "nexus");
}

TEST(BpfBlock, TheIssuesSubtypes) {
  EXPECT_STREQ(block_status_info(2).subtype, "timeout");
  EXPECT_STREQ(block_status_info(3).subtype, "no_space");
  EXPECT_STREQ(block_status_info(4).subtype, "transport");
  EXPECT_STREQ(block_status_info(5).subtype, "target");
  EXPECT_STREQ(block_status_info(7).subtype, "medium");
  EXPECT_STREQ(block_status_info(8).subtype, "protection");
  EXPECT_STREQ(block_status_info(9).subtype, "kernel_resource");
  EXPECT_STREQ(block_status_info(13).subtype, "device_resource");
  EXPECT_STREQ(block_status_info(10).subtype, "io");
  EXPECT_EQ(block_status_info(10).err, EIO);
  EXPECT_STREQ(block_status_info(18).subtype, "invalid");  // INVAL once the gap at 18 is closed
  EXPECT_STREQ(block_status_info(200).subtype, "unknown");
  EXPECT_EQ(block_status_info(200).err, EIO);
}

TEST(BpfBlock, KernelReleaseDecidesNexusOrReservationConflict) {
  EXPECT_TRUE(kernel_has_resv_conflict("6.18.0-1-amd64"));
  EXPECT_TRUE(kernel_has_resv_conflict("6.5.0"));
  EXPECT_TRUE(kernel_has_resv_conflict("7.0"));
  EXPECT_FALSE(kernel_has_resv_conflict("6.1.0-13-amd64"));
  EXPECT_FALSE(kernel_has_resv_conflict("5.15.0"));
  EXPECT_TRUE(kernel_has_resv_conflict("garbage"));
}

TEST(BpfBlock, OpNamesAsTheKernelPrintsThem) {
  EXPECT_STREQ(block_op_name(0), "READ");
  EXPECT_STREQ(block_op_name(1 | 0x800), "WRITE");
  EXPECT_STREQ(block_op_name(2), "FLUSH");
  EXPECT_STREQ(block_op_name(3), "DISCARD");
  EXPECT_STREQ(block_op_name(5), "SECURE_ERASE");
  EXPECT_STREQ(block_op_name(9), "WRITE_ZEROES");
  EXPECT_STREQ(block_op_name(35), "DRV_OUT");
  EXPECT_STREQ(block_op_name(4), "UNKNOWN");
}

TEST(BpfBlock, RecordBecomesAReportWithItsLength) {
  auto r = report_from_record(record(20003, 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->device, "loop3");
  EXPECT_EQ(r->op, "READ");
  EXPECT_EQ(r->subtype, "io");
  EXPECT_EQ(r->err, EIO);
  EXPECT_EQ(r->sector, 20003u);
  ASSERT_TRUE(r->sectors);
  EXPECT_EQ(*r->sectors, 1u);

  auto medium = report_from_record(record(8, 8, 7, 1, "sda"));
  ASSERT_TRUE(medium);
  EXPECT_EQ(medium->device, "sda");
  EXPECT_EQ(medium->op, "WRITE");
  EXPECT_EQ(medium->subtype, "medium");
  EXPECT_EQ(medium->err, ENODATA);

  auto flush = report_from_record(record(0, 0, 10, 2));
  ASSERT_TRUE(flush);
  EXPECT_FALSE(flush->sectors) << "a flush has no data: its length is unknown";
}

TEST(BpfBlock, UnsupportedSuccessAndNamelessRecordsAreNoReports) {
  EXPECT_FALSE(report_from_record(record(0, 2048, 1, 3))) << "DISCARD with BLK_STS_NOTSUPP";
  EXPECT_FALSE(report_from_record(record(0, 2048, 1, 9))) << "WRITE_ZEROES with BLK_STS_NOTSUPP";
  EXPECT_FALSE(report_from_record(record(8, 1, 0)));
  EXPECT_FALSE(report_from_record(record(8, 1, 10, 0, "")));
}

TEST(BpfBlock, DiskNameWithoutNulIsBounded) {
  auto rec = record(8, 1, 10, 0, std::string(40, 'x'));
  auto r = report_from_record(rec);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->device, std::string(STORWATCH_DISK_NAME_LEN, 'x'));
}

TEST(BpfBlock, BurstOfSingleSectorRequestsFoldsWithExactCount) {
  // 50 failing sectors read one by one (each its own request), a discard the device cannot do in
  // between (dropped), then a marker far away: one range of 50 with count 50, and the marker.
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  std::vector<BlockErrorMerger::Merged> out;
  auto feed = [&](const storwatch_block_error& rec) {
    if (auto r = report_from_record(rec)) {
      auto closed = m.add(*r);
      out.insert(out.end(), closed.begin(), closed.end());
    }
  };
  for (uint64_t s = 8192; s < 8192 + 50; ++s) {
    feed(record(s, 1));
    if (s == 8200) feed(record(0, 1 << 20, 1, 3));
    clock.advance(1ms);
  }
  feed(record(40960, 1));
  auto rest = m.flush_all();
  out.insert(out.end(), rest.begin(), rest.end());
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].sector, 8192u);
  EXPECT_EQ(out[0].sectors, 50u);
  EXPECT_TRUE(out[0].sectors_known);
  EXPECT_EQ(out[0].requests, 50u);
  EXPECT_EQ(out[0].count(), 50u);
  EXPECT_EQ(out[0].suppressed, 0u);
  EXPECT_EQ(out[1].sector, 40960u);
  EXPECT_EQ(out[1].count(), 1u);
}

TEST(BpfBlock, MultiSectorRequestsExtendByTheirLength) {
  // 4 KiB requests (8 sectors each) back to back: one range, its length the sum.
  test::FakeClock clock;
  BlockErrorMerger m(clock);
  for (uint64_t s = 1000; s < 1000 + 4 * 8; s += 8) EXPECT_TRUE(m.add(*report_from_record(record(s, 8))).empty());
  auto out = m.flush_all();
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].sector, 1000u);
  EXPECT_EQ(out[0].sectors, 32u);
  EXPECT_EQ(out[0].requests, 4u);
}

}  // namespace
}  // namespace storwatch::daemon
