// Agent::reconcile(): the agent owns what mota-runtime serves (agent/agent.hpp, "Serving").
#include <optional>
#include <system_error>

#include "agent/agent.hpp"
#include "agent/slots.hpp"
#include "common/log.hpp"
#include "common/notify.hpp"
#include "runtime/client.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;

// The runtime as this reconcile() saw it: one /v1/health per pass.
struct Agent::RuntimeView {
  std::optional<runtime::Client> client;
  std::optional<runtime::Health> health;
  bool up() const { return health.has_value(); }
};

namespace {

bool same_dir(const stdfs::path& a, const stdfs::path& b) {
  std::error_code ec1, ec2;
  auto ca = stdfs::weakly_canonical(a, ec1);
  auto cb = stdfs::weakly_canonical(b, ec2);
  return !ec1 && !ec2 && ca == cb;
}

// Steps of the install journal from which the install itself owns `current` and the runtime (the
// switch happened or is happening; the install resolves it at its next step).
bool install_owns_serving(const std::optional<InstallRecord>& journal) {
  const auto step = journal ? parse_install_step(journal->step) : std::nullopt;
  return step == InstallStep::switch_slot || step == InstallStep::trial ||
         step == InstallStep::commit;
}

// What the runtime counted for the models this agent serves through it (not the handed-over
// ones: another stack runs those).
std::vector<FieldSample> field_samples(const Config& config, const runtime::Health& health) {
  std::vector<FieldSample> out;
  for (const auto& sub : config.models) {
    if (sub.handed_over()) continue;
    const runtime::ModelStatus* m = health.find(sub.name);
    if (!m || m->version.empty()) continue;
    out.push_back({m->name, m->version, health.instance + "/" + std::to_string(m->generation),
                   m->inferences, m->errors, m->latency});
  }
  return out;
}

}  // namespace

Status Agent::reconcile(ServeCheck when) {
  RuntimeView rt;
  if (config_.health.enabled) {
    runtime::ClientOptions co;
    co.socket = config_.runtime_socket;
    co.timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(config_.health.probe_timeout);
    rt.client.emplace(co);
    auto h = rt.client->health();
    if (h) {
      if (runtime_down_) log::info("mota-runtime answers again");
      runtime_down_ = false;
      rt.health = std::move(*h);
      field_view_ = field_samples(config_, *rt.health);
    } else {
      if (!runtime_down_) {
        log::warn("mota-runtime cannot be reached; the committed models are served once it runs: " +
                  h.error().message());
      }
      runtime_down_ = true;
      field_view_.clear();
    }
  }
  ServingManifest serving;
  for (const auto& sub : config_.models) {
    if (auto st = reconcile_model(sub, when, rt, serving); !st) {
      log::error("serving " + sub.name + ": " + st.error().message(), {{"MODEL", sub.name}});
    }
    if (sub.handed_over()) {
      // Served by another stack: mota-runtime must not load it at its start either.
      std::erase_if(serving.models, [&](const ServingModel& m) { return m.name == sub.name; });
    }
  }
  return write_serving_manifest(config_.state_dir, serving).context("serving manifest");
}

Status Agent::reconcile_model(const ModelSubscription& sub, ServeCheck when, RuntimeView& rt,
                              ServingManifest& serving) {
  const std::string& name = sub.name;
  // A handed-over model (ModelSubscription::activate) is not mota-runtime's to load.
  const bool ours = !sub.handed_over();
  auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, name));
  auto active = MOTA_TRY(state_.active(name));
  if (!active) return {};  // nothing committed yet
  const Slot committed = active->slot;
  auto row = MOTA_TRY(state_.slot(name, committed));
  if (!row || row->version.empty()) {
    return fail(Errc::internal, "committed slot " + slot_name(committed) + " has no version");
  }
  auto journal = MOTA_TRY(state_.install(name));
  if (install_owns_serving(journal)) {
    // Between its switch and its commit an install decides what serves; the next check after it
    // finishes (or after its rollback at the next poll) makes the runtime follow.
    serving.models.push_back({name, {slots.path(committed), row->version}, std::nullopt});
    return {};
  }
  if (auto cur = slots.current(); !cur || !*cur || **cur != committed) {
    log::warn("`current` of " + name + " did not point at the committed slot " +
                  slot_name(committed) + "; repaired",
              {{"MODEL", name}});
    MOTA_TRY(slots.switch_to(committed));
  }

  // Why the committed slot cannot serve; "" when it can (or the runtime was not asked).
  std::string broken;
  bool damaged = false;
  if (when == ServeCheck::start && config_.verify_at_start) {
    notify::status("verifying " + name + " " + row->version);
    auto tree = slots.verify(committed);
    if (!tree) {
      broken = "slot " + slot_name(committed) + " (" + row->version +
               ") does not verify: " + tree.error().message();
    } else if (!row->tree_digest.empty() && tree->tree_digest != row->tree_digest) {
      broken = "slot " + slot_name(committed) + " (" + row->version + ") has tree digest " +
               tree->tree_digest + ", " + row->tree_digest + " was committed";
    }
    damaged = !broken.empty();
  }
  const auto retry = load_retry_at_.find(name);
  const bool may_load =
      retry == load_retry_at_.end() || std::chrono::steady_clock::now() >= retry->second;
  if (broken.empty() && ours && rt.up() && may_load) {
    const auto* m = rt.health->find(name);
    const bool serves = m && m->version == row->version && same_dir(m->slot, slots.path(committed));
    if (!serves) {
      const std::string what = !m ? "served nothing for " + name
                                  : "served " + name + " " + m->version + " from " + m->slot;
      notify::status("loading " + name + " " + row->version + " into mota-runtime");
      auto loaded = rt.client->load(name, slots.path(committed));
      if (loaded) {
        load_retry_at_.erase(name);
        log::info("mota-runtime " + what + "; it now serves the committed " + row->version,
                  {{"MODEL", name}, {"VERSION", row->version}});
      } else if (loaded.error().code() == Errc::network) {
        log::warn("mota-runtime went away while loading " + name + ": " + loaded.error().message());
        rt.health.reset();
      } else {
        broken = "mota-runtime cannot load " + row->version + " from slot " + slot_name(committed) +
                 ": " + loaded.error().message();
      }
    }
  }

  if (!broken.empty()) {
    // The previous good slot, if there is one that still verifies and loads.
    const Slot prev = other(committed);
    auto prow = MOTA_TRY(state_.slot(name, prev));
    std::string why_not = "no previous version is kept";
    if (prow && prow->status == SlotStatus::valid && !prow->version.empty()) {
      auto tree = slots.verify(prev);
      if (!tree) {
        why_not = "the previous version " + prow->version + " does not verify either";
      } else if (!prow->tree_digest.empty() && tree->tree_digest != prow->tree_digest) {
        why_not = "the previous version " + prow->version + " was modified on disk";
      } else {
        why_not.clear();
        if (ours && rt.up()) {
          auto loaded = rt.client->load(name, slots.path(prev));
          if (!loaded && loaded.error().code() != Errc::network) {
            why_not = "the previous version " + prow->version +
                      " does not load either: " + loaded.error().message();
          }
        }
      }
      if (why_not.empty()) {
        MOTA_TRY(slots.switch_to(prev));
        MOTA_TRY(state_.fall_back(name, prev, committed));
        if (!ours) {
          const Activation back{"rollback", prev, prow->version, committed, row->version};
          if (auto a = activate(sub, back, nullptr); !a) {
            log::warn("rollback: " + a.error().message(), {{"MODEL", name}});
          }
        }
        log::warn(
            "rolled back " + name + " " + row->version + " to " + prow->version + ": " + broken,
            {{"MODEL", name}, {"VERSION", row->version}});
        Event ev;
        ev.model = name;
        ev.from = prow->version;
        ev.to = row->version;
        ev.state = "rolled_back";
        ev.step = step_name(PollStep::boot);
        ev.error = broken;
        event(ev);
        serving.models.push_back({name, {slots.path(prev), prow->version}, std::nullopt});
        return {};
      }
    }
    Event ev;
    ev.model = name;
    ev.to = row->version;
    ev.state = "failed";
    ev.step = step_name(PollStep::boot);
    if (damaged) {
      // Never serve a tree that does not match what was verified; the next poll reinstalls.
      MOTA_TRY(slots.clear_current());
      MOTA_TRY(state_.drop_active(name, committed));
      ev.error = broken + "; " + why_not + ": the model is reinstalled at the next poll";
      log::error(name + ": " + ev.error, {{"MODEL", name}, {"VERSION", row->version}});
      event(ev);
      return {};
    }
    // It verifies but does not load: keep it (the runtime may be short of memory for a while)
    // and try again at the next check; the event is sent once.
    ev.from = row->version;
    ev.error = broken + "; " + why_not;
    load_retry_at_[name] = std::chrono::steady_clock::now() + config_.poll_interval;
    log::error(name + ": " + ev.error, {{"MODEL", name}, {"VERSION", row->version}});
    event(ev);
  }

  ServingModel entry{name, {slots.path(committed), row->version}, std::nullopt};
  if (auto prow = MOTA_TRY(state_.slot(name, other(committed)));
      prow && prow->status == SlotStatus::valid && !prow->version.empty()) {
    entry.fallback = ServingSlot{slots.path(other(committed)), prow->version};
  }
  serving.models.push_back(std::move(entry));
  return {};
}

}  // namespace mota::agent
