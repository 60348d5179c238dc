// What the eBPF sources share: whether this build and this process can load BPF programs at all
// (and if not, the reason a user reads in source.unavailable), libbpf's messages routed into the
// daemon's log, and a libbpf ring buffer driven by the event loop.
// Loop-thread only.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "base/result.h"
#include "daemon/loop/event_loop.h"

struct ring_buffer;

namespace storwatch::daemon {

// Ok when this build has the eBPF sources and the process may load programs (CAP_BPF and
// CAP_PERFMON, or CAP_SYS_ADMIN) on a kernel with BTF; otherwise the reason, for
// source.unavailable.
[[nodiscard]] Result<void> bpf_supported();

// Turns a libbpf failure (negative errno or errno set) into an Error naming what failed.
Error bpf_error(int err, const std::string& what);

// A BPF_MAP_TYPE_RINGBUF map consumed on the event loop: `on_record` runs for each record, on
// the loop thread, whenever the kernel side has submitted some.
class BpfRingReader {
 public:
  using OnRecord = std::function<void(const void* data, size_t size)>;
  [[nodiscard]] static Result<std::unique_ptr<BpfRingReader>> create(EventLoop& loop, int map_fd, OnRecord on_record);
  ~BpfRingReader();
  BpfRingReader(const BpfRingReader&) = delete;
  BpfRingReader& operator=(const BpfRingReader&) = delete;

  // Consumes whatever is ready now (also used by tests and at shutdown).
  void drain();

 private:
  BpfRingReader(EventLoop& loop, OnRecord on_record) : loop_(loop), on_record_(std::move(on_record)) {}
  static int trampoline(void* ctx, void* data, size_t size);

  EventLoop& loop_;
  OnRecord on_record_;
  ring_buffer* rb_ = nullptr;
  int epoll_fd_ = -1;
};

}  // namespace storwatch::daemon
