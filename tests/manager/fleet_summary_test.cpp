// Migration 0002 (manager/migrations/0002_fleet_summary.*): the installed_counts table kept by
// triggers always equals the GROUP BY it replaces in `mota fleet`, through inserts, version
// changes, rewrites without a change, deletes (also by cascade) and a down/up migration; and
// fleet_summary() answers the same as before the migration.

#include <gtest/gtest.h>

#include "manager/fleet_db.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

std::string rows(storage::Database& db, const std::string& sql) {
  auto st = db.prepare(sql);
  EXPECT_TRUE(st) << st.error().message();
  if (!st) return "";
  std::string out;
  while (st->step().value_or(storage::Step::done) == storage::Step::row) {
    for (int c = 0; c < st->column_count(); ++c) out += st->column_text(c) + "|";
    out += "\n";
  }
  return out;
}

std::string counts(storage::Database& db) {
  return rows(db, "SELECT model, version, devices FROM installed_counts ORDER BY 1, 2");
}
std::string grouped(storage::Database& db) {
  return rows(db, "SELECT model, version, COUNT(*) FROM installed GROUP BY 1, 2 ORDER BY 1, 2");
}

void exec(storage::Database& db, const std::string& sql) {
  auto st = db.exec(sql);
  ASSERT_TRUE(st) << sql << ": " << st.error().message();
}

void add_device(storage::Database& db, const std::string& id) {
  exec(db, "INSERT INTO devices (id, key, first_seen, last_seen) VALUES ('" + id + "', '" +
               std::string(64, 'a') + "', 1, CAST(strftime('%s', 'now') AS INTEGER))");
}

void upsert(storage::Database& db, const std::string& id, const std::string& model,
            const std::string& version, const std::string& state = "ok") {
  // The ingest writer's statement (manager/fleet_ingest.cpp).
  exec(db,
       "INSERT INTO installed (device, model, version, state, updated_at) VALUES ('" + id + "', '" +
           model + "', '" + version + "', '" + state +
           "', 2) ON CONFLICT (device, model) DO UPDATE SET version = excluded.version, state = "
           "excluded.state, updated_at = excluded.updated_at");
}

class FleetSummaryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = open_fleet_db(work_ / "fleet.db");
    ASSERT_TRUE(db) << db.error().message();
    db_ = std::make_unique<storage::Database>(std::move(*db));
  }
  test::TempDir work_;
  std::unique_ptr<storage::Database> db_;
};

TEST_F(FleetSummaryTest, CountsFollowInsertsVersionChangesAndDeletes) {
  auto& db = *db_;
  EXPECT_EQ(*storage::schema_version(db), 2);
  for (int i = 0; i < 6; ++i) add_device(db, "d" + std::to_string(i));
  for (int i = 0; i < 6; ++i) upsert(db, "d" + std::to_string(i), "det", i < 4 ? "1.0" : "2.0");
  upsert(db, "d0", "cls", "0.1");
  EXPECT_EQ(counts(db), "cls|0.1|1|\ndet|1.0|4|\ndet|2.0|2|\n");

  upsert(db, "d1", "det", "1.0", "failed");  // rewritten, same version: no change
  upsert(db, "d2", "det", "2.0");            // 1.0 -> 2.0
  upsert(db, "d4", "det", "");               // 2.0 -> nothing installed
  EXPECT_EQ(counts(db), "cls|0.1|1|\ndet||1|\ndet|1.0|3|\ndet|2.0|2|\n");
  EXPECT_EQ(counts(db), grouped(db));

  exec(db, "UPDATE installed SET model = 'seg' WHERE device = 'd3' AND model = 'det'");
  exec(db, "DELETE FROM installed WHERE device = 'd0' AND model = 'cls'");  // last of its version
  exec(db, "DELETE FROM devices WHERE id = 'd5'");                          // cascades
  EXPECT_EQ(counts(db), grouped(db));
  EXPECT_EQ(counts(db).find("cls|"), std::string::npos) << "a version with no device is gone";
  EXPECT_EQ(counts(db), "det||1|\ndet|1.0|2|\ndet|2.0|1|\nseg|1.0|1|\n");
}

TEST_F(FleetSummaryTest, SummaryIsTheSameAfterDownAndUp) {
  auto& db = *db_;
  for (int i = 0; i < 40; ++i) {
    const std::string id = "dev" + std::to_string(i);
    add_device(db, id);
    upsert(db, id, "det", i % 3 ? "1.0" : "2.0", i % 7 ? "ok" : "failed");
    if (i % 2) upsert(db, id, "cls", "0." + std::to_string(i % 4));
  }
  exec(db, "UPDATE installed SET target = '2.0' WHERE state = 'failed'");
  exec(db, "UPDATE installed SET rolled_back_from = '2.0' WHERE device IN ('dev1', 'dev2')");
  exec(db, "UPDATE devices SET last_seen = NULL WHERE id IN ('dev3', 'dev4')");
  const auto now = now_seconds();
  auto before = fleet_summary(db, std::chrono::seconds(3600), now);
  ASSERT_TRUE(before) << before.error().message();

  ASSERT_TRUE(storage::migrate_down_to(db, 1));
  EXPECT_FALSE(db.prepare("SELECT * FROM installed_counts"));
  // Written while the database is at version 1 (an older server): the count table is rebuilt
  // from `installed` when migrating up again.
  upsert(db, "dev0", "det", "3.0", "failed");
  ASSERT_TRUE(storage::migrate(db, fleet_migrations()));
  EXPECT_EQ(counts(db), grouped(db));
  upsert(db, "dev0", "det", "2.0", "failed");  // back to what it was
  EXPECT_EQ(counts(db), grouped(db));

  auto after = fleet_summary(db, std::chrono::seconds(3600), now);
  ASSERT_TRUE(after) << after.error().message();
  EXPECT_EQ(to_json(*after).dump(), to_json(*before).dump());
  EXPECT_EQ(after->stale, 2);
  ASSERT_EQ(after->models.size(), 2u);
  EXPECT_EQ(after->models[1].model, "det");
  EXPECT_EQ(after->models[1].devices, 40);
  EXPECT_EQ(after->models[1].failed, 6);
}

}  // namespace
}  // namespace mota::manager
