// Delta updates end to end: `mota release add` publishes deltas/<name>/<from>/<to>.mdelta targets
// (manager::Repository), a real HTTP server serves them, and the real `mota-agent` binary prefers
// the delta when its active slot verifies, falls back to the full package in the same poll when
// it cannot use it (base modified on disk, tampered delta file), reports which it used and the
// bytes saved, and honours `delta = only | never`.

#include <gtest/gtest.h>

#include <csignal>
#include <map>
#include <memory>
#include <random>

#include "agent/install.hpp"
#include "manager/repo/repository.hpp"
#include "net/http_server.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class AgentDelta : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    state_ = work_ / "device" / "state";
    write_config("prefer");
    // 1 MiB of pseudo-random weights, and a fine-tune of them that changes a few bytes.
    std::mt19937 rng(7);
    v1_.resize(1 << 20);
    for (auto& c : v1_) c = static_cast<char>(rng());
    v2_ = v1_;
    for (std::size_t i = 64; i < v2_.size(); i += 8191) v2_[i] = static_cast<char>(v2_[i] ^ 1);
  }
  void write_config(const std::string& policy) {
    test::write_file(work_ / "device" / "agent.toml",
                     "server_url = \"" + fleet_.url + "\"\nstate_dir = \"" + state_.string() +
                         "\"\nupdate_lock = \"" + state_.string() +
                         "/update.lock\"\ntrusted_root = \"" + fleet_.root_json.string() +
                         "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\ndelta = \"" +
                         policy +
                         "\"\n[retry]\nmax_attempts = 1\n[health]\nenabled = false\n"
                         "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
  }
  manager::Release release(const std::string& version, const std::string& weights) {
    auto src = work_ / ("src-" + version);
    test::make_model_dir(src, weights);
    auto r = fleet_.repo->add_release(src, version);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : manager::Release{};
  }
  void channel(const std::string& version) {
    manager::ChannelRequest req;
    req.channel = "stable";
    req.model = "detector";
    req.version = version;
    auto ch = fleet_.repo->set_channel(req);
    ASSERT_TRUE(ch) << ch.error().message();
  }
  test::RunResult check_once(const std::map<std::string, std::string>& env = {}) {
    return test::run({test::build_path("agent/mota-agent").string(), "--config",
                      (work_ / "device" / "agent.toml").string(), "check-once"},
                     env);
  }
  // The published delta file 1.0.0 -> 2.0.0 (consistent-snapshot name: <sha256>.2.0.0.mdelta).
  stdfs::path delta_file() const {
    const auto dir = work_ / "fleet" / "repo" / "targets" / "deltas" / "detector" / "1.0.0";
    std::error_code ec;
    for (const auto& e : stdfs::directory_iterator(dir, ec)) {
      if (e.path().filename().string().ends_with(".2.0.0.mdelta")) return e.path();
    }
    return {};
  }
  stdfs::path slot_file(const std::string& slot) const {
    return state_ / "models" / "detector" / slot / "model.onnx";
  }
  std::string current_weights() const {
    return test::read_file(state_ / "models" / "detector" / "current" / "model.onnx");
  }
  // v1 installed (full: there is nothing to apply a delta to), v2 released with its delta.
  void install_v1_release_v2() {
    release("1.0.0", v1_);
    channel("1.0.0");
    auto r = check_once();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    auto ev = fleet_.sink.events();
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0]["kind"], "full");
    full_ = release("2.0.0", v2_);
    ASSERT_FALSE(delta_file().empty()) << "release add published no delta from 1.0.0";
    channel("2.0.0");
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  stdfs::path state_;
  std::string v1_, v2_;
  manager::Release full_;
};

TEST_F(AgentDelta, PrefersTheDeltaAndReportsTheBytesSaved) {
  install_v1_release_v2();
  const auto delta_size = stdfs::file_size(delta_file());
  ASSERT_LT(delta_size * 10, full_.length) << "a few changed bytes must make a small delta";
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v2_);
  EXPECT_EQ(test::read_file(slot_file("a")), v1_) << "the base is the rollback target";
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "installed") << ev[1].dump();
  EXPECT_EQ(ev[1]["kind"], "delta");
  EXPECT_EQ(ev[1]["bytes"], delta_size);
  EXPECT_EQ(ev[1]["saved_bytes"], full_.length - delta_size);
  EXPECT_FALSE(ev[1].contains("delta_error"));
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));
}

TEST_F(AgentDelta, ModifiedBaseSlotFallsBackToTheFullPackage) {
  install_v1_release_v2();
  std::string tampered = v1_;
  tampered[1000] = static_cast<char>(tampered[1000] + 1);
  test::write_file(slot_file("a"), tampered);
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v2_);
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "installed") << ev[1].dump();
  EXPECT_EQ(ev[1]["kind"], "full");
  EXPECT_EQ(ev[1]["bytes"], full_.length);
  EXPECT_NE(ev[1].value("delta_error", "").find("does not verify"), std::string::npos)
      << ev[1].dump();
}

TEST_F(AgentDelta, TamperedDeltaFallsBackToTheFullPackageInTheSamePoll) {
  install_v1_release_v2();
  std::string bytes = test::read_file(delta_file());
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0xff);
  test::write_file(delta_file(), bytes);
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v2_);
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "installed") << ev[1].dump();
  EXPECT_EQ(ev[1]["kind"], "full");
  EXPECT_NE(ev[1].value("delta_error", "").find("sha256"), std::string::npos) << ev[1].dump();
  EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));
}

TEST_F(AgentDelta, OnlyPolicyRefusesASilentFallback) {
  write_config("only");
  install_v1_release_v2();  // a first install has no base: the full package, even with "only"
  std::string bytes = test::read_file(delta_file());
  bytes.resize(bytes.size() / 2);
  test::write_file(delta_file(), bytes);
  ::testing::internal::CaptureStderr();
  auto r = check_once();
  const std::string server_log = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v1_);
  ASSERT_NE(server_log.find("PATH=/targets/deltas/"), std::string::npos)
      << "the server's request log is what this test reads:\n"
      << server_log;
  EXPECT_EQ(server_log.find(full_.sha256), std::string::npos)
      << "the full package must not be downloaded:\n"
      << server_log;
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["state"], "failed");
  EXPECT_EQ(ev[1]["kind"], "delta");
  EXPECT_NE(ev[1]["error"].get<std::string>().find("delta = only"), std::string::npos)
      << ev[1].dump();
}

TEST_F(AgentDelta, NeverPolicyDownloadsOnlyFullPackages) {
  write_config("never");
  install_v1_release_v2();
  ::testing::internal::CaptureStderr();
  auto r = check_once();
  const std::string server_log = ::testing::internal::GetCapturedStderr();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(current_weights(), v2_);
  ASSERT_NE(server_log.find("PATH=/targets/models/"), std::string::npos)
      << "the server's request log is what this test reads:\n"
      << server_log;
  EXPECT_EQ(server_log.find(".mdelta"), std::string::npos) << server_log;
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 2u);
  EXPECT_EQ(ev[1]["kind"], "full");
}

// SIGKILL at every install step of a delta install (after the step is persisted, before it acts),
// then a normal run: never a partial model, and the resumed install ends byte-identical to 2.0.0,
// still from the delta (a complete partial delta is applied from the file after the restart).
TEST_F(AgentDelta, KilledAtEveryStepResumesFromTheDelta) {
  install_v1_release_v2();
  const auto fresh = work_ / "fresh-state";
  stdfs::copy(state_, fresh, stdfs::copy_options::recursive | stdfs::copy_options::copy_symlinks);
  for (const auto& step : agent::kInstallSteps) {
    SCOPED_TRACE("killed at " + std::string(step.name));
    stdfs::remove_all(state_);
    stdfs::copy(fresh, state_, stdfs::copy_options::recursive | stdfs::copy_options::copy_symlinks);
    fleet_.sink.reset();  // the restored outbox numbers its events from where the copy was made
    auto r = check_once({{"MOTA_AGENT_TEST_KILL_AT", std::string(step.name)}});
    EXPECT_EQ(r.signal, SIGKILL) << r.out << r.err;
    const std::string now = current_weights();
    EXPECT_TRUE(now == v1_ || now == v2_) << "a partial model is exposed";
    r = check_once();
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_EQ(current_weights(), v2_);
    auto ev = fleet_.sink.events();
    ASSERT_FALSE(ev.empty());
    EXPECT_EQ(ev.back()["state"], "installed") << ev.back().dump();
    EXPECT_EQ(ev.back()["kind"], "delta") << ev.back().dump();
    EXPECT_TRUE(stdfs::is_empty(state_ / "downloads"));
  }
}

}  // namespace
}  // namespace mota
