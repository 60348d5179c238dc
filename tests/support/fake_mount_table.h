// FakeMountTable: the mount table as text the test sets (mountinfo format). It has no poll fd, so
// after set_text() the test calls Manager::refresh_mounts() where the kernel would raise POLLPRI.
// Loop-thread only, like the real one. The text is shared, so the test keeps a handle after
// giving the table to the Manager.
#pragma once

#include <cerrno>
#include <memory>
#include <string>

#include "daemon/mount/mount_table.h"

namespace storwatch::test {

class FakeMountTable final : public daemon::MountTable {
 public:
  struct State {
    std::string text;
    int error = 0;  // non-zero: read() fails with this errno
    int reads = 0;
  };
  explicit FakeMountTable(std::shared_ptr<State> state) : state_(std::move(state)) {}

  Result<std::string> read() override {
    ++state_->reads;
    if (state_->error) return fail_errno(state_->error, "reading the fake mount table");
    return state_->text;
  }
  int poll_fd() const override { return -1; }

 private:
  std::shared_ptr<State> state_;
};

}  // namespace storwatch::test
