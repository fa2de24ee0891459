#include "agent/state.hpp"

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>

namespace mota::agent {

using storage::Database;
using storage::Statement;
using storage::Step;
using storage::Transaction;

namespace {

constexpr const char* kDbFile = "agent.db";

std::int64_t to_unix(TimePoint t) {
  return t.time_since_epoch().count();
}
TimePoint from_unix(std::int64_t v) {
  return TimePoint(std::chrono::seconds(v));
}

template <class... Args>
Result<Statement> query(Database& db, std::string_view sql, const Args&... args) {
  auto st = MOTA_TRY(db.prepare(sql));
  MOTA_TRY(st.bind_all(args...));
  return st;
}

template <class... Args>
Status run(Database& db, std::string_view sql, const Args&... args) {
  auto st = MOTA_TRY(query(db, sql, args...));
  return st.run();
}

// Values read back are checked: a row the schema allows but this code does not understand (e.g.
// written by a newer agent) is a clear error, never a guess.
Result<Slot> parse_slot(const std::string& s, std::string_view table) {
  if (s == "a") return Slot::a;
  if (s == "b") return Slot::b;
  return fail(Errc::parse,
              std::string(kDbFile) + ": " + std::string(table) + ": unknown slot '" + s + "'");
}

Result<SlotStatus> parse_status(const std::string& s) {
  if (s == "empty") return SlotStatus::empty;
  if (s == "writing") return SlotStatus::writing;
  if (s == "valid") return SlotStatus::valid;
  if (s == "bad") return SlotStatus::bad;
  return fail(Errc::parse, std::string(kDbFile) + ": slots: unknown status '" + s + "'");
}

Result<OutboxKind> parse_kind(const std::string& s) {
  if (s == "event") return OutboxKind::event;
  if (s == "heartbeat") return OutboxKind::heartbeat;
  return fail(Errc::parse, std::string(kDbFile) + ": outbox: unknown kind '" + s + "'");
}

Status require_changed(Database& db, std::string_view what, const std::string& key) {
  if (db.changes() == 0)
    return fail(Errc::not_found, std::string(what) + " " + key + ": no such row");
  return {};
}

constexpr std::string_view kSlotColumns = "model, slot, version, tree_digest, status, updated_at";

Result<SlotState> read_slot(const Statement& st) {
  SlotState s;
  s.model = st.column_text(0);
  s.slot = MOTA_TRY(parse_slot(st.column_text(1), "slots"));
  s.version = st.column_text(2);
  s.tree_digest = st.column_text(3);
  s.status = MOTA_TRY(parse_status(st.column_text(4)));
  s.updated_at = from_unix(st.column_int64(5));
  return s;
}

Result<ActiveState> read_active(const Statement& st) {
  ActiveState a;
  a.model = st.column_text(0);
  a.slot = MOTA_TRY(parse_slot(st.column_text(1), "active"));
  a.committed = st.column_int64(2) != 0;
  a.updated_at = from_unix(st.column_int64(3));
  return a;
}

constexpr std::string_view kJournalColumns =
    "install_id, model, from_version, to_version, target_slot, step, attempts, started_at,"
    " updated_at, bytes_downloaded, used_delta, last_error";

Result<InstallRecord> read_install(const Statement& st) {
  InstallRecord r;
  r.install_id = st.column_text(0);
  r.model = st.column_text(1);
  r.from_version = st.column_text(2);
  r.to_version = st.column_text(3);
  r.target_slot = MOTA_TRY(parse_slot(st.column_text(4), "install_journal"));
  r.step = st.column_text(5);
  r.attempts = static_cast<int>(st.column_int64(6));
  r.started_at = from_unix(st.column_int64(7));
  r.updated_at = from_unix(st.column_int64(8));
  r.bytes_downloaded = static_cast<std::uint64_t>(st.column_int64(9));
  r.used_delta = st.column_int64(10) != 0;
  r.last_error = st.column_text(11);
  return r;
}

}  // namespace

std::string_view slot_status_name(SlotStatus s) {
  switch (s) {
    case SlotStatus::empty:
      return "empty";
    case SlotStatus::writing:
      return "writing";
    case SlotStatus::valid:
      return "valid";
    case SlotStatus::bad:
      return "bad";
  }
  return "?";
}

std::string_view outbox_kind_name(OutboxKind k) {
  return k == OutboxKind::event ? "event" : "heartbeat";
}

Result<StateStore> StateStore::open(const std::filesystem::path& state_dir, StateOptions options) {
  std::error_code ec;
  if (!std::filesystem::is_directory(state_dir, ec))
    return fail(Errc::not_found, state_dir.string() + ": state directory does not exist");
  if (!options.clock) options.clock = now_seconds;
  storage::DatabaseOptions db_options;
  db_options.busy_timeout = options.busy_timeout;
  auto db = MOTA_TRY(Database::open(state_dir / kDbFile, db_options));
  MOTA_TRY(storage::migrate(db, agent_migrations()));
  return StateStore(std::move(db), std::move(options));
}

std::int64_t StateStore::now() const {
  return to_unix(options_.clock());
}

// --- slots and active ---------------------------------------------------------------------------

Status StateStore::put_slot(const SlotState& s) {
  return run(db_,
             "INSERT OR REPLACE INTO slots (model, slot, version, tree_digest, status, updated_at)"
             " VALUES (?, ?, ?, ?, ?, ?)",
             s.model, slot_name(s.slot), s.version, s.tree_digest, slot_status_name(s.status),
             now());
}

Result<std::optional<SlotState>> StateStore::slot(const std::string& model, Slot slot) {
  auto st = MOTA_TRY(
      query(db_, "SELECT " + std::string(kSlotColumns) + " FROM slots WHERE model = ? AND slot = ?",
            model, slot_name(slot)));
  if (MOTA_TRY(st.step()) == Step::done) return std::optional<SlotState>();
  return std::optional<SlotState>(MOTA_TRY(read_slot(st)));
}

Result<std::vector<SlotState>> StateStore::slots(const std::string& model) {
  auto st = MOTA_TRY(query(
      db_, "SELECT " + std::string(kSlotColumns) + " FROM slots WHERE model = ? ORDER BY slot",
      model));
  std::vector<SlotState> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(MOTA_TRY(read_slot(st)));
  return out;
}

Status StateStore::set_active(const std::string& model, Slot slot, bool committed) {
  return run(db_,
             "INSERT OR REPLACE INTO active (model, slot, committed, updated_at)"
             " VALUES (?, ?, ?, ?)",
             model, slot_name(slot), committed ? 1 : 0, now());
}

Result<std::optional<ActiveState>> StateStore::active(const std::string& model) {
  auto st = MOTA_TRY(
      query(db_, "SELECT model, slot, committed, updated_at FROM active WHERE model = ?", model));
  if (MOTA_TRY(st.step()) == Step::done) return std::optional<ActiveState>();
  return std::optional<ActiveState>(MOTA_TRY(read_active(st)));
}

Status StateStore::commit_active(const std::string& model) {
  MOTA_TRY(
      run(db_, "UPDATE active SET committed = 1, updated_at = ? WHERE model = ?", now(), model));
  return require_changed(db_, "active model", model);
}

Result<std::vector<ActiveState>> StateStore::all_active() {
  auto st =
      MOTA_TRY(query(db_, "SELECT model, slot, committed, updated_at FROM active ORDER BY model"));
  std::vector<ActiveState> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(MOTA_TRY(read_active(st)));
  return out;
}

// --- install journal ----------------------------------------------------------------------------

Status StateStore::begin_install(const InstallRecord& r) {
  std::string ctx = "begin install of " + r.model + " " + r.to_version;
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  {
    auto existing = MOTA_TRY_CTX(
        query(db_, "SELECT install_id, to_version FROM install_journal WHERE model = ?", r.model),
        ctx);
    if (MOTA_TRY_CTX(existing.step(), ctx) == Step::row)
      return fail(Errc::already_exists, ctx + ": install " + existing.column_text(0) + " of " +
                                            existing.column_text(1) + " is still in progress");
  }
  std::int64_t t = now();
  MOTA_TRY_CTX(run(db_,
                   "INSERT INTO install_journal (" + std::string(kJournalColumns) +
                       ") VALUES (?, ?, ?, ?, ?, ?, 1, ?, ?, ?, ?, ?)",
                   r.install_id, r.model, r.from_version, r.to_version, slot_name(r.target_slot),
                   r.step, t, t, r.bytes_downloaded, r.used_delta ? 1 : 0, r.last_error),
               ctx);
  return tx.commit().context(ctx);
}

Result<std::optional<InstallRecord>> StateStore::install(const std::string& model) {
  auto st = MOTA_TRY(
      query(db_, "SELECT " + std::string(kJournalColumns) + " FROM install_journal WHERE model = ?",
            model));
  if (MOTA_TRY(st.step()) == Step::done) return std::optional<InstallRecord>();
  return std::optional<InstallRecord>(MOTA_TRY(read_install(st)));
}

Result<std::vector<InstallRecord>> StateStore::installs() {
  auto st = MOTA_TRY(query(
      db_, "SELECT " + std::string(kJournalColumns) + " FROM install_journal ORDER BY model"));
  std::vector<InstallRecord> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(MOTA_TRY(read_install(st)));
  return out;
}

Result<int> StateStore::enter_step(const std::string& model, const std::string& step,
                                   std::optional<std::uint64_t> progress) {
  std::string ctx = "install of " + model + ": enter step " + step;
  if (step.empty()) return fail(Errc::invalid_argument, ctx + ": empty step name");
  // One statement (UPDATE ... RETURNING): the read-modify-write of attempts is atomic.
  auto st = MOTA_TRY_CTX(
      progress ? query(db_,
                       "UPDATE install_journal SET"
                       " attempts = CASE WHEN step = ?1 AND ?4 <= bytes_downloaded"
                       " THEN attempts + 1 ELSE 1 END,"
                       " bytes_downloaded = ?4, step = ?1, updated_at = ?2 WHERE model = ?3"
                       " RETURNING attempts",
                       step, now(), model, static_cast<std::int64_t>(*progress))
               : query(db_,
                       "UPDATE install_journal SET"
                       " attempts = CASE WHEN step = ?1 THEN attempts + 1 ELSE 1 END,"
                       " step = ?1, updated_at = ?2 WHERE model = ?3 RETURNING attempts",
                       step, now(), model),
      ctx);
  if (MOTA_TRY_CTX(st.step(), ctx) == Step::done)
    return fail(Errc::not_found, ctx + ": no install in progress");
  int attempts = static_cast<int>(st.column_int64(0));
  // Finishing the statement commits its implicit transaction.
  MOTA_TRY_CTX(st.step(), ctx);
  return attempts;
}

Status StateStore::record_progress(const std::string& model, std::uint64_t bytes_downloaded,
                                   bool used_delta) {
  MOTA_TRY(run(db_,
               "UPDATE install_journal SET bytes_downloaded = ?, used_delta = ?, updated_at = ?"
               " WHERE model = ?",
               bytes_downloaded, used_delta ? 1 : 0, now(), model));
  return require_changed(db_, "install of model", model);
}

Status StateStore::record_error(const std::string& model, const std::string& message) {
  MOTA_TRY(run(db_,
               "UPDATE install_journal SET last_error = ?, attempts = 0, updated_at = ? "
               "WHERE model = ?",
               message, now(), model));
  return require_changed(db_, "install of model", model);
}

Status StateStore::rewind_install(const std::string& model, const std::string& step,
                                  const std::string& message) {
  if (step.empty()) {
    return fail(Errc::invalid_argument, "install of " + model + ": rewind to an empty step");
  }
  MOTA_TRY(run(db_,
               "UPDATE install_journal SET step = ?, attempts = 0, last_error = ?, updated_at = ?"
               " WHERE model = ?",
               step, message, now(), model));
  return require_changed(db_, "install of model", model);
}

Status StateStore::complete_install(const std::string& model) {
  std::string ctx = "complete install of " + model;
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  auto rec = MOTA_TRY_CTX(install(model), ctx);
  if (!rec) return fail(Errc::not_found, ctx + ": no install in progress");
  std::int64_t t = now();
  std::string slot = slot_name(rec->target_slot);
  MOTA_TRY_CTX(
      run(db_, "UPDATE slots SET status = 'valid', updated_at = ? WHERE model = ? AND slot = ?", t,
          model, slot),
      ctx);
  if (db_.changes() == 0)
    return fail(Errc::not_found, ctx + ": target slot " + slot + " has no slots row");
  MOTA_TRY_CTX(run(db_,
                   "INSERT OR REPLACE INTO active (model, slot, committed, updated_at)"
                   " VALUES (?, ?, 1, ?)",
                   model, slot, t),
               ctx);
  MOTA_TRY_CTX(run(db_, "DELETE FROM blocklist WHERE model = ?", model), ctx);
  MOTA_TRY_CTX(run(db_, "DELETE FROM retries WHERE model = ?", model), ctx);
  MOTA_TRY_CTX(run(db_, "DELETE FROM install_journal WHERE model = ?", model), ctx);
  return tx.commit().context(ctx);
}

Status StateStore::mark_bad(const std::string& model, Slot s, std::int64_t t) {
  return run(db_, "UPDATE slots SET status = 'bad', updated_at = ? WHERE model = ? AND slot = ?", t,
             model, slot_name(s));
}

Status StateStore::fall_back(const std::string& model, Slot to, Slot bad) {
  std::string ctx = "fall back " + model + " to slot " + slot_name(to);
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  std::int64_t t = now();
  MOTA_TRY_CTX(mark_bad(model, bad, t), ctx);
  auto target = MOTA_TRY_CTX(slot(model, to), ctx);
  if (!target || target->status != SlotStatus::valid) {
    return fail(Errc::not_found, ctx + ": slot " + slot_name(to) + " holds no valid version");
  }
  MOTA_TRY_CTX(run(db_,
                   "INSERT OR REPLACE INTO active (model, slot, committed, updated_at)"
                   " VALUES (?, ?, 1, ?)",
                   model, slot_name(to), t),
               ctx);
  return tx.commit().context(ctx);
}

Status StateStore::drop_active(const std::string& model, Slot bad) {
  std::string ctx = "drop damaged slot " + slot_name(bad) + " of " + model;
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  MOTA_TRY_CTX(mark_bad(model, bad, now()), ctx);
  MOTA_TRY_CTX(run(db_, "DELETE FROM active WHERE model = ?", model), ctx);
  return tx.commit().context(ctx);
}

Status StateStore::abort_install(const std::string& model, const std::string& block_reason) {
  std::string ctx = "abort install of " + model;
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  auto rec = MOTA_TRY_CTX(install(model), ctx);
  if (!rec) return fail(Errc::not_found, ctx + ": no install in progress");
  std::int64_t t = now();
  MOTA_TRY_CTX(run(db_,
                   "INSERT INTO slots (model, slot, version, tree_digest, status, updated_at)"
                   " VALUES (?1, ?2, ?3, '', 'bad', ?4)"
                   " ON CONFLICT (model, slot) DO UPDATE SET status = 'bad', updated_at = ?4",
                   model, slot_name(rec->target_slot), rec->to_version, t),
               ctx);
  if (!block_reason.empty()) {
    MOTA_TRY_CTX(run(db_,
                     "INSERT OR REPLACE INTO blocklist (model, version, reason, blocked_at)"
                     " VALUES (?, ?, ?, ?)",
                     model, rec->to_version, block_reason, t),
                 ctx);
    MOTA_TRY_CTX(
        run(db_, "DELETE FROM retries WHERE model = ? AND version = ?", model, rec->to_version),
        ctx);
  }
  MOTA_TRY_CTX(run(db_, "DELETE FROM install_journal WHERE model = ?", model), ctx);
  return tx.commit().context(ctx);
}

// --- blocklist ----------------------------------------------------------------------------------

Status StateStore::block(const std::string& model, const std::string& version,
                         const std::string& reason) {
  return run(db_,
             "INSERT OR REPLACE INTO blocklist (model, version, reason, blocked_at)"
             " VALUES (?, ?, ?, ?)",
             model, version, reason, now());
}

Result<bool> StateStore::is_blocked(const std::string& model, const std::string& version) {
  auto st = MOTA_TRY(
      query(db_, "SELECT 1 FROM blocklist WHERE model = ? AND version = ?", model, version));
  return MOTA_TRY(st.step()) == Step::row;
}

namespace {
constexpr std::string_view kBlockColumns = "model, version, reason, blocked_at";
BlockEntry read_block(const Statement& st) {
  return {st.column_text(0), st.column_text(1), st.column_text(2), from_unix(st.column_int64(3))};
}
}  // namespace

Result<std::vector<BlockEntry>> StateStore::blocked(const std::string& model) {
  auto st = MOTA_TRY(query(db_,
                           "SELECT " + std::string(kBlockColumns) +
                               " FROM blocklist WHERE model = ? ORDER BY blocked_at, version",
                           model));
  std::vector<BlockEntry> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(read_block(st));
  return out;
}

Result<std::vector<BlockEntry>> StateStore::all_blocked() {
  auto st = MOTA_TRY(query(db_, "SELECT " + std::string(kBlockColumns) +
                                    " FROM blocklist ORDER BY model, blocked_at, version"));
  std::vector<BlockEntry> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(read_block(st));
  return out;
}

Status StateStore::clear_blocklist(const std::string& model) {
  return run(db_, "DELETE FROM blocklist WHERE model = ?", model);
}

Result<std::vector<BlockEntry>> StateStore::unblock(const std::string& model,
                                                    const std::string& version) {
  std::string ctx = "unblock " + model + (version.empty() ? "" : " " + version);
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  // ?2 = '' matches every version of the model.
  auto st =
      MOTA_TRY_CTX(query(db_,
                         "DELETE FROM blocklist WHERE model = ?1 AND (?2 = '' OR version = ?2)"
                         " RETURNING " +
                             std::string(kBlockColumns),
                         model, version),
                   ctx);
  std::vector<BlockEntry> out;
  while (MOTA_TRY_CTX(st.step(), ctx) == Step::row) out.push_back(read_block(st));
  MOTA_TRY_CTX(run(db_, "DELETE FROM retries WHERE model = ?1 AND (?2 = '' OR version = ?2)", model,
                   version),
               ctx);
  MOTA_TRY_CTX(tx.commit(), ctx);
  std::sort(out.begin(), out.end(), [](const BlockEntry& a, const BlockEntry& b) {
    return std::tie(a.blocked_at, a.version) < std::tie(b.blocked_at, b.version);
  });
  return out;
}

// --- retries ------------------------------------------------------------------------------------

namespace {
constexpr std::string_view kRetryColumns =
    "model, version, failures, step, last_error, next_at, updated_at";
RetryEntry read_retry(const Statement& st) {
  RetryEntry r;
  r.model = st.column_text(0);
  r.version = st.column_text(1);
  r.failures = static_cast<int>(st.column_int64(2));
  r.step = st.column_text(3);
  r.last_error = st.column_text(4);
  r.next_at = from_unix(st.column_int64(5));
  r.updated_at = from_unix(st.column_int64(6));
  return r;
}
}  // namespace

Result<RetryEntry> StateStore::count_failure(
    const std::string& model, const std::string& version, const std::string& step,
    const std::string& error, const std::function<std::chrono::seconds(int)>& delay) {
  std::string ctx = "count a failure of " + model + " " + version;
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  auto before = MOTA_TRY_CTX(retry(model, version), ctx);
  RetryEntry r;
  r.model = model;
  r.version = version;
  r.failures = before ? before->failures + 1 : 1;
  r.step = step;
  r.last_error = error;
  const std::int64_t t = now();
  r.updated_at = from_unix(t);
  r.next_at = from_unix(t + (delay ? delay(r.failures).count() : 0));
  MOTA_TRY_CTX(run(db_,
                   "INSERT OR REPLACE INTO retries (" + std::string(kRetryColumns) +
                       ") VALUES (?, ?, ?, ?, ?, ?, ?)",
                   model, version, static_cast<std::int64_t>(r.failures), step, error,
                   to_unix(r.next_at), t),
               ctx);
  MOTA_TRY_CTX(tx.commit(), ctx);
  return r;
}

Result<std::optional<RetryEntry>> StateStore::retry(const std::string& model,
                                                    const std::string& version) {
  auto st = MOTA_TRY(query(
      db_, "SELECT " + std::string(kRetryColumns) + " FROM retries WHERE model = ? AND version = ?",
      model, version));
  if (MOTA_TRY(st.step()) == Step::done) return std::optional<RetryEntry>();
  return std::optional<RetryEntry>(read_retry(st));
}

Result<std::vector<RetryEntry>> StateStore::retries(const std::string& model) {
  auto st = MOTA_TRY(query(db_,
                           "SELECT " + std::string(kRetryColumns) +
                               " FROM retries WHERE model = ? ORDER BY updated_at, version",
                           model));
  std::vector<RetryEntry> out;
  while (MOTA_TRY(st.step()) == Step::row) out.push_back(read_retry(st));
  return out;
}

// --- TUF versions -------------------------------------------------------------------------------

Status StateStore::set_tuf_version(const std::string& role, std::int64_t version) {
  return run(db_, "INSERT OR REPLACE INTO tuf (role, version, updated_at) VALUES (?, ?, ?)", role,
             version, now());
}

Result<std::optional<std::int64_t>> StateStore::tuf_version(const std::string& role) {
  auto st = MOTA_TRY(query(db_, "SELECT version FROM tuf WHERE role = ?", role));
  if (MOTA_TRY(st.step()) == Step::done) return std::optional<std::int64_t>();
  return std::optional<std::int64_t>(st.column_int64(0));
}

Result<std::map<std::string, std::int64_t>> StateStore::tuf_versions() {
  auto st = MOTA_TRY(query(db_, "SELECT role, version FROM tuf"));
  std::map<std::string, std::int64_t> out;
  while (MOTA_TRY(st.step()) == Step::row) out[st.column_text(0)] = st.column_int64(1);
  return out;
}

// --- outbox -------------------------------------------------------------------------------------

Result<EnqueueResult> StateStore::enqueue(OutboxKind kind, const std::string& body) {
  std::string ctx = "outbox: enqueue " + std::string(outbox_kind_name(kind));
  const OutboxLimits& lim = options_.outbox;
  if (body.size() > lim.max_bytes)
    return fail(Errc::too_large, ctx + ": body of " + std::to_string(body.size()) +
                                     " bytes exceeds the outbox limit of " +
                                     std::to_string(lim.max_bytes) + " bytes");
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  MOTA_TRY_CTX(run(db_, "UPDATE counters SET value = value + 1 WHERE name = 'outbox_seq'"), ctx);
  if (db_.changes() != 1)
    return fail(Errc::internal, ctx + ": " + db_.name() + ": counters row outbox_seq is missing");
  EnqueueResult res;
  {
    auto st = MOTA_TRY_CTX(query(db_, "SELECT value FROM counters WHERE name = 'outbox_seq'"), ctx);
    MOTA_TRY_CTX(st.step(), ctx);
    res.seq = st.column_int64(0);
  }
  MOTA_TRY_CTX(run(db_, "INSERT INTO outbox (seq, kind, body, created_at) VALUES (?, ?, ?, ?)",
                   res.seq, outbox_kind_name(kind), body, now()),
               ctx);

  // Enforce the bounds: drop the oldest heartbeats until within them (or none are left).
  std::uint64_t rows = 0, bytes = 0;
  {
    auto st = MOTA_TRY_CTX(
        query(db_, "SELECT COUNT(*), COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM outbox"),
        ctx);
    MOTA_TRY_CTX(st.step(), ctx);
    rows = static_cast<std::uint64_t>(st.column_int64(0));
    bytes = static_cast<std::uint64_t>(st.column_int64(1));
  }
  auto over = [&] { return rows > lim.max_rows || bytes > lim.max_bytes; };
  if (over()) {
    std::int64_t drop_up_to = 0;
    auto st = MOTA_TRY_CTX(query(db_,
                                 "SELECT seq, LENGTH(CAST(body AS BLOB)) FROM outbox"
                                 " WHERE kind = 'heartbeat' ORDER BY seq"),
                           ctx);
    while (over() && MOTA_TRY_CTX(st.step(), ctx) == Step::row) {
      drop_up_to = st.column_int64(0);
      rows -= 1;
      bytes -= static_cast<std::uint64_t>(st.column_int64(1));
      ++res.dropped_heartbeats;
    }
    MOTA_TRY_CTX(st.reset(), ctx);
    if (drop_up_to > 0) {
      MOTA_TRY_CTX(run(db_, "DELETE FROM outbox WHERE kind = 'heartbeat' AND seq <= ?", drop_up_to),
                   ctx);
    }
    res.over_limit = over();
  }
  MOTA_TRY_CTX(tx.commit(), ctx);
  return res;
}

Result<std::vector<OutboxItem>> StateStore::peek(std::size_t n) {
  auto st =
      MOTA_TRY(query(db_, "SELECT seq, kind, body, created_at FROM outbox ORDER BY seq LIMIT ?",
                     static_cast<std::int64_t>(std::min<std::size_t>(n, INT64_MAX))));
  std::vector<OutboxItem> out;
  while (MOTA_TRY(st.step()) == Step::row) {
    OutboxItem item;
    item.seq = st.column_int64(0);
    item.kind = MOTA_TRY(parse_kind(st.column_text(1)));
    item.body = st.column_text(2);
    item.created_at = from_unix(st.column_int64(3));
    out.push_back(std::move(item));
  }
  return out;
}

Status StateStore::ack(std::int64_t up_to_seq) {
  std::string ctx = "outbox: ack up to " + std::to_string(up_to_seq);
  auto tx = MOTA_TRY_CTX(Transaction::begin(db_), ctx);
  auto st = MOTA_TRY_CTX(query(db_, "SELECT value FROM counters WHERE name = 'outbox_seq'"), ctx);
  MOTA_TRY_CTX(st.step(), ctx);
  std::int64_t last = st.column_int64(0);
  MOTA_TRY_CTX(st.reset(), ctx);
  if (up_to_seq > last)
    return fail(Errc::invalid_argument,
                ctx + ": seq was never handed out (last is " + std::to_string(last) + ")");
  MOTA_TRY_CTX(run(db_, "DELETE FROM outbox WHERE seq <= ?", up_to_seq), ctx);
  return tx.commit().context(ctx);
}

Result<OutboxStats> StateStore::outbox_stats() {
  auto st = MOTA_TRY(query(db_,
                           "SELECT (SELECT COUNT(*) FROM outbox),"
                           " (SELECT COALESCE(SUM(LENGTH(CAST(body AS BLOB))), 0) FROM outbox),"
                           " (SELECT value FROM counters WHERE name = 'outbox_seq')"));
  MOTA_TRY(st.step());
  OutboxStats s;
  s.rows = static_cast<std::size_t>(st.column_int64(0));
  s.bytes = static_cast<std::uint64_t>(st.column_int64(1));
  s.last_seq = st.column_int64(2);
  return s;
}

}  // namespace mota::agent
