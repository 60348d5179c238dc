#include "daemon/mount/mount_table.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <memory>

namespace storwatch::daemon {

Result<std::unique_ptr<ProcMountTable>> ProcMountTable::open(const std::string& path) {
  auto t = std::make_unique<ProcMountTable>();
  t->path_ = path;
  t->fd_.reset(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!t->fd_) return fail_errno(errno, "opening " + path);
  return t;
}

Result<std::string> ProcMountTable::read() {
  // Re-reading from offset 0 on the same fd also re-arms the POLLPRI notification.
  if (::lseek(fd_.get(), 0, SEEK_SET) < 0) return fail_errno(errno, "seeking " + path_);
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail_errno(errno, "reading " + path_);
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

}  // namespace storwatch::daemon
