// Targeted rollouts end to end with a static repository: real `mota-agent` processes with
// different labels fetch metadata and targets from a real nginx serving the repository directory
// (as a CDN would) and report to a real `mota serve`; `mota rollout start --select` reaches
// exactly the devices whose labels match, because each device decides from the signed channel
// file and its own labels, and the others keep their version.

#include <gtest/gtest.h>

#include <chrono>
#include <memory>
#include <thread>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/nginx.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;

struct Device {
  std::string id;
  std::string labels;  // TOML inline table body, "" = none
  bool matches;        // site=plant-3,hw in (orin-nano,rpi5),!canary
};

const std::vector<Device> kDevices = {
    {"cam-orin", R"(site = "plant-3", hw = "orin-nano")", true},
    {"cam-rpi", R"(site = "plant-3", hw = "rpi5")", true},
    {"cam-canary", R"(site = "plant-3", hw = "rpi5", canary = "yes")", false},
    {"cam-xavier", R"(site = "plant-3", hw = "xavier")", false},
    {"cam-plant4", R"(site = "plant-4", hw = "orin-nano")", false},
    {"cam-bare", "", false},
};
constexpr const char* kSelector = "site=plant-3,hw in (orin-nano,rpi5),!canary";

class FleetTargeting : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!test::Nginx::available()) GTEST_SKIP() << "nginx not installed";
    auto repo = manager::Repository::init(repo_dir(), manager::Settings{});
    ASSERT_TRUE(repo) << repo.error().message();
    repo_ = std::make_unique<manager::Repository>(std::move(*repo));
    for (const char* v : {"1.0.0", "2.0.0"}) {
      auto src = work_ / (std::string("src-") + v);
      test::make_model_dir(src, std::string(20000, v[0]) + v);
      auto r = repo_->add_release(src, v);
      ASSERT_TRUE(r) << r.error().message();
    }
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = "1.0.0";
    ASSERT_TRUE(repo_->set_channel(req));

    nginx_ = std::make_unique<test::Nginx>(repo_dir() / "repo", work_ / "nginx");
    ASSERT_NE(nginx_->port(), 0);
    port_ = test::free_port();
    server_ = std::make_unique<test::Process>(
        std::vector<std::string>{mota_bin(), "serve", "--repo", repo_dir().string(), "--listen",
                                 "127.0.0.1:" + std::to_string(port_), "--rollout-interval", "0s",
                                 "--admission", "automatic"},
        work_ / "serve.log");
    ASSERT_TRUE(test::wait_for_port(port_)) << test::read_file(work_ / "serve.log");
    for (const auto& d : kDevices) {
      const auto dir = work_ / d.id;
      test::write_file(
          dir / "agent.toml",
          "server_url = \"" + nginx_->url("/") +
              "\"\nreport_url = \"http://127.0.0.1:" + std::to_string(port_) +
              "\"\nstate_dir = \"" + (dir / "state").string() + "\"\ntrusted_root = \"" +
              (repo_dir() / "repo" / "metadata" / "1.root.json").string() + "\"\ndevice_id = \"" +
              d.id + "\"\nheartbeat_interval = \"0s\"\nlog_level = \"warn\"\n" +
              (d.labels.empty() ? "" : "labels = { " + d.labels + " }\n") +
              "[retry]\nmax_attempts = 1\n[health]\nenabled = false\n[[model]]\nname = "
              "\"detector\"\nchannel = \"stable\"\n");
    }
  }

  stdfs::path repo_dir() const { return work_ / "fleet"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }

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
    EXPECT_FALSE(j.is_discarded()) << r.out;
    return j;
  }
  // One poll of every agent; each must succeed (up to date or updated).
  void poll_all() {
    for (const auto& d : kDevices) {
      auto r = test::run({test::build_path("agent/mota-agent").string(), "--config",
                          (work_ / d.id / "agent.toml").string(), "check-once"});
      EXPECT_EQ(r.exit_code, 0) << d.id << ": " << r.out << r.err;
    }
  }
  std::string running(const std::string& id) {
    auto r = test::run({test::build_path("agent/mota-agent").string(), "--config",
                        (work_ / id / "agent.toml").string(), "status", "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err;
    auto j = Json::parse(r.out, nullptr, false);
    if (!j.is_object() || !j["models"].is_array() || j["models"].empty()) return "";
    return j["models"][0].value("version", "");
  }

  test::TempDir work_;
  std::unique_ptr<manager::Repository> repo_;
  std::unique_ptr<test::Nginx> nginx_;
  int port_ = 0;
  std::unique_ptr<test::Process> server_;
};

TEST_F(FleetTargeting, ASelectorRolloutReachesExactlyTheMatchingDevicesFromAStaticMirror) {
  poll_all();
  for (const auto& d : kDevices) ASSERT_EQ(running(d.id), "1.0.0") << d.id;

  // The server knows each device's labels (and its facts) from the heartbeats.
  Json rows = mota_json({"devices", "--select", kSelector});
  std::vector<std::string> selected;
  for (const auto& r : rows) selected.push_back(r["device"]);
  EXPECT_EQ(selected, (std::vector<std::string>{"cam-orin", "cam-rpi"})) << rows.dump(2);
  Json show = mota_json({"device", "show", "cam-orin"});
  EXPECT_EQ(show["labels"]["hw"], "orin-nano") << show.dump(2);
  EXPECT_TRUE(show["labels"].contains("mota/arch")) << show.dump(2);

  Json plan = mota_json({"rollout", "start", "stable", "detector", "2.0.0", "--select", kSelector,
                         "--percent", "100", "--dry-run"});
  ASSERT_EQ(plan.size(), 1u) << plan.dump(2);
  EXPECT_EQ(plan[0]["devices"], (Json{"cam-orin", "cam-rpi"})) << plan.dump(2);

  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--select", kSelector,
                 "--percent", "100", "--min-devices", "2", "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  poll_all();
  for (const auto& d : kDevices) {
    EXPECT_EQ(running(d.id), d.matches ? "2.0.0" : "1.0.0") << d.id;
  }
  // Every file the agents read came from nginx; the server saw only reports.
  bool channel_from_nginx = false;
  for (const auto& req : nginx_->requests()) {
    // Consistent snapshots: targets/channels/stable/<sha256>.detector.json
    if (req.uri.find("/targets/channels/stable/") != std::string::npos && req.status == 200) {
      channel_from_nginx = true;
    }
  }
  EXPECT_TRUE(channel_from_nginx);
  ASSERT_EQ(mota({"rollout", "tick"}).exit_code, 0);
  Json status = mota_json({"rollout", "status", "stable", "detector"});
  EXPECT_EQ(status["targeted"], 2) << status.dump(2);
  EXPECT_EQ(status["updated"], 2) << status.dump(2);
  EXPECT_EQ(status["state"], "completed") << status.dump(2);

  // The views agree with the devices; a second poll changes nothing.
  poll_all();
  for (const auto& d : kDevices) {
    EXPECT_EQ(running(d.id), d.matches ? "2.0.0" : "1.0.0") << d.id;
  }
  Json fleet = mota_json({"fleet", "--select", kSelector});
  ASSERT_EQ(fleet["models"].size(), 1u) << fleet.dump(2);
  ASSERT_EQ(fleet["models"][0]["versions"].size(), 1u) << fleet.dump(2);
  EXPECT_EQ(fleet["models"][0]["versions"][0]["version"], "2.0.0");
  EXPECT_EQ(fleet["models"][0]["versions"][0]["devices"], 2);
}

}  // namespace
}  // namespace mota
