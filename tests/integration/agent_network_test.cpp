// The real `mota-agent` binary against a real repository behind a proxy (tests/support
// fault_server's DropProxy) that drips chosen responses at 2 bytes/s: a package or timestamp.json
// trickled that slowly is cut off within the configured bound ([download] min_rate over
// min_rate_window, the download's deadline, metadata_timeout) with a message that says so, where
// curl's own "under 1 byte/s for 30 s" let it wait for ever. And an idle poll costs one TCP
// connection: the 404 of the root probe is read, not aborted, so timestamp.json reuses it.

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <random>

#include "manager/repo/repository.hpp"
#include "net/http_server.hpp"
#include "tests/support/event_sink.hpp"
#include "tests/support/fault_server.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

class AgentNetwork : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(fleet_.start(work_ / "fleet", "device-0001"));
    state_ = work_ / "device" / "state";
    fleet_port_ = std::stoi(fleet_.url.substr(fleet_.url.rfind(':') + 1));
  }
  // The device talks to `proxy`; `download` is the body of its [download] table.
  void write_config(const test::DropProxy& proxy, const std::string& download,
                    unsigned attempts = 1) {
    test::write_file(config_path(),
                     "server_url = \"" + proxy.url() + "\"\nstate_dir = \"" + state_.string() +
                         "\"\nupdate_lock = \"" + state_.string() +
                         "/update.lock\"\ntrusted_root = \"" + fleet_.root_json.string() +
                         "\"\ndevice_id = \"device-0001\"\nlog_level = \"warn\"\n"
                         "[retry]\nmax_attempts = " +
                         std::to_string(attempts) + "\nbase_delay = \"1s\"\n[download]\n" +
                         download + "\n[health]\nenabled = false\n" +
                         "[[model]]\nname = \"detector\"\nchannel = \"stable\"\n");
  }
  stdfs::path config_path() const { return work_ / "device" / "agent.toml"; }
  manager::Release release(const std::string& version) {
    std::mt19937 rng(7);
    std::string weights(200 * 1024, '\0');
    for (auto& c : weights) c = static_cast<char>(rng());
    auto src = work_ / ("src-" + version);
    test::make_model_dir(src, weights);
    auto r = fleet_.repo->add_release(src, version);
    EXPECT_TRUE(r) << r.error().message();
    return r ? *r : manager::Release{};
  }
  void channel(const std::string& version) { fleet_.point_stable("detector", version); }
  // On today's main a dripping server held the agent for many minutes: bounded here so the test
  // fails instead of hanging.
  test::RunResult check_once() {
    return test::run({test::build_path("agent/mota-agent").string(), "--config",
                      config_path().string(), "check-once"},
                     {}, std::chrono::seconds(60));
  }

  test::TempDir work_;
  test::RepoServer fleet_;
  stdfs::path state_;
  int fleet_port_ = 0;
};

TEST_F(AgentNetwork, PackageDrippedAt2BytesPerSecondIsCutOffAfterTheWindow) {
  auto rel = release("1.0.0");
  channel("1.0.0");
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port_;
  pc.cut_times = 0;
  pc.slow_suffix = ".mota";
  pc.slow_rate = 2;
  test::DropProxy proxy(pc);
  write_config(proxy, "min_rate = \"1KB/s\"\nmin_rate_window = \"2s\"");
  const auto t0 = Clock::now();
  auto r = check_once();
  const double took = seconds_since(t0);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find(": stalled: "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" bytes in 2."), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(", below the minimum 1 KB/s"), std::string::npos) << r.err;
  // The window (2 s) plus what a poll costs on a loaded machine.
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 12.0) << r.err;
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["state"], "failed") << ev[0].dump();
  EXPECT_EQ(ev[0]["step"], "download") << ev[0].dump();
  EXPECT_NE(ev[0]["error"].get<std::string>().find("stalled"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(state_ / "models" / "detector" / "current"));
  // What did arrive is kept for the next poll.
  const auto partial = state_ / "downloads" / ("detector." + rel.sha256 + ".part");
  ASSERT_TRUE(stdfs::exists(partial));
  EXPECT_LT(stdfs::file_size(partial), 100u);
}

// A server just above the minimum rate for every window is stopped by the download's deadline:
// deadline_allowance + signed length / min_rate (here 1 s + ~200 KB / 100 KB/s = ~3 s), across
// retries.
TEST_F(AgentNetwork, DownloadDeadlineIsScaledFromTheSignedLength) {
  auto rel = release("1.0.0");
  channel("1.0.0");
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port_;
  pc.cut_times = 0;
  pc.slow_suffix = ".mota";
  pc.slow_rate = 2;
  test::DropProxy proxy(pc);
  write_config(proxy,
               "min_rate = \"100KB/s\"\nmin_rate_window = \"60s\"\ndeadline_allowance = \"1s\"", 5);
  const double deadline = 1.0 + static_cast<double>(rel.length) / 100'000;
  const auto t0 = Clock::now();
  auto r = check_once();
  const double took = seconds_since(t0);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("not complete within its deadline of "), std::string::npos) << r.err;
  EXPECT_GE(took, deadline - 0.1);
  EXPECT_LT(took, deadline + 10.0) << r.err;
}

TEST_F(AgentNetwork, TimestampDrippedAt2BytesPerSecondIsCutOffByTheMetadataTimeout) {
  release("1.0.0");
  channel("1.0.0");
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port_;
  pc.cut_times = 0;
  pc.slow_suffix = "/timestamp.json";
  pc.slow_rate = 2;
  test::DropProxy proxy(pc);
  write_config(proxy, "min_rate_window = \"60s\"\nmetadata_timeout = \"2s\"");
  const auto t0 = Clock::now();
  auto r = check_once();
  const double took = seconds_since(t0);
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_NE(r.err.find("fetch timestamp.json: GET "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("timed out: no complete answer within 2.0 s"), std::string::npos) << r.err;
  EXPECT_GE(took, 1.9);
  EXPECT_LT(took, 12.0) << r.err;
  // A condition of the device, reported as such.
  auto ev = fleet_.sink.events();
  ASSERT_EQ(ev.size(), 1u);
  EXPECT_EQ(ev[0]["state"], "metadata_error") << ev[0].dump();
  EXPECT_NE(ev[0]["error"].get<std::string>().find("timed out"), std::string::npos);
}

// An idle poll: the root probe (404) and timestamp.json on one kept-alive connection. A whole
// install poll (metadata, channel, package, report) also fits on one.
TEST_F(AgentNetwork, IdlePollUsesOneConnection) {
  release("1.0.0");
  channel("1.0.0");
  test::DropProxyConfig pc;
  pc.upstream_port = fleet_port_;
  pc.cut_times = 0;
  test::DropProxy proxy(pc);
  write_config(proxy, "");
  auto r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(proxy.connections(), 1u);

  const auto requests = proxy.requests().size();
  r = check_once();
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("up to date 1.0.0"), std::string::npos) << r.out;
  auto all = proxy.requests();
  ASSERT_EQ(all.size(), requests + 2);
  EXPECT_EQ(all[requests].path, "/metadata/2.root.json");
  EXPECT_EQ(all[requests].status, 404);
  EXPECT_EQ(all[requests + 1].path, "/metadata/timestamp.json");
  EXPECT_EQ(all[requests + 1].status, 200);
  EXPECT_EQ(proxy.connections(), 2u) << "one connection for the idle poll";
}

}  // namespace
}  // namespace mota
