#include "storage/sqlite.hpp"

#include <gtest/gtest.h>

#include <array>

#include "tests/support/test_support.hpp"

namespace mota::storage {
namespace {

using test::TempDir;

Database open_db(const std::filesystem::path& p, DatabaseOptions o = {}) {
  auto db = Database::open(p, o);
  EXPECT_TRUE(db.has_value()) << db.error().message();
  return std::move(*db);
}

std::string text_of(Database& db, std::string_view sql) {
  auto st = db.prepare(sql);
  EXPECT_TRUE(st.has_value()) << st.error().message();
  auto s = st->step();
  EXPECT_TRUE(s.has_value()) << s.error().message();
  return *s == Step::row ? st->column_text(0) : "<no row>";
}

std::int64_t count(Database& db, std::string_view table) {
  auto st = db.prepare("SELECT COUNT(*) FROM " + std::string(table));
  EXPECT_TRUE(st.has_value()) << st.error().message();
  EXPECT_TRUE(st->step().has_value());
  return st->column_int64(0);
}

bool has_table(Database& db, std::string_view name) {
  auto st = db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?");
  EXPECT_TRUE(st.has_value());
  EXPECT_TRUE(st->bind(1, name).has_value());
  return *st->step() == Step::row;
}

TEST(Sqlite, OpenSetsWalFullSyncAndForeignKeys) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  EXPECT_EQ(text_of(db, "PRAGMA journal_mode"), "wal");
  EXPECT_EQ(text_of(db, "PRAGMA synchronous"), "2");  // FULL
  EXPECT_EQ(text_of(db, "PRAGMA foreign_keys"), "1");
  EXPECT_EQ(db.name(), "t.db");
  EXPECT_TRUE(db.autocommit());
}

TEST(Sqlite, OpenRejectsMissingFileWithoutCreateAndGarbageFiles) {
  TempDir tmp;
  DatabaseOptions o;
  o.create = false;
  auto missing = Database::open(tmp / "none.db", o);
  ASSERT_FALSE(missing.has_value());
  EXPECT_EQ(missing.error().code(), Errc::not_found);
  EXPECT_FALSE(std::filesystem::exists(tmp / "none.db"));

  std::string garbage(4096, 'x');
  test::write_file(tmp / "garbage.db", garbage);
  auto bad = Database::open(tmp / "garbage.db");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), Errc::io);
  EXPECT_NE(bad.error().message().find("garbage.db"), std::string::npos) << bad.error().message();
  EXPECT_NE(bad.error().message().find("not a database"), std::string::npos)
      << bad.error().message();
  EXPECT_EQ(test::read_file(tmp / "garbage.db"), garbage);
}

TEST(Sqlite, BindAndReadEveryType) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  ASSERT_TRUE(db.exec("CREATE TABLE v (i INTEGER, t TEXT, b BLOB, n TEXT)").has_value());
  auto ins = db.prepare("INSERT INTO v VALUES (?, ?, ?, ?)");
  ASSERT_TRUE(ins.has_value()) << ins.error().message();
  const std::string text("a\0b\xc3\xa9", 5);  // embedded NUL and UTF-8
  const std::array<std::uint8_t, 4> blob{0, 1, 255, 0};
  ASSERT_TRUE(ins->bind(1, std::int64_t{-(1ll << 62)}).has_value());
  ASSERT_TRUE(ins->bind(2, text).has_value());
  ASSERT_TRUE(ins->bind_blob(3, blob).has_value());
  ASSERT_TRUE(ins->bind(4, nullptr).has_value());
  ASSERT_TRUE(ins->run().has_value());
  // Reuse after reset: bindings are cleared, so unbound parameters are NULL.
  ASSERT_TRUE(ins->reset().has_value());
  ASSERT_TRUE(ins->bind(1, 7).has_value());
  ASSERT_TRUE(ins->bind_blob(3, std::span<const std::uint8_t>()).has_value());
  ASSERT_TRUE(ins->run().has_value());
  EXPECT_EQ(db.changes(), 1);
  EXPECT_EQ(db.last_insert_rowid(), 2);

  auto sel = db.prepare("SELECT i, t, b, n FROM v ORDER BY rowid");
  ASSERT_TRUE(sel.has_value());
  ASSERT_EQ(*sel->step(), Step::row);
  EXPECT_EQ(sel->column_count(), 4);
  EXPECT_EQ(sel->column_int64(0), -(1ll << 62));
  EXPECT_EQ(sel->column_text(1), text);
  EXPECT_EQ(sel->column_blob(2), std::vector<std::uint8_t>(blob.begin(), blob.end()));
  EXPECT_TRUE(sel->column_is_null(3));
  EXPECT_EQ(sel->column_optional_text(3), std::nullopt);
  ASSERT_EQ(*sel->step(), Step::row);
  EXPECT_EQ(sel->column_int64(0), 7);
  EXPECT_TRUE(sel->column_is_null(1));
  EXPECT_FALSE(sel->column_is_null(2));  // empty blob, not NULL
  EXPECT_TRUE(sel->column_blob(2).empty());
  EXPECT_EQ(*sel->step(), Step::done);
}

TEST(Sqlite, BindRejectsUnsignedAboveInt64AndBadIndex) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  auto st = db.prepare("SELECT ?");
  ASSERT_TRUE(st.has_value());
  auto big = st->bind(1, std::uint64_t{1} << 63);
  ASSERT_FALSE(big.has_value());
  EXPECT_EQ(big.error().code(), Errc::invalid_argument);
  auto range = st->bind(2, 1);
  ASSERT_FALSE(range.has_value());
  EXPECT_NE(range.error().message().find("parameter 2"), std::string::npos)
      << range.error().message();
}

TEST(Sqlite, ErrorsNameTheDatabaseAndTheStatement) {
  TempDir tmp;
  auto db = open_db(tmp / "agent.db");
  auto bad = db.prepare("SELEC nonsense");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message().rfind("agent.db: SELEC nonsense: ", 0), 0u)
      << bad.error().message();
  EXPECT_NE(bad.error().message().find("syntax error"), std::string::npos);

  auto two = db.prepare("SELECT 1; SELECT 2");
  ASSERT_FALSE(two.has_value());
  EXPECT_EQ(two.error().code(), Errc::invalid_argument);

  ASSERT_TRUE(db.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)"));
  auto ins = db.prepare("INSERT INTO outbox (seq, body) VALUES (?, ?)");
  ASSERT_TRUE(ins.has_value());
  ASSERT_TRUE(ins->bind_all(1, nullptr).has_value());
  auto st = ins->run();
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().code(), Errc::invalid_argument);  // SQLITE_CONSTRAINT
  EXPECT_EQ(st.error().message(),
            "agent.db: INSERT INTO outbox: NOT NULL constraint failed: outbox.body");

  // exec names the failing statement of a script, and earlier ones have run.
  auto script =
      db.exec("CREATE TABLE ok1 (x); INSERT INTO missing VALUES (1); CREATE TABLE ok2 (x)");
  ASSERT_FALSE(script.has_value());
  EXPECT_EQ(script.error().message(), "agent.db: INSERT INTO missing: no such table: missing");
  EXPECT_TRUE(has_table(db, "ok1"));
  EXPECT_FALSE(has_table(db, "ok2"));
}

TEST(Sqlite, TransactionRollsBackUnlessCommitted) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  ASSERT_TRUE(db.exec("CREATE TABLE t (x INTEGER)"));
  {
    auto tx = Transaction::begin(db);
    ASSERT_TRUE(tx.has_value()) << tx.error().message();
    EXPECT_FALSE(db.autocommit());
    ASSERT_TRUE(db.exec("INSERT INTO t VALUES (1)"));
  }
  EXPECT_TRUE(db.autocommit());
  EXPECT_EQ(count(db, "t"), 0);
  {
    auto tx = Transaction::begin(db);
    ASSERT_TRUE(tx.has_value());
    ASSERT_TRUE(db.exec("INSERT INTO t VALUES (2)"));
    ASSERT_TRUE(tx->commit().has_value());
    EXPECT_FALSE(tx->commit().has_value());  // only once
  }
  EXPECT_EQ(count(db, "t"), 1);
  // Visible to another connection: it was really committed.
  auto other = open_db(tmp / "t.db");
  EXPECT_EQ(count(other, "t"), 1);
}

TEST(Sqlite, BusyAfterTimeoutIsIoWithBusy) {
  TempDir tmp;
  auto a = open_db(tmp / "t.db");
  ASSERT_TRUE(a.exec("CREATE TABLE t (x INTEGER)"));
  DatabaseOptions o;
  o.busy_timeout = std::chrono::milliseconds(50);
  auto b = open_db(tmp / "t.db", o);
  auto held = Transaction::begin(a);
  ASSERT_TRUE(held.has_value());
  auto start = std::chrono::steady_clock::now();
  auto tx = Transaction::begin(b);
  auto waited = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(tx.has_value());
  EXPECT_EQ(tx.error().code(), Errc::io);
  EXPECT_NE(tx.error().message().find("busy"), std::string::npos) << tx.error().message();
  EXPECT_NE(tx.error().message().find("t.db: BEGIN IMMEDIATE"), std::string::npos);
  EXPECT_GE(waited, std::chrono::milliseconds(40));
  // Readers are not blocked by a writer in WAL mode.
  EXPECT_EQ(count(b, "t"), 0);
}

TEST(Sqlite, DiskFullIsNoSpaceAndRollsBack) {
  TempDir tmp;
  auto db = open_db(tmp / "agent.db");
  ASSERT_TRUE(db.exec("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, body BLOB)"));
  ASSERT_TRUE(db.exec("INSERT INTO outbox (body) VALUES ('kept')"));
  auto pages = std::stoll(text_of(db, "PRAGMA page_count"));
  ASSERT_TRUE(db.exec("PRAGMA max_page_count = " + std::to_string(pages + 2)));

  auto tx = Transaction::begin(db);
  ASSERT_TRUE(tx.has_value());
  auto ins = db.prepare("INSERT INTO outbox (body) VALUES (zeroblob(100000))");
  ASSERT_TRUE(ins.has_value());
  auto st = ins->run();
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().code(), Errc::no_space);
  EXPECT_EQ(st.error().message(), "agent.db: INSERT INTO outbox: database or disk is full");
}

TEST(Sqlite, DiskFullTransactionLeavesNothingBehind) {
  TempDir tmp;
  auto db = open_db(tmp / "agent.db");
  ASSERT_TRUE(db.exec("CREATE TABLE t (x BLOB)"));
  auto pages = std::stoll(text_of(db, "PRAGMA page_count"));
  ASSERT_TRUE(db.exec("PRAGMA max_page_count = " + std::to_string(pages + 3)));
  {
    auto tx = Transaction::begin(db);
    ASSERT_TRUE(tx.has_value());
    ASSERT_TRUE(db.exec("INSERT INTO t VALUES ('small')"));
    auto full = db.exec("INSERT INTO t VALUES (zeroblob(1000000))");
    ASSERT_FALSE(full.has_value());
    EXPECT_EQ(full.error().code(), Errc::no_space);
  }
  EXPECT_TRUE(db.autocommit());
  EXPECT_EQ(count(db, "t"), 0);
  ASSERT_TRUE(db.exec("INSERT INTO t VALUES ('after')"));  // still usable
  EXPECT_EQ(count(db, "t"), 1);
}

// --- migrations ---------------------------------------------------------------------------------

constexpr Migration kV1{1, "CREATE TABLE a (x INTEGER); INSERT INTO a VALUES (1);",
                        "DROP TABLE a;"};
constexpr Migration kV2{2, "CREATE TABLE b (y TEXT);", "DROP TABLE b;"};
constexpr Migration kV3{3, "ALTER TABLE a ADD COLUMN z TEXT;", "ALTER TABLE a DROP COLUMN z;"};

TEST(SqliteMigrate, AppliesOnceAndRecordsUpAndDown) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  EXPECT_EQ(*schema_version(db), 0);
  const std::array all{kV1, kV2};
  ASSERT_TRUE(migrate(db, all).has_value());
  EXPECT_EQ(*schema_version(db), 2);
  EXPECT_TRUE(has_table(db, "a"));
  EXPECT_TRUE(has_table(db, "b"));
  EXPECT_EQ(text_of(db, "SELECT down FROM schema_migrations WHERE version = 2"), "DROP TABLE b;");
  EXPECT_EQ(text_of(db, "SELECT up FROM schema_migrations WHERE version = 1"), kV1.up);
  // Again: nothing re-applied (the INSERT in v1 would add a second row).
  ASSERT_TRUE(migrate(db, all).has_value());
  EXPECT_EQ(count(db, "a"), 1);
  EXPECT_EQ(count(db, "schema_migrations"), 2);
  // A newer program adds v3 only.
  const std::array newer{kV1, kV2, kV3};
  ASSERT_TRUE(migrate(db, newer).has_value());
  EXPECT_EQ(*schema_version(db), 3);
  EXPECT_EQ(count(db, "a"), 1);
}

TEST(SqliteMigrate, OlderProgramMigratesDownWithStoredScripts) {
  TempDir tmp;
  {
    auto db = open_db(tmp / "t.db");
    const std::array newer{kV1, kV2, kV3};
    ASSERT_TRUE(migrate(db, newer).has_value());
  }
  // The older program knows only v1: it has never seen the SQL of v2 and v3.
  auto db = open_db(tmp / "t.db");
  const std::array older{kV1};
  ASSERT_TRUE(migrate(db, older).has_value());
  EXPECT_EQ(*schema_version(db), 1);
  EXPECT_FALSE(has_table(db, "b"));
  EXPECT_TRUE(has_table(db, "a"));
  EXPECT_EQ(count(db, "a"), 1);  // v1 data survives
  auto z = db.prepare("SELECT z FROM a");
  EXPECT_FALSE(z.has_value());  // v3's column is gone

  ASSERT_TRUE(migrate_down_to(db, 0).has_value());
  EXPECT_EQ(*schema_version(db), 0);
  EXPECT_FALSE(has_table(db, "a"));
  EXPECT_FALSE(migrate_down_to(db, -1).has_value());
}

TEST(SqliteMigrate, NewerSchemaWithoutDownScriptIsAClearErrorAndChangesNothing) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  const Migration irreversible{3, "CREATE TABLE c (x);", ""};
  const std::array newer{kV1, kV2, irreversible};
  ASSERT_TRUE(migrate(db, newer).has_value());
  const std::array older{kV1};
  auto st = migrate(db, older);
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().code(), Errc::unsupported);
  EXPECT_EQ(st.error().message(),
            "schema version 3 is newer than this program knows (1): t.db: cannot migrate down to "
            "schema version 1: migration 3 has no stored down script (irreversible)");
  // Checked before acting: v2 was not undone either.
  EXPECT_EQ(*schema_version(db), 3);
  EXPECT_TRUE(has_table(db, "b"));
  EXPECT_TRUE(has_table(db, "c"));
}

TEST(SqliteMigrate, FailedMigrationIsRolledBackEntirely) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  const Migration broken{2, "CREATE TABLE b (y); INSERT INTO nowhere VALUES (1);", "DROP TABLE b;"};
  const std::array all{kV1, broken, kV3};
  auto st = migrate(db, all);
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().message(), "migration 2: t.db: INSERT INTO nowhere: no such table: nowhere");
  EXPECT_EQ(*schema_version(db), 1);  // v1 committed, v2 not, v3 never tried
  EXPECT_FALSE(has_table(db, "b"));
  EXPECT_TRUE(db.autocommit());
}

TEST(SqliteMigrate, RejectsUnorderedLists) {
  TempDir tmp;
  auto db = open_db(tmp / "t.db");
  const std::array unordered{kV2, kV1};
  auto st = migrate(db, unordered);
  ASSERT_FALSE(st.has_value());
  EXPECT_EQ(st.error().code(), Errc::invalid_argument);
  const std::array dup{kV1, kV1};
  EXPECT_FALSE(migrate(db, dup).has_value());
  EXPECT_FALSE(has_table(db, "a"));
}

}  // namespace
}  // namespace mota::storage
