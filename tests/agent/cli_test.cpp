// The `mota-agent` binary's command line as an operator or a unit file uses it: --version, and
// every kind of usage error exiting 2 with a message on stderr before anything is touched.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class AgentCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    state_ = tmp_ / "state";
    config_ = tmp_ / "agent.toml";
    test::write_file(tmp_ / "root.json", "{}");
    test::write_file(config_, "server_url = \"http://127.0.0.1:9\"\nstate_dir = \"" +
                                  state_.string() + "\"\nupdate_lock = \"" + state_.string() +
                                  "/update.lock\"\ntrusted_root = \"" +
                                  (tmp_ / "root.json").string() +
                                  "\"\ndevice_id = \"cli-test\"\n[[model]]\nname = "
                                  "\"detector\"\nchannel = \"stable\"\n");
  }

  test::RunResult agent(std::vector<std::string> args) {
    args.insert(args.begin(), test::build_path("agent/mota-agent").string());
    return test::run(args);
  }

  // A usage error: exit 2, "mota-agent: error: ..." naming `needle` on stderr, nothing on
  // stdout, and no state created.
  void expect_usage_error(const std::vector<std::string>& args, const std::string& needle) {
    SCOPED_TRACE(::testing::PrintToString(args));
    auto r = agent(args);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.err.rfind("mota-agent: error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(needle), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(stdfs::exists(state_));
  }

  test::TempDir tmp_;
  stdfs::path state_, config_;
};

TEST_F(AgentCliTest, VersionAndHelp) {
  auto r = agent({"--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("mota-agent ", 0), 0u) << r.out;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;  // one line
  // Even with a configuration that does not exist: --version reads none.
  r = agent({"--config", (tmp_ / "nope.toml").string(), "--version"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("mota-agent ", 0), 0u) << r.out;
  r = agent({"--help"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  for (const char* cmd : {"check-once", "run", "status", "install", "unblock"}) {
    EXPECT_NE(r.out.find(cmd), std::string::npos) << cmd << "\n" << r.out;
  }
  EXPECT_FALSE(stdfs::exists(state_));
}

TEST_F(AgentCliTest, UsageErrorsExit2) {
  const std::string cfg = config_.string();
  // No command, an unknown one (also after --config), an unknown option.
  expect_usage_error({"--config", cfg}, "subcommand");
  expect_usage_error({"frobnicate"},
                     "unknown command 'frobnicate' (check-once, run, status, "
                     "install, unblock, install-now)");
  expect_usage_error({"--config", cfg, "chek-once"}, "unknown command 'chek-once'");
  expect_usage_error({"--config", cfg, "status", "--bogus"}, "--bogus");
  expect_usage_error({"--bogus", "status"}, "--bogus");
  // A missing argument or option value.
  expect_usage_error({"--config", cfg, "install"}, "FILE");
  expect_usage_error({"status", "--config"}, "--config");
  expect_usage_error({"--config", cfg, "install", "x.mota", "--target-json"}, "--target-json");
  // A bad value, an extra argument.
  expect_usage_error({"--config", cfg, "status", "--json=perhaps"}, "perhaps");
  expect_usage_error({"--config", cfg, "run", "now"}, "now");
  expect_usage_error({"--config", cfg, "unblock"}, "MODEL");
  expect_usage_error({"--config", cfg, "unblock", "Bad/Name"}, "'Bad/Name' is not a model name");
  expect_usage_error({"--config", cfg, "unblock", "detector", "two"}, "two");
  expect_usage_error({"--config", cfg, "unblock", "detector", "1.0.0", "extra"}, "extra");
  // The configuration is part of the invocation: a missing file or a bad key is exit 2 too.
  expect_usage_error({"--config", (tmp_ / "nope.toml").string(), "status"}, "nope.toml");
  test::write_file(tmp_ / "bad.toml", "poll_interval = \"soon\"\n" + test::read_file(config_));
  expect_usage_error({"--config", (tmp_ / "bad.toml").string(), "status"}, "poll_interval");
}

}  // namespace
}  // namespace mota
