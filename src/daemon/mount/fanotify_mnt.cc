#include "daemon/mount/fanotify_mnt.h"

#include <cstring>
#include <string>

#include "daemon/mount/mount_api.h"

namespace storwatch::daemon {
namespace {

// struct fanotify_event_metadata (metadata version 3).
struct Metadata {
  uint32_t event_len;
  uint8_t vers;
  uint8_t reserved;
  uint16_t metadata_len;
  uint64_t mask;
  int32_t fd;
  int32_t pid;
};
static_assert(sizeof(Metadata) == 24);
constexpr uint8_t kMetadataVersion = 3;

// struct fanotify_event_info_header, then (for the mount record) 4 bytes of padding and the id.
struct InfoHeader {
  uint8_t info_type;
  uint8_t pad;
  uint16_t len;
};
constexpr size_t kMntIdOffset = 8;

template <class T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

}  // namespace

Result<FanotifyMntBatch> parse_fanotify_mnt(std::span<const unsigned char> buf) {
  FanotifyMntBatch out;
  size_t pos = 0;
  while (pos < buf.size()) {
    size_t left = buf.size() - pos;
    if (left < sizeof(Metadata))
      return fail_invalid("fanotify: " + std::to_string(left) + " bytes left, shorter than an event header");
    auto md = load<Metadata>(buf.data() + pos);
    if (md.vers != kMetadataVersion)
      return fail_invalid("fanotify: metadata version " + std::to_string(md.vers) + ", want 3");
    if (md.metadata_len < sizeof(Metadata) || md.event_len < md.metadata_len || md.event_len > left)
      return fail_invalid("fanotify: event length " + std::to_string(md.event_len) + " (header " +
                          std::to_string(md.metadata_len) + ") does not fit the " +
                          std::to_string(left) + " bytes left");
    const unsigned char* ev = buf.data() + pos;
    pos += md.event_len;
    if (md.mask & mntapi::kFanQOverflow) {
      out.overflow = true;
      continue;
    }
    bool found = false;
    size_t ipos = md.metadata_len;
    while (ipos + sizeof(InfoHeader) <= md.event_len) {
      auto h = load<InfoHeader>(ev + ipos);
      if (h.len < sizeof(InfoHeader) || h.len > md.event_len - ipos)
        return fail_invalid("fanotify: info record length " + std::to_string(h.len) + " does not fit its event");
      if (h.info_type == mntapi::kFanEventInfoTypeMnt && !found) {
        if (h.len < kMntIdOffset + sizeof(uint64_t))
          return fail_invalid("fanotify: mount record of " + std::to_string(h.len) + " bytes");
        out.records.push_back({md.mask & (mntapi::kFanMntAttach | mntapi::kFanMntDetach),
                               load<uint64_t>(ev + ipos + kMntIdOffset)});
        found = true;
      }
      ipos += h.len;
    }
    if (!found) ++out.skipped;
  }
  return out;
}

}  // namespace storwatch::daemon
