# Block-layer error merging (BlockErrorMerger with a FakeClock, fed also from captured kmsg lines)
# and the uevent parser (issue 7); the eBPF block error source's status, op and record mapping
# (no BPF loaded). `ctest -R block`.
storwatch_add_test(block_test SOURCES daemon/block_test.cc daemon/bpf_block_test.cc LIBS storwatch_daemon
  PREFIX "block.")
