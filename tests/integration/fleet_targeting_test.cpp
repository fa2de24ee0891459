// Targeted rollouts end to end with a static repository: real `mota-agent` processes with
// different labels fetch metadata and targets from a real nginx serving the repository directory
// (as a CDN would) and report to a real `mota serve`; `mota rollout start --select` reaches
// exactly the devices whose labels match, because each device decides from the signed channel
// file and its own labels, and the others keep their version. A paced rollout (--rate) gives the
// version to at most N more of them per minute, on a simulated clock (libfaketime for the ticks).

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <functional>
#include <memory>
#include <set>
#include <thread>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/support/mota_cli.hpp"
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
    for (const auto& d : kDevices) write_config(d.id, d.labels);
  }

  // agent.toml of device `id`: `top` adds top-level keys (install_window, update_lock, ...).
  void write_config(const std::string& id, const std::string& labels, const std::string& top = "") {
    const auto dir = work_ / id;
    test::write_file(dir / "agent.toml",
                     "server_url = \"" + nginx_->url("/") +
                         "\"\nreport_url = \"http://127.0.0.1:" + std::to_string(port_) +
                         "\"\nstate_dir = \"" + (dir / "state").string() + "\"\ntrusted_root = \"" +
                         (repo_dir() / "repo" / "metadata" / "1.root.json").string() +
                         "\"\ndevice_id = \"" + id +
                         "\"\nheartbeat_interval = \"0s\"\nlog_level = \"warn\"\nupdate_lock = \"" +
                         (dir / "update.lock").string() + "\"\n" +
                         (labels.empty() ? "" : "labels = { " + labels + " }\n") + top +
                         "[retry]\nmax_attempts = 1\n[health]\nenabled = false\n[[model]]\nname = "
                         "\"detector\"\nchannel = \"stable\"\n");
  }

  stdfs::path repo_dir() const { return work_ / "fleet"; }
  static std::string mota_bin() { return test::build_path("manager/mota").string(); }

  test::RunResult mota(std::vector<std::string> args) {
    return test::mota_cli(repo_dir(), std::move(args));
  }
  Json mota_json(std::vector<std::string> args) {
    return test::mota_cli_json(repo_dir(), std::move(args));
  }
  // One poll of every agent; each must succeed (up to date or updated).
  void poll_all() {
    for (const auto& d : kDevices) poll(d.id);
  }
  // One `mota-agent COMMAND` of device `id` (check-once: one poll), in UTC (install windows are
  // the device's local time).
  test::RunResult agent(const std::string& id, std::vector<std::string> args = {"check-once"}) {
    args.insert(args.begin(), {test::build_path("agent/mota-agent").string(), "--config",
                               (work_ / id / "agent.toml").string()});
    auto r = test::run(args, {{"TZ", "UTC"}});
    EXPECT_EQ(r.exit_code, 0) << id << ": " << r.out << r.err;
    return r;
  }
  test::RunResult poll(const std::string& id) { return agent(id); }
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

// The devices of kDevices running `version`.
std::set<std::string> on_version(const std::function<std::string(const std::string&)>& running,
                                 const std::string& version) {
  std::set<std::string> out;
  for (const auto& d : kDevices) {
    if (running(d.id) == version) out.insert(d.id);
  }
  return out;
}

// --rate 2/min over the five plant-3/plant-4 devices: each simulated minute (a `mota rollout tick`
// run under faketime 60 s further on) at most two more devices take the version at their next
// poll, only matching ones, and after three minutes all five run it and the rollout completes.
TEST_F(FleetTargeting, APacedRolloutStartsAtMostRateDevicesPerMinute) {
  if (!stdfs::exists("/usr/bin/faketime")) GTEST_SKIP() << "faketime not installed";
  const std::string select = "site in (plant-3,plant-4)";
  poll_all();
  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--select", select, "--percent",
                 "100", "--rate", "2/min", "--min-devices", "1", "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("paced at 2 devices/min"), std::string::npos) << r.out;
  auto get = [this](const std::string& id) { return running(id); };
  std::set<std::string> have;
  Json status;
  int minute = 0;
  for (; minute < 8; ++minute) {
    poll_all();
    const auto now_on = on_version(get, "2.0.0");
    EXPECT_TRUE(std::includes(now_on.begin(), now_on.end(), have.begin(), have.end()));
    EXPECT_LE(now_on.size() - have.size(), 2u) << "minute " << minute;
    for (const auto& id : now_on) EXPECT_NE(id, "cam-bare") << "outside the selector";
    have = now_on;
    // The next minute, on a simulated clock: libfaketime shifts what this `mota` sees by the
    // offset (ASan's check that its runtime comes first must let the preload through).
    const char* asan = std::getenv("ASAN_OPTIONS");
    auto tick =
        test::run({"/usr/bin/faketime", "-f", "+" + std::to_string(60 * (minute + 1)), mota_bin(),
                   "rollout", "tick", "--repo", repo_dir().string()},
                  {{"ASAN_OPTIONS", std::string(asan ? asan : "") + (asan && *asan ? ":" : "") +
                                        "verify_asan_link_order=0"}});
    ASSERT_EQ(tick.exit_code, 0) << tick.out << tick.err;
    status = mota_json({"rollout", "status", "stable", "detector"});
    if (status["state"] != "running") break;
  }
  EXPECT_EQ(status["state"], "completed") << status.dump(2);
  EXPECT_GE(minute, 2) << "five devices at 2/min need three minutes";
  poll_all();
  for (const auto& d : kDevices) {
    EXPECT_EQ(running(d.id), d.id == "cam-bare" ? "1.0.0" : "2.0.0") << d.id;
  }
  EXPECT_EQ(status["updated"], 5) << status.dump(2);
}

// "daily HH:MM-HH:MM" from `from` to `to` minutes after now, in UTC (the agents run with TZ=UTC).
std::string utc_window(int from, int to) {
  const std::time_t now = std::time(nullptr);
  auto hhmm = [&](int offset) {
    const std::time_t t = now + offset * 60;
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[8];
    std::snprintf(buf, sizeof buf, "%02d:%02d", tm.tm_hour, tm.tm_min);
    return std::string(buf);
  };
  return "daily " + hhmm(from) + "-" + hhmm(to);
}

std::size_t package_fetches(const test::Nginx& nginx, const std::string& version) {
  std::size_t n = 0;
  for (const auto& r : nginx.requests()) {
    n += r.uri.find("detector-" + version + ".mota") != std::string::npos && r.status == 200;
  }
  return n;
}

// Devices with different install windows and a held update lock, in one rollout: the device
// inside its window switches; the one outside downloads and stages but waits (reported
// "deferred" with the reason, and no second download while it waits) until `install-now`; the
// one whose application holds the lock waits until the lock is released.
TEST_F(FleetTargeting, InstallWindowsAndUpdateLocksDeferTheSwitchNotTheDownload) {
  poll_all();  // first installs: nothing runs that a window or lock would protect
  for (const auto& d : kDevices) ASSERT_EQ(running(d.id), "1.0.0") << d.id;
  const std::string outside = utc_window(120, 180);
  write_config("cam-orin", kDevices[0].labels,
               "install_window = \"" + utc_window(-60, 60) + "\"\n");
  write_config("cam-rpi", kDevices[1].labels, "install_window = [\"" + outside + "\"]\n");
  const auto lock_path = work_ / "cam-xavier" / "update.lock";
  const int app = ::open(lock_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(app, 0);
  ASSERT_EQ(::flock(app, LOCK_SH), 0);  // an application at work

  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "100",
                 "--min-devices", "1", "--step-after", "0s"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  poll_all();
  EXPECT_EQ(running("cam-orin"), "2.0.0");
  EXPECT_EQ(running("cam-plant4"), "2.0.0");
  EXPECT_EQ(running("cam-rpi"), "1.0.0") << "outside its window";
  EXPECT_EQ(running("cam-xavier"), "1.0.0") << "its update lock is held";

  // Outside the window: staged, waiting, said so (locally and to the server), not re-downloaded.
  const std::size_t fetched = package_fetches(*nginx_, "2.0.0");
  auto again = poll("cam-rpi");
  EXPECT_NE(again.out.find("switch deferred: outside this device's install window (" + outside +
                           "); it opens "),
            std::string::npos)
      << again.out;
  EXPECT_EQ(package_fetches(*nginx_, "2.0.0"), fetched) << "a deferred install downloads again";
  auto status = agent("cam-rpi", {"status"});
  EXPECT_NE(status.out.find("2.0.0 staged, waiting to switch"), std::string::npos) << status.out;
  Json show = mota_json({"device", "show", "cam-rpi"});
  bool reported = false;
  for (const auto& e : show["events"]) {
    reported |= e["state"] == "deferred" && e["step"] == "ready" &&
                e["error"].get<std::string>().find("install window") != std::string::npos;
  }
  EXPECT_TRUE(reported) << show["events"].dump(2);
  EXPECT_EQ(show["models"][0]["state"], "ok") << "a deferral is not a failure";

  auto lock_wait = poll("cam-xavier");
  EXPECT_NE(lock_wait.out.find("update lock " + lock_path.string() + " is held"), std::string::npos)
      << lock_wait.out;
  EXPECT_EQ(running("cam-xavier"), "1.0.0");

  // The lock released, the next poll switches; install-now lets the other through its window.
  ::close(app);
  poll("cam-xavier");
  EXPECT_EQ(running("cam-xavier"), "2.0.0");
  auto now = agent("cam-rpi", {"install-now", "detector"});
  EXPECT_NE(now.out.find("detector 2.0.0 may switch now"), std::string::npos) << now.out;
  poll("cam-rpi");
  EXPECT_EQ(running("cam-rpi"), "2.0.0");
  EXPECT_EQ(package_fetches(*nginx_, "2.0.0"), fetched);
  // Nothing waits any more: install-now has nothing to let through.
  auto none = test::run({test::build_path("agent/mota-agent").string(), "--config",
                         (work_ / "cam-rpi" / "agent.toml").string(), "install-now", "detector"});
  EXPECT_NE(none.exit_code, 0);
  EXPECT_NE(none.err.find("no install of detector is under way"), std::string::npos) << none.err;
}

// A rollout's own window (signed in the channel file) holds every device, which switches once
// the window allows it (here: the operator republishes with a window around now).
TEST_F(FleetTargeting, ARolloutsInstallWindowHoldsEveryDevice) {
  poll_all();
  const std::string outside = utc_window(120, 180);
  auto r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "100",
                 "--min-devices", "1", "--step-after", "0s", "--install-window", outside});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("devices switch inside " + outside), std::string::npos) << r.out;
  for (const auto& d : kDevices) {
    auto p = poll(d.id);
    EXPECT_NE(p.out.find("outside the rollout's install window"), std::string::npos)
        << d.id << ": " << p.out;
    EXPECT_EQ(running(d.id), "1.0.0") << d.id;
  }
  ASSERT_EQ(mota({"rollout", "abort", "stable", "detector"}).exit_code, 0);
  r = mota({"rollout", "start", "stable", "detector", "2.0.0", "--percent", "100", "--min-devices",
            "1", "--step-after", "0s", "--install-window", utc_window(-30, 30)});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  poll_all();
  for (const auto& d : kDevices) EXPECT_EQ(running(d.id), "2.0.0") << d.id;
}

}  // namespace
}  // namespace mota
