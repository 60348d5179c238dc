#include "daemon/source/bpf_block_errors.h"

#include <sys/utsname.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "base/log.h"
#include "daemon/bpf/bpf_support.h"

#if STORWATCH_HAVE_BPF
#include <bpf/libbpf.h>

#include "block_errors.skel.h"
#endif

namespace storwatch::daemon {

BlockStatusInfo block_status_info(uint8_t status, bool resv_conflict) {
  // include/linux/blk_types.h; the errnos of blk_errors[] in block/blk-core.c.
  switch (status) {
    case 0: return {"ok", 0};
    case 1: return {"not_supported", EOPNOTSUPP};
    case 2: return {"timeout", ETIMEDOUT};
    case 3: return {"no_space", ENOSPC};
    case 4: return {"transport", ENOLINK};
    case 5: return {"target", EREMOTEIO};
    case 6: return {resv_conflict ? "reservation_conflict" : "nexus", EBADE};
    case 7: return {"medium", ENODATA};
    case 8: return {"protection", EILSEQ};
    case 9: return {"kernel_resource", ENOMEM};
    case 10: return {"io", EIO};
    case 11: return {"dm_requeue", EREMCHG};
    case 12: return {"again", EAGAIN};
    case 13: return {"device_resource", EBUSY};
    case 14: return {"zone_open_resource", ETOOMANYREFS};
    case 15: return {"zone_active_resource", EOVERFLOW};
    case 16: return {"offline", ENODEV};
    case 17: return {"duration_limit", ETIME};
    // BLK_STS_INVAL is 19 since Linux 6.11 (atomic writes) and 18 once the gap is closed.
    case 18:
    case 19: return {"invalid", EINVAL};
    default: return {"unknown", EIO};
  }
}

const char* block_op_name(uint32_t cmd_flags) {
  // enum req_op (include/linux/blk_types.h, Linux 6.x), named as blk_op_str() does.
  switch (cmd_flags & 0xff) {
    case 0: return "READ";
    case 1: return "WRITE";
    case 2: return "FLUSH";
    case 3: return "DISCARD";
    case 5: return "SECURE_ERASE";
    case 7: return "ZONE_APPEND";
    case 9: return "WRITE_ZEROES";
    case 11: return "ZONE_OPEN";
    case 13: return "ZONE_CLOSE";
    case 15: return "ZONE_FINISH";
    case 17: return "ZONE_RESET";
    case 19: return "ZONE_RESET_ALL";
    case 34: return "DRV_IN";
    case 35: return "DRV_OUT";
    default: return "UNKNOWN";
  }
}

std::optional<BlockErrorMerger::Report> report_from_record(const storwatch_block_error& rec, bool resv_conflict) {
  if (rec.status == 0 || rec.status == 1) return std::nullopt;
  size_t len = strnlen(rec.disk, sizeof rec.disk);
  if (len == 0) return std::nullopt;
  BlockStatusInfo info = block_status_info(rec.status, resv_conflict);
  BlockErrorMerger::Report r;
  r.device.assign(rec.disk, len);
  r.op = block_op_name(rec.cmd_flags);
  r.subtype = info.subtype;
  r.err = info.err;
  r.sector = rec.sector;
  // A flush has no data: its length is unknown, not zero.
  if (rec.sectors > 0) r.sectors = rec.sectors;
  return r;
}

bool kernel_has_resv_conflict(const std::string& release) {
  unsigned major = 0, minor = 0;
  if (std::sscanf(release.c_str(), "%u.%u", &major, &minor) != 2) return true;
  return major > 6 || (major == 6 && minor >= 5);
}

#if STORWATCH_HAVE_BPF

Result<std::unique_ptr<BpfBlockErrorSource>> BpfBlockErrorSource::create(EventLoop& loop, OnReport on_report) {
  if (auto ok = bpf_supported(); !ok) return fail(ok.error());
  utsname u{};
  bool resv = ::uname(&u) != 0 || kernel_has_resv_conflict(u.release);
  std::unique_ptr<BpfBlockErrorSource> s(new BpfBlockErrorSource(std::move(on_report), resv));
  s->skel_ = block_errors__open();
  if (s->skel_ == nullptr) return fail(bpf_error(errno, "opening the block_rq_error program"));
  if (int err = block_errors__load(s->skel_); err != 0)
    return fail(bpf_error(err, "loading the block_rq_error program"));
  if (int err = block_errors__attach(s->skel_); err != 0)
    return fail(bpf_error(err, "attaching to the block_rq_error tracepoint"));
  BpfBlockErrorSource* self = s.get();
  auto ring = BpfRingReader::create(loop, bpf_map__fd(s->skel_->maps.block_errors),
                                    [self](const void* data, size_t size) { self->on_record(data, size); });
  if (!ring) return fail(ring.error());
  s->ring_ = std::move(*ring);
  return s;
}

BpfBlockErrorSource::~BpfBlockErrorSource() {
  ring_.reset();  // before the map it reads goes with the skeleton
  if (skel_ != nullptr) block_errors__destroy(skel_);
}

uint64_t BpfBlockErrorSource::lost() const {
  return skel_ != nullptr && skel_->bss != nullptr ? __atomic_load_n(&skel_->bss->lost, __ATOMIC_RELAXED) : 0;
}

#else

Result<std::unique_ptr<BpfBlockErrorSource>> BpfBlockErrorSource::create(EventLoop&, OnReport) {
  if (auto ok = bpf_supported(); !ok) return fail(ok.error());
  return fail_errno(ENOTSUP, "built without eBPF");
}

BpfBlockErrorSource::~BpfBlockErrorSource() { (void)skel_; }  // never loaded in this build

uint64_t BpfBlockErrorSource::lost() const { return 0; }

#endif

void BpfBlockErrorSource::drain() {
  if (ring_) ring_->drain();
}

void BpfBlockErrorSource::on_record(const void* data, size_t size) {
  if (size < sizeof(storwatch_block_error)) return;
  storwatch_block_error rec;
  std::memcpy(&rec, data, sizeof rec);
  ++records_;
  if (uint64_t lost_now = lost(); lost_now > lost_reported_) {
    log_warning("ebpf-block: {} failed block requests not reported: the ring buffer was full",
                lost_now - lost_reported_);
    lost_reported_ = lost_now;
  }
  if (auto r = report_from_record(rec, resv_conflict_); r && on_report_) on_report_(*r);
}

}  // namespace storwatch::daemon
