#pragma once
// A child-process runner: the agent's health probe and hooks and the manager's release checks run
// `mota-runtime` (or an operator's hook) in a separate process, so a model that crashes the engine
// crashes only the child.
//
// Thread-safety: run_child() may be called from several threads at once (posix_spawn; each call
// owns its pipes). It does not change the caller's signal handling or environment.

#include <chrono>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace mota {

// Runs argv (argv[0] is a path, not looked up in PATH) with the caller's environment plus
// `extra_env` ("NAME=value"), stdin from /dev/null, output captured (the last 4 KiB of each
// stream, trailing blanks trimmed), killed (SIGKILL) after `timeout`. exit_code -1 with `signal`
// set when killed by a signal. Errors: Errc::invalid_argument for an empty argv; errno errors when
// the pipes cannot be made or the program cannot be started (missing, not executable).
struct ChildResult {
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  std::string out, err;
};
Result<ChildResult> run_child(const std::vector<std::string>& argv,
                              const std::vector<std::string>& extra_env,
                              std::chrono::milliseconds timeout);

}  // namespace mota
