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
  # Listing a sanitizer build's test binary once took over the default 5 s on a loaded 2-core
  # machine, which fails the whole ctest run before any test: give discovery a minute.
  gtest_discover_tests(${name}
    WORKING_DIRECTORY ${PROJECT_SOURCE_DIR}
    DISCOVERY_MODE PRE_TEST
    DISCOVERY_TIMEOUT 60
    PROPERTIES ${props})
endfunction()

# mota_embed_migrations(OUT_VAR DIR dir HEADER header NAMESPACE ns FUNCTION fn): embeds the schema
# migrations DIR/NNNN_<name>.up.sql + NNNN_<name>.down.sql as string literals in a generated source
# defining `std::span<const storage::Migration> ns::fn()` (declared in HEADER), so a binary carries
# its schema and its down scripts with it. Versions must increase; every up has its down. Editing
# or adding a file re-runs CMake. OUT_VAR receives the generated source's path.
function(mota_embed_migrations out_var)
  cmake_parse_arguments(ARG "" "DIR;HEADER;NAMESPACE;FUNCTION" "" ${ARGN})
  file(RELATIVE_PATH rel ${PROJECT_SOURCE_DIR} ${ARG_DIR})
  file(GLOB files CONFIGURE_DEPENDS ${ARG_DIR}/*.sql)
  set_property(DIRECTORY APPEND PROPERTY CMAKE_CONFIGURE_DEPENDS ${files})
  list(FILTER files INCLUDE REGEX "\\.up\\.sql$")
  list(SORT files)
  set(entries "")
  set(prev 0)
  foreach(up ${files})
    get_filename_component(name ${up} NAME)
    if(NOT name MATCHES "^([0-9][0-9][0-9][0-9])_[a-z0-9_]+\\.up\\.sql$")
      message(FATAL_ERROR "${rel}/${name}: expected NNNN_<name>.up.sql")
    endif()
    string(REGEX REPLACE "^0+" "" version "${CMAKE_MATCH_1}")
    if(version STREQUAL "" OR NOT version GREATER prev)
      message(FATAL_ERROR "${rel}/${name}: version must be > 0 and unique")
    endif()
    set(prev ${version})
    string(REGEX REPLACE "\\.up\\.sql$" ".down.sql" down "${up}")
    if(NOT EXISTS ${down})
      message(FATAL_ERROR "${rel}/${name}: missing its down script ${down}")
    endif()
    file(READ ${up} up_sql)
    file(READ ${down} down_sql)
    if(up_sql MATCHES "\\)mota_sql\"" OR down_sql MATCHES "\\)mota_sql\"")
      message(FATAL_ERROR "${rel}/${name}: contains the raw-string delimiter )mota_sql\"")
    endif()
    string(APPEND entries
           "    {${version}, R\"mota_sql(${up_sql})mota_sql\", R\"mota_sql(${down_sql})mota_sql\"},\n")
  endforeach()
  if(entries STREQUAL "")
    message(FATAL_ERROR "${rel}: no *.up.sql files")
  endif()
  set(out ${CMAKE_CURRENT_BINARY_DIR}/generated/${ARG_FUNCTION}.cpp)
  set(MOTA_MIGRATION_HEADER ${ARG_HEADER})
  set(MOTA_MIGRATION_NAMESPACE ${ARG_NAMESPACE})
  set(MOTA_MIGRATION_FUNCTION ${ARG_FUNCTION})
  set(MOTA_MIGRATION_SOURCE ${rel})
  set(MOTA_MIGRATION_ENTRIES ${entries})
  file(CONFIGURE OUTPUT ${out} @ONLY CONTENT [[
// Generated from @MOTA_MIGRATION_SOURCE@/*.sql by mota_embed_migrations (cmake/MotaHelpers.cmake).
// Do not edit.
#include "@MOTA_MIGRATION_HEADER@"

namespace @MOTA_MIGRATION_NAMESPACE@ {
namespace {
constexpr storage::Migration kMigrations[] = {
@MOTA_MIGRATION_ENTRIES@};
}  // namespace

std::span<const storage::Migration> @MOTA_MIGRATION_FUNCTION@() { return kMigrations; }

}  // namespace @MOTA_MIGRATION_NAMESPACE@
]])
  set(${out_var} ${out} PARENT_SCOPE)
endfunction()
