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

# mota_test(NAME SOURCES ... DEPS ... [LABELS ...]): a GoogleTest binary, one ctest entry per test.
# Tests run with the repository root as working directory, so ../shared/models/... resolves.
function(mota_test name)
  cmake_parse_arguments(ARG "" "TIMEOUT" "SOURCES;DEPS;LABELS;ENV" ${ARGN})
  add_executable(${name} ${ARG_SOURCES})
  target_link_libraries(${name} PRIVATE ${ARG_DEPS} mota_test_support GTest::gtest GTest::gtest_main)
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 300)
  endif()
  if("long" IN_LIST ARG_LABELS)
    set(ARG_TIMEOUT 1800)
  endif()
  set(env "MOTA_BUILD_DIR=${PROJECT_BINARY_DIR}" "MOTA_SOURCE_DIR=${PROJECT_SOURCE_DIR}" ${ARG_ENV})
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_MODE PRE_TEST
    PROPERTIES TIMEOUT ${ARG_TIMEOUT} LABELS "${ARG_LABELS}"
               ENVIRONMENT "${env}")
endfunction()
