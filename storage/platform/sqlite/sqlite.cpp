// The SQLite backend of storage/sqlite.hpp: the only file that includes sqlite3.h.
#include "storage/sqlite.hpp"

#include <sqlite3.h>

#include <cctype>
#include <chrono>
#include <climits>
#include <system_error>
#include <thread>
#include <utility>

namespace mota::storage {
namespace {

// A one-line summary of a statement for error messages: whitespace collapsed, comments dropped,
// cut before the column/value lists so "INSERT INTO outbox (seq, ...) VALUES (...)" reads
// "INSERT INTO outbox".
std::string sql_summary(std::string_view sql) {
  std::string out;
  bool space = false;
  for (std::size_t i = 0; i < sql.size(); ++i) {
    char c = sql[i];
    if (c == '-' && i + 1 < sql.size() && sql[i + 1] == '-') {
      while (i < sql.size() && sql[i] != '\n') ++i;
      space = true;
      continue;
    }
    if (std::isspace(static_cast<unsigned char>(c))) {
      space = true;
      continue;
    }
    if (c == '(' || c == ';') break;
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  for (std::string_view stop : {" VALUES", " WHERE", " SET ", " ORDER BY", " LIMIT"}) {
    if (auto pos = out.find(stop); pos != std::string::npos) out.resize(pos);
  }
  constexpr std::size_t kMax = 60;
  if (out.size() > kMax) out = out.substr(0, kMax) + "...";
  return out.empty() ? std::string("(empty statement)") : out;
}

Error sqlite_error(sqlite3* db, int rc, std::string_view ctx) {
  int primary = rc & 0xff;
  std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  if (msg.empty() || msg == "not an error") msg = sqlite3_errstr(rc);
  Errc code = Errc::io;
  if (primary == SQLITE_FULL) {
    code = Errc::no_space;
  } else if (primary == SQLITE_CONSTRAINT) {
    code = Errc::invalid_argument;
  } else if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) {
    msg += " (busy: another connection held the lock past the busy timeout)";
  }
  return Error(code, std::string(ctx) + ": " + msg);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Database

Database::Database(sqlite3* db, std::filesystem::path path)
    : db_(db), path_(std::move(path)), name_(path_.filename().string()) {}

Database::Database(Database&& other) noexcept
    : db_(std::exchange(other.db_, nullptr)),
      path_(std::move(other.path_)),
      name_(std::move(other.name_)) {}

Database& Database::operator=(Database&& other) noexcept {
  if (this != &other) {
    close();
    db_ = std::exchange(other.db_, nullptr);
    path_ = std::move(other.path_);
    name_ = std::move(other.name_);
  }
  return *this;
}

Database::~Database() {
  close();
}

void Database::close() noexcept {
  // close_v2 defers the close until any stray statement is finalized instead of failing.
  if (db_) sqlite3_close_v2(db_);
  db_ = nullptr;
}

Result<Database> Database::open(const std::filesystem::path& path, DatabaseOptions options) {
  std::string name = path.filename().string();
  if (!options.create) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec))
      return fail(Errc::not_found, path.string() + ": database does not exist");
  }
  if (options.busy_timeout.count() < 0 || options.busy_timeout.count() > INT_MAX)
    return fail(Errc::invalid_argument, name + ": busy timeout out of range");

  sqlite3* raw = nullptr;
  int flags = SQLITE_OPEN_READWRITE | (options.create ? SQLITE_OPEN_CREATE : 0);
  int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
  if (rc != SQLITE_OK) {
    Error e = sqlite_error(raw, rc, path.string() + ": open");
    sqlite3_close_v2(raw);
    return fail(std::move(e));
  }
  Database db(raw, path);
  sqlite3_extended_result_codes(raw, 1);
  sqlite3_busy_timeout(raw, static_cast<int>(options.busy_timeout.count()));

  // journal_mode answers with the mode actually in effect; WAL can be refused (e.g. some network
  // file systems), and silently running without it would change the crash-safety guarantees.
  // Switching a new file to WAL takes an exclusive lock, and SQLite answers SQLITE_BUSY at once,
  // without the busy handler, while another connection opening the same new file holds a shared
  // lock (several processes starting on a fresh state directory): that is retried within the
  // busy timeout. A file already in WAL mode switches nothing.
  const auto deadline = std::chrono::steady_clock::now() + options.busy_timeout;
  std::string mode;
  while (true) {
    sqlite3_stmt* pragma = nullptr;
    rc = sqlite3_prepare_v2(raw, "PRAGMA journal_mode=WAL", -1, &pragma, nullptr);
    if (rc == SQLITE_OK) {
      rc = sqlite3_step(pragma);
      if (rc == SQLITE_ROW) {
        const auto* text = sqlite3_column_text(pragma, 0);
        mode = text ? reinterpret_cast<const char*>(text) : "";
        rc = SQLITE_OK;
      }
    }
    sqlite3_finalize(pragma);
    if (rc == SQLITE_OK || rc == SQLITE_DONE) break;
    if ((rc & 0xff) != SQLITE_BUSY || std::chrono::steady_clock::now() >= deadline) {
      return fail(sqlite_error(raw, rc, name + ": PRAGMA journal_mode=WAL"));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  if (mode != "wal")
    return fail(Errc::io, name + ": cannot enable WAL journal mode (got '" + mode + "')");
  MOTA_TRY(db.exec("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON"));
  return db;
}

Status Database::exec(std::string_view sql) {
  // Statement by statement (rather than sqlite3_exec) so an error names the failing statement.
  while (true) {
    const char* tail = nullptr;
    sqlite3_stmt* raw = nullptr;
    int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
    if (rc != SQLITE_OK) return fail(sqlite_error(db_, rc, name_ + ": " + sql_summary(sql)));
    if (!raw) return {};  // only whitespace/comments left
    Statement st(raw, name_ + ": " + sql_summary(sql));
    while (true) {
      auto s = MOTA_TRY(st.step());
      if (s == Step::done) break;
    }
    sql.remove_prefix(static_cast<std::size_t>(tail - sql.data()));
  }
}

Result<Statement> Database::prepare(std::string_view sql) {
  std::string ctx = name_ + ": " + sql_summary(sql);
  const char* tail = nullptr;
  sqlite3_stmt* raw = nullptr;
  int rc = sqlite3_prepare_v2(db_, sql.data(), static_cast<int>(sql.size()), &raw, &tail);
  if (rc != SQLITE_OK) return fail(sqlite_error(db_, rc, ctx));
  if (!raw) return fail(Errc::invalid_argument, ctx + ": no statement to prepare");
  Statement st(raw, std::move(ctx));
  std::string_view rest(tail, static_cast<std::size_t>(sql.data() + sql.size() - tail));
  for (char c : rest) {
    if (!std::isspace(static_cast<unsigned char>(c)) && c != ';')
      return fail(Errc::invalid_argument,
                  st.context() + ": more than one statement (use exec for scripts)");
  }
  return st;
}

std::int64_t Database::last_insert_rowid() const {
  return sqlite3_last_insert_rowid(db_);
}
std::int64_t Database::changes() const {
  return sqlite3_changes64(db_);
}
bool Database::autocommit() const {
  return sqlite3_get_autocommit(db_) != 0;
}

// ---------------------------------------------------------------------------------------------
// Statement

Statement::Statement(Statement&& other) noexcept
    : stmt_(std::exchange(other.stmt_, nullptr)), context_(std::move(other.context_)) {}

Statement& Statement::operator=(Statement&& other) noexcept {
  if (this != &other) {
    if (stmt_) sqlite3_finalize(stmt_);
    stmt_ = std::exchange(other.stmt_, nullptr);
    context_ = std::move(other.context_);
  }
  return *this;
}

Statement::~Statement() {
  if (stmt_) sqlite3_finalize(stmt_);
}

namespace {
Status bind_result(sqlite3_stmt* stmt, int rc, const std::string& ctx, int index) {
  if (rc == SQLITE_OK) return {};
  return fail(
      sqlite_error(sqlite3_db_handle(stmt), rc, ctx + ": parameter " + std::to_string(index)));
}
}  // namespace

Status Statement::bind(int index, std::int64_t value) {
  return bind_result(stmt_, sqlite3_bind_int64(stmt_, index, value), context_, index);
}

Status Statement::bind(int index, std::string_view text) {
  return bind_result(
      stmt_,
      sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8),
      context_, index);
}

Status Statement::bind(int index, std::nullptr_t) {
  return bind_result(stmt_, sqlite3_bind_null(stmt_, index), context_, index);
}

Status Statement::bind_blob(int index, std::span<const std::uint8_t> data) {
  // A null pointer would bind NULL rather than an empty blob.
  static const std::uint8_t kEmpty = 0;
  const void* p = data.empty() ? &kEmpty : data.data();
  return bind_result(stmt_, sqlite3_bind_blob64(stmt_, index, p, data.size(), SQLITE_TRANSIENT),
                     context_, index);
}

Result<Step> Statement::step() {
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return Step::row;
  if (rc == SQLITE_DONE) return Step::done;
  Error e = sqlite_error(sqlite3_db_handle(stmt_), rc, context_);
  // Leave the statement reusable and release its read snapshot.
  sqlite3_reset(stmt_);
  return fail(std::move(e));
}

Status Statement::run() {
  auto s = MOTA_TRY(step());
  if (s == Step::row) {
    sqlite3_reset(stmt_);
    return fail(Errc::internal, context_ + ": statement returned rows where none were expected");
  }
  return {};
}

Status Statement::reset() {
  // sqlite3_reset repeats the last step's error, which step() has already reported.
  sqlite3_reset(stmt_);
  sqlite3_clear_bindings(stmt_);
  return {};
}

int Statement::column_count() const {
  return sqlite3_column_count(stmt_);
}

bool Statement::column_is_null(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

std::int64_t Statement::column_int64(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string Statement::column_text(int column) const {
  const unsigned char* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  if (!p) return {};
  return std::string(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));
}

std::optional<std::string> Statement::column_optional_text(int column) const {
  if (column_is_null(column)) return std::nullopt;
  return column_text(column);
}

std::vector<std::uint8_t> Statement::column_blob(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  if (!p || n <= 0) return {};
  auto* b = static_cast<const std::uint8_t*>(p);
  return std::vector<std::uint8_t>(b, b + n);
}

// ---------------------------------------------------------------------------------------------
// Transaction

Result<Transaction> Transaction::begin(Database& db) {
  MOTA_TRY(db.exec("BEGIN IMMEDIATE"));
  return Transaction(&db);
}

Transaction::Transaction(Transaction&& other) noexcept : db_(std::exchange(other.db_, nullptr)) {}

Transaction::~Transaction() {
  // SQLite may already have rolled back by itself (e.g. after SQLITE_FULL); then there is no
  // transaction left to end. A failed ROLLBACK cannot be reported from a destructor; SQLite
  // rolls back on the next open in any case (the WAL frames are never committed).
  if (db_ && !db_->autocommit()) (void)db_->exec("ROLLBACK");
}

Status Transaction::commit() {
  if (!db_) return fail(Errc::internal, "transaction already committed");
  MOTA_TRY(db_->exec("COMMIT"));
  db_ = nullptr;
  return {};
}

// ---------------------------------------------------------------------------------------------
// Migrations

namespace {

constexpr std::string_view kCreateMigrations =
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY CHECK (version > 0),"
    " up TEXT NOT NULL,"
    " down TEXT NOT NULL,"
    " applied_at INTEGER NOT NULL)";

Result<bool> has_migrations_table(Database& db) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"));
  return MOTA_TRY(st.step()) == Step::row;
}

}  // namespace

Result<int> schema_version(Database& db) {
  if (!MOTA_TRY(has_migrations_table(db))) return 0;
  auto st = MOTA_TRY(db.prepare("SELECT COALESCE(MAX(version), 0) FROM schema_migrations"));
  MOTA_TRY(st.step());
  return static_cast<int>(st.column_int64(0));
}

Status migrate_down_to(Database& db, int version) {
  if (version < 0)
    return fail(Errc::invalid_argument,
                db.name() + ": cannot migrate down to negative version " + std::to_string(version));
  if (!MOTA_TRY(has_migrations_table(db))) return {};

  struct Down {
    int version;
    std::string sql;
  };
  std::vector<Down> downs;
  {
    auto st = MOTA_TRY(db.prepare(
        "SELECT version, down FROM schema_migrations WHERE version > ? ORDER BY version DESC"));
    MOTA_TRY(st.bind(1, version));
    while (MOTA_TRY(st.step()) == Step::row)
      downs.push_back({static_cast<int>(st.column_int64(0)), st.column_text(1)});
  }
  // Check the whole path first: stopping half-way would leave a schema neither program knows.
  for (const auto& d : downs) {
    if (d.sql.find_first_not_of(" \t\r\n;") == std::string::npos)
      return fail(Errc::unsupported, db.name() + ": cannot migrate down to schema version " +
                                         std::to_string(version) + ": migration " +
                                         std::to_string(d.version) +
                                         " has no stored down script (irreversible)");
  }
  for (const auto& d : downs) {
    std::string ctx = "migrate down from version " + std::to_string(d.version);
    auto tx = MOTA_TRY_CTX(Transaction::begin(db), ctx);
    MOTA_TRY_CTX(db.exec(d.sql), ctx);
    auto del = MOTA_TRY_CTX(db.prepare("DELETE FROM schema_migrations WHERE version = ?"), ctx);
    MOTA_TRY_CTX(del.bind(1, d.version), ctx);
    MOTA_TRY_CTX(del.run(), ctx);
    MOTA_TRY_CTX(tx.commit(), ctx);
  }
  return {};
}

Status migrate(Database& db, std::span<const Migration> migrations) {
  int prev = 0;
  for (const auto& m : migrations) {
    if (m.version <= prev)
      return fail(Errc::invalid_argument,
                  db.name() + ": migration versions must be positive and strictly increasing (" +
                      std::to_string(m.version) + " after " + std::to_string(prev) + ")");
    prev = m.version;
  }
  int known = migrations.empty() ? 0 : migrations.back().version;

  MOTA_TRY(db.exec(kCreateMigrations));
  int current = MOTA_TRY(schema_version(db));
  if (current > known) {
    MOTA_TRY_CTX(migrate_down_to(db, known), "schema version " + std::to_string(current) +
                                                 " is newer than this program knows (" +
                                                 std::to_string(known) + ")");
    return {};
  }
  for (const auto& m : migrations) {
    if (m.version <= current) continue;
    std::string ctx = "migration " + std::to_string(m.version);
    auto tx = MOTA_TRY_CTX(Transaction::begin(db), ctx);
    // Another process opening the same database may have applied it meanwhile; re-read under
    // the write lock.
    if (MOTA_TRY_CTX(schema_version(db), ctx) >= m.version) continue;
    MOTA_TRY_CTX(db.exec(m.up), ctx);
    auto ins =
        MOTA_TRY_CTX(db.prepare("INSERT INTO schema_migrations (version, up, down, applied_at)"
                                " VALUES (?, ?, ?, CAST(strftime('%s', 'now') AS INTEGER))"),
                     ctx);
    MOTA_TRY_CTX(ins.bind_all(m.version, m.up, m.down), ctx);
    MOTA_TRY_CTX(ins.run(), ctx);
    MOTA_TRY_CTX(tx.commit(), ctx);
  }
  return {};
}

}  // namespace mota::storage
