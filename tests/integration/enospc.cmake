# The eBPF ENOSPC/EDQUOT probe end to end (issue 5), as root with a real storwatchd: buffered and
# O_DIRECT writes, file and directory creation until ENOSPC on loop-mounted ext4, xfs, btrfs and on
# tmpfs by a non-root process; EDQUOT from the FUSE TestFs; a five-second retry loop folded with
# exact counts; io_uring; the statfs-based space.enospc folded into the probe's; the configuration
# switch; a daemon without the BPF capabilities.
# Included by tests/integration/CMakeLists.txt, which defines `it`. Takes about a minute.
storwatch_add_script_test(integration.enospc
  COMMAND ${Python3_EXECUTABLE} ${it}/enospc_test.py TIMEOUT 600)
# The io_uring case needs a program of its own (io_uring_setup and a write request, raw syscalls).
add_executable(enospc_uring_fill ${it}/enospc_uring_fill.c)
set_property(TEST integration.enospc APPEND PROPERTY ENVIRONMENT
  "STORWATCH_URING_FILL=$<TARGET_FILE:enospc_uring_fill>")
