# Filesystem errors (issue 4): the correlator of fanotify, kmsg, sysfs and mount-table reports,
# with a FakeClock and synthetic reports. `ctest -R fs_error`.
storwatch_add_test(fs_error_test SOURCES daemon/fs_error_test.cc LIBS storwatch_daemon PREFIX "fs_error.")
