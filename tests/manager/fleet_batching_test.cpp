// The ingest writer folds a batch: each (device, model) row is read once, changed item by item in
// memory and written once, and the device's facts are updated once per request. These tests pin
// that the result is exactly what one request per item gives (the unfolded behaviour), including
// rollbacks, failures kept across heartbeats, other event states, duplicates and partial replays.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>

#include "agent/identity.hpp"
#include "common/http.hpp"
#include "manager/fleet_db.hpp"
#include "manager/fleet_ingest.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

Json event(std::int64_t seq, const std::string& model, const std::string& state,
           const std::string& from, const std::string& to, const std::string& error = "") {
  return Json{{"seq", seq},
              {"kind", "event"},
              {"created_at", "2030-01-01T00:00:00Z"},
              {"body",
               {{"model", model},
                {"from", from},
                {"to", to},
                {"state", state},
                {"step", "verify"},
                {"error", error},
                {"kind", "full"}}}};
}

Json heartbeat(std::int64_t seq, const Json& models, const Json& extra = Json::object()) {
  Json body = {{"models", models}};
  for (auto& [k, v] : extra.items()) body[k] = v;
  return Json{
      {"seq", seq}, {"kind", "heartbeat"}, {"created_at", "2030-01-01T00:00:01Z"}, {"body", body}};
}

Json model(const std::string& name, const std::string& version, const std::string& slot = "a") {
  return Json{{"model", name}, {"slot", slot}, {"version", version}, {"committed", true}};
}

// A device's life in 12 items: installs, a failure that a heartbeat with the same version keeps,
// an upgrade, a rollback seen in the inventory, an event in another state for a new model, an
// event without a model, device facts that come and go.
Json story() {
  return Json::array({
      event(1, "detector", "installed", "", "1.0.0"),
      heartbeat(2, Json::array({model("detector", "1.0.0"), model("classifier", "0.1.0")}),
                {{"agent_version", "0.1.0"}, {"arch", "aarch64"}}),
      event(3, "detector", "failed", "1.0.0", "2.0.0", "sha256 mismatch"),
      heartbeat(4, Json::array({model("detector", "1.0.0")})),
      event(5, "detector", "installed", "1.0.0", "2.0.0"),
      heartbeat(6, Json::array({model("detector", "2.0.0", "b"), model("classifier", "0.1.0")}),
                {{"agent_version", "0.2.0"}}),
      heartbeat(7, Json::array({model("detector", "1.0.0")})),  // rolled back
      event(8, "segmenter", "downloading", "", "3.0.0"),
      event(9, "", "installed", "", "9.9.9"),
      event(10, "classifier", "refused", "0.1.0", "0.0.1", "downgrade not allowed"),
      heartbeat(11, Json::array({model("classifier", "0.2.0", "b")}), {{"arch", "x86_64"}}),
      event(12, "detector", "installed", "1.0.0", "2.1.0"),
  });
}

class FleetBatching : public ::testing::Test {
 protected:
  void SetUp() override {
    auto in = FleetIngest::open(work_ / "fleet.db");
    ASSERT_TRUE(in) << in.error().message();
    ingest_ = std::move(*in);
  }

  HttpReply post(const std::string& id, const Json& batch) {
    auto it = ids_.find(id);
    if (it == ids_.end()) {
      auto d = agent::DeviceIdentity::load_or_create(work_ / "keys" / id, id);
      EXPECT_TRUE(d) << d.error().message();
      it = ids_.emplace(id, std::move(*d)).first;
    }
    const std::string body = Json{{"device", id}, {"batch", batch}}.dump();
    HttpRequest req;
    req.method = "POST";
    req.path = "/v1/devices/" + id + "/events";
    req.path_params["id"] = id;
    req.body = body;
    auto h = it->second.report_headers("/v1/devices/" + http::percent_encode(id) + "/events", body);
    EXPECT_TRUE(h) << h.error().message();
    for (auto& [k, v] : *h) {
      std::string lower = k;
      for (auto& c : lower) c = char(std::tolower(static_cast<unsigned char>(c)));
      req.headers[lower] = v;
    }
    return ingest_->handle(req);
  }

  // What the database holds about one device, without its id, key and times.
  std::string state_of(const std::string& id) {
    auto db = storage::Database::open(work_ / "fleet.db");
    EXPECT_TRUE(db) << db.error().message();
    std::string out;
    auto run = [&](const std::string& sql) {
      auto st = db->prepare(sql);
      EXPECT_TRUE(st) << st.error().message();
      EXPECT_TRUE(st->bind(1, id));
      while (st->step().value_or(storage::Step::done) == storage::Step::row) {
        for (int c = 0; c < st->column_count(); ++c) out += st->column_text(c) + "|";
        out += "\n";
      }
      out += "--\n";
    };
    run("SELECT agent_version, arch, last_seq FROM devices WHERE id = ?");
    run("SELECT model, version, slot, committed, state, target, last_error, rolled_back_from, "
        "channel FROM installed WHERE device = ? ORDER BY model");
    run("SELECT seq, kind, created_at, model, from_version, to_version, state, step, error, body "
        "FROM events WHERE device = ? ORDER BY seq");
    return out;
  }

  test::TempDir work_;
  std::unique_ptr<FleetIngest> ingest_;
  std::map<std::string, agent::DeviceIdentity> ids_;
};

TEST_F(FleetBatching, OneBatchEqualsOneRequestPerItem) {
  const Json items = story();
  ASSERT_EQ(post("batched", items).status, 200);
  for (const auto& item : items) {
    ASSERT_EQ(post("single", Json::array({item})).status, 200);
  }
  const std::string batched = state_of("batched");
  EXPECT_EQ(batched, state_of("single"));
  // And the story ends where it should (so equality is not two identical mistakes).
  EXPECT_NE(batched.find("detector|2.1.0|a|1|ok|2.1.0||||"), std::string::npos) << batched;
  EXPECT_NE(batched.find("classifier|0.2.0|b|1|ok|0.0.1|downgrade not allowed|||"),
            std::string::npos)
      << batched;
  EXPECT_NE(batched.find("segmenter|||0|ok|||||\n"), std::string::npos) << batched;
  EXPECT_NE(batched.find("0.2.0|x86_64|12|"), std::string::npos) << batched;
}

TEST_F(FleetBatching, RollbackAndKeptFailureInsideOneBatch) {
  const Json items = story();
  // Up to the rollback (seq 7): detector went 2.0.0 -> 1.0.0 within the batch.
  Json first = Json::array();
  for (int i = 0; i < 7; ++i) first.push_back(items[std::size_t(i)]);
  ASSERT_EQ(post("a", first).status, 200);
  EXPECT_NE(state_of("a").find("detector|1.0.0|a|1|ok|2.0.0||2.0.0||"), std::string::npos)
      << state_of("a");
  // Up to the heartbeat after the failure (seq 4): the failure is kept, version unchanged.
  Json second = Json::array();
  for (int i = 0; i < 4; ++i) second.push_back(items[std::size_t(i)]);
  ASSERT_EQ(post("b", second).status, 200);
  EXPECT_NE(state_of("b").find("detector|1.0.0|a|1|failed|2.0.0|sha256 mismatch|||"),
            std::string::npos)
      << state_of("b");
}

TEST_F(FleetBatching, PartialReplayAppliesOnlyTheNewItems) {
  const Json items = story();
  Json head = Json::array(), overlap = Json::array();
  for (int i = 0; i < 6; ++i) head.push_back(items[std::size_t(i)]);
  for (int i = 3; i < 12; ++i) overlap.push_back(items[std::size_t(i)]);
  ASSERT_EQ(post("replayed", head).status, 200);
  auto r = post("replayed", overlap);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Json::parse(r.body).value("acked", 0), 12);
  ASSERT_EQ(post("once", items).status, 200);
  EXPECT_EQ(state_of("replayed"), state_of("once"));
  EXPECT_EQ(ingest_->stats().items_duplicate, 3u);
}

// A heartbeat that repeats the installed row writes nothing (updated_at stays: it is the time of
// the model's last event or change; devices.last_seen moves); an event that leaves the row as it
// was moves only updated_at; a heartbeat that changes the version goes through the full write
// (counts and rollback moved).
TEST_F(FleetBatching, UnchangedHeartbeatWritesNothingEventsMoveUpdatedAt) {
  std::atomic<int> offset{0};
  ingest_.reset();
  IngestOptions options;
  options.now = [&] { return now_seconds() + std::chrono::seconds(offset.load()); };
  auto in = FleetIngest::open(work_ / "fleet.db", options);
  ASSERT_TRUE(in) << in.error().message();
  ingest_ = std::move(*in);
  auto query = [&](const std::string& sql) {
    auto db = storage::Database::open(work_ / "fleet.db");
    EXPECT_TRUE(db) << db.error().message();
    auto st = db->prepare(sql);
    EXPECT_TRUE(st) << st.error().message();
    std::string out;
    while (st->step().value_or(storage::Step::done) == storage::Step::row) {
      for (int c = 0; c < st->column_count(); ++c) out += st->column_text(c) + "|";
      out += "\n";
    }
    return out;
  };
  auto updated_at = [&] {
    return std::stoll(query("SELECT updated_at FROM installed WHERE device = 'd'"));
  };
  ASSERT_EQ(
      post("d", Json::array({heartbeat(1, Json::array({model("detector", "2.0.0")}))})).status,
      200);
  const std::int64_t first = updated_at();
  const std::string row = state_of("d");
  auto last_seen = [&] {
    return std::stoll(query("SELECT last_seen FROM devices WHERE id = 'd'"));
  };
  const std::int64_t seen = last_seen();
  offset = 100;
  ASSERT_EQ(
      post("d", Json::array({heartbeat(2, Json::array({model("detector", "2.0.0")}))})).status,
      200);
  EXPECT_EQ(updated_at(), first);
  EXPECT_NEAR(double(last_seen() - seen), 100.0, 2.0);
  const std::string after = state_of("d");
  // Same installed row: the part of state_of() between the device and the events.
  auto installed = [](const std::string& s) {
    const std::size_t a = s.find("--\n") + 3;
    return s.substr(a, s.find("--\n", a) - a);
  };
  EXPECT_EQ(installed(row), installed(after));
  EXPECT_EQ(installed(row), "detector|2.0.0|a|1|ok|||||\n");
  EXPECT_EQ(query("SELECT model, version, devices FROM installed_counts"), "detector|2.0.0|1|\n");
  offset = 150;
  ASSERT_EQ(post("d", Json::array({event(3, "detector", "downloading", "2.0.0", "2.1.0")})).status,
            200);
  EXPECT_NEAR(double(updated_at() - first), 150.0, 2.0);
  EXPECT_EQ(installed(state_of("d")), installed(row));
  offset = 200;
  ASSERT_EQ(
      post("d", Json::array({heartbeat(4, Json::array({model("detector", "1.0.0")}))})).status,
      200);
  EXPECT_NEAR(double(updated_at() - first), 200.0, 2.0);
  EXPECT_EQ(query("SELECT model, version, devices FROM installed_counts"), "detector|1.0.0|1|\n");
  EXPECT_NE(state_of("d").find("detector|1.0.0|a|1|ok|||2.0.0||"), std::string::npos)
      << state_of("d");
}

}  // namespace
}  // namespace mota::manager
