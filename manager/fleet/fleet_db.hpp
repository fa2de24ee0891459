#pragma once
// The fleet database (default DIR/fleet.db beside mota.toml): what every device reported, and the
// operator's views of it (`mota devices`, `mota device show`, `mota fleet`). Schema: the numbered
// migrations in manager/fleet/migrations/ (embedded at build time, see fleet_migrations()).
//
// Writers: `mota serve` (one writer thread, manager/fleet/fleet_ingest.hpp) and the CLI (enroll,
// rollouts). Readers and writers in several processes share the file through SQLite's WAL and
// busy timeout; each Database handle belongs to one thread at a time (storage/sqlite.hpp).
//
// Device state (the writer: manager/fleet/fleet_ingest.cpp; docs/fleet.md, "Device state"). Each
// column follows the latest fact the device reported; reports are applied in the device's order.
// Per model (table `installed`):
//   version           the active version ('' = none): from "installed" events (`to`), from the
//                     other events' `from` (what the device runs after them), and from every
//                     heartbeat's inventory (the truth about what runs).
//   slot, channel     where and for which channel it is served: from heartbeats and from events
//                     that carry them ("slot" "" = nothing served; a channel "" never erases one).
//   state             the model's condition now: "ok" after "installed" and "ok" events and after
//                     an inventory showing another version; "failed" after a "failed" event or an
//                     automatic rollback ("rolled_back"); "refused" after a "refused" event.
//   last_error        the error of the failure or refusal that set the state ('' when "ok").
//   target            the version of the last event that named one (`to`).
//   failed_version    the version whose last install attempt failed before the switch, while the
//   failed_at         device does not run it (failed_at: when the server received the failure).
//                     Set by "failed" events with a `to`; cleared by an "installed" event (the
//                     device moved on) and when the device runs that version. An "ok" event
//                     keeps it: a device healthy again still failed to install that version.
//   rolled_back_from  the version the device rolled back from *automatically* ("rolled_back"
//                     events: a failed trial, or a committed slot that no longer loads at start);
//                     cleared like failed_version. A version going down in an inventory or an
//                     "installed" event (an operator's --allow-downgrade, a USB install) is not a
//                     rollback.
// Not failures of any version: a "failed" event without a `to` (e.g. the channel file could not be
// fetched) sets state and last_error only; TUF metadata errors are a device condition.
// Per device (table `devices`): metadata_error / metadata_error_since, the device's failing TUF
// refresh ("metadata_error" events, and "failed" events with step "refresh" from older agents),
// cleared by a "metadata_ok" event; since = when the device first reported it (its clock, never
// later than the server's). blocked: the versions the device will not install, with the reason
// and since when, as its last heartbeat listed them (agent/report.hpp; migration 0004); a
// heartbeat without the list (older agents) leaves it as it was.
// A "refused" state (the device does not meet a release's requirements, or the version policy
// refused it) is counted per model by `mota fleet` (REFUSED).
// Counts: FAILURES of a version = devices whose failed_version is it; ROLLBACKS = devices whose
// rolled_back_from is it (disjoint per version); a rollout counts the same two
// (manager/fleet/rollout.hpp).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/labels.hpp"
#include "common/result.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

// The embedded schema migrations (generated from manager/fleet/migrations/*.sql).
std::span<const storage::Migration> fleet_migrations();

inline constexpr const char* kFleetDbFile = "fleet.db";

// Where the fleet database lives: `flag` if non-empty, else $MOTA_FLEET_DB, else
// <repo_dir>/fleet.db.
std::filesystem::path fleet_db_path(const std::string& repo_dir, const std::string& flag);

// Opens (creating if `create`) and migrates the fleet database. Errors name the file.
Result<storage::Database> open_fleet_db(const std::filesystem::path& path, bool create = true);

// Labels as stored in devices.labels / operator_labels (migration 0006): a JSON object, sorted.
std::string labels_json(const Labels& labels);
// Back from that form; what is not a string label is left out (the writer never stores one).
Labels parse_labels_json(std::string_view text);

// A SQL condition that keeps at least every device whose labels `select` matches: its equality,
// set and existence requirements through SQLite's json_extract (negative requirements cannot
// narrow: absent labels match them). The selector itself is still evaluated on every row that
// remains; this only spares most rows the C++ side (a million devices: 10 s -> about 1 s).
// `labels` and `operator_labels` are the SQL columns (operator_labels "": the reported labels
// alone, as targeted rollouts see them). Appends its parameters to `params`; "" when no
// requirement narrows.
std::string selector_prefilter(const Selector& select, const std::string& labels,
                               const std::string& operator_labels,
                               std::vector<std::string>& params);

struct DeviceFilter {
  std::string model;    // "" = any
  std::string channel;  // "" = any; devices that never reported a channel match every channel
  std::string version;  // "" = any
  std::string state;    // "" = any; "ok", "failed", "refused"
  // "" = any; "metadata": devices whose metadata refresh fails; "ok": those whose does not.
  std::string condition;
  std::optional<std::chrono::seconds> stale;  // only devices not seen for longer than this
  std::string admission;                      // "" = any; "admitted", "pending", "rejected"
  std::optional<Selector> select;             // only devices whose labels it matches
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
  std::string failed_version;
  std::int64_t failed_at = 0;  // Unix seconds, 0 = none
  std::int64_t last_seen = 0;  // Unix seconds, 0 = never
  std::int64_t updated_at = 0;
  // The device's condition (the same on each of its rows): '' = its metadata refresh works.
  std::string metadata_error;
  std::int64_t metadata_error_since = 0;
  std::string admission;  // the device's: "admitted", "pending" or "rejected"
  Labels labels;          // the device's, with the operator's on top
};

struct EventRow {
  std::int64_t seq = 0;
  std::string kind;
  std::string created_at;
  std::int64_t received_at = 0;
  std::string model, from, to, state, step, error;
  // From the stored body: nullopt when the event did not carry them (older agents).
  std::optional<std::string> slot, channel;
};

// One entry of a device's block list (as the device reported it; since is its clock).
struct BlockedVersion {
  std::string model, version, reason, since;
};

struct DeviceInfo {
  std::string id;
  std::string key;
  bool enrolled = false;
  std::int64_t first_seen = 0, last_seen = 0;
  std::string agent_version, arch, tags;
  std::string metadata_error;  // '' = none
  std::int64_t metadata_error_since = 0;
  std::string admission;    // "admitted", "pending", "rejected" (see Admission below)
  std::string admitted_by;  // "operator", "enrolled", "automatic", "enrollment:NAME", ""
  std::int64_t admitted_at = 0;
  std::string first_remote;  // the address of the first report ('' = unknown)
  Labels reported_labels;    // as its last heartbeat said (migration 0006)
  Labels operator_labels;    // `mota devices label`
  Labels labels() const { return merge_labels(reported_labels, operator_labels); }
  // nullopt: the device never reported a block list (an agent older than the list).
  std::optional<std::vector<BlockedVersion>> blocked;
  std::vector<DeviceModelRow> models;
  std::vector<EventRow> events;  // oldest first
};

struct VersionStats {
  std::string version;  // "" = nothing installed
  std::int64_t devices = 0;
  double percent = 0;          // of the model's devices
  std::int64_t failures = 0;   // devices whose failed_version is this (see above)
  std::int64_t rollbacks = 0;  // devices whose rolled_back_from is this: automatic rollbacks
};

struct ModelSummary {
  std::string model;
  std::int64_t devices = 0;
  std::vector<VersionStats> versions;  // by device count, descending
  std::int64_t updating = 0;           // filled by the caller (active rollouts' pending devices)
  std::int64_t failed = 0;             // devices whose state for the model is "failed" now
  std::int64_t refused = 0;            // devices whose state for the model is "refused" now
  std::int64_t stale = 0;              // devices not seen for longer than the threshold
};

// Every count above, and `devices` and `stale` below, are of admitted devices only; pending and
// rejected devices are shown apart (docs/security.md, "Devices").
struct FleetSummary {
  std::int64_t devices = 0;  // admitted
  std::int64_t pending = 0;
  std::int64_t rejected = 0;
  std::int64_t stale = 0;
  std::int64_t metadata_errors = 0;  // devices whose metadata refresh fails
  std::chrono::seconds stale_after{0};
  std::vector<ModelSummary> models;  // by name
};

// One row per (device, model) matching `filter`, sorted by device then model. Devices that never
// reported a model appear once with an empty model (unless a model/version/state filter is set).
Result<std::vector<DeviceModelRow>> list_devices(storage::Database& db, const DeviceFilter& filter,
                                                 TimePoint now);

// The same rows one at a time, without holding them all (a million devices' rows take GBs).
Status for_each_device_row(storage::Database& db, const DeviceFilter& filter, TimePoint now,
                           const std::function<void(DeviceModelRow&&)>& each);

// Inventory and full event history; std::nullopt for an unknown id.
Result<std::optional<DeviceInfo>> show_device(storage::Database& db, const std::string& id);

// Per model: version distribution, failures and rollbacks per version, failed and stale devices;
// fleet-wide: devices, stale ones and those whose metadata refresh fails. Answers from indexes and
// aggregates only (a million devices in well under a second; the stale count per model costs one
// lookup per stale device).
Result<FleetSummary> fleet_summary(storage::Database& db, std::chrono::seconds stale_after,
                                   TimePoint now);
// The same for the devices `select` matches: computed from a scan of their rows (a selector is
// not indexed), so it costs about what `mota devices` does.
Result<FleetSummary> fleet_summary(storage::Database& db, std::chrono::seconds stale_after,
                                   TimePoint now, const Selector& select);

// Operator labels (`mota devices label`): sets `set` and removes `remove` on each device in
// `ids`, in one transaction. Errc::not_found naming the first unknown id, Errc::invalid_argument
// for a bad label, a "mota/" key (the device's facts), or a device that would have more than
// kMaxLabels operator labels (nothing changed then). Returns how many devices changed.
Result<std::int64_t> label_devices(storage::Database& db, const std::vector<std::string>& ids,
                                   const Labels& set, const std::vector<std::string>& remove);

// Pre-registers a device key (64 lower-case hex characters). Errc::already_exists when
// the device is on record with another key (nothing changed); the same key marks it enrolled.
Status enroll_device(storage::Database& db, const std::string& id, const std::string& key_hex,
                     TimePoint now);

// Device admission (migration 0005). A device's reports count (fleet statistics, rollout
// decisions) only while it is admitted; pending devices are stored and shown apart; rejected
// devices' reports are refused and their key stays on record so that nobody takes the id.
enum class Admission { admitted, pending, rejected };
std::string_view admission_name(Admission a);

// Sets the admission of each device in `ids` (by: "operator"). Errc::not_found naming the first
// unknown id (nothing changed then). Returns how many devices changed.
Result<std::int64_t> set_admission(storage::Database& db, const std::vector<std::string>& ids,
                                   Admission to, TimePoint now);

// Fleet enrollment keys (docs/security.md): an image carries the private half; a device that
// presents the key's signature over (device id, device key) (protocol/enrollment.hpp) is admitted
// on first contact, until the key is revoked.
struct EnrollmentKey {
  std::string name;
  std::string key;  // Ed25519 public key, 64 lower-case hex
  std::int64_t created_at = 0;
  std::int64_t revoked_at = 0;  // 0 = in force
  std::int64_t admitted = 0;    // devices it admitted
};
// Records a new key. Errc::already_exists for a name or key on record.
Status add_enrollment_key(storage::Database& db, const std::string& name,
                          const std::string& key_hex, TimePoint now);
Result<std::vector<EnrollmentKey>> list_enrollment_keys(storage::Database& db);
// Errc::not_found for an unknown name; revoking a revoked key changes nothing.
Status revoke_enrollment_key(storage::Database& db, const std::string& name, TimePoint now);
Json to_json(const EnrollmentKey& key);

// A key file's content as 64 lower-case hex characters: accepts the hex form itself (as in the
// X-Mota-Key header; whitespace around it ignored) or a device.key Ed25519 private key PEM (its
// public half). Errc::parse otherwise.
Result<std::string> device_key_hex(const std::string& file_text);

// JSON forms used by `--json` (stable field names; docs/fleet.md lists their types). Times are
// "YYYY-MM-DDTHH:MM:SSZ"; an absent value (no version, no error, never seen, not reported) is
// null, never "".
Json to_json(const DeviceModelRow& row);
Json to_json(const DeviceInfo& info);
Json to_json(const FleetSummary& summary);
std::string format_unix(std::int64_t t);  // "" for 0
Json json_time(std::int64_t t);           // null for 0
Json json_text(const std::string& s);     // null for ""

}  // namespace mota::manager
