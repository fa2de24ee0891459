#pragma once
// What mota-runtime loads when it starts, so serving resumes after a restart without waiting for
// an update:
//   1. every model of the agent's serving manifest (<agent_state_dir>/serving.json,
//      manifest/serving.hpp): its committed slot, or, when that does not load, its fallback slot
//      (the previous good version; the agent reports the fallback and makes it official);
//   2. every [[model]] of runtime.toml / --model that the manifest does not name.
// A model that does not load is logged and skipped: the runtime still starts, so the agent can
// reach it, see what is missing in /v1/health and load a good slot. A damaged serving manifest is
// logged too (the agent rewrites it at its next start) and the [[model]] list still applies.
//
// Thread-safety: call before the server starts (it loads one model after the other).

#include <string>
#include <vector>

#include "runtime/config.hpp"
#include "runtime/store.hpp"

namespace mota::runtime {

struct StartupLoad {
  std::string name;
  std::string source;          // "agent" (serving manifest) or "config"
  std::filesystem::path slot;  // what serves now; empty when nothing could be loaded
  bool fallback = false;       // the manifest's fallback slot serves (the committed did not load)
  std::string error;           // why the committed (or configured) slot did not load
};

std::vector<StartupLoad> load_startup_models(ModelStore& store, const Config& config);

}  // namespace mota::runtime
