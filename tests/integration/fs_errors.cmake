# Filesystem errors end to end (issue 4), as root with a real storwatchd: ext4 trigger_fs_error,
# a flood of 100,000 errors, errors=remount-ro, debugfs corruption, xfs and btrfs (FUSE EIO) errors,
# catch-up after a restart (test_fs_errors.py). Included by tests/integration/CMakeLists.txt,
# which defines `it`. Takes about a minute.
storwatch_add_script_test(integration.fs_errors
  COMMAND ${Python3_EXECUTABLE} ${it}/test_fs_errors.py TIMEOUT 300)
