# storwatch_add_test(NAME SOURCES ... LIBS ... [PRIVILEGED] [PREFIX p])
# One gtest binary per module; each test case becomes a CTest test with a timeout. PREFIX goes in
# front of each CTest name ("daemon_core." lets `ctest -R daemon_core` pick one binary's tests).
include(GoogleTest)
# ASan/UBSan builds run several times slower: their tests get proportionally longer timeouts, and
# the integration scripts see STORWATCH_SANITIZED=1 to stretch their own deadlines.
if(STORWATCH_SANITIZE)
  set(STORWATCH_TIMEOUT_FACTOR 3)
else()
  set(STORWATCH_TIMEOUT_FACTOR 1)
endif()
function(storwatch_add_test name)
  cmake_parse_arguments(ARG "PRIVILEGED" "PREFIX" "SOURCES;LIBS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_LIBS} GTest::gtest GTest::gtest_main GTest::gmock storwatch_warnings)
  target_include_directories(${name} PRIVATE ${PROJECT_SOURCE_DIR}/src ${PROJECT_SOURCE_DIR}/tests)
  set(labels unit)
  if(ARG_PRIVILEGED)
    set(labels privileged)
  endif()
  math(EXPR timeout "60 * ${STORWATCH_TIMEOUT_FACTOR}")
  gtest_discover_tests(${name} TEST_PREFIX "${ARG_PREFIX}" PROPERTIES TIMEOUT ${timeout} LABELS "${labels}"
    DISCOVERY_TIMEOUT 30)
endfunction()

# storwatch_add_script_test(NAME COMMAND ... [TIMEOUT s]): integration tests (python), 77 means skipped.
function(storwatch_add_script_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "COMMAND" ${ARGN})
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  math(EXPR ARG_TIMEOUT "${ARG_TIMEOUT} * ${STORWATCH_TIMEOUT_FACTOR}")
  add_test(NAME ${name} COMMAND ${ARG_COMMAND})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${ARG_TIMEOUT} SKIP_RETURN_CODE 77 LABELS integration
    RUN_SERIAL TRUE
    ENVIRONMENT "STORWATCHD=$<TARGET_FILE:storwatchd>;STORWATCH=$<TARGET_FILE:storwatch>;STORWATCH_TESTFS=$<TARGET_FILE:storwatch-testfs>;PYTHONDONTWRITEBYTECODE=1;STORWATCH_SANITIZED=$<BOOL:${STORWATCH_SANITIZE}>")
endfunction()
