#pragma once
// The agent's poll: TUF refresh, then for each subscribed model the channel target, the wanted
// version, the package target, and an install (agent/install.hpp). Every failure is a clear error
// plus an event in the outbox (agent/state.hpp); the active model is never touched by a failure.
//
// Event body (JSON): {"device","time","model","from","to","state","error","bytes","kind":"full"}
// with state "installed" | "failed" | "refused".
//
// Thread-safety: none; one Agent per state directory and process.

#include <atomic>
#include <optional>
#include <string>
#include <vector>

#include "agent/config.hpp"
#include "agent/install.hpp"
#include "agent/state.hpp"
#include "common/result.hpp"

namespace mota::agent {

enum class ModelOutcome { up_to_date, installed, failed };

struct ModelReport {
  std::string model;
  ModelOutcome outcome = ModelOutcome::up_to_date;
  std::string version;  // installed version after the poll ("" if none)
  std::string error;    // for failed
};

struct CheckReport {
  std::vector<ModelReport> models;
  bool ok() const;  // no model failed
};

struct ModelStatus {
  std::string model;
  std::string channel;
  std::string version;  // "" when nothing installed
  std::optional<Slot> slot;
  bool committed = false;
  std::string install_step;  // "" when no install in progress
  std::string install_to;
  int install_attempts = 0;
  std::string last_error;
};

class Agent {
 public:
  // Creates state_dir (and its metadata dir, seeded from config.trusted_root on first start)
  // and opens the state database.
  static Result<Agent> open(Config config, InstallOptions install_options = {});

  // One poll. Errors only for what stops the whole poll (TUF refresh, database); per-model
  // failures are in the report (and in the outbox).
  Result<CheckReport> check_once();

  // Installs a local package (already trusted by the caller). `tree_digest` empty: the
  // package's own tree is accepted (read from the package).
  Status install_file(const std::filesystem::path& package, const std::string& tree_digest);

  Result<std::vector<ModelStatus>> status();

  // The daemon loop: check_once(), then wait poll_interval + uniform(0, poll_jitter), until
  // `stop` becomes true, which is noticed within about 100 ms (also in the middle of a download:
  // the partial file is kept for the next start). A failed poll is logged and retried at the next
  // interval. Returns success when stopped.
  Status run(const std::atomic<bool>& stop);

  StateStore& state() { return state_; }
  const Config& config() const { return config_; }

 private:
  Agent(Config config, StateStore state, InstallOptions opts)
      : config_(std::move(config)), state_(std::move(state)), install_options_(std::move(opts)) {}
  void event(const std::string& model, const std::string& from, const std::string& to,
             const std::string& state, const std::string& error, std::uint64_t bytes);
  Result<std::string> installed_version(const std::string& model);
  void set_last_error(const std::string& model, const std::string& error);

  Config config_;
  StateStore state_;
  InstallOptions install_options_;
  const std::atomic<bool>* cancel_ = nullptr;  // set during run()
};

}  // namespace mota::agent
