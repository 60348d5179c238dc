// libFuzzer target for what the fanotify mount source reads from the kernel: the event buffer of
// a FAN_REPORT_MNT group (parse_fanotify_mnt) and a statmount reply (statmount_to_entry). The
// first input byte picks which; the rest is the buffer. Nothing here may crash, hang or read out
// of bounds, whatever the lengths and offsets say.
#include <cstddef>
#include <cstdint>
#include <span>

#include "daemon/mount/fanotify_mnt.h"
#include "daemon/mount/mount_api.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  std::span<const uint8_t> rest(data + 1, size - 1);
  if (data[0] & 1) {
    auto batch = storwatch::daemon::parse_fanotify_mnt(rest);
    if (batch) {
      volatile uint64_t sink = 0;
      for (const auto& r : batch->records) sink = sink + r.mnt_id + r.mask;
    }
  } else {
    auto m = storwatch::daemon::mntapi::statmount_to_entry(
        std::span<const char>(reinterpret_cast<const char*>(rest.data()), rest.size()));
    if (m) (void)m->read_only();
  }
  return 0;
}
