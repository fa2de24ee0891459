#include "manager/cli/cli.hpp"

#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <thread>

#include "common/cli_words.hpp"
#include "common/version.hpp"
#include "manager/cli/commands.hpp"
#include "manager/fleet/fleet_service.hpp"
#include "manager/fleet/metadata_refresher.hpp"
#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manager/verify/verify.hpp"
#include "net/http_server.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

constexpr int kExitFailed = 1;
constexpr int kExitUsage = 2;

// Set from the signal handler only; the serve loop polls it.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
}

std::string human_size(std::uint64_t n) {
  char buf[32];
  if (n >= (1u << 20)) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(n) / double(1u << 20));
  } else if (n >= 1024) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", double(n) / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(n));
  }
  return buf;
}

// A one-line progress indicator, only when a person is watching.
storage::Progress make_progress() {
  if (!::isatty(STDOUT_FILENO)) return {};
  return [last = -1](std::uint64_t done, std::uint64_t total) mutable {
    const int pct = total ? int(done * 100 / total) : 100;
    if (pct == last) return;
    last = pct;
    std::printf("\rpacking %3d%% (%s of %s)", pct, human_size(done).c_str(),
                human_size(total).c_str());
    if (done >= total) std::printf("\n");
    std::fflush(stdout);
  };
}

Result<std::pair<std::string, int>> parse_listen(const std::string& listen) {
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos || colon == 0) {
    return fail(Errc::invalid_argument, "--listen '" + listen + "': want HOST:PORT");
  }
  const std::string host = listen.substr(0, colon);
  const std::string port_text = listen.substr(colon + 1);
  int port = -1;
  try {
    std::size_t used = 0;
    port = std::stoi(port_text, &used);
    if (used != port_text.size()) port = -1;
  } catch (const std::exception&) {
    port = -1;
  }
  if (port < 0 || port > 65535) {
    return fail(Errc::invalid_argument, "--listen '" + listen + "': bad port '" + port_text + "'");
  }
  return std::make_pair(host, port);
}

// `mota serve`'s HTTP tuning (see ServerConfig). Connections cost no thread (event loops, one
// per core); reports wait for their group commit without holding a thread (route_async), so the
// workers only run the blocking routes (session handshakes, which are CPU-bound).
struct ServeTuning {
  int io_threads = 0;
  int threads = 8;
  std::size_t max_connections = 20000;
  std::size_t keep_alive_max = 1000;
  int keep_alive_timeout_s = 30;
};

Status serve(const std::string& dir, const std::string& listen, const ServeTuning& tuning,
             bool refresh) {
  std::error_code ec;
  const stdfs::path root = stdfs::path(dir) / "repo";
  if (!stdfs::exists(stdfs::path(dir) / "mota.toml", ec)) {
    return fail(Errc::not_found, dir + " is not a mota repository (no mota.toml)");
  }
  const auto [host, port] = MOTA_TRY(parse_listen(listen));
  net::ServerConfig config;
  config.host = host;
  config.port = port;
  config.static_root = root;
  config.io_threads = tuning.io_threads;
  config.threads = tuning.threads;
  config.max_connections = tuning.max_connections;
  config.keep_alive_max_count = tuning.keep_alive_max;
  config.keep_alive_timeout_s = tuning.keep_alive_timeout_s;
  auto server = net::make_http_server(config);
  // Fleet tracking: the report route and the rollout ticker (manager/fleet/fleet_service.hpp).
  auto fleet = MOTA_TRY(attach_fleet(*server, dir));
  // Keeps timestamp/snapshot/targets fresh (or, without their keys or with --no-refresh, warns):
  // devices refuse expired metadata, so an idle repository must not freeze the fleet.
  RefresherOptions refresher_options;
  refresher_options.resign = refresh;
  auto refresher = MOTA_TRY_CTX(MetadataRefresher::start(dir, refresher_options), "serve");
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  const int bound = MOTA_TRY_CTX(server->start(), "serve " + listen);
  std::printf("serving %s at http://%s:%d/\n", root.c_str(), host.c_str(), bound);
  std::fflush(stdout);
  while (!g_stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
  server->stop();
  std::printf("stopped\n");
  return {};
}

Json release_json(const Release& r) {
  return Json{{"name", r.name},          {"version", r.version}, {"target", r.target_path},
              {"length", r.length},      {"sha256", r.sha256},   {"tree_digest", r.tree_digest},
              {"framework", r.framework}};
}

Json delta_json(const DeltaTarget& d) {
  return Json{{"name", d.name},
              {"from", d.from},
              {"to", d.to},
              {"target", d.target_path},
              {"length", d.length},
              {"sha256", d.sha256},
              {"from_tree_digest", d.from_tree_digest},
              {"tree_digest", d.tree_digest},
              {"full_target", d.full_target},
              {"full_length", d.full_length},
              {"full_sha256", d.full_sha256}};
}

Json delta_outcome_json(const DeltaOutcome& d) {
  Json j{{"from", d.from}, {"published", d.published}, {"size", d.size}, {"ratio", d.ratio}};
  if (d.published) j["target"] = delta_json(d.target);
  if (!d.reason.empty()) j["reason"] = d.reason;
  return j;
}

void print_channel(const Channel& c) {
  std::string rollout;
  if (c.rollout.percent == 100) {
    rollout = "100%";
  } else {
    rollout = std::to_string(c.rollout.percent) + "%, others " +
              (c.rollout.fallback_version.empty() ? "unchanged" : c.rollout.fallback_version);
  }
  std::printf("%-12s %-24s %-12s %-28s%s%s\n", c.channel.c_str(), c.model.c_str(),
              c.version.c_str(), rollout.c_str(),
              c.min_version.empty() ? "" : (" min " + c.min_version).c_str(),
              c.allow_downgrade ? " downgrade-allowed" : "");
}

// What `mota init` says about keeping the metadata fresh: devices refuse expired metadata, and
// nothing renews it unless something is scheduled.
void print_freshness_advice(const Settings& s) {
  const auto& e = s.expiry;
  std::printf("  lifetimes: timestamp %s, snapshot %s, targets %s, root %s\n",
              format_duration(e.timestamp).c_str(), format_duration(e.snapshot).c_str(),
              format_duration(e.targets).c_str(), format_duration(e.root).c_str());
  std::printf(
      "  timestamp.json expires every %s: keep `mota serve` running (it re-signs it) or schedule "
      "`mota timestamp refresh` (the mota-manager package ships mota-refresh.timer); both also "
      "renew snapshot and targets\n",
      format_duration(e.timestamp).c_str());
  std::printf(
      "  the timestamp is re-signed when less than %s is left, so the refresh must run "
      "at least that often (mota serve checks every %lld s; the hourly timer suffices for "
      "timestamp lifetimes of 3h and longer)\n",
      format_duration(s.refresh_window("timestamp")).c_str(),
      static_cast<long long>(check_interval(s).count()));
  std::printf(
      "  the root expires in %s: before then sign a new root version with `mota key rotate "
      "root` (needs keys/root.pem, which belongs offline)\n",
      format_duration(e.root).c_str());
}

void print_refresh(const RefreshResult& r) {
  // Timestamp first: it is what devices fetch at every poll.
  for (const char* role : {"timestamp", "snapshot", "targets"}) {
    for (const auto& e : r.roles) {
      if (e.role != role) continue;
      const bool resigned = (e.role == "timestamp" && r.resigned_timestamp) ||
                            (e.role == "snapshot" && r.resigned_snapshot) ||
                            (e.role == "targets" && r.resigned_targets);
      std::printf(
          "%s version %llu: %s, expires %s\n", role, static_cast<unsigned long long>(e.version),
          resigned ? "re-signed" : (e.due ? "DUE" : "fresh"), format_time(e.expires).c_str());
    }
  }
  if (!r.changed()) std::printf("nothing was due: no file changed\n");
  for (const auto& w : r.warnings) std::fprintf(stderr, "mota: warning: %s\n", w.c_str());
}

}  // namespace

std::string repo_dir(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MOTA_REPO");
  if (env && *env) return env;
  return ".";
}

int cli_main(int argc, char** argv) {
  CLI::App app{"mota: publish ML models to fleets through a signed TUF repository", "mota"};
  app.set_version_flag("--version", std::string("mota ") + kVersion);
  app.require_subcommand(1);

  std::string repo_flag;
  auto add_repo = [&](CLI::App* cmd) {
    cmd->add_option("--repo", repo_flag, "repository directory (default: $MOTA_REPO or .)");
  };
  // Before the command too (`mota --repo DIR release list`); one given after it wins.
  app.add_option("--repo", repo_flag,
                 "repository directory for every command (default: $MOTA_REPO or .); also "
                 "accepted after the command");
  // The chosen command runs after parsing, so usage errors never half-run an operation.
  std::function<Status()> action;

  // init
  std::string init_dir, key_type = "ed25519", expires;
  int zstd_level = 10;
  auto* init = app.add_subcommand("init", "create a repository with fresh keys");
  init->add_option("DIR", init_dir, "directory (created; must be empty)")->required();
  init->add_option("--key-type", key_type, "ed25519, ecdsa or rsa")->capture_default_str();
  init->add_option("--expires", expires,
                   "role lifetimes, e.g. root=1y,targets=3mo,snapshot=1w,timestamp=1d");
  init->add_option("--zstd-level", zstd_level, "package compression level 1..19")
      ->capture_default_str();
  init->callback([&] {
    action = [&]() -> Status {
      Settings s;
      auto kt = crypto::key_type_from_name(key_type);
      if (!kt) return fail(Errc::invalid_argument, "--key-type: " + kt.error().message());
      s.key_type = *kt;
      s.expiry = MOTA_TRY_CTX(parse_expiry_spec(expires), "--expires");
      s.zstd_level = zstd_level;
      auto repo = MOTA_TRY(Repository::init(init_dir, s));
      std::printf("initialised repository %s (%s keys)\n", init_dir.c_str(),
                  std::string(crypto::keytype_name(s.key_type)).c_str());
      std::printf("  keys:  %s/keys (secret; keep an offline copy of root.pem)\n",
                  init_dir.c_str());
      std::printf("  serve: %s/repo (clients bootstrap from repo/metadata/1.root.json)\n",
                  init_dir.c_str());
      print_freshness_advice(repo.settings());
      return {};
    };
  });

  // release
  auto* release = app.add_subcommand("release", "model releases and their deltas");
  release->require_subcommand(1);
  std::string model_dir, version, name;
  int release_deltas = -1;
  bool add_json = false, no_load_check = false;
  std::string health_input, runtime_path;
  std::optional<double> health_tolerance, health_latency_ms, health_soak_s;
  auto* radd = release->add_subcommand("add", "pack a model directory and publish it");
  radd->add_option("MODEL_DIR", model_dir, "directory with model.json")->required();
  radd->add_option("--version", version, "semantic version of this release")->required();
  radd->add_option("--name", name, "model name (default: model.json's name)");
  radd->add_option("--deltas", release_deltas,
                   "build deltas from up to N lower released versions (default: mota.toml "
                   "delta_versions; 0: none)")
      ->check(CLI::Range(0, 100));
  radd->add_option("--health-input", health_input,
                   "raw input tensors: run the model once with mota-runtime and record them and "
                   "the output as the package's health check");
  radd->add_flag("--no-load-check", no_load_check,
                 "do not load and run the model with mota-runtime before publishing (the graph, "
                 "model.json and the backend's known limits are still checked)");
  radd->add_option("--runtime", runtime_path,
                   "mota-runtime binary for the load check and --health-input (default: beside "
                   "mota, then $PATH)");
  radd->add_option("--health-tolerance", health_tolerance,
                   "max absolute difference per output element (default 1e-3, or model.json's)");
  radd->add_option("--health-latency-budget-ms", health_latency_ms,
                   "health latency budget in ms (default: model.json's, else 1000)");
  radd->add_option("--health-soak-s", health_soak_s,
                   "seconds the agent watches the new model after the switch (default: "
                   "model.json's, else 0)");
  radd->add_flag("--json", add_json, "machine-readable output");
  add_repo(radd);
  radd->callback([&] {
    action = [&]() -> Status {
      if (health_input.empty() && (health_tolerance || health_latency_ms || health_soak_s)) {
        return fail(Errc::invalid_argument, "--health-* options need --health-input FILE");
      }
      if (no_load_check && health_input.empty() && !runtime_path.empty()) {
        return fail(Errc::invalid_argument,
                    "--runtime has nothing to run with --no-load-check and no --health-input");
      }
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      ReleaseOptions opts;
      opts.name = name;
      if (release_deltas >= 0) opts.deltas = static_cast<unsigned>(release_deltas);
      if (!add_json) opts.progress = make_progress();
      opts.checks.load = !no_load_check;
      opts.checks.runtime = runtime_path;
      if (!health_input.empty()) {
        HealthRecording h;
        h.input = health_input;
        h.runtime = runtime_path;
        h.tolerance = health_tolerance;
        h.latency_budget_ms = health_latency_ms;
        h.soak_s = health_soak_s;
        opts.health = h;
      }
      const ReleaseResult res =
          MOTA_TRY_CTX(repo.add_release(model_dir, version, opts), "release add");
      const Release& r = res.release;
      if (add_json) {
        Json out = release_json(r);
        Json deltas = Json::array();
        for (const auto& d : res.deltas) deltas.push_back(delta_outcome_json(d));
        out["deltas"] = deltas;
        out["health_recorded"] = !health_input.empty();
        out["checks"] = res.checks.to_json();
        std::printf("%s\n", out.dump(2).c_str());
        return {};
      }
      std::printf("published %s %s: %s (%s, sha256 %s)\n", r.name.c_str(), r.version.c_str(),
                  r.target_path.c_str(), human_size(r.length).c_str(), r.sha256.c_str());
      for (const auto& line : res.checks.lines()) std::printf("  %s\n", line.c_str());
      if (!health_input.empty()) {
        std::printf("  health check recorded: health/input.bin, health/expected.bin\n");
      }
      for (const auto& d : res.deltas) {
        if (d.published) {
          std::printf("  delta from %s: %s (%s, %.1f%% of the package)\n", d.from.c_str(),
                      d.target.target_path.c_str(), human_size(d.size).c_str(), 100.0 * d.ratio);
        } else if (d.size > 0) {
          std::printf("  delta from %s: skipped, %s is %.1f%% of the package (limit %.1f%%)\n",
                      d.from.c_str(), human_size(d.size).c_str(), 100.0 * d.ratio,
                      100.0 * repo.settings().delta_max_ratio);
        } else {
          std::printf("  delta from %s: skipped (warning): %s\n", d.from.c_str(), d.reason.c_str());
        }
      }
      return {};
    };
  });
  bool list_json = false;
  auto* rlist = release->add_subcommand("list", "list published releases");
  rlist->add_flag("--json", list_json, "machine-readable output");
  add_repo(rlist);
  rlist->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto releases = MOTA_TRY(repo.list_releases());
      if (list_json) {
        Json arr = Json::array();
        for (const auto& r : releases) arr.push_back(release_json(r));
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (releases.empty()) {
        std::printf("no releases\n");
        return {};
      }
      std::printf("%-24s %-12s %-10s %-10s %s\n", "NAME", "VERSION", "FRAMEWORK", "SIZE", "SHA256");
      for (const auto& r : releases) {
        std::printf("%-24s %-12s %-10s %-10s %s\n", r.name.c_str(), r.version.c_str(),
                    r.framework.c_str(), human_size(r.length).c_str(),
                    r.sha256.substr(0, 16).c_str());
      }
      return {};
    };
  });

  std::string deltas_name;
  bool deltas_json = false;
  auto* rdeltas = release->add_subcommand("deltas", "list published package deltas");
  rdeltas->add_option("NAME", deltas_name, "only this model");
  rdeltas->add_flag("--json", deltas_json, "machine-readable output");
  add_repo(rdeltas);
  rdeltas->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto deltas = MOTA_TRY(repo.list_deltas(deltas_name));
      if (deltas_json) {
        Json arr = Json::array();
        for (const auto& d : deltas) arr.push_back(delta_json(d));
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (deltas.empty()) {
        std::printf("no deltas\n");
        return {};
      }
      std::printf("%-24s %-12s %-12s %-10s %-7s %s\n", "NAME", "FROM", "TO", "SIZE", "RATIO",
                  "SHA256");
      for (const auto& d : deltas) {
        char ratio[16];
        std::snprintf(ratio, sizeof ratio, "%.1f%%",
                      d.full_length ? 100.0 * double(d.length) / double(d.full_length) : 0.0);
        std::printf("%-24s %-12s %-12s %-10s %-7s %s\n", d.name.c_str(), d.from.c_str(),
                    d.to.c_str(), human_size(d.length).c_str(), ratio,
                    d.sha256.substr(0, 16).c_str());
      }
      return {};
    };
  });

  // channel
  auto* channel = app.add_subcommand("channel", "release channels and staged rollouts");
  channel->require_subcommand(1);
  ChannelRequest creq;
  auto* cset = channel->add_subcommand("set", "point CHANNEL's MODEL at VERSION");
  cset->add_option("CHANNEL", creq.channel, "channel name, e.g. stable")->required();
  cset->add_option("MODEL", creq.model, "model name")->required();
  cset->add_option("VERSION", creq.version, "a released version")->required();
  cset->add_option("--percent", creq.percent, "share of devices getting VERSION (0..100)")
      ->check(CLI::Range(0, 100))
      ->capture_default_str();
  cset->add_flag("--allow-downgrade", creq.allow_downgrade,
                 "devices on a newer version may install VERSION");
  cset->add_option("--min-version", creq.min_version, "devices below it update regardless");
  add_repo(cset);
  cset->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const Channel c = MOTA_TRY_CTX(repo.set_channel(creq), "channel set");
      std::printf("channel %s: %s -> %s", c.channel.c_str(), c.model.c_str(), c.version.c_str());
      if (c.rollout.percent < 100) {
        std::printf(
            " for %u%% of devices (others: %s)", c.rollout.percent,
            c.rollout.fallback_version.empty() ? "no change" : c.rollout.fallback_version.c_str());
      }
      std::printf("\n");
      return {};
    };
  });
  std::string show_channel;
  bool show_json = false;
  auto* cshow = channel->add_subcommand("show", "show channels");
  cshow->add_option("CHANNEL", show_channel, "only this channel");
  cshow->add_flag("--json", show_json, "machine-readable output");
  add_repo(cshow);
  cshow->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto channels = MOTA_TRY(repo.show_channels(show_channel));
      if (show_json) {
        Json arr = Json::array();
        for (const auto& c : channels) arr.push_back(c.to_json());
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (channels.empty()) {
        std::printf("no channels\n");
        return {};
      }
      std::printf("%-12s %-24s %-12s %s\n", "CHANNEL", "MODEL", "VERSION", "ROLLOUT");
      for (const auto& c : channels) print_channel(c);
      return {};
    };
  });

  // timestamp refresh
  auto* timestamp = app.add_subcommand("timestamp", "timestamp metadata");
  timestamp->require_subcommand(1);
  bool refresh_force = false;
  auto* trefresh = timestamp->add_subcommand(
      "refresh",
      "re-sign timestamp, snapshot and targets when they expire within their refresh window "
      "(nothing when none does); run it from a timer");
  trefresh->add_flag("--force", refresh_force,
                     "re-sign the timestamp (version + 1) even when it is not due");
  add_repo(trefresh);
  trefresh->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const RefreshResult r =
          MOTA_TRY_CTX(repo.refresh(RefreshOptions{.force = refresh_force}), "timestamp refresh");
      print_refresh(r);
      if (!r.missing_keys.empty()) {
        std::string what;
        for (const auto& m : r.missing_keys) what += (what.empty() ? "" : "; ") + m;
        return fail(Errc::not_found,
                    "timestamp refresh: cannot re-sign what is due, no key here: " + what);
      }
      return {};
    };
  });

  // key rotate
  auto* key = app.add_subcommand("key", "signing keys");
  key->require_subcommand(1);
  std::string role;
  auto* krotate = key->add_subcommand("rotate", "replace a role's key (publishes a new root)");
  krotate->add_option("ROLE", role, "root, targets, snapshot or timestamp")
      ->required()
      ->check(CLI::IsMember({"root", "targets", "snapshot", "timestamp"}));
  add_repo(krotate);
  krotate->callback([&] {
    action = [&]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const std::uint64_t v = MOTA_TRY_CTX(repo.rotate_key(role), "key rotate");
      std::printf("rotated the %s key; root version %llu\n", role.c_str(),
                  static_cast<unsigned long long>(v));
      return {};
    };
  });

  // verify
  std::string verify_dir;
  auto* verify = app.add_subcommand("verify", "check a repository end to end as a client would");
  verify->add_option("DIR", verify_dir, "repository (default: --repo)");
  add_repo(verify);
  verify->callback([&] {
    action = [&]() -> Status {
      const std::string dir = verify_dir.empty() ? repo_dir(repo_flag) : verify_dir;
      const VerifyReport report = MOTA_TRY_CTX(Repository::verify(dir), "verify " + dir);
      for (const auto& line : report.checked) std::printf("ok: %s\n", line.c_str());
      for (const auto& w : report.warnings) std::printf("warning: %s\n", w.c_str());
      std::printf("repository %s verified\n", dir.c_str());
      return {};
    };
  });

  // serve
  std::string listen = "127.0.0.1:8080";
  auto* srv = app.add_subcommand("serve", "serve DIR/repo over HTTP (Range supported)");
  srv->add_option("--listen", listen, "HOST:PORT (port 0: any free port)")->capture_default_str();
  ServeTuning tuning;
  srv->add_option("--io-threads", tuning.io_threads,
                  "HTTP event-loop threads, serving every connection (0: one per core, at most 4)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  srv->add_option("--threads", tuning.threads,
                  "worker threads for blocking requests (report session handshakes)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  srv->add_option("--max-connections", tuning.max_connections,
                  "open connections at once; beyond, new ones get 503")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  srv->add_option("--keep-alive-max", tuning.keep_alive_max, "requests per keep-alive connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  srv->add_option("--keep-alive-timeout", tuning.keep_alive_timeout_s,
                  "seconds an idle keep-alive connection is kept")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  bool no_refresh = false;
  srv->add_flag("--no-refresh", no_refresh,
                "do not re-sign expiring metadata (keys kept elsewhere: run `mota timestamp "
                "refresh` there); expiry is still watched and logged");
  add_repo(srv);
  srv->callback([&] {
    action = [&]() -> Status { return serve(repo_dir(repo_flag), listen, tuning, !no_refresh); };
  });

  add_delta_commands(app, action, repo_flag);
  add_fleet_commands(app, action, repo_flag);
  add_bundle_commands(app, action, repo_flag);

  // A mistyped command is named (common/cli_words.hpp).
  {
    std::vector<std::string> names;
    for (const CLI::App* sub : app.get_subcommands({})) names.push_back(sub->get_name());
    const std::string why = cli::unknown_command(cli::command_word(argc, argv, {"--repo"}), names);
    if (!why.empty()) {
      std::fprintf(stderr, "mota: error: %s\nRun 'mota --help' for usage.\n", why.c_str());
      return kExitUsage;
    }
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::fprintf(stderr, "mota: error: %s\nRun 'mota --help' for usage.\n", e.what());
    return kExitUsage;
  }
  if (!action) {
    std::fprintf(stderr, "mota: error: no command given\n");
    return kExitUsage;
  }
  Status s = action();
  std::fflush(stdout);
  if (!s) {
    std::fprintf(stderr, "mota: error: %s\n", s.error().message().c_str());
    return s.error().code() == Errc::invalid_argument ? kExitUsage : kExitFailed;
  }
  return 0;
}

}  // namespace mota::manager
