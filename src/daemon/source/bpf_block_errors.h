// BpfBlockErrorSource: every failed block request, from an eBPF program on the block layer's
// block_rq_error tracepoint (bpf/block_errors.bpf.c), as BlockErrorMerger reports: the manager
// folds them exactly like the kernel log's lines, so both sources give the same events. Unlike the
// kernel log it misses none to a rate limit and knows each request's length.
//
// The mapping from the record to a report is pure (block_status_info, block_op_name,
// report_from_record) and unit-tested; subtypes and errnos are the ones kmsg_parser gives for the
// same status, so an event does not depend on which source saw it.
//
// Owned by the manager; the callback runs on the loop thread. Loop-thread only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/result.h"
#include "daemon/bpf/block_error_record.h"
#include "daemon/bpf/bpf_support.h"
#include "daemon/loop/event_loop.h"
#include "daemon/source/block_error_merger.h"

struct block_errors;  // the libbpf skeleton (block_errors.skel.h), a C struct

namespace storwatch::daemon {

struct BlockStatusInfo {
  const char* subtype;  // as kmsg_parser.h names it: "io", "medium", "timeout", ...
  int err;              // the errno the block layer maps it to (blk_status_to_errno)
};
// The subtype and errno of a blk_status_t. Status 6 was BLK_STS_NEXUS ("critical nexus") before
// Linux 6.5 and is BLK_STS_RESV_CONFLICT ("reservation conflict") since: `resv_conflict` says
// which the running kernel means. Unknown numbers give "unknown" and EIO.
BlockStatusInfo block_status_info(uint8_t status, bool resv_conflict = true);
// The kernel's name of a request op (enum req_op, low 8 bits of cmd_flags): "READ", "WRITE",
// "DISCARD", ... ; "UNKNOWN" as the kernel's blk_op_str says for others.
const char* block_op_name(uint32_t cmd_flags);
// The report a record stands for; nullopt for a success (status 0), for a request the device does
// not support (BLK_STS_NOTSUPP: not a media error) and for a record without a disk name.
std::optional<BlockErrorMerger::Report> report_from_record(const storwatch_block_error& rec,
                                                           bool resv_conflict = true);
// True when this kernel release ("6.18.0-...") numbers status 6 as BLK_STS_RESV_CONFLICT (6.5+).
bool kernel_has_resv_conflict(const std::string& release);

class BpfBlockErrorSource {
 public:
  using OnReport = std::function<void(const BlockErrorMerger::Report&)>;

  // Loads and attaches the program. Fails with the reason for source.unavailable: bpf_supported()'s,
  // or what libbpf said when loading or attaching.
  [[nodiscard]] static Result<std::unique_ptr<BpfBlockErrorSource>> create(EventLoop& loop, OnReport on_report);
  ~BpfBlockErrorSource();
  BpfBlockErrorSource(const BpfBlockErrorSource&) = delete;
  BpfBlockErrorSource& operator=(const BpfBlockErrorSource&) = delete;

  // Hands over whatever the kernel has submitted (also at shutdown, before the last flush).
  void drain();
  // Records the kernel could not queue because the ring buffer was full.
  uint64_t lost() const;
  uint64_t records() const { return records_; }

 private:
  BpfBlockErrorSource(OnReport on_report, bool resv_conflict)
      : on_report_(std::move(on_report)), resv_conflict_(resv_conflict) {}
  void on_record(const void* data, size_t size);

  OnReport on_report_;
  bool resv_conflict_ = true;
  ::block_errors* skel_ = nullptr;
  std::unique_ptr<BpfRingReader> ring_;
  uint64_t records_ = 0;
  uint64_t lost_reported_ = 0;
};

}  // namespace storwatch::daemon
