#include "daemon/source/kmsg_parser.h"

#include <cerrno>
#include <limits>

namespace storwatch::daemon {

namespace {

// ---- string helpers (string_view only: nothing here may read past the input) ----

bool consume(std::string_view& s, std::string_view prefix) {
  if (s.substr(0, prefix.size()) != prefix) return false;
  s.remove_prefix(prefix.size());
  return true;
}

bool starts_with(std::string_view s, std::string_view prefix) { return s.substr(0, prefix.size()) == prefix; }

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

bool contains(std::string_view s, std::string_view needle) { return s.find(needle) != std::string_view::npos; }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

// Case-insensitive find; `needle` must be lower case.
size_t ifind(std::string_view hay, std::string_view needle, size_t from = 0) {
  if (needle.empty()) return from <= hay.size() ? from : std::string_view::npos;
  for (size_t i = from; i + needle.size() <= hay.size(); ++i) {
    size_t j = 0;
    while (j < needle.size() && lower(hay[i + j]) == needle[j]) ++j;
    if (j == needle.size()) return i;
  }
  return std::string_view::npos;
}

bool icontains(std::string_view hay, std::string_view needle) { return ifind(hay, needle) != std::string_view::npos; }

bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }
bool is_digit(char c) { return c >= '0' && c <= '9'; }
bool is_hex(char c) { return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

// `word` (lower case) as a whole word: "error" matches "I/O error," but not "errors=".
bool has_word(std::string_view hay, std::string_view word) {
  for (size_t at = ifind(hay, word); at != std::string_view::npos; at = ifind(hay, word, at + 1)) {
    bool left = at == 0 || !is_alpha(hay[at - 1]);
    size_t end = at + word.size();
    bool right = end >= hay.size() || !is_alpha(hay[end]);
    if (left && right) return true;
  }
  return false;
}

// Leading decimal digits as a number; nullopt if there are none or the value overflows.
std::optional<uint64_t> consume_u64(std::string_view& s) {
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && is_digit(s[i])) {
    uint64_t d = static_cast<uint64_t>(s[i] - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
    ++i;
  }
  if (i == 0) return std::nullopt;
  s.remove_prefix(i);
  return v;
}

std::optional<uint64_t> parse_u64(std::string_view s) {
  auto v = consume_u64(s);
  if (!v || !s.empty()) return std::nullopt;
  return v;
}

// "0x1a2b" (the 0x is required) as a number.
std::optional<uint64_t> consume_hex(std::string_view& s) {
  if (!consume(s, "0x")) return std::nullopt;
  size_t i = 0;
  uint64_t v = 0;
  while (i < s.size() && is_hex(s[i])) {
    if (v >> 60) return std::nullopt;
    char c = lower(s[i]);
    v = v * 16 + static_cast<uint64_t>(is_digit(c) ? c - '0' : c - 'a' + 10);
    ++i;
  }
  if (i == 0) return std::nullopt;
  s.remove_prefix(i);
  return v;
}

std::optional<uint32_t> to_u32(std::optional<uint64_t> v) {
  if (!v || *v > std::numeric_limits<uint32_t>::max()) return std::nullopt;
  return static_cast<uint32_t>(*v);
}

// Block device names as the kernel prints them (s_id, disk_name): loop0, sda1, nvme0n1p2, dm-3,
// md127, mmcblk0p1. Anything printable without separators, at most 64 bytes.
bool valid_device(std::string_view d) {
  if (d.empty() || d.size() > 64) return false;
  for (char c : d) {
    auto u = static_cast<unsigned char>(c);
    if (u <= ' ' || u >= 0x7f || c == '(' || c == ')' || c == ',' || c == ':' || c == ';' || c == '\\') return false;
  }
  return true;
}

// Reads a device name up to the first of `stops` (or the end) and checks it.
std::optional<std::string> consume_device(std::string_view& s, std::string_view stops) {
  size_t end = s.find_first_of(stops);
  std::string_view d = s.substr(0, end);
  if (!valid_device(d)) return std::nullopt;
  s.remove_prefix(d.size());
  return std::string(d);
}

// A kernel symbol as %pS prints it: "xfs_imap_to_bp+0x5c/0xe0" or "xfs_fs_goingdown+0x63/0xb0
// [xfs]": the name before '+'.
std::string symbol_name(std::string_view sym) {
  size_t end = sym.find_first_of("+ ");
  return std::string(sym.substr(0, end));
}

// ---- errno ----

bool plausible_errno(uint64_t v) { return v > 0 && v < 4096; }

// The errno a message states: "errno=-5", "error -5", "error=-5", "error 117", ": -5" at the
// end. "I/O error 10" is a block status, not an errno: it means EIO.
int stated_errno(std::string_view msg) {
  for (std::string_view key : {"errno=-", "error=-"}) {
    size_t at = ifind(msg, key);
    if (at != std::string_view::npos) {
      std::string_view rest = msg.substr(at + key.size());
      if (auto v = consume_u64(rest); v && plausible_errno(*v)) return static_cast<int>(*v);
    }
  }
  for (size_t at = ifind(msg, "error "); at != std::string_view::npos; at = ifind(msg, "error ", at + 1)) {
    if (at > 0 && is_alpha(msg[at - 1])) continue;  // "xerror "
    std::string_view rest = msg.substr(at + 6);
    bool negative = consume(rest, "-");
    auto v = consume_u64(rest);
    if (!v || !plausible_errno(*v)) continue;
    if (!rest.empty() && (is_alpha(rest[0]) || rest[0] == '_')) continue;
    if (!negative && at >= 4 && lower(msg[at - 4]) == 'i' && msg[at - 3] == '/' && lower(msg[at - 2]) == 'o')
      return EIO;  // ext4_end_bio: "I/O error 10 writing to inode" (10 = BLK_STS_IOERR)
    return static_cast<int>(*v);
  }
  // btrfs: "open_ctree failed: -5", "...: -5" at the very end.
  size_t colon = msg.rfind(": -");
  if (colon != std::string_view::npos) {
    std::string_view rest = msg.substr(colon + 3);
    if (auto v = parse_u64(rest); v && plausible_errno(*v)) return static_cast<int>(*v);
  }
  return 0;
}

// The errno a message implies by its words, or `fallback`.
int implied_errno(std::string_view msg, int fallback) {
  if (icontains(msg, "checksum") || icontains(msg, "csum") || icontains(msg, "crc")) return EBADMSG;
  if (icontains(msg, "corrupt")) return EUCLEAN;
  if (icontains(msg, "i/o error") || icontains(msg, "io error") || icontains(msg, "io failure") ||
      icontains(msg, "unable to read") || icontains(msg, "read error") || icontains(msg, "write error") ||
      icontains(msg, "writeback error"))
    return EIO;
  return fallback;
}

int guess_errno(std::string_view msg, int fallback) {
  int e = stated_errno(msg);
  return e ? e : implied_errno(msg, fallback);
}

FsErrorReport make_report(FsErrorReport::Kind kind, std::string device, const KmsgRecord& rec) {
  FsErrorReport r;
  r.kind = kind;
  r.source = "kmsg";
  r.device_name = std::move(device);
  r.message = rec.text;
  return r;
}

// "FUNC:LINE: " at the start of `s` (ext4's location prefix).
bool consume_location(std::string_view& s, FsErrorReport& r) {
  std::string_view t = s;
  size_t colon = t.find(':');
  if (colon == 0 || colon == std::string_view::npos || colon > 128) return false;
  std::string_view func = t.substr(0, colon);
  for (char c : func)
    if (!(is_alpha(c) || is_digit(c) || c == '_' || c == '.')) return false;
  t.remove_prefix(colon + 1);
  auto line = consume_u64(t);
  if (!line || *line > 10'000'000) return false;
  if (!consume(t, ": ") && !(t.empty() || consume(t, ":"))) return false;
  r.function = std::string(func);
  r.line = static_cast<int>(*line);
  s = t;
  return true;
}

// ext4's "inode #12: block 1234: comm ls: path /x: " fields, in any order, then the message.
void consume_ext4_fields(std::string_view& s, FsErrorReport& r) {
  for (int guard = 0; guard < 8; ++guard) {
    std::string_view t = s;
    if (consume(t, "inode #") || consume(t, "inode ")) {
      auto ino = consume_u64(t);
      if (!ino || !(consume(t, ": ") || consume(t, ":"))) return;
      r.inode = *ino;
    } else if (consume(t, "group ")) {
      if (!consume_u64(t) || !consume(t, ", ")) return;
    } else if (consume(t, "block ") || consume(t, "lblock ")) {
      if (!consume_u64(t) || !(consume(t, ": ") || consume(t, ":"))) return;
    } else if (consume(t, "comm ")) {
      size_t end = t.find(": ");
      if (end == std::string_view::npos) return;
      r.comm = std::string(t.substr(0, end));
      t.remove_prefix(end + 2);
    } else if (consume(t, "path ")) {
      size_t end = t.find(": ");
      if (end == std::string_view::npos) return;
      r.path = std::string(t.substr(0, end));
      t.remove_prefix(end + 2);
    } else {
      return;
    }
    s = t;
  }
}

// "... inode 92 ..." anywhere in a message.
std::optional<uint64_t> inode_in_text(std::string_view s) {
  for (size_t at = s.find("inode "); at != std::string_view::npos; at = s.find("inode ", at + 1)) {
    if (at > 0 && (is_alpha(s[at - 1]) || s[at - 1] == '_')) continue;
    std::string_view t = s.substr(at + 6);
    consume(t, "#");
    if (auto v = consume_u64(t)) return v;
  }
  return std::nullopt;
}

// ---- ext4 and jbd2 ----

// "EXT4-fs error (device X): F:L: ..." and "EXT4-fs error (device X) in F:L: IO failure".
std::optional<FsErrorReport> ext4_error(std::string_view s, const KmsgRecord& rec) {
  auto dev = consume_device(s, ") ");
  if (!dev) return std::nullopt;
  FsErrorReport r = make_report(FsErrorReport::Kind::error, *dev, rec);
  if (consume(s, ") in ")) {  // __ext4_std_error: the message is ext4_decode_error()'s
    if (!consume_location(s, r)) return std::nullopt;
    if (s == "Corrupt filesystem")
      r.err = EUCLEAN;
    else if (s == "Filesystem failed CRC")
      r.err = EBADMSG;
    else if (s == "IO failure")
      r.err = EIO;
    else if (s == "Out of memory")
      r.err = ENOMEM;
    else if (s == "Journal has aborted" || s == "Readonly filesystem")
      r.err = EROFS;
    else
      r.err = guess_errno(s, EUCLEAN);
    return r;
  }
  if (!consume(s, "): ")) return std::nullopt;
  consume_location(s, r);
  consume_ext4_fields(s, r);
  // Without a stated cause ext4 reports EFSCORRUPTED (EUCLEAN) to fanotify: do the same.
  r.err = guess_errno(s, EUCLEAN);
  return r;
}

// Warnings are reported only when they carry an I/O error ("error -5 reading directory block",
// "I/O error 10 writing to inode"): the rest (htree full, mount advice) are not errors.
std::optional<FsErrorReport> ext4_warning(std::string_view s, const KmsgRecord& rec) {
  auto dev = consume_device(s, ") ");
  if (!dev || !consume(s, "): ")) return std::nullopt;
  FsErrorReport r = make_report(FsErrorReport::Kind::error, *dev, rec);
  consume_location(s, r);
  consume_ext4_fields(s, r);
  int e = stated_errno(s);
  if (!e && icontains(s, "i/o error")) e = EIO;
  if (!e) return std::nullopt;
  r.err = e;
  if (!r.inode) r.inode = inode_in_text(s);
  return r;
}

// "EXT4-fs (X): ..." (ext4_msg).
std::optional<FsErrorReport> ext4_msg(std::string_view s, const KmsgRecord& rec) {
  auto dev = consume_device(s, ") ");
  if (!dev || !consume(s, "): ")) return std::nullopt;
  if (s == "Remounting filesystem read-only" || s == "Remounting filesystem read-only.") {
    FsErrorReport r = make_report(FsErrorReport::Kind::readonly, *dev, rec);
    r.cause = "errors";
    return r;
  }
  if (starts_with(s, "shut down requested")) return make_report(FsErrorReport::Kind::shutdown, *dev, rec);
  // Counters printed at mount and daily ("error count since last fsck: 3", "initial error at
  // time ...", "last error at time ..."): the sysfs source reports those, once.
  if (starts_with(s, "error count since last fsck") || starts_with(s, "initial error at time") ||
      starts_with(s, "last error at time"))
    return std::nullopt;
  // Other messages: errors only at KERN_ERR or worse and only if they speak of an error
  // ("I/O error while writing superblock", "... potential data loss! (inode 92, error -5)"), so
  // that mount-option complaints ("Unrecognized mount option") are not taken for fs errors.
  if (rec.priority > 3) return std::nullopt;
  if (!(has_word(s, "error") || icontains(s, "i/o") || icontains(s, "io failure") || icontains(s, "corrupt") ||
        icontains(s, "checksum") || icontains(s, "data loss")))
    return std::nullopt;
  FsErrorReport r = make_report(FsErrorReport::Kind::error, *dev, rec);
  r.err = guess_errno(s, 0);
  r.inode = inode_in_text(s);
  return r;
}

// The filesystem device in a jbd2 journal name: "loop0-8" (internal journal, inode 8) gives
// "loop0"; an external journal's name is its own device and is returned as is.
std::optional<std::string> journal_device(std::string_view token) {
  while (!token.empty() && (token.back() == '.' || token.back() == ',')) token.remove_suffix(1);
  size_t dash = token.rfind('-');
  if (dash != std::string_view::npos && dash > 0 && parse_u64(token.substr(dash + 1))) token = token.substr(0, dash);
  if (!valid_device(token)) return std::nullopt;
  return std::string(token);
}

std::optional<FsErrorReport> jbd2_abort(std::string_view s, const KmsgRecord& rec) {
  auto dev = journal_device(s);
  if (!dev) return std::nullopt;
  return make_report(FsErrorReport::Kind::shutdown, *dev, rec);
}

// "JBD2: I/O error when updating journal superblock for loop0-8.", "JBD2: Detected IO errors
// while flushing file data on loop0-8", "JBD2: journal transaction 5 on loop0-8 is corrupt."
std::optional<FsErrorReport> jbd2_line(std::string_view s, const KmsgRecord& rec) {
  if (rec.priority > 3) return std::nullopt;
  if (!(has_word(s, "error") || has_word(s, "errors") || icontains(s, "corrupt"))) return std::nullopt;
  // The journal name is the token after " on " or " for ".
  std::optional<std::string> dev;
  for (std::string_view key : {" for ", " on "}) {
    size_t at = s.rfind(key);
    if (at == std::string_view::npos) continue;
    std::string_view t = s.substr(at + key.size());
    t = t.substr(0, t.find(' '));
    if (contains(t, "-") && (dev = journal_device(t))) break;
  }
  if (!dev) return std::nullopt;
  FsErrorReport r = make_report(FsErrorReport::Kind::error, *dev, rec);
  r.err = guess_errno(s, EIO);
  return r;
}

// ---- xfs ----

std::optional<FsErrorReport> xfs_line(std::string_view s, const KmsgRecord& rec) {
  auto dev = consume_device(s, ") ");
  if (!dev || !consume(s, "): ")) return std::nullopt;
  using Kind = FsErrorReport::Kind;
  if (consume(s, "Metadata corruption detected at ") || consume(s, "Metadata CRC error detected at ")) {
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    r.err = contains(rec.text, "CRC error") ? EBADMSG : EUCLEAN;
    r.function = symbol_name(s.substr(0, s.find(',')));
    size_t at = s.find(", inode 0x");
    if (at != std::string_view::npos) {
      std::string_view t = s.substr(at + 8);
      if (auto ino = consume_hex(t)) r.inode = *ino;
    }
    return r;
  }
  if (starts_with(s, "Corruption detected.")) {
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    r.err = EUCLEAN;
    return r;
  }
  if (consume(s, "metadata I/O error in \"")) {
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    size_t q = s.find('"');
    if (q != std::string_view::npos) r.function = symbol_name(s.substr(0, q));
    r.err = guess_errno(s, EIO);
    return r;
  }
  if (starts_with(s, "log I/O error")) {
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    r.err = guess_errno(s, EIO);
    return r;
  }
  if (consume(s, "Internal error ")) {  // XFS_ERROR_REPORT / XFS_CORRUPTION_ERROR
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    size_t at = s.find("Caller ");
    if (at != std::string_view::npos) r.function = symbol_name(s.substr(at + 7));
    r.err = EUCLEAN;
    return r;
  }
  if (contains(s, "Shutting down filesystem") || starts_with(s, "Filesystem has been shut down") ||
      starts_with(s, "User initiated shutdown received") ||
      starts_with(s, "Please unmount the filesystem and rectify the problem") ||
      starts_with(s, "xfs_do_force_shutdown(")) {
    FsErrorReport r = make_report(Kind::shutdown, *dev, rec);
    size_t at = s.find(" detected at ");
    if (at != std::string_view::npos) r.function = symbol_name(s.substr(at + 13));
    return r;
  }
  return std::nullopt;
}

// ---- btrfs ----

// "bdev /dev/loop1 errs: wr 0, rd 1, flush 0, corrupt 0, gen 0": the device's error counters
// after one of them rose. Which one rose is not said; the errno is guessed from which are set.
int btrfs_dev_stats_errno(std::string_view s) {
  uint64_t v[5] = {0, 0, 0, 0, 0};
  const std::string_view keys[5] = {"wr ", "rd ", "flush ", "corrupt ", "gen "};
  size_t at = s.find("errs: ");
  if (at == std::string_view::npos) return 0;
  std::string_view t = s.substr(at + 6);
  for (int i = 0; i < 5; ++i) {
    if (!consume(t, keys[i])) return 0;
    auto n = consume_u64(t);
    if (!n) return 0;
    v[i] = *n;
    if (i < 4 && !consume(t, ", ")) return 0;
  }
  bool io = v[0] || v[1] || v[2];
  if (io && !v[3] && !v[4]) return EIO;
  if (!io && v[3] && !v[4]) return EBADMSG;
  if (!io && !v[3] && v[4]) return EUCLEAN;
  return 0;
}

std::optional<uint64_t> btrfs_inode(std::string_view s) {
  for (std::string_view key : {" ino ", " inode ", "(ino ", "(inode "}) {
    size_t at = s.find(key);
    if (at == std::string_view::npos) continue;
    std::string_view t = s.substr(at + key.size());
    if (auto v = consume_u64(t)) return v;
  }
  return std::nullopt;
}

// "(device loop1)" or "(device loop1 state EA)" then ": " or ") in ".
std::optional<std::string> btrfs_device(std::string_view& s) {
  if (!consume(s, "(device ")) return std::nullopt;
  auto dev = consume_device(s, ") ");
  if (!dev) return std::nullopt;
  if (consume(s, " state ")) {
    size_t end = s.find(')');
    if (end == std::string_view::npos || end > 16) return std::nullopt;
    s.remove_prefix(end);
  }
  if (!consume(s, ")")) return std::nullopt;
  return dev;
}

std::optional<FsErrorReport> btrfs_line(std::string_view s, const KmsgRecord& rec) {
  using Kind = FsErrorReport::Kind;
  if (consume(s, ": error ")) {  // __btrfs_handle_fs_error: "BTRFS: error (device X) in F:L: errno=-5 IO failure"
    auto dev = btrfs_device(s);
    if (!dev) return std::nullopt;
    FsErrorReport r = make_report(Kind::error, *dev, rec);
    if (consume(s, " in ")) consume_location(s, r);
    r.err = guess_errno(s, EIO);
    return r;
  }
  if (!consume(s, " ")) return std::nullopt;
  size_t sp = s.find(' ');
  if (sp == std::string_view::npos) return std::nullopt;
  std::string_view level = s.substr(0, sp);
  s.remove_prefix(sp + 1);
  auto dev = btrfs_device(s);
  if (!dev || !consume(s, ": ")) return std::nullopt;
  if (level == "info") {
    if (starts_with(s, "forced readonly")) {
      FsErrorReport r = make_report(Kind::readonly, *dev, rec);
      r.cause = "errors";
      return r;
    }
    return std::nullopt;  // "read error corrected: ..." and mount chatter
  }
  bool dev_stats = contains(s, " errs: wr ");
  if (level == "warning") {
    bool wanted = dev_stats || starts_with(s, "csum failed") || starts_with(s, "checksum verify failed") ||
                  icontains(s, "i/o error") || starts_with(s, "bad tree block") || icontains(s, "corrupt");
    if (!wanted) return std::nullopt;
  } else if (level != "error" && level != "critical" && level != "alert" && level != "emergency") {
    return std::nullopt;
  }
  FsErrorReport r = make_report(Kind::error, *dev, rec);
  r.err = dev_stats ? btrfs_dev_stats_errno(s) : guess_errno(s, 0);
  if (!dev_stats) r.inode = btrfs_inode(s);
  return r;
}

// ---- generic lines ----

// iomap: "loop1: writeback error on inode 142, offset 0, sector 592".
std::optional<FsErrorReport> writeback_error(std::string_view s, const KmsgRecord& rec) {
  size_t at = s.find(": writeback error on inode ");
  if (at == std::string_view::npos || !valid_device(s.substr(0, at))) return std::nullopt;
  FsErrorReport r = make_report(FsErrorReport::Kind::error, std::string(s.substr(0, at)), rec);
  std::string_view t = s.substr(at + 27);
  if (auto ino = consume_u64(t)) r.inode = *ino;
  r.err = EIO;
  return r;
}

// "NAME: N callbacks suppressed" split into NAME and N.
struct Suppressed {
  std::string_view name;
  uint64_t count;
};
std::optional<Suppressed> suppressed_line(std::string_view s) {
  constexpr std::string_view kTail = " callbacks suppressed";
  if (!ends_with(s, kTail)) return std::nullopt;
  s.remove_suffix(kTail.size());
  size_t colon = s.rfind(": ");
  if (colon == std::string_view::npos || colon == 0) return std::nullopt;
  auto n = parse_u64(s.substr(colon + 2));
  if (!n) return std::nullopt;
  return Suppressed{s.substr(0, colon), *n};
}

bool fs_ratelimit_name(std::string_view n) {
  for (std::string_view p : {"EXT4-fs", "ext4_", "__ext4_", "jbd2", "JBD2", "XFS", "xfs_", "BTRFS", "btrfs_", "_btrfs_",
                             "__btrfs_", "iomap_"})
    if (starts_with(n, p)) return true;
  return false;
}

bool block_ratelimit_name(std::string_view n) {
  return starts_with(n, "blk_") || n == "print_req_error" || n == "buffer_io_error" || starts_with(n, "end_buffer_") ||
         n == "__end_buffer_read_notouch";
}

// ---- block layer ----

struct BlkError {
  std::string_view name;
  const char* subtype;
  int err;
};
// The kernel's blk_errors[] names (block/blk-core.c), old and new.
constexpr BlkError kBlkErrors[] = {
    {"I/O", "io", EIO},
    {"critical medium", "medium", ENODATA},
    {"timeout", "timeout", ETIMEDOUT},
    {"recoverable transport", "transport", ENOLINK},
    {"critical target", "target", EREMOTEIO},
    {"critical nexus", "nexus", EBADE},
    {"reservation conflict", "reservation_conflict", EBADE},
    {"protection", "protection", EILSEQ},
    {"kernel resource", "kernel_resource", ENOMEM},
    {"device resource", "device_resource", EBUSY},
    {"critical space allocation", "no_space", ENOSPC},
    {"operation not supported", "not_supported", EOPNOTSUPP},
    {"nonblocking retry", "again", EAGAIN},
    {"device offline", "offline", ENODEV},
    {"dm internal retry", "dm_requeue", EREMCHG},
    {"open zones exceeded", "zone_open_resource", ETOOMANYREFS},
    {"active zones exceeded", "zone_active_resource", EOVERFLOW},
    {"duration limit exceeded", "duration_limit", ETIME},
    {"invalid", "invalid", EINVAL},
};

// "I/O error, dev loop0, sector 2048 op 0x0:(READ) flags 0x800 phys_seg 1 prio class 2"; older
// kernels prefix "blk_update_request: " and may stop after the sector.
std::optional<BlockErrorLine> request_error(std::string_view s) {
  for (std::string_view p : {"blk_update_request: ", "print_req_error: ", "end_request: "})
    if (consume(s, p)) break;
  size_t at = s.find(" error, dev ");
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view name = s.substr(0, at);
  const BlkError* kind = nullptr;
  for (const auto& e : kBlkErrors)
    if (e.name == name) kind = &e;
  if (!kind) return std::nullopt;
  s.remove_prefix(at + 12);
  BlockErrorLine b;
  b.subtype = kind->subtype;
  b.err = kind->err;
  auto dev = consume_device(s, ", ");
  if (!dev) return std::nullopt;
  b.device = *dev;
  if (!consume(s, ", sector ")) return std::nullopt;
  b.sector = consume_u64(s);
  if (!b.sector) return std::nullopt;
  if (consume(s, " op ")) {
    b.op_code = to_u32(consume_hex(s));
    if (consume(s, ":(")) {
      size_t end = s.find(')');
      if (end == std::string_view::npos || end > 32) return std::nullopt;
      b.op = std::string(s.substr(0, end));
      s.remove_prefix(end + 1);
    }
  }
  if (consume(s, " flags ")) b.flags = to_u32(consume_hex(s));
  if (consume(s, " phys_seg ")) b.phys_segments = to_u32(consume_u64(s));
  if (consume(s, " prio class ")) b.prio_class = to_u32(consume_u64(s));
  return b;
}

// fs/buffer.c: "Buffer I/O error on dev loop0, logical block 256, async page read" (or "lost
// async page write"); ext4's writeback: "Buffer I/O error on device loop0, logical block 8451".
std::optional<BlockErrorLine> buffer_error(std::string_view s) {
  bool ext4_write = false;
  if (!consume(s, "Buffer I/O error on dev ")) {
    if (!consume(s, "Buffer I/O error on device ")) return std::nullopt;
    ext4_write = true;  // printed by ext4's writeback completion only
  }
  BlockErrorLine b;
  b.subtype = "buffer";
  b.err = EIO;
  auto dev = consume_device(s, ", ");
  if (!dev || !consume(s, ", logical block ")) return std::nullopt;
  b.device = *dev;
  b.logical_block = consume_u64(s);
  if (!b.logical_block) return std::nullopt;
  if (consume(s, ", ")) {
    if (ends_with(s, "read"))
      b.op = "READ";
    else if (ends_with(s, "write"))
      b.op = "WRITE";
  } else if (ext4_write) {
    b.op = "WRITE";
  }
  return b;
}

}  // namespace

Result<KmsgRecord> parse_kmsg_record(std::string_view raw) {
  if (raw.empty()) return fail_invalid("empty kmsg record");
  size_t semi = raw.find(';');
  size_t nl = raw.find('\n');
  if (semi == std::string_view::npos || (nl != std::string_view::npos && nl < semi))
    return fail_invalid("kmsg record without ';'");
  std::string_view header = raw.substr(0, semi);
  std::string_view fields[4];
  for (int i = 0; i < 4; ++i) {
    size_t comma = header.find(',');
    if (i < 3 && comma == std::string_view::npos) return fail_invalid("kmsg record header has too few fields");
    fields[i] = header.substr(0, comma);
    header = comma == std::string_view::npos ? std::string_view() : header.substr(comma + 1);
  }
  // Fields after the flags (",caller=T123" with CONFIG_PRINTK_CALLER) are allowed and ignored.
  KmsgRecord rec;
  auto prefix = parse_u64(fields[0]);
  if (!prefix || *prefix > 1023) return fail_invalid("bad kmsg priority");
  rec.priority = static_cast<int>(*prefix & 7);
  rec.facility = static_cast<int>(*prefix >> 3);
  auto seq = parse_u64(fields[1]);
  auto usec = parse_u64(fields[2]);
  if (!seq || !usec) return fail_invalid("bad kmsg sequence number or timestamp");
  rec.seq = *seq;
  rec.usec = *usec;
  if (fields[3] == "c" || fields[3] == "+")
    rec.continuation = true;
  else if (fields[3] != "-")
    return fail_invalid("bad kmsg flags");
  std::string_view body = raw.substr(semi + 1);
  size_t end = body.find('\n');
  rec.text = std::string(body.substr(0, end));
  if (end == std::string_view::npos) return rec;
  body.remove_prefix(end + 1);
  while (!body.empty()) {
    size_t e = body.find('\n');
    std::string_view line = body.substr(0, e);
    body = e == std::string_view::npos ? std::string_view() : body.substr(e + 1);
    if (line.empty()) continue;
    if (line[0] != ' ') return fail_invalid("kmsg dictionary line does not start with a space");
    line.remove_prefix(1);
    size_t eq = line.find('=');
    if (eq == 0 || eq == std::string_view::npos) return fail_invalid("kmsg dictionary line without KEY=");
    rec.dict[std::string(line.substr(0, eq))] = std::string(line.substr(eq + 1));
  }
  return rec;
}

std::optional<FsErrorReport> parse_fs_line(const KmsgRecord& rec) {
  if (rec.facility != 0) return std::nullopt;  // written by a user process, not the kernel
  std::string_view s = rec.text;
  if (consume(s, "EXT4-fs error (device ")) return ext4_error(s, rec);
  if (consume(s, "EXT4-fs warning (device ")) return ext4_warning(s, rec);
  if (consume(s, "EXT4-fs (")) return ext4_msg(s, rec);
  if (consume(s, "Aborting journal on device ")) return jbd2_abort(s, rec);
  if (consume(s, "JBD2: ")) return jbd2_line(s, rec);
  if (consume(s, "XFS (")) return xfs_line(s, rec);
  if (consume(s, "BTRFS")) return btrfs_line(s, rec);
  if (auto sup = suppressed_line(s)) {
    if (!fs_ratelimit_name(sup->name)) return std::nullopt;
    FsErrorReport r = make_report(FsErrorReport::Kind::suppressed, "", rec);
    r.count = sup->count;
    r.function = std::string(sup->name);
    return r;
  }
  return writeback_error(s, rec);
}

std::optional<BlockErrorLine> parse_block_line(const KmsgRecord& rec) {
  if (rec.facility != 0) return std::nullopt;
  std::string_view s = rec.text;
  if (auto sup = suppressed_line(s)) {
    if (!block_ratelimit_name(sup->name)) return std::nullopt;
    BlockErrorLine b;
    b.subtype = "suppressed";
    b.count = sup->count;
    b.function = std::string(sup->name);
    return b;
  }
  if (starts_with(s, "Buffer I/O error on ")) return buffer_error(s);
  return request_error(s);
}

namespace {

// The hex number ("0x140") after `key` in `s` (" block ", " daddr ").
std::optional<uint64_t> hex_after(std::string_view s, std::string_view key) {
  size_t at = s.find(key);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view t = s.substr(at + key.size());
  return consume_hex(t);
}

}  // namespace

bool is_follow_up(const FsErrorReport& first, const FsErrorReport& next) {
  using Kind = FsErrorReport::Kind;
  if (first.device_name.empty() || first.device_name != next.device_name) return false;
  if (first.kind == Kind::shutdown && next.kind == Kind::shutdown) return true;
  if (first.kind != Kind::error || next.kind != Kind::error) return false;
  std::string_view a = first.message, b = next.message;
  if (starts_with(a, "BTRFS")) {
    // One checksum error, two lines: "csum failed ... ino 257" then the device's counters.
    if (contains(a, "csum failed") && contains(b, " errs: wr ")) return true;
    // "Transaction aborted (error -5)" (or the failing step) then where it was handled.
    if (starts_with(b, "BTRFS: error (device ") && first.function.empty() && !starts_with(a, "BTRFS: error "))
      return true;
    return false;
  }
  if (starts_with(a, "XFS (")) {
    // A verifier's "Metadata corruption detected at ..., xfs_inode block 0x140 ..." and then the
    // read's "metadata I/O error in ... at daddr 0x140 len 32 error 117".
    if (contains(a, " detected at ") && contains(b, "metadata I/O error") &&
        (next.err == EUCLEAN || next.err == EBADMSG)) {
      auto block = hex_after(a, " block ");
      auto daddr = hex_after(b, " daddr ");
      return block && daddr && *block == *daddr;
    }
    if (contains(a, "Internal error ") && contains(b, "Corruption detected.")) return true;
  }
  return false;
}

void merge_follow_up(FsErrorReport& first, const FsErrorReport& next) {
  if (first.err == 0) first.err = next.err;
  if (first.function.empty()) {
    first.function = next.function;
    first.line = next.line;
  }
  if (!first.inode) first.inode = next.inode;
}

}  // namespace storwatch::daemon
