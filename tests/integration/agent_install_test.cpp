// The real `mota-agent` binary against a real repository (manager::Repository) served on a free
// loopback port: first install, upgrade, idle poll, tampered package, downgrade policy, status,
// and SIGKILL at every install step followed by a re-run.

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>

#include "agent/slots.hpp"
#include "agent/state.hpp"
#include "manager/release/bundle.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "net/http_server.hpp"
#include "protocol/identity.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

using test::make_model_dir;

class AgentInstall : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    state_ = work_ / "device" / "state";
    test::write_file(work_ / "device" / "machine-id", "device-0001\n");
    test::write_file(
        config_path(),
        "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" + state_.string() +
            "\"\nupdate_lock = \"" + state_.string() + "/update.lock\"\ntrusted_root = \"" +
            fleet_.root_json.string() +
            "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\n"
            "[retry]\nmax_attempts = 1\n"
            "[health]\nenabled = false\n[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
  }

  stdfs::path config_path() const { return work_ / "device" / "agent.toml"; }
  stdfs::path model_dir() const { return state_ / "models" / "detector"; }

  std::string weights(const std::string& version) const {
    return std::string(100000, version.back()) + version;
  }
  manager::Release release(const std::string& version) {
    auto src = work_ / ("src-" + version);
    make_model_dir(src, weights(version));
    auto r = fleet_.repo->add_release(src, version);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : manager::Release{};
  }
  void channel(const std::string& version, bool allow_downgrade = false) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    req.allow_downgrade = allow_downgrade;
    auto ch = fleet_.repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  test::RunResult agent(const std::vector<std::string>& args,
                        const std::map<std::string, std::string>& env = {}) {
    std::vector<std::string> argv = {test::build_path("agent/mota-agent").string(), "--config",
                                     config_path().string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run(argv, env);
  }
  // The slot `current` points to, read with readlink as the runtime would.
  std::string current() const {
    std::error_code ec;
    auto t = stdfs::read_symlink(model_dir() / "current", ec);
    return ec ? "" : t.string();
  }
  std::string current_weights() const {
    return test::read_file(model_dir() / "current" / "model.onnx");
  }
  std::vector<Json> events() { return fleet_.sink.events(); }
  std::size_t heartbeats() { return fleet_.sink.heartbeats(); }

  test::TempDir work_;
  stdfs::path state_;
  test::RepoServer fleet_;
};

TEST_F(AgentInstall, FirstInstallUpgradeAndIdlePoll) {
  release("1.0.0");
  channel("1.0.0");
  auto r = agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("installed 1.0.0"), std::string::npos) << r.out;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  EXPECT_EQ(test::read_file(model_dir() / "current" / "labels" / "classes.txt"),
            "background\nface\n");
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));  // the package is gone after commit

  release("2.0.0");
  channel("2.0.0");
  r = agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(current_weights(), weights("2.0.0"));
  // The previous version is kept in the other slot (rollback target).
  EXPECT_EQ(test::read_file(model_dir() / "a" / "model.onnx"), weights("1.0.0"));

  auto before = events();
  ASSERT_EQ(before.size(), 2u);
  EXPECT_EQ(before[1]["state"], "installed");
  EXPECT_EQ(before[1]["from"], "1.0.0");
  EXPECT_EQ(before[1]["to"], "2.0.0");
  EXPECT_EQ(before[1]["device"], "device-0001");
  EXPECT_EQ(before[1]["kind"], "full");
  EXPECT_EQ(before[1]["step"], "commit");
  EXPECT_EQ(before[1]["install_id"].get<std::string>().size(), 16u);
  EXPECT_GT(before[1]["bytes"].get<std::uint64_t>(), 0u);
  EXPECT_EQ(heartbeats(), 1u);  // heartbeat_interval (1h) has not passed since the first
  {
    for (const auto& item : fleet_.sink.items()) {
      if (item["kind"] != "heartbeat") continue;
      EXPECT_EQ(item["body"]["models"][0]["channel"], "stable") << item.dump();
      EXPECT_EQ(item["body"]["models"][0]["version"], "1.0.0") << item.dump();
    }
  }

  // Idle: nothing changes, no event, no download.
  auto mtime = stdfs::last_write_time(model_dir() / "a" / "model.onnx");
  // The server logs every request to this process's stderr: an idle poll fetches metadata only
  // (the channel file is cached and still matches its signed hash) and reports nothing: no
  // event, and the last heartbeat is recent. Two small requests: the root probe and timestamp.
  ::testing::internal::CaptureStderr();
  r = agent({"check-once"});
  const std::string server_log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(server_log.find("PATH=/metadata/timestamp.json"), std::string::npos) << server_log;
  EXPECT_EQ(server_log.find("PATH=/targets/"), std::string::npos) << server_log;
  EXPECT_EQ(server_log.find("METHOD=POST"), std::string::npos) << server_log;
  std::size_t requests = 0;
  for (std::size_t at = 0; (at = server_log.find(" METHOD=", at)) != std::string::npos; ++at) {
    ++requests;
  }
  EXPECT_EQ(requests, 2u) << server_log;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("up to date 2.0.0"), std::string::npos) << r.out;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(events().size(), 2u);
  EXPECT_EQ(stdfs::last_write_time(model_dir() / "a" / "model.onnx"), mtime);
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));

  r = agent({"status"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("detector (channel stable): 2.0.0, slot b, committed"), std::string::npos)
      << r.out;
  r = agent({"status", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = Json::parse(r.out);
  EXPECT_EQ(j["models"][0]["version"], "2.0.0");
  EXPECT_EQ(j["models"][0]["slot"], "b");
  EXPECT_EQ(j["models"][0]["committed"], true);
  EXPECT_TRUE(j["models"][0]["install"].is_null());
  EXPECT_TRUE(j["models"][0]["last_error"].is_null());
  EXPECT_TRUE(j["metadata_error"].is_null());
}

TEST_F(AgentInstall, TamperedPackageIsRejectedAndActiveModelUntouched) {
  release("1.0.0");
  channel("1.0.0");
  ASSERT_EQ(agent({"check-once"}).exit_code, 0);
  auto rel = release("2.0.0");
  channel("2.0.0");
  // Flip bytes of the served package (consistent-snapshot name <sha256>.<file>).
  auto served = work_ / "fleet" / "repo" / "targets" / "models" / "detector" / "2.0.0" /
                (rel.sha256 + ".detector-2.0.0.mota");
  auto bytes = test::read_file(served);
  bytes[bytes.size() / 2] ^= 0x5a;
  test::write_file(served, bytes);

  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("sha256 mismatch"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  EXPECT_FALSE(stdfs::exists(model_dir() / "b"));
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));  // untrusted bytes are not kept
  auto ev = events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "failed");
  EXPECT_EQ(ev[1]["to"], "2.0.0");
  EXPECT_NE(ev[1]["error"].get<std::string>().find("sha256 mismatch"), std::string::npos);

  r = agent({"status"});
  EXPECT_NE(r.out.find("1.0.0, slot a, committed"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("last error: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("sha256 mismatch"), std::string::npos) << r.out;
}

TEST_F(AgentInstall, DowngradeOnlyWhenChannelAllowsIt) {
  auto old = release("1.0.0");
  release("2.0.0");
  channel("2.0.0");
  ASSERT_EQ(agent({"check-once"}).exit_code, 0);
  EXPECT_EQ(current_weights(), weights("2.0.0"));

  channel("1.0.0");
  auto r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("refused: version 1.0.0 is older than the installed 2.0.0"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(current_weights(), weights("2.0.0"));
  auto ev = events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "refused");
  EXPECT_EQ(ev[1]["to"], "1.0.0");
  // The same refusal at the next poll is not reported again.
  ASSERT_EQ(agent({"check-once"}).exit_code, 0);
  EXPECT_EQ(events().size(), 2u);
  // Nor can a USB stick downgrade the device (a signed bundle of the old version).
  manager::BundleRequest breq;
  breq.model = "detector";
  breq.version = old.version;
  breq.output = work_ / "usb" / "detector-1.0.0.motab";
  stdfs::create_directories(breq.output.parent_path());
  auto b = manager::create_bundle(work_ / "fleet", breq);
  ASSERT_TRUE(b) << b.error().message();
  r = agent({"install", breq.output.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("refused: version 1.0.0 is older than the installed 2.0.0"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(current_weights(), weights("2.0.0"));
  ASSERT_EQ(events().size(), 3u);
  EXPECT_NE(events()[2]["error"].get<std::string>().find("offline install"), std::string::npos);

  channel("1.0.0", /*allow_downgrade=*/true);
  r = agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  EXPECT_EQ(current(), "b");
}

TEST_F(AgentInstall, BadConfigAndUnreachableServerAreClearErrors) {
  auto r = test::run({test::build_path("agent/mota-agent").string(), "--config",
                      (work_ / "missing.toml").string(), "check-once"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("missing.toml"), std::string::npos) << r.err;
  release("1.0.0");
  channel("1.0.0");
  fleet_.server->stop();
  r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("TUF refresh"), std::string::npos) << r.err;
  EXPECT_FALSE(stdfs::exists(model_dir() / "current"));
}

// SIGKILL once at the entry of every step (persisted, not yet acted) of an upgrade: `current`
// always names a complete, verified version, and the next run finishes the install.
TEST_F(AgentInstall, KilledAtEveryStepResumesAndNeverExposesAPartialModel) {
  release("1.0.0");
  channel("1.0.0");
  ASSERT_EQ(agent({"check-once"}).exit_code, 0);
  std::string version = "1.0.0";
  int minor = 0;
  for (const char* step : {"download", "stage", "verify", "switch", "commit"}) {
    SCOPED_TRACE(step);
    const std::string next = "1." + std::to_string(++minor) + ".0";
    release(next);
    channel(next);
    auto r = agent({"check-once"}, {{"MOTA_AGENT_TEST_KILL_AT", step}});
    ASSERT_EQ(r.signal, SIGKILL) << r.out << r.err;
    // Whatever `current` names is a whole version: the old one, or (killed at commit) the new.
    auto slots = agent::SlotSet::open(state_, "detector");
    ASSERT_TRUE(slots);
    auto cur = slots->current();
    ASSERT_TRUE(cur && *cur);
    auto tree = slots->verify(**cur);
    ASSERT_TRUE(tree) << tree.error().message();
    const bool flipped = std::string(step) == "commit";
    EXPECT_EQ(tree->manifest.version, flipped ? next : version);
    r = agent({"status"});
    EXPECT_NE(r.out.find(std::string("step ") + step), std::string::npos) << r.out;

    r = agent({"check-once"});
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(current_weights(), weights(next));
    version = next;
    r = agent({"status"});
    EXPECT_EQ(r.out.find("in progress"), std::string::npos) << r.out;
    EXPECT_NE(r.out.find(next + ", slot"), std::string::npos) << r.out;
  }
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));
}

// A step that kills the agent every time trips the loop guard: the version is blocklisted, an
// event says why, and the device stays on its model.
TEST_F(AgentInstall, CrashLoopIsBrokenByTheLoopGuard) {
  release("1.0.0");
  channel("1.0.0");
  ASSERT_EQ(agent({"check-once"}).exit_code, 0);
  release("2.0.0");
  channel("2.0.0");
  for (int i = 0; i < 3; ++i) {
    auto r = agent({"check-once"}, {{"MOTA_AGENT_TEST_KILL_AT", "verify"}});
    ASSERT_EQ(r.signal, SIGKILL) << i << r.out << r.err;
  }
  auto r = agent({"check-once"}, {{"MOTA_AGENT_TEST_KILL_AT", "verify"}});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("step verify entered 4 times (limit 3)"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(current_weights(), weights("1.0.0"));
  auto ev = events();
  ASSERT_FALSE(ev.empty());
  EXPECT_EQ(ev.back()["state"], "failed");
  // Blocklisted: the next poll does not try again.
  r = agent({"check-once"});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.err.find("blocklisted"), std::string::npos) << r.err;
  EXPECT_EQ(current_weights(), weights("1.0.0"));
}

// `install` takes signed bundles only (tests/integration/bundle_test.cpp): a bare package, which
// proves nothing about where it came from, is refused with what to do instead.
TEST_F(AgentInstall, InstallRefusesABarePackage) {
  auto rel = release("1.0.0");
  auto pkg = work_ / "fleet" / "repo" / "targets" / "models" / "detector" / "1.0.0" /
             (rel.sha256 + ".detector-1.0.0.mota");
  auto r = agent({"install", pkg.string()});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("is a bare package, not a signed bundle: make one with `mota bundle create"),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(stdfs::exists(model_dir() / "current"));
  EXPECT_FALSE(stdfs::exists(model_dir() / "a"));
  EXPECT_TRUE(events().empty());

  r = agent({"install", pkg.string(), "--target-json", (work_ / "t.json").string()});
  EXPECT_EQ(r.exit_code, 2) << "--target-json is gone (an unsigned file proves nothing)";

  r = agent({"install", (work_ / "nope.motab").string()});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nope.motab"), std::string::npos) << r.err;
}

// `run` polls every poll_interval, picks up a new release by itself and stops promptly on
// SIGTERM with exit status 0.
TEST_F(AgentInstall, RunPollsUntilSigterm) {
  auto toml = test::read_file(config_path());
  test::write_file(config_path(), "poll_interval = \"1s\"\npoll_jitter = 0\n" + toml);
  release("1.0.0");
  channel("1.0.0");
  test::Process daemon(
      {test::build_path("agent/mota-agent").string(), "--config", config_path().string(), "run"},
      work_ / "daemon.log");
  auto wait_for = [&](const std::string& version) {
    for (int i = 0; i < 100; ++i) {
      std::error_code ec;
      if (stdfs::exists(model_dir() / "current" / "model.onnx", ec) &&
          current_weights() == weights(version)) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  };
  ASSERT_TRUE(wait_for("1.0.0")) << test::read_file(work_ / "daemon.log");
  release("2.0.0");
  channel("2.0.0");
  ASSERT_TRUE(wait_for("2.0.0")) << test::read_file(work_ / "daemon.log");
  ASSERT_TRUE(daemon.running());
  auto t0 = std::chrono::steady_clock::now();
  daemon.kill(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0) << test::read_file(work_ / "daemon.log");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
}

// `run` under a service manager: the sd_notify datagrams arrive on a real socket in order (READY
// first, STATUS lines saying what it does, WATCHDOG keep-alives, STOPPING last), and SIGTERM in the
// middle of a download stops it within a second with the partial file kept for the resume.
TEST_F(AgentInstall, RunSpeaksSdNotifyAndStopsMidDownload) {
  const auto sock_path = work_ / "notify.sock";
  int sock = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(sock, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(sock_path.string().size(), sizeof addr.sun_path);
  std::strncpy(addr.sun_path, sock_path.c_str(), sizeof addr.sun_path - 1);
  ASSERT_EQ(::bind(sock, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  timeval tv{0, 200000};
  ::setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::vector<std::string> messages;
  // Receives until `pred` holds for a message or `limit` passes.
  auto receive_until = [&](const std::function<bool(const std::string&)>& pred,
                           std::chrono::seconds limit) {
    auto until = std::chrono::steady_clock::now() + limit;
    char buf[4096];
    while (std::chrono::steady_clock::now() < until) {
      ssize_t n = ::recv(sock, buf, sizeof buf, 0);
      if (n <= 0) continue;
      messages.emplace_back(buf, static_cast<std::size_t>(n));
      if (pred(messages.back())) return true;
    }
    return false;
  };
  // Incompressible ~160 KB packages at 40 KB/s: a download takes a few seconds.
  std::map<std::string, std::string> random_weights;
  auto publish = [&](const std::string& version) {
    // Unrelated weights per version, so no delta is worth publishing: full downloads.
    std::mt19937 rng(static_cast<unsigned>(std::hash<std::string>{}(version)));
    std::string w(160000, '\0');
    for (auto& c : w) c = static_cast<char>(rng());
    random_weights[version] = w;
    make_model_dir(work_ / ("src-" + version), w);
    auto r = fleet_.repo->add_release(work_ / ("src-" + version), version);
    ASSERT_TRUE(r) << r.error().message();
    channel(version);
  };
  auto toml = test::read_file(config_path());
  test::write_file(
      config_path(),
      "poll_interval = \"1s\"\npoll_jitter = 0\nbandwidth_limit = \"40KB/s\"\n" + toml);
  publish("1.0.0");
  test::Process daemon(
      {test::build_path("agent/mota-agent").string(), "--config", config_path().string(), "run"},
      work_ / "daemon.log", {{"NOTIFY_SOCKET", sock_path.string()}, {"WATCHDOG_USEC", "400000"}});
  ASSERT_TRUE(receive_until(
      [](const std::string& m) { return m.find("STATUS=downloading detector 1.0.0: ") == 0; },
      std::chrono::seconds(20)))
      << test::read_file(work_ / "daemon.log") << "\nreceived:\n"
      << Json(messages).dump(1);
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.front(), "READY=1\nSTATUS=running: detector (none)");
  ASSERT_TRUE(
      receive_until([](const std::string& m) { return m.find("STATUS=idle: detector 1.0.0") == 0; },
                    std::chrono::seconds(30)))
      << test::read_file(work_ / "daemon.log");
  EXPECT_EQ(current_weights(), random_weights["1.0.0"]);
  auto count = [&](const std::string& prefix) {
    return std::count_if(messages.begin(), messages.end(),
                         [&](const std::string& m) { return m.rfind(prefix, 0) == 0; });
  };
  EXPECT_GE(count("WATCHDOG=1"), 2) << "keep-alives every WATCHDOG_USEC/2 during the download";
  EXPECT_GE(count("STATUS=installing detector 1.0.0: verify"), 1);

  publish("2.0.0");
  ASSERT_TRUE(receive_until(
      [](const std::string& m) {
        return m.find("STATUS=downloading detector 2.0.0: ") == 0 &&
               m != "STATUS=downloading detector 2.0.0: 0%";
      },
      std::chrono::seconds(20)))
      << test::read_file(work_ / "daemon.log");
  auto t0 = std::chrono::steady_clock::now();
  daemon.kill(SIGTERM);
  EXPECT_EQ(daemon.wait(), 0) << test::read_file(work_ / "daemon.log");
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(1));
  receive_until([](const std::string& m) { return m == "STOPPING=1"; }, std::chrono::seconds(2));
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.back(), "STOPPING=1");
  ::close(sock);
  // The partial download is kept, and the model in use is untouched.
  std::uint64_t partial = 0;
  for (const auto& e : stdfs::directory_iterator(state_ / "downloads")) partial += e.file_size();
  EXPECT_GT(partial, 0u);
  EXPECT_EQ(current_weights(), random_weights["1.0.0"]);
  // The next start resumes it (here without the rate limit) and finishes the update.
  test::write_file(config_path(), toml);
  auto r = agent({"check-once"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(current_weights(), random_weights["2.0.0"]);
}

}  // namespace
}  // namespace mota
