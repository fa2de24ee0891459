// Migration 0002 (manager/fleet/migrations/0002_fleet_summary.*): the installed_counts table kept
// by triggers always equals the GROUP BY it replaces in `mota fleet`, through inserts, version
// changes, rewrites without a change, deletes (also by cascade) and a down/up migration; and
// fleet_summary() answers the same as before the migration. Migration 0003 (0003_fleet_state.*):
// schema-2 rows get their failed attempts, the summary's new counts read partial indexes, and
// down again the columns are gone. Migration 0004 (0004_device_judgement.*): devices' block lists
// and the refused count, read from a partial index; down again both are gone.

#include <gtest/gtest.h>

#include "manager/fleet/fleet_db.hpp"
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
  // The ingest writer's statement (manager/fleet/fleet_ingest.cpp).
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
  EXPECT_EQ(*storage::schema_version(db), fleet_migrations().back().version);
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
  // Failed attempts at 2.0 as the writer records them (failed_version: not on devices that run
  // it), so that migration 0003's backfill of schema-2 rows finds the same.
  exec(db,
       "UPDATE installed SET target = '2.0', failed_version = CASE WHEN version = '2.0' THEN '' "
       "ELSE '2.0' END WHERE state = 'failed'");
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
  // The writer's rule (manager/fleet/fleet_db.hpp): a device running a version is not failing it.
  exec(db, "UPDATE installed SET failed_version = '' WHERE failed_version = version");
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

TEST_F(FleetSummaryTest, Migration0003BackfillsFailedAttemptsAndGoesDown) {
  auto& db = *db_;
  ASSERT_TRUE(storage::migrate_down_to(db, 2));
  for (int i = 0; i < 4; ++i) add_device(db, "d" + std::to_string(i));
  // As schema 2 wrote them: a failed install of 2.0; an older agent's refresh failure (target:
  // the version it runs); a rollback from 2.0 (stored as a failure); a healthy device.
  exec(db,
       "INSERT INTO installed (device, model, version, state, target, last_error, "
       "rolled_back_from, updated_at) VALUES ('d0', 'det', '1.0', 'failed', '2.0', 'sha', '', 7), "
       "('d1', 'det', '1.0', 'failed', '1.0', 'expired', '', 8), "
       "('d2', 'det', '1.0', 'failed', '2.0', 'trial', '2.0', 9), "
       "('d3', 'det', '2.0', 'ok', '2.0', '', '', 10)");
  ASSERT_TRUE(storage::migrate(db, fleet_migrations()));
  EXPECT_EQ(*storage::schema_version(db), fleet_migrations().back().version);
  EXPECT_EQ(rows(db, "SELECT device, failed_version, failed_at FROM installed ORDER BY device"),
            "d0|2.0|7|\nd1||0|\nd2||0|\nd3||0|\n");
  auto s = fleet_summary(db, std::chrono::seconds(3600), now_seconds());
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->models.size(), 1u);
  EXPECT_EQ(s->models[0].failed, 3);
  EXPECT_EQ(s->metadata_errors, 0);
  for (const auto& v : s->models[0].versions) {
    EXPECT_EQ(v.failures, v.version == "2.0" ? 1 : 0) << v.version;
    EXPECT_EQ(v.rollbacks, v.version == "2.0" ? 1 : 0) << v.version;
  }
  // What `mota fleet` and rollout counts run reads an index, never the whole table.
  auto plan = [&](const std::string& sql) { return rows(db, "EXPLAIN QUERY PLAN " + sql); };
  EXPECT_NE(plan("SELECT model, failed_version, COUNT(*) FROM installed WHERE failed_version <> "
                 "'' GROUP BY model, failed_version")
                .find("COVERING INDEX installed_failed_version"),
            std::string::npos);
  EXPECT_NE(plan("SELECT COUNT(*) FROM devices WHERE metadata_error <> ''")
                .find("devices_metadata_error"),
            std::string::npos);
  EXPECT_NE(plan("SELECT device, version, failed_version, failed_at, rolled_back_from FROM "
                 "installed WHERE model = 'det' AND (channel = 'stable' OR channel = '')")
                .find("COVERING INDEX installed_rollout"),
            std::string::npos);

  ASSERT_TRUE(storage::migrate_down_to(db, 2));
  EXPECT_FALSE(db.prepare("SELECT failed_version FROM installed"));
  EXPECT_FALSE(db.prepare("SELECT metadata_error FROM devices"));
  EXPECT_NE(plan("SELECT device, version, state, target, rolled_back_from, updated_at FROM "
                 "installed WHERE model = 'det' AND (channel = 'stable' OR channel = '')")
                .find("COVERING INDEX installed_rollout"),
            std::string::npos);
  EXPECT_EQ(rows(db, "SELECT device, state, target FROM installed ORDER BY device"),
            "d0|failed|2.0|\nd1|failed|1.0|\nd2|failed|2.0|\nd3|ok|2.0|\n");
}

TEST_F(FleetSummaryTest, Migration0004CountsRefusedFromAnIndexAndKeepsBlockLists) {
  auto& db = *db_;
  for (int i = 0; i < 5; ++i) add_device(db, "d" + std::to_string(i));
  upsert(db, "d0", "det", "1.0", "refused");
  upsert(db, "d1", "det", "1.0", "refused");
  upsert(db, "d2", "det", "1.0", "failed");
  upsert(db, "d3", "det", "2.0");
  upsert(db, "d4", "cls", "0.1", "refused");
  exec(db, R"(UPDATE devices SET blocked = '[{"model":"det","version":"2.0"}]' WHERE id = 'd2')");
  auto s = fleet_summary(db, std::chrono::seconds(3600), now_seconds());
  ASSERT_TRUE(s) << s.error().message();
  ASSERT_EQ(s->models.size(), 2u);
  EXPECT_EQ(s->models[0].model, "cls");
  EXPECT_EQ(s->models[0].refused, 1);
  EXPECT_EQ(s->models[1].refused, 2);
  EXPECT_EQ(s->models[1].failed, 1);
  EXPECT_EQ(to_json(*s)["models"][1]["refused"], 2);
  EXPECT_NE(rows(db,
                 "EXPLAIN QUERY PLAN SELECT model, COUNT(*) FROM installed WHERE state = "
                 "'refused' GROUP BY model")
                .find("installed_refused"),
            std::string::npos);
  auto d2 = show_device(db, "d2");
  ASSERT_TRUE(d2 && *d2);
  ASSERT_TRUE((*d2)->blocked.has_value());
  ASSERT_EQ((*d2)->blocked->size(), 1u);
  EXPECT_EQ((*d2)->blocked->at(0).version, "2.0");
  auto d3 = show_device(db, "d3");
  ASSERT_TRUE(d3 && *d3);
  EXPECT_FALSE((*d3)->blocked.has_value());  // never reported: null in --json
  EXPECT_TRUE(to_json(**d3)["blocked"].is_null());

  ASSERT_TRUE(storage::migrate_down_to(db, 3));
  EXPECT_FALSE(db.prepare("SELECT blocked FROM devices"));
  EXPECT_EQ(rows(db, "SELECT name FROM sqlite_master WHERE name = 'installed_refused'"), "");
  ASSERT_TRUE(storage::migrate(db, fleet_migrations()));
  EXPECT_EQ(rows(db, "SELECT COUNT(*) FROM devices WHERE blocked = ''"), "5|\n");
}

}  // namespace
}  // namespace mota::manager
