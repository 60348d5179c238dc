# Space thresholds end to end (issue 2), as root with a real storwatchd on a temporary socket and
# state directory: levels crossed in order, hysteresis, jumps, inode levels and space.enospc on
# loop-mounted ext4 and tmpfs (test_thresholds.py); rules at runtime and their permissions, bind
# mounts, unmount, restart persistence and a stuck FUSE statfs (test_thresholds_runtime.py).
# Included by tests/integration/CMakeLists.txt, which defines `it`. Each script takes ~10 s.
storwatch_add_script_test(integration.thresholds
  COMMAND ${Python3_EXECUTABLE} ${it}/test_thresholds.py TIMEOUT 300)
storwatch_add_script_test(integration.thresholds_runtime
  COMMAND ${Python3_EXECUTABLE} ${it}/test_thresholds_runtime.py TIMEOUT 300)
