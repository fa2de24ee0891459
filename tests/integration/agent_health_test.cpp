// The health gate end to end: the real mota-agent installs real ONNX models (../shared/models)
// through a real repository server, with the real mota-runtime serving on a Unix socket. A good
// update is probed, switched, tried through the live runtime and committed; a model failing its
// probe is never switched; a failing operator hook and a runtime that is down each leave the
// previous model current and served; an agent killed during the trial tries it again.

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <functional>
#include <mutex>
#include <thread>

#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "net/http_server.hpp"
#include "runtime/probe.hpp"
#include "tests/runtime/runtime_support.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using runtime::testing::RuntimeProcess;

class AgentHealth : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "cam-1"));
    runtime_ = std::make_unique<RuntimeProcess>(work_.path(), std::vector<std::string>{});
    stdfs::create_directories(hooks_dir());
    state_ = work_ / "state";
    test::write_file(config_path(),
                     "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" + state_.string() +
                         "\"\nupdate_lock = \"" + state_.string() +
                         "/update.lock\"\ntrusted_root = \"" + fleet_.root_json.string() +
                         "\"\ndevice_id = \"cam-1\"\nlog_level = \"warn\"\nruntime_socket = \"" +
                         runtime_->socket().string() +
                         "\"\n[retry]\nmax_attempts = 1\n[health]\nruntime_binary = \"" +
                         test::build_path("runtime/mota-runtime").string() + "\"\nhooks_dir = \"" +
                         hooks_dir().string() +
                         "\"\nhook_timeout = \"5s\"\nretry_backoff = \"0s\"\n[[model]]\n"
                         "name = \"face\"\n" +
                         "channel = \"stable\"\n");
  }

  stdfs::path config_path() const { return work_ / "agent.toml"; }
  stdfs::path hooks_dir() const { return work_ / "health.d"; }
  stdfs::path model_dir() const { return state_ / "models" / "face"; }

  // Publishes `version` of the face detector (slim or RFB weights) with a health section whose
  // expected output is what the model really gives (or a damaged copy of it).
  // `tweak` edits the model directory before it is released (after the expected output was
  // recorded from the intact model).
  // `load_check`: false publishes as `mota release add --no-load-check` does (the static checks
  // still run), which is how a model that does not load can still reach devices.
  void publish(const std::string& version, bool rfb, bool wrong_expected = false,
               const std::function<void(const stdfs::path&)>& tweak = {}, bool load_check = true) {
    runtime::testing::SlotSpec spec;
    spec.version = version;
    spec.onnx = rfb ? runtime::testing::rfb_onnx() : runtime::testing::slim_onnx();
    runtime::testing::Health h;
    h.input = runtime::testing::test_image(1);
    spec.health = h;
    auto src = work_ / ("src-" + version);
    runtime::testing::make_slot(src, spec);
    auto expected = runtime::run_raw(src, h.input);
    ASSERT_TRUE(expected) << expected.error().message();
    std::string e = *expected;
    if (wrong_expected) {
      float f = 0;
      std::memcpy(&f, e.data(), 4);
      f += 0.5f;
      std::memcpy(e.data(), &f, 4);
    }
    spec.health->expected = e;
    stdfs::remove_all(src);
    runtime::testing::make_slot(src, spec);
    if (tweak) tweak(src);
    manager::ReleaseOptions o;
    o.checks.load = load_check;
    auto r = fleet_.repo->add_release(src, version, o);
    ASSERT_TRUE(r) << r.error().message();
    fleet_.point_stable("face", version);
  }
  test::RunResult agent(const std::map<std::string, std::string>& env = {}) {
    return test::run({test::build_path("agent/mota-agent").string(), "--config",
                      config_path().string(), "check-once"},
                     env);
  }
  std::string current() const {
    std::error_code ec;
    return stdfs::read_symlink(model_dir() / "current", ec).string();
  }
  // What the runtime serves for "face": "<version>@<slot dir name>", or "" if nothing.
  std::string served() {
    runtime::Client c(runtime_->options());
    auto h = c.health();
    if (!h) return "unreachable";
    const auto* m = h->find("face");
    return m ? m->version + "@" + stdfs::path(m->slot).filename().string() : "";
  }
  Json last_event() {
    auto ev = fleet_.sink.events();
    return ev.empty() ? Json() : ev.back();
  }

  test::TempDir work_;
  std::unique_ptr<RuntimeProcess> runtime_;
  stdfs::path state_;
  test::RepoServer fleet_;
};

TEST_F(AgentHealth, GoodUpdatesAreProbedTriedAndServed) {
  publish("1.0.0", false);
  auto r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(served(), "1.0.0@a");
  publish("2.0.0", true);
  r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(served(), "2.0.0@b");
  EXPECT_EQ(last_event()["state"], "installed") << last_event().dump();
}

TEST_F(AgentHealth, ModelFailingItsProbeIsNeverSwitchedAndIsBlocked) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  publish("2.0.0", true, /*wrong_expected=*/true);
  auto r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("probe: output"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(served(), "1.0.0@a");
  EXPECT_EQ(last_event()["state"], "failed") << last_event().dump();
  EXPECT_EQ(last_event()["to"], "2.0.0");
  r = agent();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("blocklisted"), std::string::npos) << r.err;
}

TEST_F(AgentHealth, FailingOperatorHookRollsBackToThePreviousModel) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  const auto hook = hooks_dir() / "10-check-camera";
  test::write_file(
      hook, "#!/bin/sh\necho \"camera check failed for $MOTA_MODEL $MOTA_VERSION\" >&2\nexit 3\n");
  stdfs::permissions(hook, stdfs::perms::owner_all);
  publish("2.0.0", true);
  auto r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("rolled back to 1.0.0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("hook 10-check-camera exited with 3: camera check failed for face 2.0.0"),
            std::string::npos)
      << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(served(), "1.0.0@a");  // the runtime was given the old slot back
  EXPECT_EQ(last_event()["state"], "rolled_back") << last_event().dump();
}

// An agent killed during the trial (a power cut) tries the trial again at its next start, as a
// bootloader boots a new slot again; a version during whose trial the agent keeps dying is rolled
// back and blocked once the loop guard runs out (3 entries).
TEST_F(AgentHealth, AgentKilledDuringTheTrialTriesAgainThenGivesUp) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  publish("2.0.0", true);
  auto r = agent({{"MOTA_AGENT_TEST_KILL_AT", "trial"}});
  ASSERT_EQ(r.signal, SIGKILL) << r.out << r.err;
  EXPECT_EQ(current(), "b");  // switched, on trial, when the power went
  r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(served(), "2.0.0@b");
  EXPECT_EQ(last_event()["state"], "installed") << last_event().dump();

  publish("3.0.0", false);
  for (int i = 0; i < 3; ++i) {
    r = agent({{"MOTA_AGENT_TEST_KILL_AT", "trial"}});
    ASSERT_EQ(r.signal, SIGKILL) << r.out << r.err;
    EXPECT_EQ(current(), "a");
  }
  r = agent({{"MOTA_AGENT_TEST_KILL_AT", "trial"}});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("rolled back to 2.0.0"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step trial entered 4 times (limit 3)"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(served(), "2.0.0@b");
  EXPECT_EQ(last_event()["state"], "rolled_back") << last_event().dump();
  r = agent();
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("blocklisted"), std::string::npos) << r.err;
}

TEST_F(AgentHealth, UnloadableUnsupportedAndTooSlowModelsFailTheProbe) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  // A truncated ONNX file is refused at publish now (`mota release add` reads the graph)...
  {
    const auto cut = work_ / "src-cut";
    runtime::testing::SlotSpec spec;
    spec.version = "2.0.0";
    spec.onnx = runtime::testing::rfb_onnx();
    spec.onnx.resize(spec.onnx.size() / 3);
    runtime::testing::make_slot(cut, spec);
    auto refused = fleet_.repo->add_release(cut, "2.0.0");
    ASSERT_FALSE(refused);
    EXPECT_NE(refused.error().message().find("not an ONNX model"), std::string::npos)
        << refused.error().message();
  }
  // ...so the device-side load failure is shown with a well-formed ONNX using an operator the
  // backend does not have (every Relu renamed Relv), published without the load check
  // (consistently signed: the publisher shipped a broken model).
  publish(
      "2.0.0", true, false,
      [](const stdfs::path& src) {
        auto onnx = test::read_file(src / "model.onnx");
        for (auto at = onnx.find("Relu"); at != std::string::npos; at = onnx.find("Relu", at)) {
          onnx[at + 3] = 'v';
        }
        test::write_file(src / "model.onnx", onnx);
      },
      /*load_check=*/false);
  auto r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("probe: load"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Relv"), std::string::npos) << "the reason names the operator: " << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(served(), "1.0.0@a");
  // A model that cannot meet its latency budget.
  publish("3.0.0", true, false, [](const stdfs::path& src) {
    Json m = Json::parse(test::read_file(src / "model.json"));
    m["health"]["latency_budget_ms"] = 0.001;
    test::write_file(src / "model.json", m.dump(2));
  });
  r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("probe: latency"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(served(), "1.0.0@a");
  EXPECT_EQ(last_event()["state"], "failed") << last_event().dump();
}

TEST_F(AgentHealth, RuntimeCrashDuringTheSoakRollsBack) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  publish("2.0.0", true, false, [](const stdfs::path& src) {
    Json m = Json::parse(test::read_file(src / "model.json"));
    m["health"]["soak_s"] = 4;
    test::write_file(src / "model.json", m.dump(2));
  });
  // The runtime dies once it serves 2.0.0 (inside the soak window).
  std::atomic<bool> done{false};
  std::thread killer([&] {
    while (!done) {
      if (served() == "2.0.0@b") {
        runtime_->process().kill(SIGKILL);
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
  auto r = agent();
  done = true;
  killer.join();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  // Killed while answering the load, during the canary or in the soak, depending on timing:
  // whichever it is, the trial fails and rolls back.
  EXPECT_NE(r.err.find("trial: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("rolled back to 1.0.0"), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(last_event()["state"], "rolled_back") << last_event().dump();
}

TEST_F(AgentHealth, RuntimeDownKeepsTheModelAndIsReportedClearly) {
  publish("1.0.0", false);
  ASSERT_EQ(agent().exit_code, 0);
  runtime_->process().kill(SIGTERM);
  runtime_->process().wait();
  publish("2.0.0", true);
  auto r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("not"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(runtime_->socket().string()), std::string::npos) << r.err;
  EXPECT_EQ(current(), "a");
  EXPECT_EQ(last_event()["state"], "failed") << last_event().dump();
  // Not the model's fault: once the runtime is back, the update goes through.
  runtime_ = std::make_unique<RuntimeProcess>(
      work_.path(), std::vector<std::string>{"face=" + (model_dir() / "a").string()});
  r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(served(), "2.0.0@b");
}

}  // namespace
}  // namespace mota
