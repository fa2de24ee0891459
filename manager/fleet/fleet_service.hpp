#pragma once
// Fleet tracking inside `mota serve`: the report ingest route (manager/fleet/fleet_ingest.hpp) and
// a background thread that ticks running rollouts (manager/fleet/rollout.hpp), so a rollout
// advances and halts itself without an operator.
//
// The serve flags (--db, --admission, --enrolled-only, --new-devices-per-minute,
// --new-devices-per-address, --max-pending, --max-clock-skew, --rollout-interval, --session-ttl,
// --max-sessions) are added to the
// `serve` subcommand by add_fleet_commands() (manager/cli/fleet.cpp) and read by attach_fleet().
//
// Thread-safety: attach_fleet() and the destructor run on the serve thread; the destructor stops
// the ticker and the ingest writer, so the HTTP server must be stopped before it runs.
// The duration flags are checked when the command line is parsed (exit 2 naming the flag);
// attach_fleet() checks them again for other callers.

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>

#include "common/result.hpp"
#include "net/http_server.hpp"

namespace mota::manager {

struct FleetServeOptions {
  std::string db;  // "" = fleet_db_path(repo_dir, "")
  // New devices: "pending" (the default), "automatic" or "enrolled"
  // (manager/fleet/fleet_ingest.hpp, AdmissionMode); --enrolled-only is "enrolled".
  std::string admission = "pending";
  bool enrolled_only = false;
  std::size_t new_devices_per_minute = 600;
  std::size_t new_devices_per_address = 60;
  std::size_t max_pending = 10000;
  std::string max_clock_skew = "10m";
  std::string rollout_interval = "30s";  // "0s" disables automatic rollout ticks
  // Report sessions (protocol/session.hpp): lifetime ("0s": no sessions, every report is signed)
  // and the bound on live sessions.
  std::string session_ttl = "1h";
  std::size_t max_sessions = 250000;
};

// The options `mota serve` parsed (filled by CLI11 through add_fleet_commands()).
FleetServeOptions& fleet_serve_options();

// A duration flag's value: a number and a unit (common/time.hpp's parse_duration: 30s, 10m, 1h,
// 7d, 2w, 3mo, 1y), "0" for none, and with `allow_ms` milliseconds ("500ms"). Errc::
// invalid_argument (a usage error) otherwise, saying which forms are accepted; the message does
// not name the flag (callers add it).
Result<std::chrono::milliseconds> parse_duration_value(const std::string& text,
                                                       bool allow_ms = false);

class FleetService {
 public:
  virtual ~FleetService() = default;
};

// Opens the fleet database, registers the report route on `server` (before it starts) and starts
// the rollout ticker. Errors: bad option values (Errc::invalid_argument), database errors.
Result<std::unique_ptr<FleetService>> attach_fleet(
    net::HttpServer& server, const std::string& repo_dir,
    const FleetServeOptions& options = fleet_serve_options());

}  // namespace mota::manager
