# Block-layer error merging (BlockErrorMerger with a FakeClock, fed also from captured kmsg lines)
# and the uevent parser (issue 7). `ctest -R block`.
storwatch_add_test(block_test SOURCES daemon/block_test.cc LIBS storwatch_daemon PREFIX "block.")
