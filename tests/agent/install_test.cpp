// The install state machine in process, with real packages, slots and database: success, the
// signed tree digest enforced, the loop guard, abandoning a stale journal.

#include "agent/install.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <stdexcept>

#include "storage/package.hpp"
#include "tests/agent/install_fixture.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;

class Install : public testing::InstallFixture {
 protected:
  InstallPlan pack(const std::string& version) {
    return InstallFixture::pack(version, "weights " + version);
  }
};

TEST(InstallSteps, TableIsOneChainEndingInCommit) {
  EXPECT_EQ(kInstallSteps[0].name, "download");
  for (std::size_t i = 0; i + 1 < std::size(kInstallSteps); ++i) {
    EXPECT_EQ(kInstallSteps[i].next, kInstallSteps[i + 1].name);
  }
  EXPECT_EQ(std::end(kInstallSteps)[-1].name, "commit");
  EXPECT_EQ(std::end(kInstallSteps)[-1].next, "");
  EXPECT_TRUE(known_install_step("verify"));
  EXPECT_FALSE(known_install_step("unpack"));
}

TEST_F(Install, InstallsIntoInactiveSlotAndCommits) {
  std::vector<std::string> seen;
  InstallOptions opts;
  opts.before_step = [&](std::string_view s) { seen.emplace_back(s); };
  auto r = run_install(*state_, *slots_, pack("1.0.0"), opts);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->slot, Slot::a);
  EXPECT_EQ(seen, (std::vector<std::string>{"download", "stage", "verify", "probe", "switch",
                                            "trial", "commit"}));
  EXPECT_EQ(current(), Slot::a);
  auto active = state_->active("detector");
  ASSERT_TRUE(active && *active);
  EXPECT_TRUE((*active)->committed);
  auto slot = state_->slot("detector", Slot::a);
  ASSERT_TRUE(slot && *slot);
  EXPECT_EQ((*slot)->version, "1.0.0");
  EXPECT_EQ((*slot)->status, SlotStatus::valid);
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_FALSE(*rec);

  r = run_install(*state_, *slots_, pack("2.0.0"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::b);
  EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), "weights 1.0.0");
}

TEST_F(Install, WrongSignedTreeDigestAbortsBlocksAndLeavesActiveAlone) {
  ASSERT_TRUE(run_install(*state_, *slots_, pack("1.0.0")));
  auto plan = pack("2.0.0");
  plan.tree_digest = std::string(64, '0');
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("is not the signed " + std::string(64, '0')),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(current(), Slot::a);
  EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), "weights 1.0.0");
  EXPECT_FALSE(stdfs::exists(slots_->path(Slot::b)));  // no unverified tree left behind
  auto blocked = state_->is_blocked("detector", "2.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_TRUE(*blocked);
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_FALSE(*rec);
}

TEST_F(Install, PackageOfAnotherVersionIsRejected) {
  auto plan = pack("1.0.0");
  plan.to_version = "1.0.1";  // the package says 1.0.0
  plan.tree_digest.clear();
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("model.json says detector 1.0.0, expected detector 1.0.1"),
            std::string::npos)
      << r.error().message();
  EXPECT_FALSE(current());
}

// A fetch that writes `bytes` into plan.package in small pieces, announcing each like the
// downloader does (optionally a first pass of `first_pass` bytes, then a restart from byte 0).
std::function<Result<std::uint64_t>(const DownloadProgress&)> piecewise_fetch(
    std::filesystem::path to, std::string bytes, std::string first_pass = "") {
  return [to, bytes, first_pass](const DownloadProgress& progress) -> Result<std::uint64_t> {
    auto write_pass = [&](const std::string& data) {
      std::FILE* f = std::fopen(to.c_str(), "wb");
      for (std::size_t off = 0; off < data.size(); off += 333) {
        std::size_t n = std::min<std::size_t>(333, data.size() - off);
        std::fwrite(data.data() + off, 1, n, f);
        std::fflush(f);
        progress(off + n, bytes.size());
      }
      std::fclose(f);
    };
    if (!first_pass.empty()) {
      write_pass(first_pass);
      progress(0, bytes.size());  // the restart, announced before the truncation
    }
    write_pass(bytes);
    return bytes.size() + first_pass.size();
  };
}

TEST_F(Install, FetchedPackageIsUnpackedWhileItDownloads) {
  auto plan = pack("1.0.0");
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->streamed);
  EXPECT_EQ(r->bytes, bytes.size());
  EXPECT_EQ(current(), r->slot);
  EXPECT_EQ(test::read_file(slots_->path(r->slot) / "model.onnx"), "weights 1.0.0");
  auto tree = slots_->verify(r->slot);
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_EQ(tree->tree_digest, plan.tree_digest);
}

TEST_F(Install, RestartedDownloadFallsBackToUnpackingTheCompletePackage) {
  auto plan = pack("1.0.0");
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  // The first pass is garbage of the same length: it must never reach the slot.
  plan.fetch = piecewise_fetch(plan.package, bytes, std::string(bytes.size(), 'x'));
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_FALSE(r->streamed);
  EXPECT_EQ(current(), r->slot);
  EXPECT_EQ(test::read_file(slots_->path(r->slot) / "model.onnx"), "weights 1.0.0");
}

// An error is not a crash: a download that keeps failing (network down for days) is retried at
// every poll and never blocks the version; the loop guard only counts entries without an outcome.
TEST_F(Install, FailingDownloadIsRetriedAtEveryPollWithoutBlocking) {
  auto plan = pack("1.0.0");
  int calls = 0;
  plan.fetch = [&](const DownloadProgress&) -> Result<std::uint64_t> {
    ++calls;
    return fail(Errc::network, "connection refused");
  };
  for (int i = 1; i <= 6; ++i) {
    auto r = run_install(*state_, *slots_, plan);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::network);
    auto rec = state_->install("detector");
    ASSERT_TRUE(rec && *rec);
    EXPECT_EQ((*rec)->step, "download");
    EXPECT_EQ((*rec)->attempts, 0);  // ended with an outcome
    EXPECT_NE((*rec)->last_error.find("connection refused"), std::string::npos);
  }
  EXPECT_EQ(calls, 6);
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);
  // Once the network is back, the same journal finishes the install.
  auto bytes = test::read_file(plan.package);
  plan.package = work_ / "downloads" / "p.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = piecewise_fetch(plan.package, bytes);
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), r->slot);
}

// Crashes are what the loop guard counts: a step entered over and over without an outcome (here
// the process "dies" in the test hook, after the entry is persisted) blocks the version.
TEST_F(Install, StepThatNeverFinishesTripsTheLoopGuard) {
  auto plan = pack("1.0.0");
  InstallOptions crashing;
  crashing.before_step = [](std::string_view step) {
    if (step == "stage") throw std::runtime_error("simulated crash");
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_THROW((void)run_install(*state_, *slots_, plan, crashing), std::runtime_error);
  }
  auto r = run_install(*state_, *slots_, plan, crashing);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("step stage entered 4 times (limit 3)"), std::string::npos)
      << r.error().message();
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_TRUE(*blocked);
  EXPECT_FALSE(current());
}

TEST_F(Install, JournalOfAnotherVersionIsAbandonedWithoutBlocking) {
  auto stale = pack("1.0.0");
  stale.fetch = [](const DownloadProgress&) -> Result<std::uint64_t> {
    return fail(Errc::network, "down");
  };
  ASSERT_FALSE(run_install(*state_, *slots_, stale));
  auto r = run_install(*state_, *slots_, pack("1.1.0"));
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::a);
  auto blocked = state_->is_blocked("detector", "1.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);
}

}  // namespace
}  // namespace mota::agent
