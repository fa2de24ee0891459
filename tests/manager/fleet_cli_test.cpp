// The fleet commands of the real `mota` binary on bad input: a bad duration, state, condition,
// percentage list or failure rate is a usage error (exit 2, naming the flag and what it accepts)
// that touches no file; outside a repository, or with a fleet database that does not exist, the
// commands fail (exit 1) with a message saying what to do, and leave no fleet.db behind.

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/test_support.hpp"

namespace mota {
namespace {

namespace stdfs = std::filesystem;

class FleetCli : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_ = (tmp_ / "repo").string();
    plain_ = (tmp_ / "plain").string();
    stdfs::create_directories(plain_);
    test::write_file(tmp_ / "key.hex", std::string(64, 'a'));
  }

  test::RunResult mota(std::vector<std::string> args,
                       const std::map<std::string, std::string>& env = {}) {
    args.insert(args.begin(), test::build_path("manager/mota").string());
    return test::run(args, env);
  }
  void init() {
    auto r = mota({"init", repo_});
    ASSERT_EQ(r.exit_code, 0) << r.err;
  }
  // No fleet database anywhere under the temporary directory.
  void expect_no_db() {
    for (const auto& e : stdfs::recursive_directory_iterator(tmp_.path())) {
      EXPECT_EQ(e.path().filename().string().find("fleet.db"), std::string::npos) << e.path();
      EXPECT_NE(e.path().filename(), "other.db") << e.path();
    }
  }
  void expect_usage(const test::RunResult& r, const std::string& flag, const std::string& words) {
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_EQ(r.err.rfind("mota: error: " + flag + ": ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
  }

  test::TempDir tmp_;
  std::string repo_, plain_;
};

TEST_F(FleetCli, BadDurationsAreUsageErrors) {
  init();
  const std::string forms = "want a number and a unit: 30s, 10m, 1h, 7d, 2w, 3mo, 1y";
  expect_usage(mota({"devices", "--repo", repo_, "--stale", "5x"}), "--stale",
               "'5x' is not a duration");
  expect_usage(mota({"devices", "--repo", repo_, "--stale", "5x"}), "--stale", forms);
  expect_usage(mota({"fleet", "--repo", repo_, "--stale", "1hour"}), "--stale", forms);
  expect_usage(
      mota({"rollout", "start", "stable", "det", "1.0.0", "--repo", repo_, "--step-after", "soon"}),
      "--step-after", forms);
  for (const char* flag : {"--max-clock-skew", "--session-ttl", "--rollout-interval"}) {
    SCOPED_TRACE(flag);
    expect_usage(mota({"serve", "--repo", repo_, "--listen", "127.0.0.1:0", flag, "10"}), flag,
                 forms);
  }
  // The rollout interval also takes milliseconds; the others do not.
  expect_usage(
      mota({"serve", "--repo", repo_, "--listen", "127.0.0.1:0", "--rollout-interval", "5xms"}),
      "--rollout-interval", ", 500ms");
  expect_usage(
      mota({"serve", "--repo", repo_, "--listen", "127.0.0.1:0", "--session-ttl", "500ms"}),
      "--session-ttl", forms);
  expect_no_db();
}

TEST_F(FleetCli, BadStatesConditionsAndRatesAreUsageErrors) {
  init();
  expect_usage(mota({"devices", "--repo", repo_, "--state", "broken"}), "--state", "broken");
  expect_usage(mota({"devices", "--repo", repo_, "--condition", "stale"}), "--condition", "stale");
  auto start = [&](const std::string& rate) {
    return mota({"rollout", "start", "stable", "det", "1.0.0", "--repo", repo_,
                 "--max-failure-rate", rate});
  };
  // A bare number is ambiguous (0.05 reads as 5% to some, 0.05% to others): the unit is required.
  expect_usage(start("0.05"), "--max-failure-rate", "write the rate as a percentage, e.g. 5%");
  expect_usage(start("5"), "--max-failure-rate", "'5' has no unit");
  expect_usage(start("150%"), "--max-failure-rate", "not a percentage in 0%..100%");
  expect_usage(start("-5%"), "--max-failure-rate", "not a percentage in 0%..100%");
  expect_usage(start("five%"), "--max-failure-rate", "not a percentage in 0%..100%");
  expect_usage(
      mota({"rollout", "start", "stable", "det", "1.0.0", "--repo", repo_, "--percent", "5,25"}),
      "--percent", "the last step must be 100");
  expect_no_db();
}

TEST_F(FleetCli, OutsideARepositoryNothingIsCreated) {
  const std::string want = "mota: error: " + plain_ +
                           " is not a mota repository (no mota.toml); use --repo DIR or "
                           "--db FILE\n";
  const std::vector<std::vector<std::string>> commands = {
      {"devices"},
      {"fleet"},
      {"device", "show", "d1"},
      {"devices", "enroll", "d1", "--key", (tmp_ / "key.hex").string()},
      {"rollout", "status", "stable", "det"},
      {"rollout", "pause", "stable", "det"},
  };
  for (auto args : commands) {
    SCOPED_TRACE(args[0] + " " + args[1 % args.size()]);
    args.push_back("--repo");
    args.push_back(plain_);
    auto r = mota(args);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(r.err, want);
    EXPECT_EQ(r.out, "");
  }
  // The current directory is the default repository.
  auto r = test::run(
      {"/bin/sh", "-c",
       "cd '" + plain_ + "' && exec '" + test::build_path("manager/mota").string() + "' fleet"});
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_EQ(r.err,
            "mota: error: . is not a mota repository (no mota.toml); use --repo DIR or "
            "--db FILE\n");
  // Publishing commands say so too, before any database is opened.
  r = mota({"rollout", "start", "stable", "det", "1.0.0", "--repo", plain_, "--db",
            (tmp_ / "other.db").string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("is not a mota repository"), std::string::npos) << r.err;
  expect_no_db();
}

TEST_F(FleetCli, ReadersNeedAnExistingDatabaseWritersMayCreateIt) {
  const std::string db = (tmp_ / "other.db").string();
  for (const auto& args :
       std::vector<std::vector<std::string>>{{"devices", "--db", db},
                                             {"fleet", "--db", db, "--json"},
                                             {"device", "show", "d1", "--db", db},
                                             {"rollout", "status", "stable", "det", "--db", db}}) {
    SCOPED_TRACE(args[0]);
    auto r = mota(args);
    EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
    EXPECT_EQ(r.err, "mota: error: no fleet database at " + db + "\n");
  }
  auto r = mota({"fleet"}, {{"MOTA_FLEET_DB", db}});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mota: error: no fleet database at " + db + "\n");
  // A repository whose server never ran.
  init();
  r = mota({"fleet", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "mota: error: no fleet database at " + repo_ +
                       "/fleet.db (`mota serve` creates it when it starts)\n");
  expect_no_db();

  // Enrolling writes the database: it may create it, with --db or in the repository.
  r = mota({"devices", "enroll", "d1", "--key", (tmp_ / "key.hex").string(), "--db", db});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(stdfs::exists(db));
  r = mota({"devices", "--db", db, "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("\"d1\""), std::string::npos) << r.out;
  r = mota({"devices", "enroll", "d1", "--key", (tmp_ / "key.hex").string(), "--repo", repo_});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(stdfs::exists(stdfs::path(repo_) / "fleet.db"));
  r = mota({"fleet", "--repo", repo_});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("1 devices, 1 not seen for 1h", 0), 0u) << r.out;
}

}  // namespace
}  // namespace mota
