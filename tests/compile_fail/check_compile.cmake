# Builds one target of the build tree and judges the compiler's answer (cmake -P, run by CTest).
#   -DBUILD_DIR=<build tree> -DTARGET=<target> -DEXPECT=pass|fail
#   with EXPECT=fail: -DMATCH_1=<regex> [-DMATCH_2=... up to MATCH_9] and -DMAX_ERRORS=<n>;
#   -DFIRST_ERROR=<regex>: what the first `error:` line must match (default: a constraint failure)
# EXPECT=pass: the target must build. EXPECT=fail: the build must fail, the first `error:` line must
# be a constraint failure (not some unrelated error that happens to fail the build), every MATCH_i
# must occur in the compiler output, and there must be at most MAX_ERRORS `error:` lines (one
# diagnostic, not a page of template errors). The output is printed either way (ctest -V shows it).
foreach(v BUILD_DIR TARGET EXPECT)
  if(NOT DEFINED ${v})
    message(FATAL_ERROR "check_compile.cmake: -D${v}=... is required")
  endif()
endforeach()
execute_process(COMMAND ${CMAKE_COMMAND} --build ${BUILD_DIR} --target ${TARGET}
                RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err)
set(log "${out}${err}")
message("---- build of ${TARGET} (exit ${rc}) ----\n${log}---- end of build output ----")

if(EXPECT STREQUAL "pass")
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "${TARGET} must compile but did not: the harness or the concept rejects a valid case")
  endif()
  message("PASS: ${TARGET} compiled")
  return()
endif()

if(rc EQUAL 0)
  message(FATAL_ERROR "${TARGET} compiled, but it must fail to compile")
endif()
set(problems "")
string(REGEX MATCH "[^\n]*error:[^\n]*" first "${log}")
if(NOT DEFINED FIRST_ERROR)
  set(FIRST_ERROR "template constraint failure|constraints not satisfied")
endif()
if(NOT first MATCHES "${FIRST_ERROR}")
  string(APPEND problems "\n  the first error does not match '${FIRST_ERROR}': '${first}'")
endif()
foreach(i RANGE 1 9)
  if(DEFINED MATCH_${i} AND NOT log MATCHES "${MATCH_${i}}")
    string(APPEND problems "\n  the output does not match '${MATCH_${i}}'")
  endif()
endforeach()
string(REGEX MATCHALL "error:" errors "${log}")
list(LENGTH errors n_errors)
if(DEFINED MAX_ERRORS AND n_errors GREATER MAX_ERRORS)
  string(APPEND problems "\n  ${n_errors} errors, more than ${MAX_ERRORS}")
endif()
if(problems)
  message(FATAL_ERROR "${TARGET} failed to compile, but not with the expected diagnostic:${problems}")
endif()
message("PASS: ${TARGET} failed to compile with the expected diagnostic (${n_errors} error lines)")
