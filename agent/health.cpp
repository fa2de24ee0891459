#include "agent/health.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/notify.hpp"
#include "common/process.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/json.hpp"
#include "manifest/model_manifest.hpp"
#include "runtime/client.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;

namespace {

bool cancelled(const std::atomic<bool>* c) {
  return c && c->load();
}

Result<ModelManifest> slot_manifest(const stdfs::path& slot) {
  auto text = MOTA_TRY(fs::read_file(slot / "model.json", 1 << 20));
  return ModelManifest::parse(text);
}

// Element-wise comparison of the canary's outputs with the expected bytes (float32 within the
// tolerance, other types exactly); NaN/Inf fail.
Status compare_outputs(const std::vector<runtime::Tensor>& outputs, const std::string& expected,
                       double tolerance) {
  std::string got = runtime::join_raw(outputs);
  if (got.size() != expected.size()) {
    return fail(Errc::verification, "canary: outputs are " + std::to_string(got.size()) +
                                        " bytes, expected " + std::to_string(expected.size()));
  }
  std::size_t off = 0;
  for (const auto& t : outputs) {
    if (t.dtype == runtime::DType::float32) {
      for (std::size_t i = 0; i < t.elements(); ++i) {
        float a, b;
        std::memcpy(&a, t.data.data() + i * 4, 4);
        std::memcpy(&b, expected.data() + off + i * 4, 4);
        if (!std::isfinite(a)) {
          return fail(Errc::verification, "canary: output " + t.name + " holds NaN/Inf");
        }
        if (std::fabs(double(a) - double(b)) > tolerance) {
          return fail(Errc::verification, "canary: output " + t.name + "[" + std::to_string(i) +
                                              "] is " + std::to_string(a) + ", expected " +
                                              std::to_string(b) + " (tolerance " +
                                              std::to_string(tolerance) + ")");
        }
      }
    } else if (std::memcmp(t.data.data(), expected.data() + off, t.data.size()) != 0) {
      return fail(Errc::verification, "canary: output " + t.name + " differs from expected");
    }
    off += t.data.size();
  }
  return {};
}

}  // namespace

std::string_view failure_class_name(FailureClass c) {
  switch (c) {
    case FailureClass::local:
      return "local";
    case FailureClass::transient:
      return "transient";
    case FailureClass::permanent:
      return "permanent";
    case FailureClass::bad_delta:
      return "bad_delta";
  }
  return "?";
}

Status HealthGate::probe(const std::string& model, const stdfs::path& slot,
                         FailureClass* why) const {
  FailureClass c = FailureClass::local;
  auto st = run_probe(model, slot, c);
  if (!st && why) *why = c;
  return st;
}

HealthGate HealthGate::for_model(const ModelSubscription& sub) const {
  HealthGate g = *this;
  g.probe_command_ = sub.probe;
  g.runtime_ = !sub.handed_over();
  return g;
}

Status HealthGate::run_probe_command(const std::string& model, const stdfs::path& slot,
                                     FailureClass& why) const {
  auto manifest = MOTA_TRY_CTX(slot_manifest(slot), "probe");
  const std::string name = probe_command_.filename().string();
  auto r = MOTA_TRY_CTX(
      run_child(
          {probe_command_.string()},
          {"MOTA_MODEL=" + model, "MOTA_VERSION=" + manifest.version, "MOTA_SLOT=" + slot.string()},
          std::chrono::duration_cast<std::chrono::milliseconds>(config_.probe_timeout)),
      "probe " + probe_command_.string());
  if (r.timed_out) {
    why = FailureClass::transient;
    return fail(Errc::verification, "probe " + name + ": no verdict within " +
                                        std::to_string(config_.probe_timeout.count()) + "s");
  }
  if (r.exit_code != 0) {
    why = FailureClass::permanent;  // the operator's probe says the model is wrong
    const std::string how = r.signal ? "was killed by signal " + std::to_string(r.signal)
                                     : "exited with " + std::to_string(r.exit_code);
    return fail(Errc::verification,
                "probe " + name + " " + how + (r.err.empty() ? "" : ": " + r.err));
  }
  return {};
}

Status HealthGate::run_probe(const std::string& model, const stdfs::path& slot,
                             FailureClass& why) const {
  notify::status("probing " + model + " in " + slot.string());
  why = FailureClass::local;
  if (!probe_command_.empty()) return run_probe_command(model, slot, why);
  if (!runtime_) return {};  // handed over without a probe of its own
  auto r = MOTA_TRY_CTX(
      run_child({config_.runtime_binary.string(), "probe", slot.string(), "--json"}, {},
                std::chrono::duration_cast<std::chrono::milliseconds>(config_.probe_timeout)),
      config_.runtime_binary.string());
  if (r.timed_out) {
    why = FailureClass::transient;  // a busy device may answer in time next time
    return fail(Errc::verification,
                "no verdict within " + std::to_string(config_.probe_timeout.count()) + "s");
  }
  if (r.signal != 0) {
    why = FailureClass::permanent;
    return fail(Errc::verification,
                "the engine crashed (signal " + std::to_string(r.signal) + "): " + r.err);
  }
  if (r.exit_code != 0) {
    const Json j = Json::parse(r.out, nullptr, false);
    // Only a verdict naming its step (a string) is one; anything else the probe printed is
    // reported below. A reason of another type is left out.
    const std::string step = json_get_or<std::string>(j, "step", "");
    if (r.exit_code >= 3 && !step.empty()) {
      // runtime/probe.hpp: 9 (latency) depends on how busy the device is; every other check
      // (manifest, load, input, run, nan, output) gives the same answer every time.
      why =
          r.exit_code == 9 || step == "latency" ? FailureClass::transient : FailureClass::permanent;
      return fail(Errc::verification, step + ": " + json_get_or<std::string>(j, "reason", ""));
    }
    // 1/2: the probe itself could not run (usage, I/O): not a verdict on the model.
    return fail(Errc::io, "mota-runtime exited with " + std::to_string(r.exit_code) + ": " +
                              (r.err.empty() ? r.out : r.err));
  }
  // The runtime must be there to take the model after the switch.
  runtime::ClientOptions co;
  co.socket = socket_;
  runtime::Client client(co);
  why = FailureClass::transient;  // the runtime unavailable: it may be back at the next try
  MOTA_TRY_CTX(client.health(), "runtime");
  return {};
}

Status HealthGate::trial(const std::string& model, const stdfs::path& slot,
                         FailureClass* why) const {
  FailureClass c = FailureClass::local;
  auto st = run_trial(model, slot, c);
  if (!st && why) *why = c;
  return st;
}

Status HealthGate::run_trial(const std::string& model, const stdfs::path& slot,
                             FailureClass& why) const {
  why = FailureClass::local;
  auto manifest = MOTA_TRY_CTX(slot_manifest(slot), "trial");
  // Handed over: the other stack was told to load the slot (the activation); the operator's
  // hooks judge it.
  if (!runtime_) return hooks(model, manifest.version, slot, why);
  runtime::ClientOptions co;
  co.socket = socket_;
  co.timeout = std::chrono::milliseconds(
      std::chrono::duration_cast<std::chrono::milliseconds>(config_.probe_timeout));
  runtime::Client client(co);
  notify::status("trial of " + model + " " + manifest.version + ": loading");
  auto loaded = client.load(model, slot);
  if (!loaded) {
    Error e = std::move(loaded).error();
    if (e.code() == Errc::network) {
      why = FailureClass::transient;  // the runtime unavailable
      return fail(std::move(e).context("trial: load"));
    }
    why = FailureClass::permanent;  // the runtime refused the model
    return fail(Errc::verification, "trial: load: " + e.message());
  }
  const std::uint64_t generation = loaded->generation;
  double budget_ms = 0;
  if (manifest.health) {
    budget_ms = manifest.health->latency_budget_ms;
    if (!manifest.health->input.empty()) {
      auto input = MOTA_TRY_CTX(fs::read_file(slot / manifest.health->input, 1u << 30), "trial");
      auto out = client.infer_raw(model, input);
      if (!out) {
        why =
            out.error().code() == Errc::network ? FailureClass::transient : FailureClass::permanent;
        return fail(Errc::verification, "trial: canary: " + out.error().message());
      }
      if (out->generation != generation) {
        why = FailureClass::transient;  // someone loaded it again meanwhile
        return fail(Errc::verification, "trial: canary answered by another load (generation " +
                                            std::to_string(out->generation) + ", expected " +
                                            std::to_string(generation) + ")");
      }
      if (!manifest.health->expected_output.empty()) {
        auto expected =
            MOTA_TRY_CTX(fs::read_file(slot / manifest.health->expected_output, 1u << 30), "trial");
        why = FailureClass::permanent;  // a wrong answer stays wrong
        MOTA_TRY_CTX(compare_outputs(out->outputs, expected, manifest.health->tolerance), "trial");
        why = FailureClass::local;
      }
    }
    // Soak: the runtime must stay up with this very load, healthy.
    const auto soak =
        std::chrono::milliseconds(static_cast<std::int64_t>(manifest.health->soak_s * 1000.0));
    const auto until = std::chrono::steady_clock::now() + soak;
    while (std::chrono::steady_clock::now() < until) {
      why = FailureClass::local;
      if (cancelled(cancel_)) return fail(Errc::cancelled, "trial: stopped during the soak");
      notify::watchdog_tick();
      notify::status("trial of " + model + " " + manifest.version + ": soak");
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto h = client.health();
      // The runtime took the load and then stopped answering or serving it: it crashed or was
      // restarted with the new model in it.
      why = FailureClass::permanent;
      if (!h) {
        return fail(Errc::verification,
                    "trial: soak: the runtime stopped answering: " + h.error().message());
      }
      const auto* m = h->find(model);
      if (!m || m->generation != generation) {
        return fail(Errc::verification, "trial: soak: the runtime no longer serves this load of " +
                                            model + " (it restarted or crashed)");
      }
      // Errors and latency under load depend on what else the device does: worth another try.
      why = FailureClass::transient;
      if (m->inferences >= 20 &&
          double(m->errors) > config_.max_error_rate * double(m->inferences)) {
        return fail(Errc::verification, "trial: soak: error rate " + std::to_string(m->errors) +
                                            "/" + std::to_string(m->inferences) + " is over " +
                                            std::to_string(config_.max_error_rate));
      }
      if (budget_ms > 0 && m->inferences >= 20 && m->p99_ms > budget_ms) {
        return fail(Errc::verification, "trial: soak: p99 latency " + std::to_string(m->p99_ms) +
                                            " ms is over the budget of " +
                                            std::to_string(budget_ms) + " ms");
      }
    }
  }
  return hooks(model, manifest.version, slot, why);
}

Status HealthGate::hooks(const std::string& model, const std::string& version,
                         const stdfs::path& slot, FailureClass& why) const {
  why = FailureClass::local;
  std::error_code ec;
  if (!stdfs::is_directory(config_.hooks_dir, ec)) return {};
  std::vector<stdfs::path> hooks;
  for (const auto& e : stdfs::directory_iterator(config_.hooks_dir, ec)) {
    const auto name = e.path().filename().string();
    if (name.empty() || name[0] == '.' || name.back() == '~') continue;
    if (!e.is_regular_file(ec) || ::access(e.path().c_str(), X_OK) != 0) continue;
    hooks.push_back(e.path());
  }
  std::sort(hooks.begin(), hooks.end());
  for (const auto& hook : hooks) {
    notify::status("trial of " + model + " " + version + ": hook " + hook.filename().string());
    auto r = MOTA_TRY_CTX(
        run_child({hook.string()},
                  {"MOTA_MODEL=" + model, "MOTA_VERSION=" + version, "MOTA_SLOT=" + slot.string()},
                  std::chrono::duration_cast<std::chrono::milliseconds>(config_.hook_timeout)),
        "trial: hook " + hook.string());
    if (r.timed_out) {
      why = FailureClass::transient;
      return fail(Errc::verification, "trial: hook " + hook.filename().string() +
                                          " did not finish within " +
                                          std::to_string(config_.hook_timeout.count()) + "s");
    }
    if (r.exit_code != 0) {
      why = FailureClass::permanent;  // the operator's check says the model is wrong
      std::string how = r.signal ? "was killed by signal " + std::to_string(r.signal)
                                 : "exited with " + std::to_string(r.exit_code);
      return fail(Errc::verification, "trial: hook " + hook.filename().string() + " " + how +
                                          (r.err.empty() ? "" : ": " + r.err));
    }
  }
  return {};
}

Status HealthGate::restore(const std::string& model, const stdfs::path& slot) const {
  if (!runtime_) return {};  // the activation's "rollback" tells the other stack
  runtime::ClientOptions co;
  co.socket = socket_;
  runtime::Client client(co);
  auto r = client.load(model, slot);
  if (!r) return fail(std::move(r).error().context("rollback: load " + slot.string()));
  return {};
}

}  // namespace mota::agent
