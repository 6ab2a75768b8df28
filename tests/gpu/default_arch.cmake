# CTest script (cmake -P): a default configure builds the CUDA code for sm_90, not for the compiler's
# own default (75 with nvcc 13, where the bf16 tensor-core kernels are traps), and a user's choice is
# kept. It configures a fresh user project (default_arch/: add_subdirectory(shortcut), as a user
# would; the CUDAARCHS environment variable cleared) instead of reading this build's CMakeCache.txt,
# which holds whatever this build's own configure was given. Configuring only: nothing is compiled.
#   cmake -DSOURCE=<shortcut source> -DWORK=<scratch dir> -DGENERATOR=<generator>
#         -DCUDA_COMPILER=<nvcc> -P default_arch.cmake
unset(ENV{CUDAARCHS})
function(configured_archs out)
  file(REMOVE_RECURSE ${WORK})
  execute_process(COMMAND ${CMAKE_COMMAND} -S ${SOURCE}/tests/gpu/default_arch -B ${WORK} -G ${GENERATOR}
                          -DSHORTCUT_SOURCE=${SOURCE} -DCMAKE_CUDA_COMPILER=${CUDA_COMPILER} -DSHORTCUT_MPI=OFF ${ARGN}
                  RESULT_VARIABLE rc OUTPUT_VARIABLE log ERROR_VARIABLE log)
  if(rc)
    message(FATAL_ERROR "configuring a user project failed (${rc}):\n${log}")
  endif()
  file(STRINGS ${WORK}/CMakeCache.txt line REGEX "^CMAKE_CUDA_ARCHITECTURES:")
  string(REGEX REPLACE "^[^=]*=" "" value "${line}")
  set(${out} "${value}" PARENT_SCOPE)
endfunction()

configured_archs(archs)
if(NOT archs STREQUAL "90")
  message(FATAL_ERROR "a default configure builds the CUDA code for '${archs}', expected 90")
endif()
configured_archs(archs -DCMAKE_CUDA_ARCHITECTURES=80)
if(NOT archs STREQUAL "80")
  message(FATAL_ERROR "CMAKE_CUDA_ARCHITECTURES=80 given, but the configure chose '${archs}'")
endif()
file(REMOVE_RECURSE ${WORK})
message(STATUS "default configure: 90; a user's 80 kept")
