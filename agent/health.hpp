#pragma once
// The health gate of an install (issue: runtime, health checks and rollback): a staged slot is
// switched to only if a probe passes, and kept only if a trial through the live runtime passes.
//
//   probe  `mota-runtime probe SLOT --json` in a separate process (a model that crashes the
//          engine crashes only the probe), with a timeout: the package's health section (sample
//          input, expected output within tolerance, no NaN/Inf, latency budget). Then the
//          runtime must answer: if it is not running, nothing is switched.
//   trial  after the switch: the runtime loads the new slot; the canary (the health input)
//          runs through it and must give the expected output; for health.soak_s the runtime
//          must stay up with this very load (same generation), its error rate at most
//          max_error_rate and its p99 within the latency budget; then every executable in
//          hooks_dir must exit 0 within hook_timeout (env MOTA_MODEL, MOTA_VERSION, MOTA_SLOT).
//
// Errors: Errc::verification "<step>: <reason>" when the model fails a check; Errc::network when
// the runtime cannot be reached; Errc::cancelled when `cancel` is set mid-soak; other codes for
// local failures (the probe binary missing, ...). Each error also gets a FailureClass (below),
// which the install uses to choose between retrying and blocking (agent/install.hpp):
//   permanent  the model is wrong and stays wrong: it does not load (probe exit 3 manifest,
//              4 load; a trial load refused by the runtime), the engine crashes on it (a signal),
//              its input is not what it declares (5), the engine fails on it (6), NaN/Inf (7),
//              a wrong output (8; the trial's canary too), the runtime crashed or restarted
//              while serving it in the soak, an operator hook exited non-zero;
//   transient  it may pass when tried again on a less busy device: the latency budget missed
//              (probe exit 9, the soak's p99), the soak's error rate over max_error_rate, no
//              verdict within probe_timeout, a hook that timed out, the runtime unavailable
//              (not running or not answering);
//   local      nothing was learnt about the model: the probe could not run (exit 1/2, the
//              binary missing), the agent is stopping.
//
// Thread-safety: none; called from the install's thread.

#include <atomic>
#include <filesystem>
#include <string>

#include "agent/config.hpp"
#include "common/result.hpp"

namespace mota::agent {

// What a failure says about the version being installed (agent/install.hpp, "Failure classes").
enum class FailureClass {
  local,      // nothing about the version (network down, disk full, stopping): retried, never
              // blocks
  transient,  // may pass on retry (latency, timeouts, runtime unavailable): retried with
              // backoff, blocked after [health] max_retries
  permanent,  // will not pass (wrong output, load error, bad package): blocked at once
  bad_delta,  // a delta plan's delta (or the base it needs) is unusable; nothing learnt about the
              // version, whose full package may be fine: aborted, never blocks (never the gate's)
};
std::string_view failure_class_name(FailureClass c);

class HealthGate {
 public:
  HealthGate(HealthConfig config, std::filesystem::path runtime_socket,
             const std::atomic<bool>* cancel = nullptr)
      : config_(std::move(config)), socket_(std::move(runtime_socket)), cancel_(cancel) {}

  // The gate of one model: its own probe command (ModelSubscription::probe: exit 0 passes,
  // another exit fails, permanent; no verdict within probe_timeout: transient), and for a model
  // handed over to another stack (ModelSubscription::activate) no mota-runtime at all: without
  // a probe command it is not probed, its trial is the hooks of hooks_dir, restore does nothing.
  HealthGate for_model(const ModelSubscription& sub) const;

  // On failure, `why` (when given) is set to the failure's class (see above).
  Status probe(const std::string& model, const std::filesystem::path& slot,
               FailureClass* why = nullptr) const;
  Status trial(const std::string& model, const std::filesystem::path& slot,
               FailureClass* why = nullptr) const;
  // Asks the runtime to serve `slot` again after a rollback. Best effort: errors are returned
  // for the log only (the runtime still serves what it had if it never took the new slot).
  Status restore(const std::string& model, const std::filesystem::path& slot) const;

 private:
  Status run_probe(const std::string& model, const std::filesystem::path& slot,
                   FailureClass& why) const;
  Status run_trial(const std::string& model, const std::filesystem::path& slot,
                   FailureClass& why) const;
  Status hooks(const std::string& model, const std::string& version,
               const std::filesystem::path& slot, FailureClass& why) const;

  Status run_probe_command(const std::string& model, const std::filesystem::path& slot,
                           FailureClass& why) const;

  HealthConfig config_;
  std::filesystem::path socket_;
  const std::atomic<bool>* cancel_;
  std::filesystem::path probe_command_;  // empty: mota-runtime probe
  bool runtime_ = true;                  // false: the model is served by another stack
};

}  // namespace mota::agent
