#include "agent/cli.hpp"

#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "agent/agent.hpp"
#include "agent/config.hpp"
#include "agent/instance_lock.hpp"
#include "common/cli_words.hpp"
#include "common/log.hpp"
#include "common/semver.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::agent {

namespace {

constexpr int kExitFail = 1;

// Set by SIGTERM/SIGINT; the handler only sets the flag (lock-free, so async-signal-safe).
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}
// Set by SIGUSR1: the daemon polls at once (`mota-agent unblock` sends it).
std::atomic<bool> g_poll_now{false};
extern "C" void on_poll_signal(int) {
  g_poll_now.store(true);
}
constexpr int kExitUsage = 2;

int report_error(const Error& e) {
  std::fprintf(stderr, "mota-agent: error: %s\n", e.message().c_str());
  return kExitFail;
}

int print_status(Agent& agent, bool json) {
  auto st = agent.status();
  if (!st) return report_error(st.error());
  const std::string metadata_error = agent.metadata_error();
  if (json) {
    // Absent values are null, not "" (a version "" and no version are not the same thing).
    auto text_or_null = [](const std::string& s) { return s.empty() ? Json(nullptr) : Json(s); };
    Json arr = Json::array();
    for (const auto& m : *st) {
      Json install = nullptr;
      if (!m.install_step.empty()) {
        install = {
            {"step", m.install_step}, {"to", m.install_to}, {"attempts", m.install_attempts}};
      }
      Json blocked = Json::array();
      for (const auto& b : m.blocked) {
        blocked.push_back(
            {{"version", b.version}, {"reason", b.reason}, {"since", format_time(b.blocked_at)}});
      }
      Json retries = Json::array();
      for (const auto& r : m.retries) {
        retries.push_back({{"version", r.version},
                           {"failures", r.failures},
                           {"step", r.step},
                           {"error", r.last_error},
                           {"next_try", format_time(r.next_at)}});
      }
      arr.push_back({{"model", m.model},
                     {"channel", text_or_null(m.channel)},
                     {"version", text_or_null(m.version)},
                     {"slot", m.slot ? Json(slot_name(*m.slot)) : Json(nullptr)},
                     {"committed", m.committed},
                     {"install", install},
                     {"last_error", text_or_null(m.last_error)},
                     {"blocked", blocked},
                     {"retries", retries}});
    }
    std::printf(
        "%s\n",
        Json{{"models", arr}, {"metadata_error", text_or_null(metadata_error)}}.dump(2).c_str());
    return 0;
  }
  if (!metadata_error.empty()) {
    std::printf("metadata: refresh failing: %s\n", metadata_error.c_str());
  }
  for (const auto& m : *st) {
    if (m.channel.empty()) {  // not in agent.toml any more, but with versions blocked
      std::printf("%s (not in agent.toml)\n", m.model.c_str());
    } else {
      std::printf("%s (channel %s): %s", m.model.c_str(), m.channel.c_str(),
                  m.version.empty() ? "not installed" : m.version.c_str());
      if (m.slot) {
        std::printf(", slot %s, %s", slot_name(*m.slot).c_str(),
                    m.committed ? "committed" : "on trial");
      }
      std::printf("\n");
    }
    const bool waiting = m.install_step == "ready";
    if (waiting) {
      // Staged and probed, the switch deferred (install window, update lock): last_error is why.
      std::printf("  %s staged, waiting to switch: %s\n", m.install_to.c_str(),
                  m.last_error.c_str());
    } else if (!m.install_step.empty()) {
      std::printf("  install of %s in progress: step %s (attempt %d)\n", m.install_to.c_str(),
                  m.install_step.c_str(), m.install_attempts);
    }
    if (!m.last_error.empty() && !waiting) {
      std::printf("  last error: %s\n", m.last_error.c_str());
    }
    for (const auto& r : m.retries) {
      std::printf("  retrying %s after %s (%d failure(s) that may pass on retry, last at %s): %s\n",
                  r.version.c_str(), format_time(r.next_at).c_str(), r.failures, r.step.c_str(),
                  r.last_error.c_str());
    }
    for (const auto& b : m.blocked) {
      std::printf("  blocked %s since %s: %s\n", b.version.c_str(),
                  format_time(b.blocked_at).c_str(), b.reason.c_str());
    }
  }
  return 0;
}

}  // namespace

namespace {

// A running daemon polls at once instead of at its next poll_interval (SIGUSR1); says which.
void poll_now(Agent& agent) {
  if (auto holder = lock_holder(agent.config().state_dir);
      holder && holder->command == "run" && holder->pid > 0) {
    if (::kill(holder->pid, SIGUSR1) == 0) {
      std::printf("asked the running mota-agent (pid %d) to poll now\n",
                  static_cast<int>(holder->pid));
    } else {
      std::fprintf(stderr,
                   "mota-agent: warning: cannot signal the running mota-agent (pid %d): %s; "
                   "it installs at its next poll\n",
                   static_cast<int>(holder->pid), std::strerror(errno));
    }
  } else {
    std::printf("the next poll (mota-agent check-once, or the daemon) may install it\n");
  }
}

}  // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{"mota-agent: installs signed ML models from a mota repository", "mota-agent"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("mota-agent ") + kVersion);
  std::string config_path = kDefaultConfigPath;
  app.add_option("--config", config_path, "agent.toml")->capture_default_str();

  bool json = false;
  std::string bundle_path;
  std::function<int(Agent&)> action;

  auto* check = app.add_subcommand("check-once", "poll the repository once and install updates");
  check->callback([&] {
    action = [](Agent& agent) {
      // Serve what is committed first (a runtime restarted since the last poll), then poll.
      if (auto w = agent.reconcile(Agent::ServeCheck::watch); !w) {
        std::fprintf(stderr, "mota-agent: warning: %s\n", w.error().message().c_str());
      }
      auto r = agent.check_once();
      if (!r) return report_error(r.error());
      for (const auto& m : r->models) {
        if (m.outcome == ModelOutcome::failed) {
          std::fprintf(stderr, "mota-agent: error: %s\n", m.error.c_str());
        } else if (m.outcome == ModelOutcome::deferred) {
          std::printf("%s: %s\n", m.model.c_str(), m.error.c_str());
        } else if (m.outcome == ModelOutcome::refused) {
          std::fprintf(stderr, "mota-agent: warning: %s: refused: %s\n", m.model.c_str(),
                       m.error.c_str());
          std::printf("%s: refused, staying on %s\n", m.model.c_str(),
                      m.version.empty() ? "(nothing installed)" : m.version.c_str());
        } else {
          std::printf("%s: %s %s\n", m.model.c_str(),
                      m.outcome == ModelOutcome::installed ? "installed" : "up to date",
                      m.version.empty() ? "(nothing installed)" : m.version.c_str());
        }
      }
      if (!r->report_error.empty()) {
        std::fprintf(stderr, "mota-agent: warning: reports not delivered (kept queued): %s\n",
                     r->report_error.c_str());
      }
      return r->ok() ? 0 : kExitFail;
    };
  });
  auto* run = app.add_subcommand("run", "poll every poll_interval until SIGTERM/SIGINT");
  run->callback([&] {
    action = [](Agent& agent) {
      struct sigaction sa {};
      sa.sa_handler = on_stop_signal;
      sigemptyset(&sa.sa_mask);
      sigaction(SIGTERM, &sa, nullptr);
      sigaction(SIGINT, &sa, nullptr);
      auto st = agent.run(g_stop, &g_poll_now);
      if (!st) return report_error(st.error());
      return 0;
    };
  });
  auto* status = app.add_subcommand("status", "show installed models and installs in progress");
  status->add_flag("--json", json, "machine-readable output");
  status->callback([&] { action = [&](Agent& agent) { return print_status(agent, json); }; });
  auto* install = app.add_subcommand(
      "install",
      "install from a signed bundle (`mota bundle create`), verified against this device's trusted "
      "metadata as a poll is");
  install->add_option("FILE", bundle_path, "the .motab bundle")->required();
  install->callback([&] {
    action = [&](Agent& agent) {
      auto r = agent.install_file(bundle_path);
      if (!r) return report_error(r.error());
      const ModelReport& m = r->model;
      if (m.outcome == ModelOutcome::installed) {
        std::printf("%s: installed %s from %s (%s)\n", m.model.c_str(), m.version.c_str(),
                    bundle_path.c_str(), r->kind.c_str());
      } else {
        std::printf("%s: %s is already installed (trusted metadata updated from %s)\n",
                    m.model.c_str(), m.version.c_str(), bundle_path.c_str());
      }
      return 0;
    };
  });

  std::string unblock_model, unblock_version;
  auto* unblock = app.add_subcommand(
      "unblock", "let this device install a blocked version again (`status` lists them)");
  unblock->add_option("MODEL", unblock_model, "the model")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return valid_model_name(v) ? std::string() : "'" + v + "' is not a model name";
          },
          "MODEL"));
  unblock->add_option("VERSION", unblock_version, "the version (default: every blocked one)")
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            auto sv = SemVer::parse(v);
            return sv ? std::string() : sv.error().message();
          },
          "VERSION"));
  unblock->callback([&] {
    action = [&](Agent& agent) {
      auto lifted = agent.unblock(unblock_model, unblock_version);
      if (!lifted) return report_error(lifted.error());
      for (const auto& b : *lifted) {
        std::printf("unblocked %s %s (blocked since %s: %s)\n", b.model.c_str(), b.version.c_str(),
                    format_time(b.blocked_at).c_str(), b.reason.c_str());
      }
      poll_now(agent);
      return 0;
    };
  });

  std::string now_model;
  bool ignore_lock = false;
  auto* install_now = app.add_subcommand(
      "install-now",
      "let the staged install of MODEL switch outside its install windows, once (`status` shows "
      "it waiting)");
  install_now->add_option("MODEL", now_model, "the model")
      ->required()
      ->check(CLI::Validator(
          [](std::string& v) -> std::string {
            return valid_model_name(v) ? std::string() : "'" + v + "' is not a model name";
          },
          "MODEL"));
  install_now->add_flag("--ignore-lock", ignore_lock,
                        "switch even while an application holds the update lock");
  install_now->callback([&] {
    action = [&](Agent& agent) {
      auto version = agent.install_now(now_model, ignore_lock);
      if (!version) return report_error(version.error());
      std::printf("%s %s may switch now, outside its install windows%s\n", now_model.c_str(),
                  version->c_str(), ignore_lock ? " and without the update lock" : "");
      poll_now(agent);
      return 0;
    };
  });

  // A mistyped command is named (common/cli_words.hpp).
  {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    const std::string why =
        cli::unknown_command(cli::command_word(argc, argv, {"--config"}), names);
    if (!why.empty()) {
      std::fprintf(stderr, "mota-agent: error: %s\nRun 'mota-agent --help' for usage.\n",
                   why.c_str());
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "mota-agent: error: %s\nRun 'mota-agent --help' for usage.\n", e.what());
    return kExitUsage;
  }
  auto config = load_config(config_path);
  if (!config) {
    std::fprintf(stderr, "mota-agent: error: %s\n", config.error().message().c_str());
    return kExitUsage;
  }
  log::set_level(config->log_level);
  log::set_common_fields({{"DEVICE", config->device_id}});
  InstallOptions install_options;
  // Fault injection for the crash tests: SIGKILL this process when the install step named by
  // MOTA_AGENT_TEST_KILL_AT has been persisted and before it acts. Unset in production.
  if (const char* kill_at = std::getenv("MOTA_AGENT_TEST_KILL_AT"); kill_at && *kill_at) {
    std::string step = kill_at;
    install_options.before_step = [step](std::string_view s) {
      if (s == step) std::raise(SIGKILL);
    };
  }
  if (run->parsed()) {
    // Before the lock names this process as the daemon: `unblock` may send SIGUSR1 from then on,
    // whose default action would end the process.
    struct sigaction usr {};
    usr.sa_handler = on_poll_signal;
    usr.sa_flags = SA_RESTART;
    sigemptyset(&usr.sa_mask);
    sigaction(SIGUSR1, &usr, nullptr);
  }
  // One agent per state directory for every command that installs (agent/instance_lock.hpp).
  std::optional<InstanceLock> lock;
  for (const auto* sub : {check, run, install}) {
    if (!sub->parsed()) continue;
    auto taken = InstanceLock::acquire(config->state_dir, sub->get_name());
    if (!taken) return report_error(taken.error());
    lock.emplace(std::move(*taken));
  }
  auto agent = Agent::open(std::move(*config), std::move(install_options));
  if (!agent) return report_error(agent.error());
  return action(*agent);
}

}  // namespace mota::agent
