#pragma once
// The fleet database (default DIR/fleet.db beside mota.toml): what every device reported, and the
// operator's views of it (`mota devices`, `mota device show`, `mota fleet`). Schema: the numbered
// migrations in manager/migrations/ (embedded at build time, see fleet_migrations()).
//
// Writers: `mota serve` (one writer thread, manager/fleet_ingest.hpp) and the CLI (enroll,
// rollouts). Readers and writers in several processes share the file through SQLite's WAL and
// busy timeout; each Database handle belongs to one thread at a time (storage/sqlite.hpp).
//
// Device state per model (table `installed`): version = the active version the device last
// reported; state = "ok" | "failed" | "refused" (the last event's outcome; an inventory showing
// a new version resets it to "ok"); target = the version of the last install attempt;
// rolled_back_from = the version the device went down from, when its version decreased.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

// The embedded schema migrations (generated from manager/migrations/*.sql).
std::span<const storage::Migration> fleet_migrations();

inline constexpr const char* kFleetDbFile = "fleet.db";

// Where the fleet database lives: `flag` if non-empty, else $MOTA_FLEET_DB, else
// <repo_dir>/fleet.db.
std::filesystem::path fleet_db_path(const std::string& repo_dir, const std::string& flag);

// Opens (creating if `create`) and migrates the fleet database. Errors name the file.
Result<storage::Database> open_fleet_db(const std::filesystem::path& path, bool create = true);

struct DeviceFilter {
  std::string model;    // "" = any
  std::string channel;  // "" = any; devices that never reported a channel match every channel
  std::string version;  // "" = any
  std::string state;    // "" = any; "ok", "failed", "refused"
  std::optional<std::chrono::seconds> stale;  // only devices not seen for longer than this
};

struct DeviceModelRow {
  std::string device;
  std::string model;
  std::string version;
  std::string slot;
  bool committed = false;
  std::string state;
  std::string target;
  std::string last_error;
  std::string rolled_back_from;
  std::string channel;
  std::int64_t last_seen = 0;  // Unix seconds, 0 = never
  std::int64_t updated_at = 0;
};

struct EventRow {
  std::int64_t seq = 0;
  std::string kind;
  std::string created_at;
  std::int64_t received_at = 0;
  std::string model, from, to, state, step, error;
};

struct DeviceInfo {
  std::string id;
  std::string key;
  bool enrolled = false;
  std::int64_t first_seen = 0, last_seen = 0;
  std::string agent_version, arch, tags;
  std::vector<DeviceModelRow> models;
  std::vector<EventRow> events;  // oldest first
};

struct VersionStats {
  std::string version;  // "" = nothing installed
  std::int64_t devices = 0;
  double percent = 0;          // of the model's devices
  std::int64_t failures = 0;   // devices whose last attempt to install this version failed
  std::int64_t rollbacks = 0;  // devices that went down from this version
};

struct ModelSummary {
  std::string model;
  std::int64_t devices = 0;
  std::vector<VersionStats> versions;  // by device count, descending
  std::int64_t updating = 0;           // filled by the caller (active rollouts' pending devices)
  std::int64_t failed = 0;             // devices whose last report is a failure
  std::int64_t stale = 0;              // devices not seen for longer than the threshold
};

struct FleetSummary {
  std::int64_t devices = 0;
  std::int64_t stale = 0;
  std::chrono::seconds stale_after{0};
  std::vector<ModelSummary> models;  // by name
};

// One row per (device, model) matching `filter`, sorted by device then model. Devices that never
// reported a model appear once with an empty model (unless a model/version/state filter is set).
Result<std::vector<DeviceModelRow>> list_devices(storage::Database& db, const DeviceFilter& filter,
                                                 TimePoint now);

// Inventory and full event history; std::nullopt for an unknown id.
Result<std::optional<DeviceInfo>> show_device(storage::Database& db, const std::string& id);

// Per model: version distribution, failures and rollbacks per version, stale devices. Answers
// from indexes and aggregates only (a million devices in well under a second).
Result<FleetSummary> fleet_summary(storage::Database& db, std::chrono::seconds stale_after,
                                   TimePoint now);

// Pre-registers a device key (64 lower-case hex characters). Errc::already_exists when
// the device is on record with another key (nothing changed); the same key marks it enrolled.
Status enroll_device(storage::Database& db, const std::string& id, const std::string& key_hex,
                     TimePoint now);

// A key file's content as 64 lower-case hex characters: accepts the hex form itself (as in the
// X-Mota-Key header; whitespace around it ignored) or a device.key Ed25519 private key PEM (its
// public half). Errc::parse otherwise.
Result<std::string> device_key_hex(const std::string& file_text);

// JSON forms used by `--json` (stable field names, times as YYYY-MM-DDTHH:MM:SSZ or "").
Json to_json(const DeviceModelRow& row);
Json to_json(const DeviceInfo& info);
Json to_json(const FleetSummary& summary);
std::string format_unix(std::int64_t t);  // "" for 0

}  // namespace mota::manager
