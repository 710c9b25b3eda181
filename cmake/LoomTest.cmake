# LoomTest.cmake: loom_test(NAME name LABELS l... SOURCES s... [LIBS ...]) builds one GoogleTest
# binary and registers each of its tests with ctest under the given labels.
include(GoogleTest)
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
    PROPERTIES LABELS "${T_LABELS}" TIMEOUT ${T_TIMEOUT})
endfunction()
