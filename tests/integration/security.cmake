# Hostile and broken clients (docs/security.md): limits, responsiveness and the memory bound.
storwatch_add_script_test(integration.hostile_clients
  COMMAND ${Python3_EXECUTABLE} ${it}/hostile_clients.py TIMEOUT 180)
