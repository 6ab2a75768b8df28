# Fails when a Catch2 test case name holds a ';'. catch_discover_tests registers each case as a CTest
# test through a CMake list, which splits such a name in two; each half then matches no case, runs
# nothing and passes. Usage: cmake -DTESTS_DIR=<tests folder> -P check_case_names.cmake
file(GLOB_RECURSE _sources "${TESTS_DIR}/*.cpp" "${TESTS_DIR}/*.cu")
set(_bad "")
foreach(f ${_sources})
  file(STRINGS "${f}" _lines REGEX "TEST_CASE\\(\"[^\"]*;")
  foreach(l ${_lines})
    string(APPEND _bad "\n  ${f}: ${l}")
  endforeach()
endforeach()
if(_bad)
  message(FATAL_ERROR "test case names with ';' (CTest would split them and run nothing):${_bad}")
endif()
message(STATUS "no test case name holds a ';'")
