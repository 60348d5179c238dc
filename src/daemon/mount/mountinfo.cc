#include "daemon/mount/mountinfo.h"

#include <charconv>
#include <string>
#include <system_error>

namespace storwatch::daemon {
namespace {

// Fields 1-6 come before the optional fields; fstype, source and super options after " - ".
constexpr size_t kFixedFields = 6;
constexpr size_t kTailFields = 3;
// Error messages quote the offending field; a fuzzed or garbled field can be arbitrarily long.
constexpr size_t kQuoteMax = 40;

// Filesystems that hold no user data (kernel interfaces), plus images and media that are
// read-only by construction (squashfs, erofs, iso9660, udf): neither can fill up or turn
// read-only, so watching them only adds noise. ramfs, tmpfs, overlay and fuse.* hold user data
// and stay watched.
constexpr std::string_view kPseudoFstypes[] = {
    "autofs",   "binfmt_misc", "bpf",   "configfs", "cpuset",     "debugfs",    "devpts",
    "devtmpfs", "efivarfs",    "erofs", "fusectl",  "hugetlbfs",  "iso9660",    "mqueue",
    "nfsd",     "nsfs",        "proc",  "pstore",   "rpc_pipefs", "securityfs", "selinuxfs",
    "smackfs",  "squashfs",    "sysfs", "tracefs",  "udf",
};

// Quotes a field for an error message: bounded, with unprintable bytes as \xNN so a log line
// stays one line.
std::string quote(std::string_view s) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < kQuoteMax; ++i) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (s.size() > kQuoteMax) out += "...";
  out += "'";
  return out;
}

bool is_octal(char c) { return c >= '0' && c <= '7'; }

// The kernel's mangle() writes space, tab, newline and backslash as \ooo. Any \ooo that fits a
// byte is decoded, as util-linux does; a backslash not followed by one is kept literally, so
// unexpected input degrades to the raw text instead of failing the whole table.
std::string unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && is_octal(s[i + 1]) && is_octal(s[i + 2]) &&
        is_octal(s[i + 3])) {
      int v = (s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0');
      if (v <= 0xff) {
        out += static_cast<char>(v);
        i += 3;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

template <class T>
bool parse_number(std::string_view s, T& out) {
  if (s.empty()) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && end == s.data() + s.size();
}

bool parse_dev(std::string_view s, uint32_t& major, uint32_t& minor) {
  size_t colon = s.find(':');
  if (colon == std::string_view::npos) return false;
  return parse_number(s.substr(0, colon), major) && parse_number(s.substr(colon + 1), minor);
}

// True when the comma-separated list holds `opt`: compared by name alone ("errors" matches
// "errors=remount-ro"), or whole when `opt` itself carries "=value".
bool has_option(std::string_view list, std::string_view opt) {
  if (opt.empty()) return false;
  bool with_value = opt.find('=') != std::string_view::npos;
  while (!list.empty()) {
    size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    std::string_view name = with_value ? item : item.substr(0, item.find('='));
    if (name == opt) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// The kernel separates fields with exactly one space, so splitting on each space keeps an empty
// source ("tmpfs  rw") as an empty field instead of shifting the ones after it.
std::vector<std::string_view> split_fields(std::string_view line) {
  std::vector<std::string_view> fields;
  while (true) {
    size_t sp = line.find(' ');
    fields.push_back(line.substr(0, sp));
    if (sp == std::string_view::npos) break;
    line.remove_prefix(sp + 1);
  }
  return fields;
}

// Parses one line; errors carry no prefix so the callers can say which line it was.
Result<MountEntry> parse_line(std::string_view line) {
  std::vector<std::string_view> f = split_fields(line);
  size_t sep = kFixedFields;
  while (sep < f.size() && f[sep] != "-") ++sep;
  if (f.size() < kFixedFields + 1 + kTailFields)
    return fail_invalid("too few fields (" + std::to_string(f.size()) + ", want at least " +
                        std::to_string(kFixedFields + 1 + kTailFields) + ")");
  if (sep == f.size()) return fail_invalid("no ' - ' separator after the optional fields");
  if (f.size() - sep - 1 != kTailFields)
    return fail_invalid("want 3 fields after ' - ', got " + std::to_string(f.size() - sep - 1));

  MountEntry m;
  if (!parse_number(f[0], m.mnt_id)) return fail_invalid("bad mount id " + quote(f[0]));
  if (!parse_number(f[1], m.parent_id)) return fail_invalid("bad parent id " + quote(f[1]));
  if (!parse_dev(f[2], m.major, m.minor))
    return fail_invalid("bad device " + quote(f[2]) + " (want major:minor)");
  if (f[3].empty()) return fail_invalid("empty root");
  if (f[4].empty()) return fail_invalid("empty mount point");
  if (f[5].empty()) return fail_invalid("empty mount options");
  m.root = unescape(f[3]);
  m.mount_point = unescape(f[4]);
  // Options stay escaped: unescaping would turn an escaped comma inside a value (an overlay
  // lowerdir, say) into a separator.
  m.mount_options = std::string(f[5]);
  for (size_t i = kFixedFields; i < sep; ++i) {
    if (f[i].empty()) return fail_invalid("empty optional field");
    m.optional_fields.emplace_back(f[i]);
  }
  if (f[sep + 1].empty()) return fail_invalid("empty filesystem type");
  m.fstype = unescape(f[sep + 1]);
  m.source = unescape(f[sep + 2]);
  m.super_options = std::string(f[sep + 3]);
  return m;
}

}  // namespace

bool MountEntry::read_only() const {
  return has_option(mount_options, "ro") || has_option(super_options, "ro");
}

bool MountEntry::has_super_option(std::string_view opt) const {
  return has_option(super_options, opt);
}

Result<std::vector<MountEntry>> parse_mountinfo(std::string_view text) {
  std::vector<MountEntry> out;
  size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    // The kernel never writes an empty line; tolerating them costs nothing and lets a fixture
    // end with a blank line.
    if (line.empty()) continue;
    auto m = parse_line(line);
    if (!m)
      return fail_invalid("mountinfo line " + std::to_string(line_no) + ": " + m.error().context());
    out.push_back(std::move(*m));
  }
  return out;
}

Result<MountEntry> parse_mountinfo_line(std::string_view line) {
  auto m = parse_line(line);
  if (!m) return fail_invalid("mountinfo line: " + m.error().context());
  return m;
}

bool is_pseudo_fstype(std::string_view fstype) {
  // cgroup, cgroup2 and whatever cgroup version comes next hold no user data.
  if (fstype.starts_with("cgroup")) return true;
  for (std::string_view p : kPseudoFstypes)
    if (p == fstype) return true;
  return false;
}

bool watched_by_default(const MountEntry& m) {
  return !is_pseudo_fstype(m.fstype) && !m.read_only();
}

}  // namespace storwatch::daemon
