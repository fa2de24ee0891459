// Serving after restarts, end to end with the real binaries: mota-agent (daemon and check-once),
// mota-runtime on a Unix socket, a real repository server, real ONNX models. Whatever restarts,
// in whichever order, the runtime serves the committed version again at once (runtime started
// with the agent's state directory) or within the agent's watch interval; a committed slot
// damaged on disk is replaced by the previous good one and reinstalled (agent/agent.hpp,
// "Serving").

#include "manifest/serving.hpp"

#include <gtest/gtest.h>

#include <csignal>
#include <functional>
#include <thread>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "tests/runtime/runtime_support.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using runtime::testing::RuntimeProcess;

// Polls `cond` every 20 ms until it holds or `timeout` passes; true if it held.
bool eventually(const std::function<bool()>& cond,
                std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return cond();
}

class Serving : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "cam-1"));
    state_ = work_ / "state";
    runtime_dir_ = work_ / "rt";
    stdfs::create_directories(runtime_dir_);
    test::write_file(
        config_path(),
        "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" + state_.string() +
            "\"\nupdate_lock = \"" + state_.string() + "/update.lock\"\ntrusted_root = \"" +
            fleet_.root_json.string() +
            "\"\ndevice_id = \"cam-1\"\nlog_level = \"info\"\nruntime_socket = \"" +
            (runtime_dir_ / "runtime.sock").string() +
            "\"\npoll_interval = \"1h\"\npoll_jitter = 0\n[retry]\nmax_attempts = 1\n" +
            "[health]\nruntime_binary = \"" + test::build_path("runtime/mota-runtime").string() +
            "\"\nhooks_dir = \"" + (work_ / "health.d").string() +
            "\"\nwatch_interval = \"1s\"\n[[model]]\nname = \"face\"\n" + "channel = \"stable\"\n");
  }
  void TearDown() override {
    if (daemon_) stop_daemon();
  }

  stdfs::path config_path() const { return work_ / "agent.toml"; }
  stdfs::path model_dir() const { return state_ / "models" / "face"; }

  // face `version`: the slim or the RFB UltraFace, published and pointed at by channel stable.
  void publish(const std::string& version, bool rfb) {
    runtime::testing::SlotSpec spec;
    spec.version = version;
    spec.onnx = rfb ? runtime::testing::rfb_onnx() : runtime::testing::slim_onnx();
    auto src = work_ / ("src-" + version);
    runtime::testing::make_slot(src, spec);
    auto r = fleet_.repo->add_release(src, version);
    ASSERT_TRUE(r) << r.error().message();
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "face";
    req.version = version;
    auto ch = fleet_.repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }

  // The runtime, optionally given the agent's state directory (runtime.toml agent_state_dir).
  void start_runtime(bool with_state_dir) {
    runtime_.reset();
    runtime_ = std::make_unique<RuntimeProcess>(
        runtime_dir_, std::vector<std::string>{},
        with_state_dir ? "agent_state_dir = \"" + state_.string() + "\"\n" : std::string());
  }
  void kill_runtime(int sig = SIGKILL) {
    runtime_->process().kill(sig);
    runtime_->process().wait();
  }
  test::RunResult check_once() {
    return test::run({test::build_path("agent/mota-agent").string(), "--config",
                      config_path().string(), "check-once"});
  }
  void start_daemon() {
    daemon_ = std::make_unique<test::Process>(
        std::vector<std::string>{test::build_path("agent/mota-agent").string(), "--config",
                                 config_path().string(), "run"},
        work_ / "agent.log");
  }
  void stop_daemon() {
    daemon_->kill(SIGTERM);
    daemon_->wait();
    daemon_.reset();
  }
  std::string agent_log() const {
    return stdfs::exists(work_ / "agent.log") ? test::read_file(work_ / "agent.log") : "";
  }

  // What the runtime serves for "face": "<version>@<slot dir name>", "" if nothing.
  std::string served() {
    runtime::Client c(runtime_->options());
    auto h = c.health();
    if (!h) return "unreachable";
    const auto* m = h->find("face");
    return m ? m->version + "@" + stdfs::path(m->slot).filename().string() : "";
  }
  std::uint64_t generation() {
    runtime::Client c(runtime_->options());
    auto h = c.health();
    const auto* m = h ? h->find("face") : nullptr;
    return m ? m->generation : 0;
  }
  std::string current() const {
    std::error_code ec;
    return stdfs::read_symlink(model_dir() / "current", ec).string();
  }
  std::vector<Json> events_with(const std::string& state) {
    std::vector<Json> out;
    for (const auto& e : fleet_.sink.events()) {
      if (e["state"] == state) out.push_back(e);
    }
    return out;
  }
  // Two committed versions: 1.0.0 (slim) in slot a, then 2.0.0 (RFB) in slot b.
  void install_two_versions() {
    publish("1.0.0", false);
    ASSERT_EQ(check_once().exit_code, 0);
    publish("2.0.0", true);
    auto r = check_once();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    ASSERT_EQ(served(), "2.0.0@b");
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  stdfs::path state_, runtime_dir_;
  std::unique_ptr<RuntimeProcess> runtime_;
  std::unique_ptr<test::Process> daemon_;
};

TEST_F(Serving, TheAgentWritesWhatItCommittedForTheRuntime) {
  start_runtime(false);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  auto m = read_serving_manifest(state_);
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_TRUE(m->has_value());
  const ServingModel* face = (*m)->find("face");
  ASSERT_NE(face, nullptr);
  EXPECT_EQ(face->committed.version, "2.0.0");
  EXPECT_EQ(face->committed.slot, model_dir() / "b");
  ASSERT_TRUE(face->fallback.has_value());
  EXPECT_EQ(face->fallback->version, "1.0.0");
  EXPECT_EQ(face->fallback->slot, model_dir() / "a");
}

TEST_F(Serving, RestartedRuntimeServesTheCommittedModelAtOnce) {
  start_runtime(true);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  kill_runtime();
  start_runtime(true);  // returns once /v1/health answers: the startup loads are done by then
  EXPECT_EQ(served(), "2.0.0@b") << runtime_->log();
  // The agent, started now, finds it served and leaves it alone (no second load).
  const auto gen = generation();
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(generation(), gen);
}

TEST_F(Serving, RuntimeWithoutTheStateDirIsReloadedByTheRunningAgentWithinItsWatch) {
  start_runtime(false);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  start_daemon();
  kill_runtime();
  start_runtime(false);  // serves nothing by itself
  EXPECT_TRUE(eventually([&] { return served() == "2.0.0@b"; })) << served() << agent_log();
  // The runtime swaps the model in before it answers the agent's load, so the agent's log line
  // may follow the swap by a moment.
  EXPECT_TRUE(eventually([&] {
    return agent_log().find("served nothing for face") != std::string::npos;
  })) << agent_log();
  // Crashing it again: the agent notices again.
  kill_runtime();
  start_runtime(false);
  EXPECT_TRUE(eventually([&] { return served() == "2.0.0@b"; })) << served() << agent_log();
}

TEST_F(Serving, RuntimeServingAnotherSlotIsCorrected) {
  start_runtime(false);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  runtime::Client c(runtime_->options());
  ASSERT_TRUE(c.load("face", model_dir() / "a"));
  ASSERT_EQ(served(), "1.0.0@a");
  auto r = check_once();  // reconciles before and after its poll
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(served(), "2.0.0@b");
}

TEST_F(Serving, BothDaemonsRestartInEitherOrder) {
  start_runtime(true);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  // Device reboot, agent first: the runtime is down while the agent starts, comes up later
  // without the state dir (the worst case); the agent loads the model within its watch.
  kill_runtime();
  start_daemon();
  ASSERT_TRUE(eventually([&] {
    return agent_log().find("cannot be reached") != std::string::npos;
  })) << agent_log();
  start_runtime(false);
  EXPECT_TRUE(eventually([&] { return served() == "2.0.0@b"; })) << served() << agent_log();
  stop_daemon();
  // Runtime first (with the state dir), then the agent: served before the agent runs, and the
  // agent keeps that load.
  kill_runtime();
  start_runtime(true);
  EXPECT_EQ(served(), "2.0.0@b");
  const auto gen = generation();
  start_daemon();
  // Its start-up check (verify + runtime) is done once it says it is running.
  ASSERT_TRUE(eventually([&] {
    const auto log = agent_log();
    return log.rfind("mota-agent running") != std::string::npos &&
           log.find("mota-agent running") != log.rfind("mota-agent running");
  })) << agent_log();
  EXPECT_EQ(served(), "2.0.0@b");
  EXPECT_EQ(generation(), gen) << agent_log();
  EXPECT_EQ(current(), "b");
}

TEST_F(Serving, DamagedCommittedSlotFallsBackToThePreviousVersionThenIsReinstalled) {
  start_runtime(true);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  kill_runtime();
  // Bit rot in the committed slot's weights while the device was off (still loadable ONNX).
  auto onnx = test::read_file(model_dir() / "b" / "model.onnx");
  onnx[onnx.size() - 100] ^= 0x55;
  test::write_file(model_dir() / "b" / "model.onnx", onnx);
  start_runtime(true);
  start_daemon();
  // At start the agent finds slot b damaged, serves 1.0.0 from slot a at once, reports it...
  ASSERT_TRUE(eventually([&] { return !events_with("rolled_back").empty(); })) << agent_log();
  Json rb = events_with("rolled_back").front();
  EXPECT_EQ(rb["step"], "boot") << rb.dump();
  EXPECT_EQ(rb["from"], "1.0.0");
  EXPECT_EQ(rb["to"], "2.0.0");
  EXPECT_EQ(rb["slot"], "a");
  EXPECT_EQ(rb["channel"], "stable");
  EXPECT_NE(rb["error"].get<std::string>().find("slot b (2.0.0)"), std::string::npos) << rb.dump();
  // ...and its first poll installs 2.0.0 again (a good copy), which then serves.
  ASSERT_TRUE(eventually([&] { return events_with("installed").size() >= 3; })) << agent_log();
  EXPECT_TRUE(eventually([&] { return served() == "2.0.0@b"; })) << served();
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(test::read_file(model_dir() / "b" / "model.onnx"), runtime::testing::rfb_onnx());
}

TEST_F(Serving, TruncatedCommittedModelIsNotServedByTheRuntimeAtStart) {
  start_runtime(true);
  ASSERT_NO_FATAL_FAILURE(install_two_versions());
  kill_runtime();
  auto onnx = test::read_file(model_dir() / "b" / "model.onnx");
  test::write_file(model_dir() / "b" / "model.onnx", onnx.substr(0, onnx.size() / 2));
  // The runtime alone (no agent yet): the committed slot does not load, so it serves the
  // manifest's fallback.
  start_runtime(true);
  EXPECT_EQ(served(), "1.0.0@a") << runtime_->log();
  EXPECT_NE(runtime_->log().find("committed model does not load"), std::string::npos)
      << runtime_->log();
}

TEST_F(Serving, DamagedFirstInstallWithNothingToFallBackToIsReinstalled) {
  start_runtime(true);
  publish("1.0.0", false);
  ASSERT_EQ(check_once().exit_code, 0);
  kill_runtime();
  stdfs::remove(model_dir() / "a" / "model.json");
  start_runtime(true);
  start_daemon();
  ASSERT_TRUE(eventually([&] {
    for (const auto& e : events_with("failed")) {
      if (e["step"] == "boot") return true;
    }
    return false;
  })) << agent_log();
  // The next poll (the daemon's first) installs 1.0.0 afresh.
  ASSERT_TRUE(eventually([&] { return events_with("installed").size() >= 2; })) << agent_log();
  EXPECT_TRUE(eventually([&] { return served() == "1.0.0@" + current(); })) << served();
  EXPECT_TRUE(stdfs::exists(model_dir() / current() / "model.json"));
}

}  // namespace
}  // namespace mota
