# Block-layer I/O errors (kmsg fallback) and block device events (uevents) end to end (issue 7), as
# root with a real storwatchd and a FUSE-backed loop device (test_block.py). Included by
# tests/integration/CMakeLists.txt, which defines `it`. Takes about 40 seconds (the kernel's
# 5 s log rate limit is waited out between tests).
storwatch_add_script_test(integration.block
  COMMAND ${Python3_EXECUTABLE} ${it}/test_block.py TIMEOUT 240)
# The eBPF block_rq_error source (the default): exact sectors and counts, no double reports, no
# reports for unsupported discards, the fallback when it is turned off (test_block_bpf.py).
storwatch_add_script_test(integration.block_bpf
  COMMAND ${Python3_EXECUTABLE} ${it}/test_block_bpf.py TIMEOUT 240)
