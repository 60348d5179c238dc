// Readable output of the storwatch CLI: turns the daemon's reply objects (docs/protocol.md) into
// text. Pure functions over JSON that never throw: a field missing or of the wrong type prints as
// unknown instead of aborting the command, so an older or newer daemon still gets useful output.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace storwatch::cli {

// 1536 -> "1.5K", 2147483648 -> "2.0G" (powers of 1024, as df -h prints them).
std::string human_bytes(uint64_t bytes);
// 131072 -> "131k" (powers of 1000: inode counts).
std::string human_count(uint64_t n);
// A 20-character usage bar, "[##########..........]"; any usage shows at least one '#'.
std::string usage_bar(double percent_used);

// One filesystem of ListFilesystems/GetFilesystem as a block of lines (header, blocks, inodes,
// levels, health), each ending in '\n'.
std::string format_filesystem(const nlohmann::json& fs);
// The rules of ListRules/AddRule/RemoveRule ("no rules" when empty).
std::string format_rules(const nlohmann::json& rules);
// The mounts of ListMounts as a table with a header line.
std::string format_mounts(const nlohmann::json& mounts);
// The Doctor reply.
std::string format_doctor(const nlohmann::json& doctor);
// The "sinks" section of a Doctor reply (one line per sink); empty when there are none.
std::string format_sinks(const nlohmann::json& doctor);

}  // namespace storwatch::cli
