#include "runtime/cli.hpp"

#include <CLI/CLI.hpp>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <mutex>
#include <thread>

#include "common/cli_words.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/notify.hpp"
#include "common/version.hpp"
#include "runtime/client.hpp"
#include "runtime/config.hpp"
#include "runtime/inspect.hpp"
#include "runtime/probe.hpp"
#include "runtime/server.hpp"
#include "runtime/startup.hpp"
#include "runtime/store.hpp"

namespace mota::runtime {

namespace {

constexpr int kExitFail = 1;
constexpr int kExitUsage = 2;  // as in every mota binary; probe's verdicts are 3..9
constexpr const char* kDefaultConfig = "/etc/mota/runtime.toml";

std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

int report_error(const Error& e) {
  std::fprintf(stderr, "mota-runtime: error: %s\n", e.message().c_str());
  return kExitFail;
}

// A bad command line (also a flag value found bad after parsing): exit 2, as in every mota
// binary. A bad config file is not one: that is the operation failing (exit 1).
int usage_error(const std::string& message) {
  std::fprintf(stderr, "mota-runtime: error: %s\nRun 'mota-runtime --help' for usage.\n",
               message.c_str());
  return kExitUsage;
}

// Sends WATCHDOG=1 at half of WatchdogSec= while the API answers: each keep-alive follows a
// GET /v1/health through the runtime's own listener, so a runtime whose event loop or worker pool
// is stuck (every worker held by a hung load) stops pinging and systemd restarts it. Nothing runs
// when the watchdog is off.
class Watchdog {
 public:
  Watchdog(const ServerOptions& server, int tcp_port) {
    const auto interval = notify::watchdog_interval();
    if (interval.count() == 0) return;
    const auto period = std::chrono::duration_cast<std::chrono::milliseconds>(interval / 2);
    ClientOptions o;
    if (!server.socket.empty()) {
      o.socket = server.socket;
    } else {
      o.tcp = server.tcp_host + ":" + std::to_string(tcp_port);
    }
    // An answer later than half a period could not be followed by a keep-alive in time.
    o.timeout = std::max(std::chrono::milliseconds(1), period / 2);
    o.connect_timeout = o.timeout;
    thread_ = std::thread([this, o, period] { run(o, period); });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

 private:
  void run(const ClientOptions& o, std::chrono::milliseconds period) {
    Client client(o);
    std::unique_lock lock(mu_);
    while (!done_) {
      lock.unlock();
      auto h = client.health();
      if (h) {
        notify::send("WATCHDOG=1");
      } else {
        log::warn("watchdog: the API did not answer, no keep-alive sent",
                  {{"ERROR", h.error().message()}});
      }
      lock.lock();
      cv_.wait_for(lock, period, [this] { return done_; });
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

struct ServeFlags {
  std::string config = kDefaultConfig;
  std::string socket, tcp, log_level;
  int pool_size = 0, engine_threads = -1;
  std::vector<std::string> models;
  std::string agent_state_dir;
};

int serve(const ServeFlags& f) {
  auto cfg = load_config(f.config, f.config != kDefaultConfig);
  if (!cfg) return report_error(cfg.error());
  Config c = std::move(*cfg);
  if (!f.socket.empty()) c.server.socket = f.socket == "none" ? "" : f.socket;
  if (!f.tcp.empty()) {
    auto st = parse_host_port(f.tcp, c.server.tcp_host, c.server.tcp_port);
    if (!st) return usage_error(st.error().context("--tcp").message());
  }
  if (f.pool_size > 0) c.store.load.pool_size = f.pool_size;
  if (f.engine_threads >= 0) c.engine_threads = f.engine_threads;
  if (!f.log_level.empty() && !log::parse_level(f.log_level, c.log_level)) {
    return usage_error("--log-level: debug, info, warn or error");
  }
  for (const auto& m : f.models) {
    auto eq = m.find('=');
    if (eq == std::string::npos || eq == 0) {
      return usage_error("--model " + m + ": expected NAME=SLOT");
    }
    c.models.push_back({m.substr(0, eq), std::filesystem::absolute(m.substr(eq + 1))});
  }
  log::set_level(c.log_level);
  init_engines(c.engine_threads);

  if (!f.agent_state_dir.empty()) c.agent_state_dir = std::filesystem::absolute(f.agent_state_dir);
  if (c.isolate_loads) {
    // The probe of a model's first load runs in this very binary (runtime/store.hpp).
    std::error_code ec;
    auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
    if (ec) {
      log::warn("cannot find the runtime's own binary; first loads run in-process",
                {{"ERROR", ec.message()}});
    } else {
      c.store.isolate_with = self;
    }
  }
  ModelStore store(c.store);
  (void)load_startup_models(store, c);  // each outcome is logged there
  std::signal(SIGTERM, on_stop_signal);
  std::signal(SIGINT, on_stop_signal);
  std::signal(SIGPIPE, SIG_IGN);
  auto server = Server::start(store, c.server);
  if (!server) return report_error(server.error().context("serve"));
  log::info("mota-runtime serving",
            {{"SOCKET", c.server.socket.string()},
             {"TCP", c.server.tcp_host.empty()
                         ? std::string("off")
                         : c.server.tcp_host + ":" + std::to_string((*server)->tcp_port())},
             {"POOL_SIZE", std::to_string(c.store.load.pool_size)}});
  (void)notify::ready("serving");
  {
    Watchdog watchdog(c.server, (*server)->tcp_port());
    while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  (void)notify::stopping();
  (*server)->stop();
  log::info("mota-runtime stopped");
  return 0;
}

int probe_cmd(const std::string& slot, bool json, int runs) {
  ProbeOptions opts;
  opts.runs = runs;
  auto rep = probe(slot, opts);
  if (json) {
    std::printf("%s\n", rep.to_json().dump(2).c_str());
  } else if (rep.ok) {
    std::printf("probe %s %s: ok (load %.1f ms, latency %.3f ms%s)\n", rep.name.c_str(),
                rep.version.c_str(), rep.load_ms, rep.latency_ms,
                rep.has_health ? "" : "; no health section: load and zero-input run only");
  } else {
    std::fprintf(stderr, "mota-runtime: probe %s failed at %s: %s\n", slot.c_str(),
                 rep.step.c_str(), rep.reason.c_str());
  }
  return rep.exit_code();
}

int run_cmd(const std::string& slot, const std::string& input, const std::string& output) {
  auto in = fs::read_file(input, std::uint64_t{1} << 30);
  if (!in) return report_error(in.error());
  auto out = run_raw(slot, *in);
  if (!out) return report_error(out.error().context("run " + slot));
  auto st = fs::write_file_atomic(output, *out);
  if (!st) return report_error(st.error());
  return 0;
}

int inspect_cmd(const std::string& model, bool json) {
  auto rep = inspect_model(model);
  if (!rep) {
    if (json) {
      std::printf(
          "%s\n",
          Json{{"ok", false}, {"model", model}, {"error", rep.error().message()}}.dump(2).c_str());
    }
    return report_error(rep.error().context("inspect"));
  }
  if (json) {
    std::printf("%s\n", rep->to_json().dump(2).c_str());
  } else {
    std::printf("%s", rep->to_text().c_str());
  }
  return rep->ok() ? 0 : kExitFail;
}

}  // namespace

int cli_main(int argc, char** argv) {
  CLI::App app{"mota-runtime: serves models over a local socket and probes model slots",
               "mota-runtime"};
  app.set_version_flag("--version", std::string("mota-runtime ") + kVersion);
  app.require_subcommand(1);

  ServeFlags sf;
  auto* serve_cmd = app.add_subcommand("serve", "Serve models until SIGTERM");
  serve_cmd->add_option("--config", sf.config, "TOML config file")->capture_default_str();
  serve_cmd->add_option("--socket", sf.socket, "Unix socket path (\"none\": no socket)");
  serve_cmd->add_option("--tcp", sf.tcp, "Also listen on loopback HOST:PORT");
  serve_cmd->add_option("--pool-size", sf.pool_size, "Engine instances per model");
  serve_cmd->add_option("--engine-threads", sf.engine_threads, "OpenCV worker threads");
  serve_cmd->add_option("--model", sf.models, "NAME=SLOT to load at start (repeatable)");
  serve_cmd->add_option("--log-level", sf.log_level, "debug, info, warn, error");
  serve_cmd->add_option("--agent-state-dir", sf.agent_state_dir,
                        "mota-agent's state_dir: load what it committed at start");

  std::string slot, input, output;
  bool json = false;
  int runs = 3;
  auto* probe_sc = app.add_subcommand("probe", "Run a slot's health check (exit 0 = pass)");
  probe_sc->add_option("slot", slot, "Unpacked model directory")->required();
  probe_sc->add_flag("--json", json, "Print the report as JSON on stdout");
  probe_sc->add_option("--runs", runs, "Timed inferences")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));

  auto* run_sc = app.add_subcommand("run", "Run a model once on raw inputs, write raw outputs");
  run_sc->add_option("slot", slot, "Unpacked model directory")->required();
  run_sc->add_option("--input", input, "Raw input file")->required();
  run_sc->add_option("--output", output, "Where to write the raw outputs")->required();

  std::string model;
  auto* inspect_sc = app.add_subcommand(
      "inspect",
      "Show an ONNX model's inputs, outputs, opsets and operators, what the bundled "
      "backend refuses, and a model.json skeleton (exit 0 = nothing refused)");
  inspect_sc->add_option("model", model, "An .onnx file or a model directory with model.json")
      ->required();
  inspect_sc->add_flag("--json", json, "Print the report as JSON");

  // A mistyped command is named (common/cli_words.hpp).
  {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    const std::string why = cli::unknown_command(cli::command_word(argc, argv, {}), names);
    if (!why.empty()) return usage_error(why);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(e.what());
  }
  if (serve_cmd->parsed()) return serve(sf);
  if (probe_sc->parsed()) return probe_cmd(slot, json, runs);
  if (inspect_sc->parsed()) return inspect_cmd(model, json);
  return run_cmd(slot, input, output);
}

}  // namespace mota::runtime
