// Truthful fleet state, end to end: real devices' keys sign reports that go over loopback HTTP to
// a real `mota serve`, and the real `mota` CLI shows the result (`devices`, `device show`,
// `fleet`, `rollout status`, all with --json). The rules are in manager/fleet/fleet_db.hpp ("Device
// state"): a failure clears when the device reports the model healthy ("ok") while the version
// it failed keeps counting; rollbacks are automatic rollbacks only; metadata errors are a device
// condition, not a failure of a version; events' slot and channel are stored and shown; absent
// values are JSON null.

#include <gtest/gtest.h>

#include <map>
#include <memory>

#include "common/http.hpp"
#include "common/time.hpp"
#include "manager/fleet/rollout.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/channel.hpp"
#include "protocol/identity.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

// An event body as the agent sends it (agent/agent.hpp), with "slot" and "channel" unless they
// are nullopt (an agent older than those fields).
struct Ev {
  std::string model = "detector";
  std::string state{}, from{}, to{}, step{}, error{};
  std::optional<std::string> slot = "a";
  std::optional<std::string> channel = "stable";
  std::string created_at = "";  // "" = now
};

class FleetState : public ::testing::Test {
 protected:
  void SetUp() override {
    auto repo = manager::Repository::init(repo_dir(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));
    // Not real ONNX files: framework "other", so publishing does not parse them.
    for (const char* v : {"1.0.0", "2.0.0", "3.0.0"}) {
      const auto src = work_ / (std::string("src-") + v);
      test::write_file(src / "model.json",
                       R"({"name": "detector", "framework": "other", "entry": "model.bin"})");
      test::write_file(src / "model.bin", std::string(2000, v[0]));
      auto r = repo_->add_release(src, v);
      ASSERT_TRUE(r) << r.error().message();
    }
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = "1.0.0";
    ASSERT_TRUE(repo_->set_channel(req));

    port_ = test::free_port();
    // Rollouts are ticked by the test (`mota rollout tick`), not by the server's timer.
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{mota_bin(), "serve", "--repo", repo_dir().string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--rollout-interval", "0s",
                                 "--admission", "automatic"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
  }

  stdfs::path repo_dir() const { return work_ / "repo"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }

  // Sends `items` (event bodies or heartbeat bodies, in order) as one signed report of `id`;
  // the server's answer.
  http::Response post_report(const std::string& id,
                             const std::vector<std::pair<std::string, Json>>& items) {
    auto it = ids_.find(id);
    if (it == ids_.end()) {
      auto d = protocol::DeviceIdentity::load_or_create(work_ / "keys" / id, id);
      EXPECT_TRUE(d) << d.error().message();
      if (!d) return {};
      it = ids_.emplace(id, std::move(*d)).first;
    }
    Json batch = Json::array();
    for (const auto& [kind, body] : items) {
      batch.push_back(Json{{"seq", ++seq_[id]},
                           {"kind", kind},
                           {"created_at", body.value("time", format_time(now_seconds()))},
                           {"body", body}});
    }
    const std::string body = Json{{"device", id}, {"batch", batch}}.dump();
    const std::string route = "/v1/devices/" + id + "/events";
    auto headers = it->second.report_headers(route, body);
    EXPECT_TRUE(headers) << headers.error().message();
    if (!headers) return {};
    (*headers)["Content-Type"] = "application/json";
    auto http = http::make_http_client();
    auto r = http->post("http://127.0.0.1:" + std::to_string(port_) + route, body, *headers);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : http::Response{};
  }
  void report(const std::string& id, const std::vector<std::pair<std::string, Json>>& items) {
    auto r = post_report(id, items);
    ASSERT_EQ(r.status, 200) << r.body;
  }
  void events(const std::string& id, const std::vector<Ev>& evs) {
    std::vector<std::pair<std::string, Json>> items;
    for (const auto& e : evs) {
      Json body = {{"device", id},     {"model", e.model}, {"from", e.from},
                   {"to", e.to},       {"state", e.state}, {"step", e.step},
                   {"error", e.error}, {"kind", "full"},   {"bytes", 0}};
      if (e.slot) body["slot"] = *e.slot;
      if (e.channel) body["channel"] = *e.channel;
      if (!e.created_at.empty()) body["time"] = e.created_at;
      items.emplace_back("event", body);
    }
    report(id, items);
  }
  void heartbeat(const std::string& id, const std::string& version) {
    report(id, {{"heartbeat", Json{{"agent_version", "0.2.0"},
                                   {"arch", "x86_64"},
                                   {"models",
                                    {{{"model", "detector"},
                                      {"slot", "a"},
                                      {"version", version},
                                      {"committed", true},
                                      {"channel", "stable"}}}}}}});
  }
  static Ev installed(const std::string& from, const std::string& to) {
    return Ev{.state = "installed", .from = from, .to = to, .step = "commit"};
  }
  static Ev failed(const std::string& from, const std::string& to, const std::string& error) {
    return Ev{.state = "failed", .from = from, .to = to, .step = "verify", .error = error};
  }
  static Ev ok(const std::string& version) {
    return Ev{.state = "ok", .from = version, .to = version, .step = "poll"};
  }

  test::RunResult mota(std::vector<std::string> args) {
    args.insert(args.begin(), mota_bin());
    args.push_back("--repo");
    args.push_back(repo_dir().string());
    return test::run(args);
  }
  Json mota_json(std::vector<std::string> args) {
    args.push_back("--json");
    auto r = mota(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    auto j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out << r.err;
    return j;
  }
  // `mota devices --json`'s row of `id`.
  Json row(const std::string& id) {
    for (const auto& r : mota_json({"devices", "--model", "detector"})) {
      if (r["device"] == id) return r;
    }
    ADD_FAILURE() << "no row for " << id;
    return Json::object();
  }
  // `mota fleet --json`'s entry of `version` of the detector (zeros when not listed).
  Json version_stats(const Json& fleet, const std::string& version) {
    for (const auto& m : fleet["models"]) {
      if (m["model"] != "detector") continue;
      for (const auto& v : m["versions"]) {
        if (v["version"] == version) return v;
      }
    }
    return Json{{"version", version}, {"devices", 0}, {"failures", 0}, {"rollbacks", 0}};
  }
  Json detector(const Json& fleet) {
    for (const auto& m : fleet["models"]) {
      if (m["model"] == "detector") return m;
    }
    ADD_FAILURE() << "no detector in " << fleet.dump(2);
    return Json::object();
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  int port_ = 0;
  std::unique_ptr<test::Process> server_;
  std::map<std::string, protocol::DeviceIdentity> ids_;
  std::map<std::string, std::int64_t> seq_;
};

// A failure, then the model healthy again: the device's state clears, the version it could not
// install keeps its failure until the device installs something.
TEST_F(FleetState, FailedThenOkClearsTheStateNotTheVersionsFailure) {
  events("d1", {installed("", "1.0.0"), failed("1.0.0", "2.0.0", "sha256 mismatch")});
  Json r = row("d1");
  EXPECT_EQ(r["state"], "failed");
  EXPECT_EQ(r["last_error"], "sha256 mismatch");
  EXPECT_EQ(r["failed_version"], "2.0.0");
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(detector(fleet)["failed"], 1);
  EXPECT_EQ(version_stats(fleet, "2.0.0")["failures"], 1);

  events("d1", {ok("1.0.0")});
  r = row("d1");
  EXPECT_EQ(r["state"], "ok") << r.dump(2);
  EXPECT_TRUE(r["last_error"].is_null()) << r.dump(2);
  EXPECT_EQ(r["version"], "1.0.0");
  EXPECT_EQ(r["failed_version"], "2.0.0");
  fleet = mota_json({"fleet"});
  EXPECT_EQ(detector(fleet)["failed"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "2.0.0")["failures"], 1) << fleet.dump(2);
  EXPECT_EQ(mota_json({"devices", "--state", "failed"}).size(), 0u);

  // Installing something ends it.
  events("d1", {installed("1.0.0", "3.0.0")});
  fleet = mota_json({"fleet"});
  EXPECT_EQ(version_stats(fleet, "2.0.0")["failures"], 0) << fleet.dump(2);
  EXPECT_TRUE(row("d1")["failed_version"].is_null());
}

// A failure without a version (the channel file could not be fetched) is a problem of the device
// for that model, never a failure of the version it installed before.
TEST_F(FleetState, FailureWithoutAVersionIsNotAFailureOfTheInstalledOne) {
  events("d1", {installed("", "1.0.0"),
                Ev{.state = "failed", .from = "1.0.0", .step = "channel", .error = "404"}});
  Json r = row("d1");
  EXPECT_EQ(r["state"], "failed");
  EXPECT_EQ(r["last_error"], "404");
  EXPECT_TRUE(r["failed_version"].is_null()) << r.dump(2);
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(detector(fleet)["failed"], 1);
  EXPECT_EQ(version_stats(fleet, "1.0.0")["failures"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "1.0.0")["devices"], 1) << fleet.dump(2);
}

// Only "rolled_back" events (a failed trial, a committed slot that no longer loads at start) are
// rollbacks; a version going down in an inventory or an "installed" event, or leaving a version
// the repository never had, is not.
TEST_F(FleetState, RollbacksAreAutomaticRollbacksOnly) {
  events("inventory", {installed("", "2.0.0")});
  heartbeat("inventory", "1.0.0");
  events("operator", {installed("", "2.0.0"), installed("2.0.0", "1.0.0")});
  events("usb", {installed("", "9.0.0"), installed("9.0.0", "2.0.0")});
  events("trial", {installed("", "1.0.0"), Ev{.state = "rolled_back",
                                              .from = "1.0.0",
                                              .to = "3.0.0",
                                              .step = "trial",
                                              .error = "health check failed"}});
  events("boot", {installed("", "2.0.0"), installed("2.0.0", "3.0.0"),
                  Ev{.state = "rolled_back",
                     .from = "2.0.0",
                     .to = "3.0.0",
                     .step = "boot",
                     .error = "slot b does not load",
                     .slot = "a"}});
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(version_stats(fleet, "2.0.0")["rollbacks"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "9.0.0")["rollbacks"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "3.0.0")["rollbacks"], 2) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "3.0.0")["failures"], 0) << fleet.dump(2);
  EXPECT_EQ(detector(fleet)["failed"], 2) << fleet.dump(2);
  for (const char* id : {"inventory", "operator", "usb"}) {
    Json r = row(id);
    EXPECT_TRUE(r["rolled_back_from"].is_null()) << r.dump(2);
    EXPECT_EQ(r["state"], "ok") << r.dump(2);
  }
  Json boot = row("boot");
  EXPECT_EQ(boot["version"], "2.0.0");
  EXPECT_EQ(boot["slot"], "a");
  EXPECT_EQ(boot["rolled_back_from"], "3.0.0");
  EXPECT_EQ(boot["state"], "failed");

  // Healthy again: still rolled back from 3.0.0; a later install moves on.
  events("boot", {ok("2.0.0")});
  EXPECT_EQ(version_stats(mota_json({"fleet"}), "3.0.0")["rollbacks"], 2);
  events("boot", {installed("2.0.0", "3.0.0")});
  fleet = mota_json({"fleet"});
  EXPECT_EQ(version_stats(fleet, "3.0.0")["rollbacks"], 1) << fleet.dump(2);
  EXPECT_EQ(detector(fleet)["failed"], 1) << fleet.dump(2);
}

// Metadata errors set and clear a condition of the device; they never touch the model's state
// or a version's counts. An older agent's per-model "failed" event at step "refresh" is one too.
TEST_F(FleetState, MetadataErrorsAreADeviceCondition) {
  events("new", {installed("", "1.0.0")});
  events("old", {installed("", "1.0.0")});
  const std::string an_hour_ago = format_time(now_seconds() - std::chrono::hours(1));
  events("new", {Ev{.model = "",
                    .state = "metadata_error",
                    .step = "refresh",
                    .error = "timestamp.json: expired (possible freeze attack)",
                    .slot = std::nullopt,
                    .channel = std::nullopt,
                    .created_at = an_hour_ago}});
  events("old", {Ev{.state = "failed",
                    .from = "1.0.0",
                    .step = "refresh",
                    .error = "TUF refresh: connection refused",
                    .slot = std::nullopt,
                    .channel = std::nullopt}});
  Json r = row("new");
  EXPECT_EQ(r["metadata_error"], "timestamp.json: expired (possible freeze attack)");
  EXPECT_EQ(r["metadata_error_since"], an_hour_ago);
  EXPECT_EQ(r["state"], "ok");
  EXPECT_TRUE(r["last_error"].is_null());
  r = row("old");
  EXPECT_EQ(r["metadata_error"], "TUF refresh: connection refused");
  EXPECT_EQ(r["state"], "ok") << r.dump(2);
  EXPECT_TRUE(r["last_error"].is_null()) << r.dump(2);
  EXPECT_EQ(r["target"], "1.0.0");

  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(fleet["metadata_errors"], 2) << fleet.dump(2);
  EXPECT_EQ(detector(fleet)["failed"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "1.0.0")["failures"], 0) << fleet.dump(2);
  EXPECT_EQ(mota_json({"devices", "--condition", "metadata"}).size(), 2u);
  EXPECT_EQ(mota_json({"devices", "--condition", "metadata", "--model", "detector"}).size(), 2u);
  EXPECT_EQ(mota_json({"devices", "--condition", "ok"}).size(), 0u);
  auto text = mota({"devices"});
  EXPECT_NE(text.out.find("metadata: timestamp.json: expired"), std::string::npos) << text.out;
  text = mota({"device", "show", "new"});
  EXPECT_NE(text.out.find("metadata   failing since " + an_hour_ago), std::string::npos)
      << text.out;
  text = mota({"fleet"});
  EXPECT_NE(text.out.find("2 failing to refresh metadata"), std::string::npos) << text.out;

  // A second, different error keeps the first one's time; metadata_ok clears it.
  events("new", {Ev{.model = "",
                    .state = "metadata_error",
                    .step = "refresh",
                    .error = "timestamp.json: bad signature",
                    .slot = std::nullopt,
                    .channel = std::nullopt}});
  r = row("new");
  EXPECT_EQ(r["metadata_error"], "timestamp.json: bad signature");
  EXPECT_EQ(r["metadata_error_since"], an_hour_ago);
  events("new", {Ev{.model = "",
                    .state = "metadata_ok",
                    .step = "refresh",
                    .slot = std::nullopt,
                    .channel = std::nullopt}});
  r = row("new");
  EXPECT_TRUE(r["metadata_error"].is_null()) << r.dump(2);
  EXPECT_TRUE(r["metadata_error_since"].is_null()) << r.dump(2);
  fleet = mota_json({"fleet"});
  EXPECT_EQ(fleet["metadata_errors"], 1) << fleet.dump(2);
  EXPECT_EQ(mota_json({"devices", "--condition", "metadata"})[0]["device"], "old");
  EXPECT_EQ(mota({"device", "show", "new"}).out.find("metadata   failing"), std::string::npos);
}

// Events' slot and channel are stored in the device's row and shown with each event.
TEST_F(FleetState, EventsSlotAndChannelAreStoredAndShown) {
  events("d1", {installed("", "1.0.0")});
  events("d1", {Ev{.state = "installed",
                   .from = "1.0.0",
                   .to = "2.0.0",
                   .step = "commit",
                   .slot = "b",
                   .channel = "beta"},
                Ev{.state = "refused",
                   .from = "2.0.0",
                   .to = "1.0.0",
                   .step = "policy",
                   .error = "downgrade not allowed",
                   .slot = std::nullopt,
                   .channel = std::nullopt}});
  Json r = row("d1");
  EXPECT_EQ(r["slot"], "b");
  EXPECT_EQ(r["channel"], "beta");
  EXPECT_EQ(r["state"], "refused");
  Json show = mota_json({"device", "show", "d1"});
  ASSERT_EQ(show["events"].size(), 3u) << show.dump(2);
  EXPECT_EQ(show["events"][0]["slot"], "a");
  EXPECT_EQ(show["events"][0]["channel"], "stable");
  EXPECT_EQ(show["events"][1]["slot"], "b");
  EXPECT_EQ(show["events"][1]["channel"], "beta");
  EXPECT_TRUE(show["events"][2]["slot"].is_null()) << show.dump(2);
  EXPECT_TRUE(show["events"][2]["channel"].is_null()) << show.dump(2);
  auto text = mota({"device", "show", "d1"});
  EXPECT_NE(text.out.find("detector installed 1.0.0 -> 2.0.0 (step commit, slot b, channel beta)"),
            std::string::npos)
      << text.out;
}

// What a device will not install, and why: its heartbeats' block list is stored per device and
// shown by `mota device show` (text and --json; a heartbeat without the list, from an older agent,
// keeps it; an empty one clears it); a release the device refuses (its requirements) is the
// model's state, counted by `mota fleet`.
TEST_F(FleetState, BlockListsAndRefusalsAreShown) {
  events("d1", {installed("", "1.0.0")});
  auto hb = [&](const std::optional<Json>& blocked) {
    Json body = {{"agent_version", "0.2.0"},
                 {"arch", "x86_64"},
                 {"models",
                  {{{"model", "detector"},
                    {"slot", "a"},
                    {"version", "1.0.0"},
                    {"committed", true},
                    {"channel", "stable"}}}}};
    if (blocked) body["blocked"] = *blocked;
    report("d1", {{"heartbeat", body}});
  };
  // Never reported: null.
  EXPECT_TRUE(mota_json({"device", "show", "d1"})["blocked"].is_null());
  hb(Json::array({{{"model", "detector"},
                   {"version", "2.0.0"},
                   {"reason", "install detector 2.0.0: probe: output: scores[0] is 0.5\x1b[2J"},
                   {"since", "2030-01-02T03:04:05Z"}}}));
  Json show = mota_json({"device", "show", "d1"});
  ASSERT_EQ(show["blocked"].size(), 1u) << show.dump(2);
  EXPECT_EQ(show["blocked"][0]["model"], "detector");
  EXPECT_EQ(show["blocked"][0]["version"], "2.0.0");
  EXPECT_EQ(show["blocked"][0]["since"], "2030-01-02T03:04:05Z");
  EXPECT_NE(show["blocked"][0]["reason"].get<std::string>().find("probe: output"),
            std::string::npos);
  auto text = mota({"device", "show", "d1"});
  // The device's text reaches the terminal with its control characters escaped.
  EXPECT_NE(text.out.find("blocked    detector 2.0.0 since 2030-01-02T03:04:05Z: install detector "
                          "2.0.0: probe: output: scores[0] is 0.5\\x1b[2J"),
            std::string::npos)
      << text.out;
  hb(std::nullopt);  // an older agent's heartbeat: the list on record stays
  EXPECT_EQ(mota_json({"device", "show", "d1"})["blocked"].size(), 1u);
  hb(Json::array());  // unblocked
  show = mota_json({"device", "show", "d1"});
  EXPECT_TRUE(show["blocked"].is_array() && show["blocked"].empty()) << show.dump(2);
  EXPECT_NE(mota({"device", "show", "d1"}).out.find("blocked    nothing"), std::string::npos);

  // Requirements not met: refused, with the reason, in `mota devices` and `mota fleet`.
  const std::string why =
      "requirements not met: arch: the release runs on armv7l; this device is x86_64";
  events("d1", {Ev{.state = "refused",
                   .from = "1.0.0",
                   .to = "2.0.0",
                   .step = "requirements",
                   .error = why}});
  events("d2", {installed("", "1.0.0")});
  Json r = row("d1");
  EXPECT_EQ(r["state"], "refused");
  EXPECT_EQ(r["last_error"], why);
  EXPECT_EQ(r["version"], "1.0.0");
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(detector(fleet)["refused"], 1) << fleet.dump(2);
  EXPECT_EQ(detector(fleet)["failed"], 0) << fleet.dump(2);
  auto listing = mota({"devices", "--state", "refused"});
  // The table cuts long errors; the start says which requirement.
  EXPECT_NE(listing.out.find("refused  -         "), std::string::npos) << listing.out;
  EXPECT_NE(listing.out.find("requirements not met: arch"), std::string::npos) << listing.out;
  EXPECT_EQ(listing.out.find("d2"), std::string::npos) << listing.out;
  EXPECT_NE(mota({"fleet"}).out.find("0 failed, 1 refused"), std::string::npos);
}

// Absent values are null in every --json output of the fleet commands.
TEST_F(FleetState, AbsentValuesAreJsonNull) {
  test::write_file(work_ / "key.hex", std::string(64, 'a'));
  ASSERT_EQ(mota({"devices", "enroll", "quiet", "--key", (work_ / "key.hex").string()}).exit_code,
            0);
  heartbeat("empty", "");  // a model with nothing installed
  Json rows = mota_json({"devices"});
  ASSERT_EQ(rows.size(), 2u) << rows.dump(2);
  const Json& e = rows[0]["device"] == "empty" ? rows[0] : rows[1];
  const Json& q = rows[0]["device"] == "quiet" ? rows[0] : rows[1];
  for (const char* k : {"model", "version", "slot", "state", "target", "last_error",
                        "failed_version", "failed_at", "rolled_back_from", "channel", "last_seen",
                        "updated", "metadata_error", "metadata_error_since"}) {
    EXPECT_TRUE(q[k].is_null()) << k << ": " << q.dump(2);
  }
  for (const char* k : {"version", "target", "last_error", "failed_version", "failed_at",
                        "rolled_back_from", "metadata_error", "metadata_error_since"}) {
    EXPECT_TRUE(e[k].is_null()) << k << ": " << e.dump(2);
  }
  EXPECT_EQ(e["state"], "ok");
  EXPECT_TRUE(e["last_seen"].is_string());

  Json show = mota_json({"device", "show", "quiet"});
  for (const char* k : {"first_seen", "last_seen", "agent_version", "arch", "tags",
                        "metadata_error", "metadata_error_since"}) {
    EXPECT_TRUE(show[k].is_null()) << k << ": " << show.dump(2);
  }
  EXPECT_EQ(show["models"].size(), 0u);
  show = mota_json({"device", "show", "empty"});
  ASSERT_EQ(show["events"].size(), 1u);
  for (const char* k : {"model", "from", "to", "state", "step", "error", "slot", "channel"}) {
    EXPECT_TRUE(show["events"][0][k].is_null()) << k << ": " << show.dump(2);
  }

  Json fleet = mota_json({"fleet"});
  ASSERT_EQ(detector(fleet)["versions"].size(), 1u) << fleet.dump(2);
  EXPECT_TRUE(detector(fleet)["versions"][0]["version"].is_null()) << fleet.dump(2);

  // A rollout on a channel that never had the model: no previous version.
  auto r = mota({"rollout", "start", "beta", "detector", "2.0.0", "--percent", "100",
                 "--max-failure-rate", "5%", "--step-after", "1h"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json status = mota_json({"rollout", "status", "beta", "detector"});
  EXPECT_TRUE(status["previous_version"].is_null()) << status.dump(2);
  EXPECT_TRUE(status["started"].is_string()) << status.dump(2);
}

// A rollout's counts under the new rules: a failed device keeps counting for the version while
// it is blocked and after it reports healthy again on the re-published previous version; a
// later failure without a version does not count twice; devices sent back by the halt (an
// "installed" going down) are not rollbacks.
TEST_F(FleetState, RolloutCountsFollowTheRules) {
  for (const char* id : {"r0", "r1", "r2", "r3"}) events(id, {installed("", "1.0.0")});
  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "100",
                 "--max-failure-rate", "30%", "--min-devices", "4", "--step-after", "1h"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  events("r0", {installed("1.0.0", "2.0.0")});
  events("r1", {installed("1.0.0", "2.0.0")});
  events("r2", {failed("1.0.0", "2.0.0", "hook exited with 1")});
  ASSERT_EQ(mota({"rollout", "tick"}).exit_code, 0);
  Json status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["state"], "running") << status.dump(2);
  EXPECT_EQ(status["updated"], 2);
  EXPECT_EQ(status["failed"], 1);
  EXPECT_EQ(status["pending"], 1);
  // r2's next poll cannot fetch the channel: still one failure, not two, and not a new one.
  events("r2", {Ev{.state = "failed", .from = "1.0.0", .step = "channel", .error = "timeout"}});
  status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["failed"], 1) << status.dump(2);
  EXPECT_EQ(status["pending"], 1) << status.dump(2);

  events("r3", {failed("1.0.0", "2.0.0", "hook exited with 1")});
  ASSERT_EQ(mota({"rollout", "tick"}).exit_code, 0);
  status = mota_json({"rollout", "status", "stable", "detector"});
  ASSERT_EQ(status["state"], "halted") << status.dump(2);
  // The halt re-published 1.0.0 with allow_downgrade: r0 and r1 go back (an operator's move, not
  // a rollback), r2 and r3 run it already and report themselves healthy.
  events("r0", {installed("2.0.0", "1.0.0")});
  events("r1", {installed("2.0.0", "1.0.0")});
  events("r2", {ok("1.0.0")});
  events("r3", {ok("1.0.0")});
  status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["failed"], 2) << status.dump(2);
  EXPECT_EQ(status["rolled_back"], 0) << status.dump(2);
  Json fleet = mota_json({"fleet"});
  EXPECT_EQ(version_stats(fleet, "2.0.0")["failures"], 2) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "2.0.0")["rollbacks"], 0) << fleet.dump(2);
  EXPECT_EQ(version_stats(fleet, "1.0.0")["devices"], 4) << fleet.dump(2);
  EXPECT_EQ(detector(fleet)["failed"], 0) << fleet.dump(2);
}

// Labels (docs/fleet.md, "Labels and selectors"): devices report theirs in heartbeats, operators
// add their own on top; selectors choose devices in `mota devices`, `mota fleet` and bulk
// commands. A heartbeat without labels (an older agent) keeps the ones on record; a bad label is
// refused with the label named and changes nothing.
TEST_F(FleetState, LabelsSelectDevicesInEveryView) {
  auto hb = [&](const std::string& id, const std::string& version, const Json& labels) {
    Json body = {{"agent_version", "0.2.0"},
                 {"models",
                  {{{"model", "detector"},
                    {"slot", "a"},
                    {"version", version},
                    {"committed", true},
                    {"channel", "stable"}}}}};
    if (!labels.is_null()) body["labels"] = labels;
    report(id, {{"heartbeat", body}});
  };
  hb("cam-1", "1.0.0", {{"site", "plant-3"}, {"hw", "orin-nano"}, {"mota/arch", "aarch64"}});
  hb("cam-2", "2.0.0", {{"site", "plant-3"}, {"hw", "rpi5"}, {"mota/arch", "aarch64"}});
  hb("cam-3", "1.0.0", {{"site", "plant-4"}, {"hw", "orin-nano"}, {"mota/arch", "aarch64"}});
  hb("old-1", "1.0.0", nullptr);  // an agent before labels
  // A later heartbeat without labels keeps what is on record.
  hb("cam-1", "1.0.0", nullptr);

  auto ids = [&](std::vector<std::string> args) {
    std::vector<std::string> out;
    for (const auto& r : mota_json(args)) out.push_back(r["device"]);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(ids({"devices", "--select", "site=plant-3"}), (V{"cam-1", "cam-2"}));
  EXPECT_EQ(ids({"devices", "--select", "site=plant-3,hw in (orin-nano,xavier)"}), (V{"cam-1"}));
  EXPECT_EQ(ids({"devices", "--select", "!site"}), (V{"old-1"}));
  // Keys with '/' and '.' (narrowed in SQL through a quoted JSON path, then matched exactly).
  EXPECT_EQ(ids({"devices", "--select", "mota/arch in (aarch64),hw"}),
            (V{"cam-1", "cam-2", "cam-3"}));
  EXPECT_EQ(ids({"devices", "--select", "mota/arch=x86_64"}), V{});
  EXPECT_EQ(ids({"devices", "--select", "site notin (plant-3)", "--version", "1.0.0"}),
            (V{"cam-3", "old-1"}));
  EXPECT_EQ(row("cam-1")["labels"]["hw"], "orin-nano");

  // Operator labels win over the device's and select like them.
  auto r = mota({"devices", "label", "cam-3", "canary=yes", "site=plant-3"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "labelled 1 device (1 matched)\n");
  EXPECT_EQ(ids({"devices", "--select", "site=plant-3,!canary"}), (V{"cam-1", "cam-2"}));
  EXPECT_EQ(ids({"devices", "--select", "canary"}), (V{"cam-3"}));
  r = mota({"devices", "label", "--select", "hw=orin-nano", "ring=2", "--dry-run"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "cam-1\ncam-3\nwould label 2 devices\n");
  r = mota({"devices", "label", "--select", "hw=orin-nano", "ring=2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ids({"devices", "--select", "ring=2"}), (V{"cam-1", "cam-3"}));
  r = mota({"devices", "label", "cam-3", "--remove", "canary", "--remove", "site"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(ids({"devices", "--select", "site=plant-4"}), (V{"cam-3"})) << "its own again";
  const Json show = mota_json({"device", "show", "cam-3"});
  EXPECT_EQ(
      show["labels"],
      (Json{{"hw", "orin-nano"}, {"mota/arch", "aarch64"}, {"ring", "2"}, {"site", "plant-4"}}));
  EXPECT_EQ(show["operator_labels"], (Json{{"ring", "2"}}));
  r = mota({"device", "show", "cam-3"});
  EXPECT_NE(r.out.find("labels     hw=orin-nano,mota/arch=aarch64,site=plant-4\n"),
            std::string::npos)
      << r.out;
  EXPECT_NE(r.out.find("operator   ring=2 (mota devices label)"), std::string::npos) << r.out;

  // The summary of a selection.
  const Json fleet = mota_json({"fleet", "--select", "site=plant-3"});
  EXPECT_EQ(fleet["devices"], 2) << fleet.dump(2);
  ASSERT_EQ(fleet["models"].size(), 1u);
  EXPECT_EQ(fleet["models"][0]["devices"], 2);
  EXPECT_EQ(fleet["models"][0]["versions"].size(), 2u) << fleet.dump(2);
  EXPECT_EQ(mota_json({"fleet"})["devices"], 4);

  // Mistakes say what and change nothing.
  for (const auto& [args, words] : std::vector<std::pair<V, std::string>>{
           {{"devices", "--select", "site="}, "expected a label value"},
           {{"devices", "label", "cam-1", "mota/arch=x86_64"}, "the device's own facts"},
           {{"devices", "label", "cam-1", "site=a b"}, "label site value \"a b\""},
           {{"devices", "label", "cam-1", "nobody", "x=1"}, "device 'nobody' is not on record"},
           {{"devices", "label", "cam-1"}, "give KEY=VALUE labels or --remove KEY"},
       }) {
    r = mota(args);
    EXPECT_NE(r.exit_code, 0) << args[1];
    EXPECT_NE((r.out + r.err).find(words), std::string::npos) << r.out << r.err;
  }
  EXPECT_EQ(ids({"devices", "--select", "x"}), V{}) << "the failed command labelled nobody";

  // A device's bad label is a 400 naming it; what is on record stays.
  auto bad = post_report(
      "cam-1",
      {{"heartbeat", Json{{"models", Json::array()}, {"labels", {{"site", "plant\n3"}}}}}});
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_NE(bad.body.find("label site value"), std::string::npos) << bad.body;
  EXPECT_EQ(row("cam-1")["labels"]["site"], "plant-3");
}

// Targeted rollouts (manager/fleet/rollout.hpp): the channel file carries the selector, only the
// matching devices count (by the labels they report, what they decide by), the others keep their
// version; a dry run shows which devices each step reaches; a rollout to another target while one
// holds is refused; a halt gives the target back what it ran.
TEST_F(FleetState, TargetedRolloutsCountOnlyTheMatchingDevices) {
  auto hb = [&](const std::string& id, const std::string& version, const Json& labels) {
    report(id, {{"heartbeat", Json{{"models",
                                    {{{"model", "detector"},
                                      {"slot", "a"},
                                      {"version", version},
                                      {"committed", true},
                                      {"channel", "stable"}}}},
                                   {"labels", labels}}}});
  };
  const Json plant3 = {{"site", "plant-3"}}, plant4 = {{"site", "plant-4"}};
  for (const char* id : {"p3-a", "p3-b", "p3-c"}) hb(id, "1.0.0", plant3);
  for (const char* id : {"p4-a", "p4-b"}) hb(id, "1.0.0", plant4);
  // The operator's labels select in views; a target follows what the device itself reports.
  ASSERT_EQ(mota({"devices", "label", "p4-a", "site=plant-3"}).exit_code, 0);

  Json plan = mota_json({"rollout", "start", "stable", "detector", "2.0.0", "--select",
                         "site=plant-3", "--percent", "50,100", "--dry-run"});
  ASSERT_EQ(plan.size(), 2u) << plan.dump(2);
  EXPECT_EQ(plan[1]["percent"], 100);
  EXPECT_EQ(plan[1]["devices"], (Json{"p3-a", "p3-b", "p3-c"})) << plan.dump(2);
  EXPECT_EQ(plan[1]["count"], 3);
  // The first step's devices are exactly those whose bucket under the rollout's salt is inside.
  const std::string salt = manager::rollout_salt("stable", "detector", "2.0.0");
  Json first = Json::array();
  for (const char* id : {"p3-a", "p3-b", "p3-c"}) {
    if (rollout_bucket(salt, id) < 5000) first.push_back(id);
  }
  EXPECT_EQ(plan[0]["devices"], first) << plan.dump(2);
  EXPECT_EQ(mota({"rollout", "status", "stable", "detector"}).exit_code, 1)
      << "a dry run starts nothing";

  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--select", "site = plant-3",
                 "--percent", "100", "--max-failure-rate", "30%", "--min-devices", "3",
                 "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("devices matching site=plant-3"), std::string::npos) << r.out;
  // The channel: the others keep 1.0.0 (and so does every agent that ignores "targeted").
  Json channel = mota_json({"channel", "show", "stable"})[0];
  EXPECT_EQ(channel["version"], "1.0.0") << channel.dump(2);
  EXPECT_EQ(channel["targeted"]["version"], "2.0.0") << channel.dump(2);
  EXPECT_EQ(channel["targeted"]["select"], "site=plant-3");
  EXPECT_EQ(channel["targeted"]["salt"], salt);
  Json status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["targeted"], 3) << status.dump(2);
  EXPECT_EQ(status["select"], "site=plant-3");

  // A failure outside the target does not count; the target's updates complete the rollout.
  events("p4-b", {failed("1.0.0", "2.0.0", "hook exited with 1")});
  for (const char* id : {"p3-a", "p3-b", "p3-c"}) events(id, {installed("1.0.0", "2.0.0")});
  ASSERT_EQ(mota({"rollout", "tick"}).exit_code, 0);
  status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["state"], "completed") << status.dump(2);
  EXPECT_EQ(status["updated"], 3);
  EXPECT_EQ(status["failed"], 0) << "p4-b is not in the target";

  // Another target on the same channel is refused; the same target takes the next version.
  r = mota({"rollout", "start", "stable", "detector", "3.0.0", "--select", "site=plant-4"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("gives detector 2.0.0 to 100% of the devices matching site=plant-3"),
            std::string::npos)
      << r.err;
  r = mota({"rollout", "start", "stable", "detector", "3.0.0", "--select", "site=plant-3",
            "--percent", "100", "--max-failure-rate", "30%", "--min-devices", "3", "--step-after",
            "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  channel = mota_json({"channel", "show", "stable"})[0];
  EXPECT_EQ(channel["version"], "1.0.0") << channel.dump(2);
  EXPECT_EQ(channel["targeted"]["version"], "3.0.0") << channel.dump(2);
  events("p3-a", {failed("2.0.0", "3.0.0", "hook exited with 1")});
  events("p3-b", {failed("2.0.0", "3.0.0", "hook exited with 1")});
  ASSERT_EQ(mota({"rollout", "tick"}).exit_code, 0);
  status = mota_json({"rollout", "status", "stable", "detector"});
  ASSERT_EQ(status["state"], "halted") << status.dump(2);
  EXPECT_NE(status["transitions"].back()["reason"].get<std::string>().find(
                "republished 2.0.0 to the devices matching site=plant-3"),
            std::string::npos)
      << status.dump(2);
  // The target is back on 2.0.0 (allowed down), the others still on 1.0.0.
  channel = mota_json({"channel", "show", "stable"})[0];
  EXPECT_EQ(channel["version"], "1.0.0") << channel.dump(2);
  EXPECT_EQ(channel["targeted"]["version"], "2.0.0") << channel.dump(2);
  EXPECT_EQ(channel["allow_downgrade"], true) << channel.dump(2);

  // Every rollout, newest first, with its state.
  Json all = mota_json({"rollout", "list"});
  ASSERT_EQ(all.size(), 2u) << all.dump(2);
  EXPECT_EQ(all[0]["version"], "3.0.0");
  EXPECT_EQ(all[0]["state"], "halted");
  EXPECT_EQ(all[1]["version"], "2.0.0");
  EXPECT_EQ(all[1]["state"], "completed");
  EXPECT_EQ(all[1]["select"], "site=plant-3");
  EXPECT_EQ(mota_json({"rollout", "list", "--limit", "1"}).size(), 1u);
  r = mota({"rollout", "list"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("ID    CHANNEL"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("halted"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mota
