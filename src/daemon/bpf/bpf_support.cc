#include "daemon/bpf/bpf_support.h"

#include <sys/epoll.h>
#include <sys/syscall.h>
#include <linux/capability.h>
#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <mutex>

#include "base/log.h"

#if STORWATCH_HAVE_BPF
#include <bpf/libbpf.h>
#endif

namespace storwatch::daemon {
namespace {

#ifndef CAP_PERFMON
#define CAP_PERFMON 38
#endif
#ifndef CAP_BPF
#define CAP_BPF 39
#endif

bool has_cap(int cap) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return false;
  return (data[cap / 32].effective & (1u << (cap % 32))) != 0;
}

#if STORWATCH_HAVE_BPF
// libbpf prints its own diagnostics (verifier logs, attach failures); they belong in our log at
// debug level: the source reports the failure itself, once, as source.unavailable.
int libbpf_to_log(enum libbpf_print_level level, const char* format, va_list args) {
  if (level == LIBBPF_DEBUG) return 0;
  char buf[1024];
  int n = vsnprintf(buf, sizeof buf, format, args);
  std::string_view line(buf, n > 0 ? std::min<size_t>(static_cast<size_t>(n), sizeof buf - 1) : 0);
  while (!line.empty() && line.back() == '\n') line.remove_suffix(1);
  log_debug("libbpf: {}", line);
  return n;
}
#endif

}  // namespace

Error bpf_error(int err, const std::string& what) {
  if (err < 0) err = -err;
  if (err == 0) err = errno ? errno : EINVAL;
  return Error::from_errno(err, what);
}

Result<void> bpf_supported() {
#if !STORWATCH_HAVE_BPF
  return fail(Error::from_errno(ENOTSUP, "built without eBPF: " STORWATCH_BPF_MISSING));
#else
  static std::once_flag once;
  std::call_once(once, [] { libbpf_set_print(libbpf_to_log); });
  if (access("/sys/kernel/btf/vmlinux", R_OK) != 0)
    return fail(Error::from_errno(ENOTSUP, "the kernel has no BTF (/sys/kernel/btf/vmlinux)"));
  bool bpf = has_cap(CAP_BPF) && has_cap(CAP_PERFMON);
  if (!bpf && !has_cap(CAP_SYS_ADMIN))
    return fail(Error::from_errno(EPERM, "needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)"));
  return {};
#endif
}

#if STORWATCH_HAVE_BPF
Result<std::unique_ptr<BpfRingReader>> BpfRingReader::create(EventLoop& loop, int map_fd, OnRecord on_record) {
  std::unique_ptr<BpfRingReader> r(new BpfRingReader(loop, std::move(on_record)));
  r->rb_ = ring_buffer__new(map_fd, &BpfRingReader::trampoline, r.get(), nullptr);
  if (r->rb_ == nullptr) return fail(bpf_error(errno, "creating the BPF ring buffer reader"));
  r->epoll_fd_ = ring_buffer__epoll_fd(r->rb_);
  BpfRingReader* self = r.get();
  if (auto added = loop.add_fd(r->epoll_fd_, EPOLLIN, [self](uint32_t) { self->drain(); }); !added)
    return fail(added.error());
  return r;
}

BpfRingReader::~BpfRingReader() {
  if (rb_ != nullptr) {
    loop_.remove_fd(epoll_fd_);
    ring_buffer__free(rb_);
  }
}

void BpfRingReader::drain() {
  if (rb_ != nullptr) ring_buffer__consume(rb_);
}

int BpfRingReader::trampoline(void* ctx, void* data, size_t size) {
  static_cast<BpfRingReader*>(ctx)->on_record_(data, size);
  return 0;
}
#else
Result<std::unique_ptr<BpfRingReader>> BpfRingReader::create(EventLoop&, int, OnRecord) {
  return fail(Error::from_errno(ENOTSUP, "built without eBPF: " STORWATCH_BPF_MISSING));
}
BpfRingReader::~BpfRingReader() = default;
void BpfRingReader::drain() {}
int BpfRingReader::trampoline(void*, void*, size_t) { return 0; }
#endif

}  // namespace storwatch::daemon
