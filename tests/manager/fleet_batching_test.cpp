// The ingest writer folds a batch: each (device, model) row is read once, changed item by item in
// memory and written once, and the device's facts are updated once per request. These tests pin
// that the result is exactly what one request per item gives (the unfolded behaviour), including
// rollbacks, failures kept across heartbeats, "ok" events, metadata conditions of the device,
// other event states, duplicates and partial replays.

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <map>

#include "common/http.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "protocol/identity.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

Json event(std::int64_t seq, const std::string& model, const std::string& state,
           const std::string& from, const std::string& to, const std::string& error = "",
           const std::string& slot = "", const std::string& channel = "") {
  Json e = Json{{"seq", seq},
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
  if (!slot.empty()) e["body"]["slot"] = slot;
  if (!channel.empty()) e["body"]["channel"] = channel;
  return e;
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

Json device_event(std::int64_t seq, const std::string& state, const std::string& error = "") {
  return Json{{"seq", seq},
              {"kind", "event"},
              {"created_at", "2020-01-01T00:00:00Z"},
              {"body",
               {{"model", ""},
                {"from", ""},
                {"to", ""},
                {"state", state},
                {"step", "refresh"},
                {"error", error}}}};
}

// What agents before "metadata_error" sent for each model when the TUF refresh failed.
Json old_refresh_failure(std::int64_t seq, const std::string& model, const std::string& from,
                         const std::string& error) {
  Json e = event(seq, model, "failed", from, "", error);
  e["body"]["step"] = "refresh";
  return e;
}

// A device's life in 20 items: installs, a failure that a heartbeat with the same version keeps,
// an upgrade, a downgrade seen in the inventory (not a rollback), an event in another state for
// a new model, an event without a model, device facts that come and go; then an automatic
// rollback, the model healthy again, metadata errors of the device (new and old style) and their
// end, a failure without a version, events with a slot and a channel.
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
      heartbeat(7, Json::array({model("detector", "1.0.0")})),  // went down: not a rollback
      event(8, "segmenter", "downloading", "", "3.0.0"),
      event(9, "", "installed", "", "9.9.9"),
      event(10, "classifier", "refused", "0.1.0", "0.0.1", "downgrade not allowed"),
      heartbeat(11, Json::array({model("classifier", "0.2.0", "b")}), {{"arch", "x86_64"}}),
      event(12, "detector", "installed", "1.0.0", "2.1.0"),
      event(13, "detector", "rolled_back", "2.1.0", "2.2.0", "trial: exit 3", "b", "beta"),
      device_event(14, "metadata_error", "timestamp.json: expired"),
      event(15, "detector", "ok", "2.1.0", "2.1.0", "", "b"),
      old_refresh_failure(16, "classifier", "0.2.0", "TUF refresh: connection refused"),
      device_event(17, "metadata_ok"),
      event(18, "classifier", "failed", "0.2.0", "0.3.0", "sha256 mismatch"),
      event(19, "classifier", "failed", "0.2.0", "", "channel file: 404"),
      event(20, "segmenter", "installed", "", "3.0.0", "", "a", "stable"),
  });
}

class FleetBatching : public ::testing::Test {
 protected:
  void SetUp() override {
    IngestOptions options;
    options.admission = AdmissionMode::automatic;  // devices count from their first report
    auto in = FleetIngest::open(work_ / "fleet.db", options);
    ASSERT_TRUE(in) << in.error().message();
    ingest_ = std::move(*in);
  }

  net::HttpReply post(const std::string& id, const Json& batch) {
    auto it = ids_.find(id);
    if (it == ids_.end()) {
      auto d = protocol::DeviceIdentity::load_or_create(work_ / "keys" / id, id);
      EXPECT_TRUE(d) << d.error().message();
      it = ids_.emplace(id, std::move(*d)).first;
    }
    const std::string body = Json{{"device", id}, {"batch", batch}}.dump();
    net::HttpRequest req;
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
    run("SELECT agent_version, arch, last_seq, metadata_error, metadata_error_since FROM devices "
        "WHERE id = ?");
    // failed_at is the server's clock: only whether it is set.
    run("SELECT model, version, slot, committed, state, target, last_error, rolled_back_from, "
        "channel, failed_version, failed_at > 0 FROM installed WHERE device = ? ORDER BY model");
    run("SELECT seq, kind, created_at, model, from_version, to_version, state, step, error, body "
        "FROM events WHERE device = ? ORDER BY seq");
    return out;
  }

  test::TempDir work_;
  std::unique_ptr<FleetIngest> ingest_;
  std::map<std::string, protocol::DeviceIdentity> ids_;
};

TEST_F(FleetBatching, OneBatchEqualsOneRequestPerItem) {
  const Json items = story();
  ASSERT_EQ(post("batched", items).status, 200);
  for (const auto& item : items) {
    ASSERT_EQ(post("single", Json::array({item})).status, 200);
  }
  const std::string batched = state_of("batched");
  EXPECT_EQ(batched, state_of("single"));
  // And the story ends where it should (so equality is not two identical mistakes). Columns:
  // model|version|slot|committed|state|target|last_error|rolled_back_from|channel|
  // failed_version|failed_at set|
  // detector: rolled back from 2.2.0 automatically, healthy again ("ok") on 2.1.0 in slot b.
  EXPECT_NE(batched.find("detector|2.1.0|b|1|ok|2.2.0||2.2.0|beta||0|\n"), std::string::npos)
      << batched;
  // classifier: the refusal ended by the new version in the inventory; the old-style refresh
  // failure changed nothing; the failure of 0.3.0 stays through a failure without a version.
  EXPECT_NE(batched.find("classifier|0.2.0|b|1|failed|0.3.0|channel file: 404|||0.3.0|1|\n"),
            std::string::npos)
      << batched;
  EXPECT_NE(batched.find("segmenter|3.0.0|a|1|ok|3.0.0|||stable||0|\n"), std::string::npos)
      << batched;
  // The device: facts of the last heartbeats, its metadata error over.
  EXPECT_NE(batched.find("0.2.0|x86_64|20||0|\n"), std::string::npos) << batched;
}

TEST_F(FleetBatching, StatesInsideOneBatch) {
  const Json items = story();
  auto upto = [&](const std::string& id, std::size_t n) {
    Json part = Json::array();
    for (std::size_t i = 0; i < n; ++i) part.push_back(items[i]);
    EXPECT_EQ(post(id, part).status, 200);
    return state_of(id);
  };
  // Up to seq 7: detector went 2.0.0 -> 1.0.0 in the inventory: not a rollback.
  std::string s = upto("a", 7);
  EXPECT_NE(s.find("detector|1.0.0|a|1|ok|2.0.0|||||0|\n"), std::string::npos) << s;
  // Up to the heartbeat after the failure (seq 4): the failure is kept, version unchanged.
  s = upto("b", 4);
  EXPECT_NE(s.find("detector|1.0.0|a|1|failed|2.0.0|sha256 mismatch|||2.0.0|1|\n"),
            std::string::npos)
      << s;
  // Up to the automatic rollback (seq 13) and the metadata error after it (seq 14, since the
  // device's time of the event).
  s = upto("c", 14);
  EXPECT_NE(s.find("detector|2.1.0|b|1|failed|2.2.0|trial: exit 3|2.2.0|beta||0|\n"),
            std::string::npos)
      << s;
  EXPECT_NE(s.find("|14|timestamp.json: expired|1577836800|\n"), std::string::npos) << s;
  // The old-style refresh failure (seq 16) is the same condition, not a failure of classifier.
  s = upto("d", 16);
  EXPECT_NE(s.find("|16|TUF refresh: connection refused|1577836800|\n"), std::string::npos) << s;
  EXPECT_NE(s.find("classifier|0.2.0|b|1|ok|0.0.1|||||0|\n"), std::string::npos) << s;
}

TEST_F(FleetBatching, PartialReplayAppliesOnlyTheNewItems) {
  const Json items = story();
  Json head = Json::array(), overlap = Json::array();
  for (int i = 0; i < 6; ++i) head.push_back(items[std::size_t(i)]);
  for (std::size_t i = 3; i < items.size(); ++i) overlap.push_back(items[i]);
  ASSERT_EQ(post("replayed", head).status, 200);
  auto r = post("replayed", overlap);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(Json::parse(r.body).value("acked", 0), 20);
  ASSERT_EQ(post("once", items).status, 200);
  EXPECT_EQ(state_of("replayed"), state_of("once"));
  EXPECT_EQ(ingest_->stats().items_duplicate, 3u);
}

// A heartbeat that repeats the installed row writes nothing (updated_at stays: it is the time of
// the model's last event or change; devices.last_seen moves); an event that leaves the row as it
// was moves only updated_at; a heartbeat that changes the version goes through the full write
// (counts moved; not a rollback).
TEST_F(FleetBatching, UnchangedHeartbeatWritesNothingEventsMoveUpdatedAt) {
  std::atomic<int> offset{0};
  ingest_.reset();
  IngestOptions options;
  options.admission = AdmissionMode::automatic;
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
  EXPECT_EQ(installed(row), "detector|2.0.0|a|1|ok||||||0|\n");
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
  // Not a rollback: the version went down in an inventory.
  EXPECT_NE(state_of("d").find("detector|1.0.0|a|1|ok||||||0|\n"), std::string::npos)
      << state_of("d");
}

}  // namespace
}  // namespace mota::manager
