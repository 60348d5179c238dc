// libFuzzer target for the configuration parser: TOML text from an administrator's file must never
// crash the daemon, only be refused with a message.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "daemon/config/config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto c = storwatch::daemon::parse_config(text, "fuzz");
  (void)c;
  auto d = storwatch::daemon::parse_duration(text);
  (void)d;
  return 0;
}
