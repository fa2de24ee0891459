# The include rules of the layers (docs/architecture.md, "Layers"), checked on the sources:
#   cmake -DROOT=<repository root> -P tests/layering_check.cmake
# Prints every "#include" that reaches a layer the including folder may not use and fails, so a
# regression fails CI (ctest test "layering_includes"). Both the library folders and their test
# folders (tests/<module>/) are checked; tests/integration/ may use everything.
#
# Order: common <- manifest <- {protocol, delta, storage} ; delta + storage <- delta/package;
# then runtime, agent, manager;
# agent and manager both use protocol/ and never each other; runtime uses no agent/ or manager/;
# net/ (the HTTP server of manager and runtime) uses common/ only.
# manager/ is split into units with rules of their own (docs/architecture.md, "manager/ units"):
# repo (the store) <- {release, verify, fleet} <- cli <- main.cpp; a manager/ subfolder without a
# rule here fails the check, so a new unit must state what it may use.
cmake_minimum_required(VERSION 3.25)
if(NOT ROOT)
  message(FATAL_ERROR "layering_check: pass -DROOT=<repository root>")
endif()

# folder -> the top-level folders its includes may name ("tests" for tests/support helpers).
set(allowed_common common)
set(allowed_net common net)
set(allowed_manifest common manifest)
set(allowed_protocol common manifest protocol)
set(allowed_storage common manifest storage)
# The delta engine knows bytes and files; package deltas (delta/package/) add storage.
set(allowed_delta common manifest delta)
set(allowed_delta_package common manifest storage delta)
set(allowed_runtime common net manifest runtime)
set(allowed_agent common manifest protocol storage delta runtime agent)
set(allowed_manager common net manifest protocol storage delta runtime manager)
# manager/'s units; "manager/<unit>" names one unit, "manager" (above, for tests/manager/) all.
set(manager_units repo release verify fleet cli)
set(allowed_manager_repo common manifest storage manager/repo)
set(allowed_manager_release common manifest storage delta runtime manager/repo manager/release)
set(allowed_manager_verify common manifest storage delta manager/repo manager/verify)
set(allowed_manager_fleet common net manifest protocol storage manager/repo manager/fleet)
set(allowed_manager_cli common net manifest protocol storage delta manager/repo manager/release
    manager/verify manager/fleet manager/cli)
# manager/main.cpp: the `mota` binary is the CLI's entry point and nothing else.
set(allowed_manager_main common manager/cli)

set(violations "")
function(check_folder folder rule)
  if(rule STREQUAL "manager_main")
    file(GLOB files ${ROOT}/${folder}/*.cpp ${ROOT}/${folder}/*.hpp)
  else()
    file(GLOB_RECURSE files ${ROOT}/${folder}/*.cpp ${ROOT}/${folder}/*.hpp)
  endif()
  if(rule STREQUAL "delta")
    list(FILTER files EXCLUDE REGEX "/delta/package/")
  endif()
  set(allowed ${allowed_${rule}})
  if(folder MATCHES "^tests/")
    list(APPEND allowed tests bench)
  endif()
  string(JOIN ", " allowed_text ${allowed})
  set(found "")
  foreach(f ${files})
    file(STRINGS ${f} lines REGEX "^[ \t]*#[ \t]*include[ \t]*\"[a-z_]+/")
    foreach(line ${lines})
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*\"([^\"]*)\".*$" "\\1" inc "${line}")
      string(REGEX REPLACE "/.*$" "" top "${inc}")
      # An include of a manager/ unit is allowed by "manager" (all of it) or by its unit.
      set(unit "${top}")
      if(inc MATCHES "^manager/([a-z_]+)/")
        set(unit "manager/${CMAKE_MATCH_1}")
      endif()
      if(NOT top IN_LIST allowed AND NOT unit IN_LIST allowed)
        file(RELATIVE_PATH rel ${ROOT} ${f})
        list(APPEND found "${rel} includes ${inc} (${folder}/ may include only ${allowed_text})")
      endif()
    endforeach()
  endforeach()
  set(violations ${violations} ${found} PARENT_SCOPE)
endfunction()

foreach(module common net manifest protocol storage delta runtime agent manager)
  if(NOT module STREQUAL "manager")
    check_folder(${module} ${module})
  endif()
  if(NOT module STREQUAL "delta")
    check_folder(tests/${module} ${module})
  endif()
endforeach()
check_folder(manager manager_main)
foreach(unit ${manager_units})
  check_folder(manager/${unit} manager_${unit})
endforeach()
file(GLOB manager_entries LIST_DIRECTORIES true ${ROOT}/manager/*)
foreach(entry ${manager_entries})
  get_filename_component(name ${entry} NAME)
  if(IS_DIRECTORY ${entry} AND NOT name IN_LIST manager_units)
    list(APPEND violations "manager/${name}/ has no layering rule (tests/layering_check.cmake)")
  endif()
endforeach()
check_folder(delta/package delta_package)
# tests/delta covers the engine and package deltas together.
check_folder(tests/delta delta_package)

if(violations)
  list(LENGTH violations n)
  foreach(v ${violations})
    message("layering: ${v}")
  endforeach()
  message(FATAL_ERROR "layering: ${n} include(s) reach a layer above or beside their own")
endif()
message("layering: ok")
