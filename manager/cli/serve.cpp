// `mota serve`: the repository over HTTP, with fleet tracking (manager/fleet/fleet_service.hpp)
// and the metadata refresher (manager/fleet/metadata_refresher.hpp), until SIGINT or SIGTERM.
#include <signal.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <utility>

#include "manager/cli/commands.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "manager/fleet/fleet_service.hpp"
#include "manager/fleet/metadata_refresher.hpp"
#include "net/http_server.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

// Set from the signal handler only; the serve loop polls it.
std::atomic<bool> g_stop{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void on_stop_signal(int) {
  g_stop.store(true);
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
  // Report bodies being received, all connections together (ServerConfig::max_bodies_bytes):
  // with 20,000 connections each allowed a 4 MiB report, memory is bounded by this, not by them.
  std::size_t max_bodies_mib = 64;
  std::size_t keep_alive_max = 1000;
  int keep_alive_timeout_s = 30;
};

// The TUF cache rule for the static files: metadata without a version prefix
// ("metadata/timestamp.json", and snapshot/targets/root when consistent snapshots are off) changes
// in place, so clients must never get it from a cache; versioned metadata ("3.snapshot.json")
// and targets never change.
std::string tuf_cache_control(std::string_view rel_path) {
  const std::string_view name = rel_path.substr(rel_path.rfind('/') + 1);
  if (name.size() <= 5 || !name.ends_with(".json")) return {};
  const std::string_view prefix = name.substr(0, name.find('.'));
  const bool versioned = !prefix.empty() && std::all_of(prefix.begin(), prefix.end(), [](char c) {
    return c >= '0' && c <= '9';
  });
  return versioned ? std::string() : std::string("no-store");
}

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
  // The largest body any route takes: a report (IngestOptions::max_body_bytes); larger ones are
  // refused from their head, never read.
  config.max_body_bytes = IngestOptions{}.max_body_bytes;
  config.max_bodies_bytes = tuning.max_bodies_mib << 20;
  config.keep_alive_max_count = tuning.keep_alive_max;
  config.keep_alive_timeout_s = tuning.keep_alive_timeout_s;
  config.static_cache_control = tuf_cache_control;
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

struct ServeFlags {
  std::string listen = "127.0.0.1:8080";
  ServeTuning tuning;
  bool no_refresh = false;
};

}  // namespace

void add_serve_command(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto f = std::make_shared<ServeFlags>();
  auto* srv = app.add_subcommand("serve", "serve DIR/repo over HTTP (Range supported)");
  srv->add_option("--listen", f->listen, "HOST:PORT (port 0: any free port)")
      ->capture_default_str();
  srv->add_option("--io-threads", f->tuning.io_threads,
                  "HTTP event-loop threads, serving every connection (0: one per core, at most 4)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  srv->add_option("--threads", f->tuning.threads,
                  "worker threads for blocking requests (report session handshakes)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  srv->add_option("--max-connections", f->tuning.max_connections,
                  "open connections at once; beyond, new ones get 503")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  srv->add_option("--max-bodies", f->tuning.max_bodies_mib,
                  "MiB of report bodies received at once, all connections together; beyond, "
                  "503 (the agent retries)")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  srv->add_option("--keep-alive-max", f->tuning.keep_alive_max,
                  "requests per keep-alive connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  srv->add_option("--keep-alive-timeout", f->tuning.keep_alive_timeout_s,
                  "seconds an idle keep-alive connection is kept")
      ->capture_default_str()
      ->check(CLI::Range(1, 3600));
  srv->add_flag("--no-refresh", f->no_refresh,
                "do not re-sign expiring metadata (keys kept elsewhere: run `mota timestamp "
                "refresh` there); expiry is still watched and logged");
  add_repo_option(srv, repo_flag);
  srv->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      return serve(repo_dir(repo_flag), f->listen, f->tuning, !f->no_refresh);
    };
  });
}

}  // namespace mota::manager
