# storwatchd as a process (sd_notify, reload, socket activation, config checks, socket ownership,
# org.varlink.service, hostile clients), the systemd units, and the example of docs/protocol.md.
# None needs root; test_unit_file.py is skipped (77) without systemd-analyze.
storwatch_add_script_test(integration.daemon COMMAND ${Python3_EXECUTABLE} ${it}/test_daemon.py TIMEOUT 120)
storwatch_add_script_test(integration.unit_file COMMAND ${Python3_EXECUTABLE} ${it}/test_unit_file.py TIMEOUT 120)
storwatch_add_script_test(integration.protocol_doc COMMAND ${Python3_EXECUTABLE} ${it}/test_protocol_doc.py TIMEOUT 120)
