// MountinfoSource: the fallback MountSource. Every POLLPRI on the MountTable's fd (any attach,
// detach, move or remount in the namespace) reads the table and diffs it incrementally
// (MountinfoDiff): O(table) per wake-up in the kernel's formatting and our hashing, a parse only
// for the lines that changed. Wake-ups that arrive while a read runs coalesce into one.
// Loop-thread only.
#pragma once

#include <memory>

#include "daemon/mount/mount_source.h"
#include "daemon/mount/mount_table.h"
#include "daemon/mount/mountinfo_diff.h"

namespace storwatch::daemon {

class MountinfoSource final : public MountSource {
 public:
  explicit MountinfoSource(std::unique_ptr<MountTable> table) : table_(std::move(table)) {}
  ~MountinfoSource() override;

  std::string_view name() const override { return "mountinfo"; }
  [[nodiscard]] Result<void> start(EventLoop& loop, Sink sink) override;
  void refresh() override;
  Stats stats() const override { return stats_; }

 private:
  std::unique_ptr<MountTable> table_;
  EventLoop* loop_ = nullptr;
  Sink sink_;
  MountinfoDiff diff_;
  Stats stats_;
};

}  // namespace storwatch::daemon
