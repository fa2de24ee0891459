#include "runtime/startup.hpp"

#include <set>

#include "common/log.hpp"
#include "manifest/serving.hpp"

namespace mota::runtime {

std::vector<StartupLoad> load_startup_models(ModelStore& store, const Config& config) {
  std::vector<StartupLoad> out;
  std::set<std::string> from_agent;
  if (!config.agent_state_dir.empty()) {
    auto manifest = read_serving_manifest(config.agent_state_dir);
    if (!manifest) {
      log::error("cannot read the agent's serving manifest; loading runtime.toml's models only",
                 {{"REASON", manifest.error().message()}});
    } else if (!*manifest) {
      log::info("the agent has committed no model yet",
                {{"STATE_DIR", config.agent_state_dir.string()}});
    } else {
      for (const auto& m : (*manifest)->models) {
        from_agent.insert(m.name);
        StartupLoad r{m.name, "agent", {}, false, {}};
        auto loaded = store.load(m.name, m.committed.slot);
        if (loaded) {
          r.slot = m.committed.slot;
        } else {
          r.error = loaded.error().message();
          log::error("committed model does not load",
                     {{"MODEL", m.name}, {"VERSION", m.committed.version}, {"REASON", r.error}});
          if (m.fallback) {
            auto fb = store.load(m.name, m.fallback->slot);
            if (fb) {
              r.slot = m.fallback->slot;
              r.fallback = true;
              log::warn("serving the previous version instead",
                        {{"MODEL", m.name}, {"VERSION", m.fallback->version}});
            } else {
              log::error("the previous version does not load either",
                         {{"MODEL", m.name},
                          {"VERSION", m.fallback->version},
                          {"REASON", fb.error().message()}});
            }
          }
        }
        out.push_back(std::move(r));
      }
    }
  }
  for (const auto& m : config.models) {
    if (from_agent.count(m.name)) {
      log::info("[[model]] entry ignored: the agent's serving manifest names this model",
                {{"MODEL", m.name}, {"SLOT", m.slot.string()}});
      continue;
    }
    StartupLoad r{m.name, "config", {}, false, {}};
    auto loaded = store.load(m.name, m.slot);
    if (loaded) {
      r.slot = m.slot;
    } else {
      r.error = loaded.error().message();
      log::error("startup load failed", {{"MODEL", m.name}, {"REASON", r.error}});
    }
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace mota::runtime
