# mota_library(NAME SOURCES ... DEPS ...): one static library per top-level folder.
function(mota_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  if(NOT ARG_SOURCES)
    set(ARG_SOURCES ${PROJECT_SOURCE_DIR}/cmake/empty.cpp)
  endif()
  add_library(${name} STATIC ${ARG_SOURCES})
  target_include_directories(${name} PUBLIC ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/generated)
  target_link_libraries(${name} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# mota_test(NAME SOURCES ... DEPS ... LABELS label [ENV VAR=value]): a GoogleTest binary, one ctest
# entry per test.
# Tests run with the repository root as working directory, so ../shared/models/... resolves.
function(mota_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT;LABELS;ENV" "SOURCES;DEPS" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} mota_test_support GTest::gtest GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if("long" IN_LIST ARG_LABELS)
    set(ARG_TIMEOUT 1800)
  endif()
  # CMake 3.25's PRE_TEST discovery flattens list-valued properties, so each test gets exactly
  # one label and at most one environment variable. Tests find the build directory from their own
  # path (tests/support) and the source root is their working directory.
  set(props TIMEOUT ${ARG_TIMEOUT} LABELS ${ARG_LABELS})
  if(ARG_ENV)
    list(APPEND props ENVIRONMENT ${ARG_ENV})
  endif()
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES ${props})
endfunction()
