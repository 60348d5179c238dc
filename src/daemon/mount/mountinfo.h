// Parsing /proc/<pid>/mountinfo (proc(5)) into MountEntry records, and the default policy of which
// filesystems storwatch watches. Pure functions over text: tests feed fixture strings.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <storwatch/result.h>

namespace storwatch::daemon {

struct MountEntry {
  uint64_t mnt_id = 0;        // field 1: the reusable mount id
  uint64_t parent_id = 0;     // field 2
  uint32_t major = 0;         // field 3: the superblock's st_dev
  uint32_t minor = 0;
  std::string root;           // field 4, unescaped
  std::string mount_point;    // field 5, unescaped (\040 -> space, \011, \012, \134)
  std::string mount_options;  // field 6, per-mount options ("rw,nosuid,relatime")
  std::vector<std::string> optional_fields;  // "shared:1", "master:2", ...
  std::string fstype;         // after " - "
  std::string source;         // unescaped
  std::string super_options;  // per-superblock options ("rw,errors=remount-ro", "emergency_ro"...)
  // The 64-bit unique mount id (statmount, listmount, fanotify) when the reader knew it; 0 when
  // not (mountinfo has no such field). Not part of a mount's identity or state comparisons.
  uint64_t unique_id = 0;

  bool read_only() const;       // "ro" in mount options or in super options
  bool has_super_option(std::string_view opt) const;  // exact option name, with or without "=value"
};

// Parses the whole file. A malformed line fails the parse with its line number: mountinfo comes
// from the kernel, so a bad line means we misunderstand the format, not that the input is hostile.
[[nodiscard]] Result<std::vector<MountEntry>> parse_mountinfo(std::string_view text);
[[nodiscard]] Result<MountEntry> parse_mountinfo_line(std::string_view line);

// The embedded default: every real, writable filesystem; not proc, sysfs, cgroup, devpts, debugfs,
// tracefs, squashfs, erofs, iso9660 and the other pseudo filesystems, nor read-only mounts.
bool is_pseudo_fstype(std::string_view fstype);
bool watched_by_default(const MountEntry& m);

}  // namespace storwatch::daemon
