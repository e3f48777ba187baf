# The ctest `package_consumer` (tests/CMakeLists.txt): installs a dydnn build tree into a
# fresh prefix, configures tests/package against that prefix only, builds it and runs it.
# Every step must succeed; a failing step stops the test and prints its output.
#
#   cmake -DBUILD_DIR=<dydnn build> -DPACKAGE_SOURCE_DIR=<tests/package>
#         -DPREFIX=<install prefix> -DCONSUMER_BUILD_DIR=<consumer build>
#         [-DCONFIG=Release] [-DCXX_COMPILER=<c++>] [-DCOMPILER_LAUNCHER=<ccache>]
#         [-DMAKE_PROGRAM=<ninja>] [-DDYDNN_SOURCE_DIR=<repo>] [-DBUILD_TREE_LIBRARY=<libdydnn.a>]
#         -P run_package_test.cmake
#
# PREFIX and CONSUMER_BUILD_DIR are removed first. DYDNN_SOURCE_DIR and BUILD_TREE_LIBRARY
# are only used to check that neither the installed package nor the consumer refers to
# the source or build tree.
cmake_minimum_required(VERSION 3.18)

foreach(var BUILD_DIR PACKAGE_SOURCE_DIR PREFIX CONSUMER_BUILD_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_package_test.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT DEFINED CONFIG OR CONFIG STREQUAL "")
  set(CONFIG Release)
endif()

# Runs one step; on failure stops with the command and its whole output.
function(run_step name)
  string(TIMESTAMP start "%s")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  string(TIMESTAMP stop "%s")
  math(EXPR seconds "${stop} - ${start}")
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "package_consumer: step '${name}' failed (${rc}) after ${seconds} s:\n"
                        "  ${command}\n${out}")
  endif()
  message(STATUS "package_consumer: ${name}: ok (${seconds} s)")
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

# Fails when `file` contains `text` (a path of the source or build tree).
function(check_not_in file text what)
  if(text STREQUAL "" OR NOT EXISTS "${file}")
    return()
  endif()
  file(READ "${file}" content)
  string(FIND "${content}" "${text}" at)
  if(NOT at EQUAL -1)
    message(FATAL_ERROR "package_consumer: ${file} refers to ${what}: ${text}")
  endif()
endfunction()

file(REMOVE_RECURSE "${PREFIX}" "${CONSUMER_BUILD_DIR}")
# Only the prefix may provide dydnn: no <Pkg>_DIR/<Pkg>_ROOT from the environment, no
# package registries (see the configure step).
unset(ENV{dydnn_DIR})
unset(ENV{dydnn_ROOT})
unset(ENV{DYDNN_ROOT})

# 1. Install the build tree.
run_step(install "${CMAKE_COMMAND}" --install "${BUILD_DIR}" --prefix "${PREFIX}" --config "${CONFIG}")

# 2. The installed package is relocatable and carries nothing of the build.
file(GLOB_RECURSE config_files "${PREFIX}/*/dydnnConfig.cmake")
list(LENGTH config_files count)
if(NOT count EQUAL 1)
  message(FATAL_ERROR "package_consumer: expected one dydnnConfig.cmake under ${PREFIX}, found: ${config_files}")
endif()
get_filename_component(package_dir "${config_files}" DIRECTORY)
file(GLOB package_files "${package_dir}/*.cmake")
foreach(file IN LISTS package_files)
  check_not_in("${file}" "${BUILD_DIR}" "the build tree")
  if(DEFINED DYDNN_SOURCE_DIR)
    check_not_in("${file}" "${DYDNN_SOURCE_DIR}/" "the source tree")
  endif()
  file(READ "${file}" content)
  if(content MATCHES "PRECOMPILE|cmake_pch")
    message(FATAL_ERROR "package_consumer: ${file} exports precompiled-header settings")
  endif()
endforeach()

# 3. Configure the consumer against the prefix only.
set(configure_args
  -S "${PACKAGE_SOURCE_DIR}" -B "${CONSUMER_BUILD_DIR}" -G Ninja
  "-DCMAKE_BUILD_TYPE=${CONFIG}"
  "-DCMAKE_PREFIX_PATH=${PREFIX}"
  -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
  -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF)
if(CXX_COMPILER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}")
endif()
if(COMPILER_LAUNCHER)
  list(APPEND configure_args "-DCMAKE_CXX_COMPILER_LAUNCHER=${COMPILER_LAUNCHER}")
endif()
if(MAKE_PROGRAM)
  list(APPEND configure_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()
run_step(configure "${CMAKE_COMMAND}" ${configure_args})

file(STRINGS "${CONSUMER_BUILD_DIR}/CMakeCache.txt" dydnn_dir REGEX "^dydnn_DIR:")
string(REGEX REPLACE "^dydnn_DIR:[A-Z]+=" "" dydnn_dir "${dydnn_dir}")
string(FIND "${dydnn_dir}" "${PREFIX}/" at)
if(NOT at EQUAL 0)
  message(FATAL_ERROR "package_consumer: dydnn was found in '${dydnn_dir}', not under ${PREFIX}")
endif()
# The consumer compiles against the installed headers and links the installed library.
if(DEFINED DYDNN_SOURCE_DIR)
  check_not_in("${CONSUMER_BUILD_DIR}/build.ninja" "${DYDNN_SOURCE_DIR}/include" "the source tree's headers")
endif()
if(DEFINED BUILD_TREE_LIBRARY)
  check_not_in("${CONSUMER_BUILD_DIR}/build.ninja" "${BUILD_TREE_LIBRARY}" "the build tree's library")
endif()

# 4. Build it.
run_step(build "${CMAKE_COMMAND}" --build "${CONSUMER_BUILD_DIR}")

# 5. Run it.
run_step(run "${CONSUMER_BUILD_DIR}/dydnn_package_test")
message(STATUS "package_consumer: dydnn found in ${dydnn_dir}\n${step_output}")
