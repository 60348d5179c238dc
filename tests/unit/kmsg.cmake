# The /dev/kmsg parsers against lines captured from real ext4, xfs and btrfs loop devices
# (tests/fixtures/kmsg), and KmsgSource over a socketpair. `ctest -R kmsg`.
storwatch_add_test(kmsg_test SOURCES daemon/kmsg_test.cc LIBS storwatch_daemon PREFIX "kmsg.")
target_compile_definitions(kmsg_test PRIVATE STORWATCH_FIXTURES_DIR="${PROJECT_SOURCE_DIR}/tests/fixtures")
