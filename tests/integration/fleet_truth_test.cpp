// Fleet state tells the truth, end to end: a real `mota-agent` reports to a real `mota serve`, and
// `mota devices --json` / `mota fleet --json` follow the latest facts through a device's bad days:
// metadata it cannot refresh (a device condition, not a failure of its version), a failed
// install that clears once the device runs what its channel wants, an operator's downgrade (not a
// rollback), and an automatic rollback at start from a damaged slot (a rollback).

#include <gtest/gtest.h>

#include <csignal>
#include <functional>
#include <thread>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class FleetTruth : public ::testing::Test {
 protected:
  void SetUp() override {
    auto repo = manager::Repository::init(repo_dir(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));
    for (const char* v : {"1.0.0", "2.0.0"}) {
      auto src = work_ / (std::string("src-") + v);
      test::make_model_dir(src, std::string(40000, v[0]) + v);
      ASSERT_TRUE(repo_->add_release(src, v));
    }
    channel("1.0.0");
    port_ = test::free_port();
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{test::build_path("manager/mota").string(), "serve", "--repo",
                                 repo_dir().string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--admission", "automatic"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
    test::write_file(config(), "server_url = \"http://127.0.0.1:" + std::to_string(port_) +
                                   "\"\nstate_dir = \"" + state().string() +
                                   "\"\nupdate_lock = \"" + state().string() +
                                   "/update.lock\"\ntrusted_root = \"" +
                                   (repo_dir() / "repo" / "metadata" / "1.root.json").string() +
                                   "\"\ndevice_id = \"edge-a\"\nlog_level = \"info\"\n"
                                   "poll_interval = \"1h\"\npoll_jitter = 0\n"
                                   "[retry]\nmax_attempts = 1\n[health]\nenabled = false\n"
                                   // a damaged package below may pass on retry: no backoff
                                   "retry_backoff = \"0s\"\n"
                                   "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
  }

  stdfs::path repo_dir() const { return work_ / "fleet"; }
  stdfs::path state() const { return work_ / "state"; }
  stdfs::path config() const { return work_ / "agent.toml"; }

  void channel(const std::string& version, bool allow_downgrade = false) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    req.allow_downgrade = allow_downgrade;
    auto r = repo_->set_channel(req);
    ASSERT_TRUE(r) << r.error().message();
  }
  test::RunResult agent(const std::string& command) {
    return test::run(
        {test::build_path("agent/mota-agent").string(), "--config", config().string(), command});
  }
  Json mota_json(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    args.insert(args.end(), {"--repo", repo_dir().string(), "--json"});
    auto r = test::run(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    auto j = Json::parse(r.out, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  // The device's one row in `mota devices --json`.
  Json row() {
    Json rows = mota_json({"devices"});
    EXPECT_EQ(rows.size(), 1u) << rows.dump(2);
    return rows.empty() ? Json() : rows[0];
  }
  // `mota fleet --json`: the detector's {failures, rollbacks} of `version`, and its failed count.
  struct Counts {
    std::int64_t failures = 0, rollbacks = 0, failed = 0, metadata_errors = 0;
  };
  Counts counts(const std::string& version) {
    Json f = mota_json({"fleet"});
    Counts c;
    c.metadata_errors = f.value("metadata_errors", std::int64_t{-1});
    for (const auto& m : f["models"]) {
      if (m["model"] != "detector") continue;
      c.failed = m["failed"].get<std::int64_t>();
      for (const auto& v : m["versions"]) {
        if (v["version"] == version) {
          c.failures = v["failures"].get<std::int64_t>();
          c.rollbacks = v["rollbacks"].get<std::int64_t>();
        }
      }
    }
    return c;
  }
  stdfs::path served(const std::string& rel) const { return repo_dir() / "repo" / rel; }
  // The consistent-snapshot file of the package of `version` (<sha256>.detector-<v>.mota).
  stdfs::path package(const std::string& version) const {
    for (const auto& e : stdfs::directory_iterator(served("targets/models/detector/" + version))) {
      return e.path();
    }
    return {};
  }
  std::string current() const {
    std::error_code ec;
    return stdfs::read_symlink(state() / "models" / "detector" / "current", ec).string();
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  std::unique_ptr<test::Process> server_;
  int port_ = 0;
};

TEST_F(FleetTruth, DeviceStateFollowsTheLatestFacts) {
  ASSERT_EQ(agent("check-once").exit_code, 0);
  Json r = row();
  EXPECT_EQ(r["version"], "1.0.0");
  EXPECT_EQ(r["state"], "ok");
  EXPECT_TRUE(r["last_error"].is_null()) << r.dump();
  EXPECT_TRUE(r["metadata_error"].is_null()) << r.dump();

  // 1. Metadata the device cannot refresh (here: a damaged timestamp.json is served): the
  //    device's condition, not a failure of 1.0.0, which it keeps serving.
  const auto ts = served("metadata/timestamp.json");
  const std::string good_ts = test::read_file(ts);
  test::write_file(ts, "{\"signed\": {}, \"signatures\": []}");
  EXPECT_EQ(agent("check-once").exit_code, 1);
  r = row();
  EXPECT_EQ(r["state"], "ok") << r.dump();
  EXPECT_EQ(r["version"], "1.0.0");
  ASSERT_TRUE(r["metadata_error"].is_string()) << r.dump();
  EXPECT_NE(r["metadata_error"].get<std::string>().find("timestamp.json"), std::string::npos);
  Counts c = counts("1.0.0");
  EXPECT_EQ(c.metadata_errors, 1);
  EXPECT_EQ(c.failures, 0);
  EXPECT_EQ(c.failed, 0);
  test::write_file(ts, good_ts);
  ASSERT_EQ(agent("check-once").exit_code, 0);
  EXPECT_TRUE(row()["metadata_error"].is_null()) << row().dump();
  EXPECT_EQ(counts("1.0.0").metadata_errors, 0);

  // 2. 2.0.0's served package is damaged: the install fails (and counts against 2.0.0)...
  channel("2.0.0");
  const auto pkg = package("2.0.0");
  const std::string good_pkg = test::read_file(pkg);
  std::string bad = good_pkg;
  bad[bad.size() / 2] ^= 0x20;
  test::write_file(pkg, bad);
  EXPECT_EQ(agent("check-once").exit_code, 1);
  r = row();
  EXPECT_EQ(r["state"], "failed") << r.dump();
  EXPECT_EQ(r["version"], "1.0.0");
  EXPECT_EQ(r["failed_version"], "2.0.0");
  c = counts("2.0.0");
  EXPECT_EQ(c.failed, 1);
  EXPECT_EQ(c.failures, 1);
  // ...and once the channel wants what the device runs (the operator went back to 1.0.0), the
  // device is healthy again: not "failed" any more, while 2.0.0 keeps its failure on record.
  channel("1.0.0", /*allow_downgrade=*/true);
  ASSERT_EQ(agent("check-once").exit_code, 0);
  r = row();
  EXPECT_EQ(r["state"], "ok") << r.dump();
  EXPECT_TRUE(r["last_error"].is_null()) << r.dump();
  c = counts("2.0.0");
  EXPECT_EQ(c.failed, 0);
  EXPECT_EQ(c.failures, 1);
  auto st = agent("status");
  EXPECT_EQ(st.out.find("last error"), std::string::npos) << st.out;

  // 3. A good 2.0.0, then the operator's explicit downgrade to 1.0.0: not a rollback.
  test::write_file(pkg, good_pkg);
  channel("2.0.0");
  ASSERT_EQ(agent("check-once").exit_code, 0);
  EXPECT_EQ(row()["version"], "2.0.0");
  EXPECT_EQ(counts("2.0.0").failures, 0) << "an install of 2.0.0 ends its failure";
  channel("1.0.0", /*allow_downgrade=*/true);
  ASSERT_EQ(agent("check-once").exit_code, 0);
  r = row();
  EXPECT_EQ(r["version"], "1.0.0");
  EXPECT_TRUE(r["rolled_back_from"].is_null()) << r.dump();
  EXPECT_EQ(counts("2.0.0").rollbacks, 0);

  // 4. 2.0.0 again, committed; the channel goes back to 1.0.0 without allowing downgrades, so the
  //    device keeps 2.0.0. Then its slot is damaged while the device is off: at start the agent
  //    serves 1.0.0 from the other slot by itself, an automatic rollback, and is then exactly
  //    where its channel wants it: "ok", with the rollback of 2.0.0 on record.
  channel("2.0.0");
  ASSERT_EQ(agent("check-once").exit_code, 0);
  channel("1.0.0");
  ASSERT_EQ(agent("check-once").exit_code, 0);  // refused (no downgrade): stays on 2.0.0
  EXPECT_EQ(row()["version"], "2.0.0");
  const std::string committed = current();
  test::write_file(state() / "models" / "detector" / committed / "model.onnx", "bit rot");
  test::Process daemon(
      {test::build_path("agent/mota-agent").string(), "--config", config().string(), "run"},
      work_ / "agent.log");
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (std::chrono::steady_clock::now() < deadline &&
         !(row()["version"] == "1.0.0" && row()["state"] == "ok")) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  daemon.kill(SIGTERM);
  daemon.wait();
  r = row();
  EXPECT_EQ(r["version"], "1.0.0") << r.dump() << test::read_file(work_ / "agent.log");
  EXPECT_EQ(r["state"], "ok") << r.dump();
  EXPECT_EQ(r["rolled_back_from"], "2.0.0") << r.dump();
  EXPECT_NE(current(), committed);
  c = counts("2.0.0");
  EXPECT_EQ(c.rollbacks, 1);
  EXPECT_EQ(c.failed, 0);
  // The rollback event says where it happened and which slot serves now.
  Json dev = mota_json({"device", "show", "edge-a"});
  bool found = false;
  for (const auto& e : dev["events"]) {
    if (e["state"] != "rolled_back") continue;
    found = true;
    EXPECT_EQ(e["step"], "boot") << e.dump();
    EXPECT_EQ(e["from"], "1.0.0");
    EXPECT_EQ(e["to"], "2.0.0");
    EXPECT_EQ(e["slot"], current());
    EXPECT_EQ(e["channel"], "stable");
  }
  EXPECT_TRUE(found) << dev.dump(2);
}

}  // namespace
}  // namespace mota
