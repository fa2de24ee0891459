#pragma once
// The agent's persistent state: <state_dir>/agent.db (SQLite, WAL, synchronous=FULL), schema from
// agent/migrations/*.sql (embedded at build time, see agent_migrations()).
//
//   slots            (model, slot) -> version, tree_digest, status, updated_at
//   active           model -> slot it runs from, committed (false while a switch is on trial)
//   install_journal  the install state machine's persisted state, one row per model in progress
//   blocklist        (model, version) this device must not install -> reason, time
//   retries          (model, version) that failed in a way that may pass on retry -> count,
//                    step, last error, when the next try may start (migration 0002)
//   tuf              role -> trusted metadata version (for status and reports)
//   outbox           reports waiting to be sent: seq, kind, JSON body; bounded
//   counters         outbox_seq: the last seq handed out (seqs are never reused, even after acks)
//
// Every mutating method is one transaction: after a crash (power cut, SIGKILL) each one has
// happened completely or not at all. Errors carry the database file and the statement
// ("agent.db: INSERT INTO outbox: database or disk is full"; Errc::no_space for a full disk).
// Methods naming a model/version that must exist return Errc::not_found when it does not.
//
// Thread-safety: none. Use one StateStore per thread or process (each opens its own connection;
// SQLite's locks serialise writers, waiting up to StateOptions::busy_timeout).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "agent/slots.hpp"
#include "common/result.hpp"
#include "common/time.hpp"
#include "storage/sqlite.hpp"

namespace mota::agent {

// The embedded schema migrations, oldest first (generated from agent/migrations/).
std::span<const storage::Migration> agent_migrations();

enum class SlotStatus { empty, writing, valid, bad };
std::string_view slot_status_name(SlotStatus s);

struct SlotState {
  std::string model;
  Slot slot = Slot::a;
  std::string version;      // "" when empty
  std::string tree_digest;  // "" when empty
  SlotStatus status = SlotStatus::empty;
  TimePoint updated_at{};  // set by the store
};

struct ActiveState {
  std::string model;
  Slot slot = Slot::a;
  bool committed = false;  // false: switched but on trial (roll back if the health check fails)
  TimePoint updated_at{};
};

struct InstallRecord {
  std::string install_id;  // unique per install (reported to the server)
  std::string model;
  std::string from_version;  // "" for a first install
  std::string to_version;
  Slot target_slot = Slot::a;
  std::string step;  // the state machine's step name: "download", "unpack", "verify", ...
  // Loop guard: how many times `step` has been entered (1 on entry, +1 each time the same step is
  // entered again, e.g. resumed after a restart). Reset to 1 when the step changes.
  int attempts = 0;
  TimePoint started_at{};
  TimePoint updated_at{};
  // How far the download was (bytes in the partial file) when the download step was last
  // entered: an entry that finds more bytes made progress (enter_step).
  std::uint64_t bytes_downloaded = 0;
  bool used_delta = false;
  std::string last_error;  // "" when none
};

struct BlockEntry {
  std::string model;
  std::string version;
  std::string reason;
  TimePoint blocked_at{};
};

// A version whose install failed in a way that may pass on retry (agent/install.hpp, "Failure
// classes"): retried from next_at on, blocked once failures exceeds the configured maximum.
struct RetryEntry {
  std::string model;
  std::string version;
  int failures = 0;  // in a row, this one included
  std::string step;  // of the last failure
  std::string last_error;
  TimePoint next_at{};  // not tried again before this time
  TimePoint updated_at{};
};

enum class OutboxKind { event, heartbeat };
std::string_view outbox_kind_name(OutboxKind k);

struct OutboxItem {
  std::int64_t seq = 0;
  OutboxKind kind = OutboxKind::event;
  std::string body;  // JSON text (not parsed here)
  TimePoint created_at{};
};

// Bounds of the outbox. When an enqueue goes over either, the oldest heartbeats are dropped
// first; events are never dropped (a device that cannot report keeps its history of events).
struct OutboxLimits {
  std::size_t max_rows = 1000;
  std::uint64_t max_bytes = 1u << 20;  // sum of body sizes
};

struct EnqueueResult {
  std::int64_t seq = 0;                // the seq given to the new item
  std::size_t dropped_heartbeats = 0;  // may include the new item itself if it is a heartbeat
  bool over_limit = false;             // still over the bounds with only events left: all kept
};

struct OutboxStats {
  std::size_t rows = 0;
  std::uint64_t bytes = 0;
  std::int64_t last_seq = 0;  // the counter: the last seq ever handed out
};

struct StateOptions {
  std::chrono::milliseconds busy_timeout{5000};
  OutboxLimits outbox;
  // Source of the timestamps written to the database (tests pin it).
  std::function<TimePoint()> clock = now_seconds;
};

class StateStore {
 public:
  // Opens or creates <state_dir>/agent.db (state_dir must exist) and migrates it to the schema
  // this build knows; a newer schema is migrated down with the down scripts stored in it, or is
  // Errc::unsupported if one of them is irreversible.
  static Result<StateStore> open(const std::filesystem::path& state_dir, StateOptions options = {});

  // --- slots and active ----------------------------------------------------------------------
  // Inserts or replaces the row for (model, slot); updated_at is set from the clock.
  Status put_slot(const SlotState& slot);
  Result<std::optional<SlotState>> slot(const std::string& model, Slot slot);
  Result<std::vector<SlotState>> slots(const std::string& model);  // ordered a, b

  Status set_active(const std::string& model, Slot slot, bool committed);
  Result<std::optional<ActiveState>> active(const std::string& model);
  // Marks the trial switch of `model` committed. Errc::not_found without an active row.
  Status commit_active(const std::string& model);
  // Every model with an active row, by name.
  Result<std::vector<ActiveState>> all_active();

  // --- install journal -----------------------------------------------------------------------
  // Starts an install: writes the record with attempts = 1 and started_at = updated_at = now
  // (the other progress fields as given). Errc::already_exists if `model` already has one.
  Status begin_install(const InstallRecord& record);
  Result<std::optional<InstallRecord>> install(const std::string& model);
  Result<std::vector<InstallRecord>> installs();  // all in progress, by model
  // Persists that `step` is being entered (persist, then act) and returns the loop-guard count:
  // attempts + 1 if `step` is the current step, else 1. The caller gives up past its limit.
  // `progress` (the download step: bytes in the partial file now), when given, is stored as
  // bytes_downloaded, and an entry of the current step that finds more bytes than the last entry
  // did made progress: its count starts again at 1 (so a count above 1 says the entries before
  // died without progress).
  Result<int> enter_step(const std::string& model, const std::string& step,
                         std::optional<std::uint64_t> progress = std::nullopt);
  Status record_progress(const std::string& model, std::uint64_t bytes_downloaded, bool used_delta);
  // Puts the journal back to `step` after an orderly failure of a later one (a trial that may
  // pass on retry resumes at verify): step = `step`, attempts = 0, last_error = `message`.
  Status rewind_install(const std::string& model, const std::string& step,
                        const std::string& message);
  // Records that the current step failed in an orderly way (an error, not a crash): last_error
  // is set and attempts goes back to 0, so the loop guard counts only entries that ended without
  // an outcome (the agent died inside the step). A step that fails cleanly is retried at every
  // poll (network down, disk full) without ever blocking the version.
  Status record_error(const std::string& model, const std::string& message);
  // Ends an install successfully, atomically: the target slot becomes 'valid' (it must have a
  // slots row), `active` points to it, committed; the model's blocklist and retries are cleared
  // (a newer version works); the journal row is deleted.
  Status complete_install(const std::string& model);
  // Ends an install that failed or was rolled back, atomically: the target slot is marked 'bad',
  // to_version is blocklisted with `block_reason` unless it is empty (and its retries row is
  // deleted), and the journal row is deleted. `active` is left as it is (the caller has switched
  // back, or never switched).
  Status abort_install(const std::string& model, const std::string& block_reason);

  // Serving repairs at start (agent/agent.hpp, "Serving"), each one transaction:
  // fall_back: the committed slot `bad` no longer verifies or loads and `to` (the other slot,
  // 'valid') serves instead: `active` -> `to` committed, `bad` marked 'bad'. Nothing is
  // blocklisted (the next poll reinstalls the wanted version through the health gate, which
  // blocks it if the model itself is at fault). Errc::not_found when `to` has no 'valid' row.
  Status fall_back(const std::string& model, Slot to, Slot bad);
  // drop_active: the committed slot `bad` is damaged and there is nothing to fall back to: the
  // model counts as not installed (its `active` row is deleted and `bad` marked 'bad'), so the
  // next poll installs it afresh.
  Status drop_active(const std::string& model, Slot bad);

  // --- blocklist -----------------------------------------------------------------------------
  Status block(const std::string& model, const std::string& version, const std::string& reason);
  Result<bool> is_blocked(const std::string& model, const std::string& version);
  Result<std::vector<BlockEntry>> blocked(const std::string& model);
  // Every model's, by model, then time.
  Result<std::vector<BlockEntry>> all_blocked();
  Status clear_blocklist(const std::string& model);
  // Lifts the block of `model` `version` ("" = every version of the model) and forgets their
  // retries, in one transaction; returns the entries lifted (empty: nothing was blocked).
  Result<std::vector<BlockEntry>> unblock(const std::string& model, const std::string& version);

  // --- retries (failures that may pass on retry) ---------------------------------------------
  // Counts one more such failure of `model` `version` at `step`, in one transaction: failures
  // becomes the previous count + 1 (1 for the first), next_at = now + delay(failures).
  Result<RetryEntry> count_failure(const std::string& model, const std::string& version,
                                   const std::string& step, const std::string& error,
                                   const std::function<std::chrono::seconds(int)>& delay);
  Result<std::optional<RetryEntry>> retry(const std::string& model, const std::string& version);
  Result<std::vector<RetryEntry>> retries(const std::string& model);

  // --- TUF versions --------------------------------------------------------------------------
  Status set_tuf_version(const std::string& role, std::int64_t version);
  Result<std::optional<std::int64_t>> tuf_version(const std::string& role);
  Result<std::map<std::string, std::int64_t>> tuf_versions();

  // --- outbox --------------------------------------------------------------------------------
  // Appends an item with the next seq, then enforces OutboxLimits (see there). A single body
  // larger than max_bytes is Errc::too_large and consumes no seq.
  Result<EnqueueResult> enqueue(OutboxKind kind, const std::string& body);
  // Up to n oldest items, in seq order.
  Result<std::vector<OutboxItem>> peek(std::size_t n);
  // Deletes every item with seq <= up_to_seq (the server has them). Errc::invalid_argument if
  // up_to_seq was never handed out.
  Status ack(std::int64_t up_to_seq);
  Result<OutboxStats> outbox_stats();

  // The underlying connection, for diagnostics and fault-injection tests. Using it to write
  // bypasses the store's invariants.
  storage::Database& database() { return db_; }

 private:
  StateStore(storage::Database db, StateOptions options)
      : db_(std::move(db)), options_(std::move(options)) {}
  std::int64_t now() const;
  Status mark_bad(const std::string& model, Slot s, std::int64_t t);

  storage::Database db_;
  StateOptions options_;
};

}  // namespace mota::agent
