#pragma once
// A small RAII layer over SQLite (the only backend: storage/platform/sqlite/sqlite.cpp is the one
// file that includes sqlite3.h). Errors are values: every failure is an Error whose message names
// the database file, the statement and SQLite's own text:
//   "agent.db: INSERT INTO outbox: database or disk is full"
// Error codes: SQLITE_FULL -> Errc::no_space; SQLITE_CONSTRAINT -> Errc::invalid_argument (the
// caller stored something the schema forbids); everything else, including SQLITE_BUSY once the
// busy timeout has passed (the message then contains "busy"), -> Errc::io.
//
// Thread-safety: a Database and its Statements/Transactions belong to one thread at a time. Use
// one Database per thread or process; SQLite's file locking (WAL) coordinates between them.
// Lifetimes: Statements and Transactions must not outlive the Database they came from, and a
// Database must not be moved while a Transaction on it is alive.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "common/result.hpp"

struct sqlite3;
struct sqlite3_stmt;

namespace mota::storage {

struct DatabaseOptions {
  // How long a writer waits for another connection's lock before failing with "busy".
  std::chrono::milliseconds busy_timeout{5000};
  // Create the file if it does not exist (otherwise a missing file is Errc::not_found).
  bool create = true;
};

class Statement;

class Database {
 public:
  // Opens (or creates) the database at `path` with journal_mode=WAL, synchronous=FULL,
  // foreign_keys=ON, extended result codes and the given busy timeout.
  static Result<Database> open(const std::filesystem::path& path, DatabaseOptions options = {});

  Database(Database&& other) noexcept;
  Database& operator=(Database&& other) noexcept;
  Database(const Database&) = delete;
  Database& operator=(const Database&) = delete;
  ~Database();

  // Runs one or more ';'-separated statements that return no rows the caller needs.
  Status exec(std::string_view sql);
  // Compiles one statement (trailing text after the first statement is an error).
  Result<Statement> prepare(std::string_view sql);

  std::int64_t last_insert_rowid() const;
  // Rows changed by the most recent INSERT/UPDATE/DELETE.
  std::int64_t changes() const;
  // True outside an explicit transaction.
  bool autocommit() const;

  const std::filesystem::path& path() const { return path_; }
  // File name used as the first part of every error message ("agent.db").
  const std::string& name() const { return name_; }

 private:
  Database(sqlite3* db, std::filesystem::path path);
  void close() noexcept;

  sqlite3* db_ = nullptr;
  std::filesystem::path path_;
  std::string name_;
};

enum class Step { row, done };

// One prepared statement. Parameters are 1-based (as in SQLite), columns 0-based. Text and blob
// parameters are copied, so the arguments need not outlive the call.
class Statement {
 public:
  Statement(Statement&& other) noexcept;
  Statement& operator=(Statement&& other) noexcept;
  Statement(const Statement&) = delete;
  Statement& operator=(const Statement&) = delete;
  ~Statement();

  Status bind(int index, std::int64_t value);
  Status bind(int index, std::string_view text);
  Status bind(int index, const char* text) { return bind(index, std::string_view(text)); }
  Status bind(int index, const std::string& text) { return bind(index, std::string_view(text)); }
  Status bind(int index, std::nullptr_t);
  Status bind_blob(int index, std::span<const std::uint8_t> data);
  // Integral types other than int64 (int, bool, uint64 <= INT64_MAX, ...).
  template <class T>
  requires(std::is_integral_v<T> && !std::is_same_v<T, std::int64_t>) Status
      bind(int index, T value) {
    if constexpr (std::is_unsigned_v<T> && sizeof(T) >= sizeof(std::int64_t)) {
      if (value > static_cast<T>(INT64_MAX))
        return fail(Errc::invalid_argument, context() + ": parameter " + std::to_string(index) +
                                                " is larger than INT64_MAX");
    }
    return bind(index, static_cast<std::int64_t>(value));
  }
  // An empty optional binds NULL.
  template <class T>
  Status bind(int index, const std::optional<T>& value) {
    if (!value) return bind(index, nullptr);
    return bind(index, *value);
  }
  // Binds parameters 1..N in order.
  template <class... Args>
  Status bind_all(const Args&... args) {
    int i = 0;
    Status st;
    (void)(((st = bind(++i, args)).has_value()) && ...);
    return st;
  }

  // Advances: Step::row when a row is available through the column getters, Step::done at the
  // end (or for statements without results).
  Result<Step> step();
  // Steps a statement that must not return rows (INSERT/UPDATE/DELETE/DDL).
  Status run();
  // Makes the statement runnable again and clears its bindings.
  Status reset();

  int column_count() const;
  bool column_is_null(int column) const;
  std::int64_t column_int64(int column) const;
  std::string column_text(int column) const;  // "" for NULL
  std::vector<std::uint8_t> column_blob(int column) const;
  std::optional<std::string> column_optional_text(int column) const;

  // "agent.db: INSERT INTO outbox": what error messages from this statement start with.
  const std::string& context() const { return context_; }

 private:
  friend class Database;
  Statement(sqlite3_stmt* stmt, std::string context) : stmt_(stmt), context_(std::move(context)) {}

  sqlite3_stmt* stmt_ = nullptr;
  std::string context_;
};

// BEGIN IMMEDIATE on construction (takes the write lock up front, so a transaction never fails
// half-way with SQLITE_BUSY on its first write); ROLLBACK in the destructor unless commit()
// succeeded.
class Transaction {
 public:
  static Result<Transaction> begin(Database& db);

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // COMMIT. After a failure the transaction is rolled back (by SQLite or by the destructor).
  Status commit();

 private:
  explicit Transaction(Database* db) : db_(db) {}
  Database* db_ = nullptr;  // null once committed or moved from
};

// Schema migrations. Each has a version (> 0, strictly increasing in the list), the SQL that
// applies it and the SQL that undoes it. Applied migrations are recorded in `schema_migrations`
// together with their up AND down SQL, so that an older program (e.g. after an A/B rollback of the
// agent itself) can undo migrations it has never heard of. An empty `down` marks a migration as
// irreversible.
struct Migration {
  int version;
  std::string_view up;
  std::string_view down;
};

// Brings the database to the newest version in `migrations`:
// - applies every migration newer than the stored version, in order, each in one transaction;
// - if the database is newer than the newest known migration, undoes the extra versions with the
//   down scripts stored in the database (newest first, each in one transaction); if one of them
//   has no down script, fails with Errc::unsupported and changes nothing.
// `migrations` must be sorted by strictly increasing version > 0 (else Errc::invalid_argument).
Status migrate(Database& db, std::span<const Migration> migrations);

// Undoes applied migrations newer than `version` (>= 0) with their stored down scripts, newest
// first, each in one transaction. Fails with Errc::unsupported before changing anything if one of
// them is irreversible.
Status migrate_down_to(Database& db, int version);

// The highest applied migration version (0 for a fresh database).
Result<int> schema_version(Database& db);

}  // namespace mota::storage
