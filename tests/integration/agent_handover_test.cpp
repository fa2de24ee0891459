// Hand-over to another inference stack (docs/handover.md): the real `mota-agent` with a model
// whose agent.toml names an activation hook (and a probe command) instead of mota-runtime. The
// hook runs after every switch and every rollback with the right slots; a stack that refuses a
// version fails the trial and the device goes back; the operator's probe replaces mota-runtime's;
// and the shipped Triton example (docs/examples/handover/triton-load) drives a real HTTP model
// server (tests/support/kserve_model_server.py) that loads what `current` points at.

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/crypto.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class AgentHandover : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    state_ = work_ / "device" / "state";
    // A stack that records every activation and refuses version 3.0.0; a probe that fails 4.0.0.
    test::write_file(hook(),
                     "#!/bin/sh\necho \"$MOTA_EVENT $MOTA_MODEL $MOTA_VERSION $MOTA_SLOT "
                     "prev=$MOTA_PREVIOUS_VERSION@$MOTA_PREVIOUS_SLOT cur=$MOTA_CURRENT\" >> " +
                         (work_ / "activations.log").string() +
                         "\n[ \"$MOTA_VERSION\" != 3.0.0 ] || { echo 'cannot load 3.0.0' >&2; "
                         "exit 1; }\n");
    test::write_file(probe(), "#!/bin/sh\necho \"$MOTA_VERSION $MOTA_SLOT\" >> " +
                                  (work_ / "probes.log").string() +
                                  "\n[ \"$MOTA_VERSION\" != 4.0.0 ] || { echo 'bad outputs' >&2; "
                                  "exit 1; }\n");
    stdfs::permissions(hook(), stdfs::perms(0755));
    stdfs::permissions(probe(), stdfs::perms(0755));
    write_config(hook(), "probe = \"" + probe().string() + "\"\n");
  }

  void write_config(const stdfs::path& activate, const std::string& model_extra = "") {
    test::write_file(
        config_path(),
        "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" + state_.string() +
            "\"\nupdate_lock = \"" + state_.string() + "/update.lock\"\ntrusted_root = \"" +
            fleet_.root_json.string() +
            "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\nruntime_socket = \"" +
            (work_ / "no-runtime.sock").string() +
            "\"\n[retry]\nmax_attempts = 1\n[health]\nhooks_dir = \"" +
            (work_ / "health.d").string() + "\"\n[[model]]\nname = \"detector\"\nchannel = " +
            "\"stable\"\nactivate = \"" + activate.string() + "\"\n" + model_extra);
  }
  stdfs::path config_path() const { return work_ / "device" / "agent.toml"; }
  stdfs::path hook() const { return work_ / "activate.sh"; }
  stdfs::path probe() const { return work_ / "probe.sh"; }
  stdfs::path slot(const char* s) const { return state_ / "models" / "detector" / s; }
  std::string weights(const std::string& version) const {
    return std::string(50000, version.back()) + version;
  }

  void publish(const std::string& version) {
    auto src = work_ / ("src-" + version);
    test::make_model_dir(src, weights(version));
    auto r = fleet_.repo->add_release(src, version);
    ASSERT_TRUE(r) << r.error().message();
    fleet_.point_stable("detector", version);
  }
  test::RunResult agent(const std::map<std::string, std::string>& env = {}) {
    return test::run({test::build_path("agent/mota-agent").string(), "--config",
                      config_path().string(), "check-once"},
                     env);
  }
  std::vector<std::string> lines(const char* file) {
    std::vector<std::string> out;
    std::string text = stdfs::exists(work_ / file) ? test::read_file(work_ / file) : "";
    std::size_t pos = 0;
    while (pos < text.size()) {
      auto nl = text.find('\n', pos);
      out.push_back(text.substr(pos, nl - pos));
      pos = nl == std::string::npos ? text.size() : nl + 1;
    }
    return out;
  }
  std::string current() {
    std::error_code ec;
    return stdfs::read_symlink(state_ / "models" / "detector" / "current", ec).filename().string();
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  stdfs::path state_;
};

TEST_F(AgentHandover, ActivationRunsWithTheRightSlotsOnSwitchAndRollback) {
  const std::string cur = "cur=" + (state_ / "models" / "detector" / "current").string();
  publish("1.0.0");
  auto r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  publish("2.0.0");
  r = agent();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current(), "b");
  EXPECT_EQ(
      lines("activations.log"),
      (std::vector<std::string>{"activate detector 1.0.0 " + slot("a").string() + " prev=@ " + cur,
                                "activate detector 2.0.0 " + slot("b").string() + " prev=1.0.0@" +
                                    slot("a").string() + " " + cur}));
  // The operator's probe judged each staged slot; mota-runtime was never involved (its socket
  // does not exist) and is not told to serve the model at its start either.
  EXPECT_EQ(lines("probes.log"), (std::vector<std::string>{"1.0.0 " + slot("a").string(),
                                                           "2.0.0 " + slot("b").string()}));
  Json serving = Json::parse(test::read_file(state_ / "serving.json"), nullptr, false);
  ASSERT_TRUE(serving.is_object()) << test::read_file(state_ / "serving.json");
  EXPECT_TRUE(serving["models"].empty()) << serving.dump(2);

  // The stack refuses 3.0.0: the trial fails, `current` goes back to 2.0.0's slot, and the hook
  // hears of the rollback with that slot.
  publish("3.0.0");
  r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("activate: activate.sh exited with 1: cannot load 3.0.0"), std::string::npos)
      << r.err;
  EXPECT_EQ(current(), "b");
  auto log = lines("activations.log");
  ASSERT_EQ(log.size(), 4u);
  EXPECT_EQ(log[2], "activate detector 3.0.0 " + slot("a").string() + " prev=2.0.0@" +
                        slot("b").string() + " " + cur);
  EXPECT_EQ(log[3], "rollback detector 2.0.0 " + slot("b").string() + " prev=3.0.0@" +
                        slot("a").string() + " " + cur);

  // A version the operator's probe fails never reaches the stack.
  publish("4.0.0");
  r = agent();
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("probe probe.sh exited with 1: bad outputs"), std::string::npos) << r.err;
  EXPECT_EQ(lines("activations.log").size(), 4u);
  EXPECT_EQ(current(), "b");
}

// The shipped Triton example against a real HTTP model server whose repository entry links to
// mota's `current`: after each switch it serves the new bytes, and after a rollback (an operator
// health hook fails the trial of 3.0.0) the previous ones again.
TEST_F(AgentHandover, TheTritonExampleLoadsWhatCurrentPointsAtOnSwitchAndRollback) {
  if (!stdfs::exists("/usr/bin/curl") || !stdfs::exists("/usr/bin/python3")) {
    GTEST_SKIP() << "needs curl and python3";
  }
  const int port = test::free_port();
  const auto repo = work_ / "triton";
  stdfs::create_directories(repo / "detector");
  stdfs::create_symlink(state_ / "models" / "detector" / "current", repo / "detector" / "1");
  test::Process server(
      {"/usr/bin/python3", test::source_path("tests/support/kserve_model_server.py").string(),
       std::to_string(port), repo.string()},
      work_ / "server.log");
  ASSERT_TRUE(test::wait_for_port(port)) << test::read_file(work_ / "server.log");
  write_config(test::source_path("docs/examples/handover/triton-load"));
  test::write_file(work_ / "health.d" / "refuse-3",
                   "#!/bin/sh\n[ \"$MOTA_VERSION\" != 3.0.0 ] || { echo 'accuracy check "
                   "failed' >&2; exit 1; }\n");
  stdfs::permissions(work_ / "health.d" / "refuse-3", stdfs::perms(0755));
  const std::map<std::string, std::string> env = {
      {"TRITON_URL", "http://127.0.0.1:" + std::to_string(port)}};
  auto served = [&] {
    auto r = test::run({"/usr/bin/curl", "-fsS",
                        "http://127.0.0.1:" + std::to_string(port) + "/v2/models/detector"});
    Json j = Json::parse(r.out, nullptr, false);
    return j.is_object() ? j : Json::object();
  };
  auto sha = [&](const std::string& v) { return crypto::sha256_hex(weights(v)); };

  publish("1.0.0");
  auto r = agent(env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(served()["sha256"], sha("1.0.0")) << served().dump();
  publish("2.0.0");
  r = agent(env);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  Json s = served();
  EXPECT_EQ(s["sha256"], sha("2.0.0")) << s.dump();
  EXPECT_EQ(s["path"], (slot("b") / "model.onnx").string());
  EXPECT_EQ(s["loads"], 2);

  publish("3.0.0");
  r = agent(env);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("accuracy check failed"), std::string::npos) << r.err;
  s = served();
  EXPECT_EQ(s["sha256"], sha("2.0.0")) << "the stack still serves the version that failed";
  EXPECT_EQ(s["path"], (slot("b") / "model.onnx").string());
  EXPECT_EQ(s["loads"], 4) << "3.0.0 loaded on activation, 2.0.0 again on rollback";
}

// The shipped systemd example asks systemctl to reload (or restart) the model's unit. No systemd
// runs in CI, so systemctl is a recording stand-in here (SYSTEMCTL); the unit name rule and the
// exit status passing through are what is checked.
TEST_F(AgentHandover, TheSystemdExampleReloadsTheModelsUnit) {
  const auto calls = work_ / "systemctl.calls";
  const auto stand_in = work_ / "systemctl";
  test::write_file(stand_in, "#!/bin/sh\necho \"$*\" >> " + calls.string() +
                                 "\n[ \"$2\" != broken.service ] || exit 5\n");
  stdfs::permissions(stand_in, stdfs::perms(0755));
  const auto script = test::source_path("docs/examples/handover/systemd-reload").string();
  auto r = test::run({script}, {{"SYSTEMCTL", stand_in.string()},
                                {"MOTA_EVENT", "activate"},
                                {"MOTA_MODEL", "detector"},
                                {"MOTA_VERSION", "2.0.0"}});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  r = test::run({script}, {{"SYSTEMCTL", stand_in.string()},
                           {"MOTA_EVENT", "rollback"},
                           {"MOTA_MODEL", "detector"},
                           {"MOTA_VERSION", "1.0.0"},
                           {"MOTA_UNIT", "broken.service"}});
  EXPECT_EQ(r.exit_code, 5) << "a failed reload must fail the activation";
  EXPECT_EQ(lines("systemctl.calls"),
            (std::vector<std::string>{"reload-or-restart detector.service",
                                      "reload-or-restart broken.service"}));
}

}  // namespace
}  // namespace mota
