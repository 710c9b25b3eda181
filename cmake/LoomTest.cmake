# LoomTest.cmake: loom_test(NAME name LABELS l... SOURCES s... [LIBS ...]) builds one GoogleTest
# binary and registers each of its tests with ctest under the given labels.
include(GoogleTest)

# ctest runs as many tests at once as there are cores (scripts/test.sh), and each one's OpenMP
# team is as large as the machine: libgomp's default wait, a spin of a few hundred thousand
# iterations at every barrier, then burns the cores the other tests' threads wait for. Two
# copies of one training test at once took 84 s each on 2 cores with it and 16 s with passive
# waiting (alone: 8.5 s active, 14.6 s passive), so tests wait passively. A loom run alone
# on its machine keeps the default.
set(LOOM_TEST_OMP_ENV "OMP_WAIT_POLICY=PASSIVE")
function(loom_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "LABELS;SOURCES;LIBS" ${ARGN})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 600)
  endif()
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main loom_warnings)
  target_compile_definitions(${T_NAME} PRIVATE LOOM_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                             LOOM_BINARY_DIR="${PROJECT_BINARY_DIR}")
  gtest_discover_tests(${T_NAME} DISCOVERY_MODE PRE_TEST
    WORKING_DIRECTORY ${PROJECT_BINARY_DIR}
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT} ENVIRONMENT "${LOOM_TEST_OMP_ENV}")
endfunction()
