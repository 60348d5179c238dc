# The event journal end to end (issue 3), as root with a real storwatchd fed through its replay
# FIFO on a temporary socket and state directory: kill -9 at random moments, resume with --after,
# JournalMismatch, history filters and paging (test_journal.py); a subscriber that stops reading
# while 100,000 events flow, and a flood of 1,000,000 equal events folded with bounded memory
# (test_journal_flow.py); the journal's disk full (loop-mounted ext4) and retention
# (test_journal_disk.py). Included by tests/integration/CMakeLists.txt, which defines `it`.
# About 5-25 s, 12-40 s and 3-8 s on 2 cores, depending on the load (RUN_SERIAL, like every
# integration test).
storwatch_add_script_test(integration.journal COMMAND ${Python3_EXECUTABLE} ${it}/test_journal.py TIMEOUT 300)
storwatch_add_script_test(integration.journal_flow
  COMMAND ${Python3_EXECUTABLE} ${it}/test_journal_flow.py TIMEOUT 300)
storwatch_add_script_test(integration.journal_disk
  COMMAND ${Python3_EXECUTABLE} ${it}/test_journal_disk.py TIMEOUT 300)
