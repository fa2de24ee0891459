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
// Errors: Errc::verification "<step>: <reason>" when the model fails (the install is rolled back
// and the version blocked); Errc::network when the runtime cannot be reached (rolled back, not
// blocked: it is not the model's fault); Errc::cancelled when `cancel` is set mid-soak; other
// codes for local failures (the probe binary missing, ...).
//
// Thread-safety: none; called from the install's thread.

#include <atomic>
#include <filesystem>
#include <string>

#include "agent/config.hpp"
#include "common/result.hpp"

namespace mota::agent {

class HealthGate {
 public:
  HealthGate(HealthConfig config, std::filesystem::path runtime_socket,
             const std::atomic<bool>* cancel = nullptr)
      : config_(std::move(config)), socket_(std::move(runtime_socket)), cancel_(cancel) {}

  Status probe(const std::string& model, const std::filesystem::path& slot) const;
  Status trial(const std::string& model, const std::filesystem::path& slot) const;
  // Asks the runtime to serve `slot` again after a rollback. Best effort: errors are returned
  // for the log only (the runtime still serves what it had if it never took the new slot).
  Status restore(const std::string& model, const std::filesystem::path& slot) const;

 private:
  Status hooks(const std::string& model, const std::string& version,
               const std::filesystem::path& slot) const;

  HealthConfig config_;
  std::filesystem::path socket_;
  const std::atomic<bool>* cancel_;
};

// Runs argv with extra environment variables, output captured (the last 4 KiB of each stream),
// killed (SIGKILL) after `timeout`. exit_code -1 with `signal` set when killed by a signal.
struct ChildResult {
  int exit_code = -1;
  int signal = 0;
  bool timed_out = false;
  std::string out, err;
};
Result<ChildResult> run_child(const std::vector<std::string>& argv,
                              const std::vector<std::string>& extra_env,
                              std::chrono::milliseconds timeout);

}  // namespace mota::agent
