// libFuzzer target for the /dev/kmsg parsers: the input is tried as one raw record
// (parse_kmsg_record, then the line parsers on the result) and, line by line, as the text of
// kernel records at each priority, so that the line parsers are reached without a valid header.
// Consecutive reports go through is_follow_up() and merge_follow_up() as KmsgSource does.
// Seeds: tests/fixtures/kmsg. Nothing here may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

#include "daemon/source/kmsg_parser.h"

using storwatch::daemon::FsErrorReport;
using storwatch::daemon::KmsgRecord;

namespace {

void exercise(const KmsgRecord& rec, std::optional<FsErrorReport>& prev) {
  auto fs = storwatch::daemon::parse_fs_line(rec);
  auto block = storwatch::daemon::parse_block_line(rec);
  if (block) (void)block->device.size();
  if (!fs) return;
  if (prev && storwatch::daemon::is_follow_up(*prev, *fs)) {
    storwatch::daemon::merge_follow_up(*prev, *fs);
    return;
  }
  prev = std::move(fs);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  std::optional<FsErrorReport> prev;

  if (auto rec = storwatch::daemon::parse_kmsg_record(input)) exercise(*rec, prev);

  // A fixture file is records separated by newlines: each line as a raw record, and each
  // line's text (after the first ';', or all of it) as a kernel line.
  std::string_view rest = input;
  int prio = 0;
  while (!rest.empty()) {
    size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    if (auto rec = storwatch::daemon::parse_kmsg_record(line)) exercise(*rec, prev);
    size_t semi = line.find(';');
    KmsgRecord k;
    k.priority = prio;
    k.text = std::string(semi == std::string_view::npos ? line : line.substr(semi + 1));
    exercise(k, prev);
    prio = (prio + 1) % 8;
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  return 0;
}
