#include "agent/cli.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>

#include "agent/agent.hpp"
#include "agent/config.hpp"
#include "common/cli_words.hpp"
#include "common/log.hpp"
#include "common/version.hpp"
#include "manifest/canonical_json.hpp"

namespace mota::agent {

namespace {

constexpr int kExitFail = 1;

// Set by SIGTERM/SIGINT; the handler only sets the flag (lock-free, so async-signal-safe).
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
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
      arr.push_back({{"model", m.model},
                     {"channel", m.channel},
                     {"version", text_or_null(m.version)},
                     {"slot", m.slot ? Json(slot_name(*m.slot)) : Json(nullptr)},
                     {"committed", m.committed},
                     {"install", install},
                     {"last_error", text_or_null(m.last_error)}});
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
    std::printf("%s (channel %s): %s", m.model.c_str(), m.channel.c_str(),
                m.version.empty() ? "not installed" : m.version.c_str());
    if (m.slot) {
      std::printf(", slot %s, %s", slot_name(*m.slot).c_str(),
                  m.committed ? "committed" : "on trial");
    }
    std::printf("\n");
    if (!m.install_step.empty()) {
      std::printf("  install of %s in progress: step %s (attempt %d)\n", m.install_to.c_str(),
                  m.install_step.c_str(), m.install_attempts);
    }
    if (!m.last_error.empty()) std::printf("  last error: %s\n", m.last_error.c_str());
  }
  return 0;
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
      auto st = agent.run(g_stop);
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
  auto agent = Agent::open(std::move(*config), std::move(install_options));
  if (!agent) return report_error(agent.error());
  return action(*agent);
}

}  // namespace mota::agent
