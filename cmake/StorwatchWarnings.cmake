# Warnings and sanitizers live on INTERFACE targets that every storwatch target links, so no
# global flags are edited.
add_library(storwatch_warnings INTERFACE)
target_compile_options(storwatch_warnings INTERFACE -Wall -Wextra $<$<CXX_COMPILER_ID:GNU>:-Wshadow=local> -Wno-missing-field-initializers
  $<$<BOOL:${STORWATCH_WERROR}>:-Werror>)

if(STORWATCH_SANITIZE)
  target_compile_options(storwatch_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  target_link_options(storwatch_warnings INTERFACE -fsanitize=address,undefined)
endif()

# Fuzzing builds instrument every library for coverage; the fuzz targets add the libFuzzer main.
if(STORWATCH_FUZZ)
  target_compile_options(storwatch_warnings INTERFACE -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
    -fno-omit-frame-pointer)
  target_link_options(storwatch_warnings INTERFACE -fsanitize=address,undefined)
endif()
