// MountTable: where the daemon reads the mount table from, and the fd that wakes it when the table
// changes (POLLPRI on /proc/self/mountinfo). A seam: tests give a fake with fixture text.
#pragma once

#include <memory>
#include <string>

#include "base/fd.h"
#include "base/result.h"

namespace storwatch::daemon {

class MountTable {
 public:
  virtual ~MountTable() = default;
  [[nodiscard]] virtual Result<std::string> read() = 0;
  // An fd to watch with EPOLLPRI, or -1 when changes are signalled some other way (tests).
  virtual int poll_fd() const = 0;
};

class ProcMountTable final : public MountTable {
 public:
  [[nodiscard]] static Result<std::unique_ptr<ProcMountTable>> open(const std::string& path);
  [[nodiscard]] Result<std::string> read() override;
  int poll_fd() const override { return fd_.get(); }

 private:
  UniqueFd fd_;
  std::string path_;
};

}  // namespace storwatch::daemon
