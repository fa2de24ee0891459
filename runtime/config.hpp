#pragma once
// mota-runtime's configuration: /etc/mota/runtime.toml (every key optional), then command-line
// flags on top. Example with the defaults:
//
//   socket            = "/run/mota/runtime.sock"
//   socket_mode       = "0660"            # who may talk to the runtime (it loads any path)
//   tcp               = ""                # e.g. "127.0.0.1:8700"; loopback only; "" = off
//   http_threads      = 8                 # requests handled at once (idle/slow connections: none)
//   pool_size         = 2                 # engine instances per model = concurrent inferences
//   engine_threads    = 0                 # OpenCV worker threads (0 = OpenCV's default)
//   warmup_runs       = 1                 # per engine instance, before a model is swapped in
//   load_nice         = 10                # nice increment of the loading thread
//   load_serial       = true              # loads run the engine's parallel loops on their thread
//   load_idle         = "auto"            # loading thread under SCHED_IDLE (true/false/"auto")
//   load_idle_escalate_ms = 1000          # then back to SCHED_OTHER (niced), where allowed
//   load_yield_ms     = 1000              # most a load waits in total for in-flight inferences
//   isolate_loads     = true              # a model's first load runs in a child process first:
//                                         # one that crashes the engine is refused, not fatal
//   load_timeout_s    = 300               # that child's deadline; past it the load is refused
//   max_body_bytes    = 67108864
//   log_level         = "info"
//   agent_state_dir   = ""                # mota-agent's state_dir: at start, load what the
//                                         # agent committed (manifest/serving.hpp); "" = off
//
//   [[model]]                             # loaded at start (a failure is logged, not fatal);
//                                         # a model also in the agent's serving manifest is
//                                         # loaded from there instead
//   name = "face-detector"
//   slot = "/var/lib/mota/models/face-detector/current"

#include <filesystem>
#include <string>
#include <vector>

#include "common/log.hpp"
#include "common/result.hpp"
#include "runtime/server.hpp"
#include "runtime/store.hpp"

namespace mota::runtime {

struct StartupModel {
  std::string name;
  std::filesystem::path slot;
};

struct Config {
  ServerOptions server;
  StoreOptions store;
  int engine_threads = 0;
  log::Level log_level = log::Level::info;
  std::vector<StartupModel> models;
  std::filesystem::path agent_state_dir;  // empty: no serving manifest to read
  // StoreOptions::isolate_with is set to the running binary when true (runtime/cli.cpp).
  bool isolate_loads = true;
};

// Parses TOML text; `source` names it in errors ("runtime.toml:3:1: ..."). Unknown keys and
// wrong types are errors naming the key.
Result<Config> parse_config(std::string_view text, std::string_view source);
// Reads and parses a file; a missing file at the default path is not an error (defaults).
Result<Config> load_config(const std::filesystem::path& path, bool must_exist);

// "127.0.0.1:8700" -> host, port. Errc::invalid_argument otherwise.
Status parse_host_port(std::string_view text, std::string& host, int& port);

}  // namespace mota::runtime
