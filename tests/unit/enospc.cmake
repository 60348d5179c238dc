# The eBPF ENOSPC/EDQUOT source's user-space half (issue 5): records and fold-map sweeps into
# events with exact counts, inodes from statfs, path and cgroup resolution (no BPF loaded; the
# program is tested end to end by tests/integration/enospc_test.py). `ctest -R enospc`.
storwatch_add_test(enospc_test SOURCES enospc_test.cc LIBS storwatch_daemon PREFIX "enospc.")
