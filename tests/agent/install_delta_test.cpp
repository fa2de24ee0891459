// Installing from a package delta in process, with real packages, real deltas
// (delta/package/package_delta.hpp), slots and database: the slot ends byte-identical to a full
// install, also when the delta is applied while it downloads; a delta that cannot be used (another
// base, truncated, corrupt, a base modified on disk, a download failing its signed hash) is
// detected before anything is switched, aborts without blocking the version, and leaves the full
// package free to install.

#include <gtest/gtest.h>

#include <random>

#include "agent/install.hpp"
#include "delta/package/package_delta.hpp"
#include "storage/package.hpp"
#include "tests/agent/install_fixture.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;

// Weights that deltas find worth encoding: pseudo-random bytes, and a "fine-tune" that changes a
// few of them.
std::string random_weights(std::uint32_t seed, std::size_t size = 256 * 1024) {
  std::mt19937 rng(seed);
  std::string s(size, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}
std::string fine_tune(std::string w) {
  for (std::size_t i = 100; i < w.size(); i += 4099) w[i] = static_cast<char>(w[i] ^ 0x5a);
  return w;
}

class InstallDelta : public testing::InstallFixture {
 protected:
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(InstallFixture::SetUp());
    v1_ = random_weights(1);
    v2_ = fine_tune(v1_);
    // 1.0.0 installed from its full package: the base of every delta below.
    auto r = run_install(*state_, *slots_, pack("1.0.0", v1_));
    ASSERT_TRUE(r) << r.error().message();
    ASSERT_EQ(r->slot, Slot::a);
  }

  // InstallFixture::pack, also leaving the unpacked tree in work_/tree-<version>.
  InstallPlan pack(const std::string& version, const std::string& weights) {
    auto plan = InstallFixture::pack(version, weights);
    if (!stdfs::exists(work_ / ("tree-" + version))) {
      auto tree = storage::unpack_file(plan.package, work_ / ("tree-" + version));
      EXPECT_TRUE(tree) << tree.error().message();
    }
    return plan;
  }
  // The plan installing `to` (packed with `weights`) from a delta whose base is `base_version`'s
  // tree, applied on the active slot.
  InstallPlan delta_plan(const std::string& base_version, const std::string& to,
                         const std::string& weights) {
    auto plan = pack(to, weights);
    plan.from_version = "1.0.0";
    plan.package = work_ / (base_version + "-" + to + ".mdelta");
    auto d = delta::diff_package_dirs(work_ / ("tree-" + base_version), work_ / ("tree-" + to),
                                      plan.package);
    EXPECT_TRUE(d) << d.error().message();
    plan.delta_base = slots_->path(Slot::a);
    return plan;
  }
  // After an unusable delta: nothing switched, no journal, not blocked, 1.0.0 intact, and the
  // full package of 2.0.0 installs.
  void expect_untouched_and_full_installs(const InstallFailure& why) {
    EXPECT_TRUE(why.delta_unusable);
    EXPECT_EQ(current(), Slot::a);
    EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), v1_);
    auto rec = state_->install("detector");
    ASSERT_TRUE(rec);
    EXPECT_FALSE(*rec) << "journal left behind";
    auto blocked = state_->is_blocked("detector", "2.0.0");
    ASSERT_TRUE(blocked);
    EXPECT_FALSE(*blocked) << "a bad delta must not block a version whose package may be fine";
    auto full = run_install(*state_, *slots_, pack("2.0.0", v2_));
    ASSERT_TRUE(full) << full.error().message();
    EXPECT_EQ(test::read_file(slots_->path(Slot::b) / "model.onnx"), v2_);
  }

  std::string v1_, v2_;
};

TEST_F(InstallDelta, SlotIsByteIdenticalToAFullInstall) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  const auto delta_size = stdfs::file_size(plan.package);
  const auto full_size = stdfs::file_size(work_ / "detector-2.0.0.mota");
  EXPECT_LT(delta_size * 4, full_size) << "a few changed bytes must make a small delta";
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(current(), Slot::b);
  EXPECT_EQ(test::read_file(slots_->path(Slot::b) / "model.onnx"), v2_);
  auto tree = slots_->verify(Slot::b);
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_EQ(tree->tree_digest, plan.tree_digest);
  EXPECT_EQ(tree->manifest.version, "2.0.0");
  // The base is untouched: it is the rollback target.
  EXPECT_EQ(test::read_file(slots_->path(Slot::a) / "model.onnx"), v1_);
}

TEST_F(InstallDelta, IsAppliedWhileItDownloads) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  const std::string bytes = test::read_file(plan.package);
  const auto part = work_ / "downloads" / "d.part";
  stdfs::create_directories(part.parent_path());
  plan.package = part;
  plan.fetch = [&](const DownloadProgress& progress) -> Result<std::uint64_t> {
    std::FILE* f = std::fopen(part.c_str(), "wb");
    if (!f) return fail(Errc::io, "open");
    for (std::size_t off = 0; off < bytes.size(); off += 1000) {
      const std::size_t n = std::min<std::size_t>(1000, bytes.size() - off);
      std::fwrite(bytes.data() + off, 1, n, f);
      std::fflush(f);
      progress(off + n, bytes.size());
    }
    std::fclose(f);
    return bytes.size();
  };
  auto r = run_install(*state_, *slots_, plan);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_TRUE(r->streamed);
  EXPECT_EQ(r->bytes, bytes.size());
  EXPECT_EQ(test::read_file(slots_->path(Slot::b) / "model.onnx"), v2_);
}

TEST_F(InstallDelta, DeltaForAnotherBaseIsUnusable) {
  pack("0.9.0", random_weights(9));
  auto plan = delta_plan("0.9.0", "2.0.0", v2_);
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification);
  EXPECT_NE(r.error().message().find("0.9.0"), std::string::npos) << r.error().message();
  EXPECT_EQ(why.step, InstallStep::stage);
  expect_untouched_and_full_installs(why);
}

TEST_F(InstallDelta, TruncatedDeltaIsUnusable) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  stdfs::resize_file(plan.package, stdfs::file_size(plan.package) / 2);
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  EXPECT_TRUE(r.error().code() == Errc::parse || r.error().code() == Errc::verification)
      << r.error().message();
  expect_untouched_and_full_installs(why);
  EXPECT_FALSE(stdfs::exists(plan.package)) << "an unusable delta is deleted";
}

TEST_F(InstallDelta, CorruptDeltaIsUnusable) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  std::string bytes = test::read_file(plan.package);
  bytes[bytes.size() - 20] = static_cast<char>(bytes[bytes.size() - 20] ^ 0xff);
  test::write_file(plan.package, bytes);
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  expect_untouched_and_full_installs(why);
}

TEST_F(InstallDelta, BaseModifiedOnDiskIsDetected) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  // Same size, different bytes where the delta copies from: what bit rot or a tamperer leaves.
  std::string base = v1_;
  for (std::size_t i = 0; i < base.size(); i += 512) base[i] = static_cast<char>(base[i] + 1);
  test::write_file(slots_->path(Slot::a) / "model.onnx", base);
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::verification) << r.error().message();
  EXPECT_TRUE(why.delta_unusable);
  EXPECT_EQ(current(), Slot::a);
  auto blocked = state_->is_blocked("detector", "2.0.0");
  ASSERT_TRUE(blocked);
  EXPECT_FALSE(*blocked);
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  EXPECT_FALSE(*rec);
}

TEST_F(InstallDelta, DownloadFailingItsSignedHashIsUnusable) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  plan.package = work_ / "downloads" / "d.part";
  stdfs::create_directories(plan.package.parent_path());
  plan.fetch = [&](const DownloadProgress&) -> Result<std::uint64_t> {
    test::write_file(plan.package, "not the signed bytes");
    return fail(Errc::verification, "sha256 of the download differs from the signed one");
  };
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  EXPECT_EQ(why.step, InstallStep::download);
  expect_untouched_and_full_installs(why);
  EXPECT_FALSE(stdfs::exists(work_ / "downloads" / "d.part"));
}

TEST_F(InstallDelta, NetworkFailureKeepsTheJournalToResume) {
  auto plan = delta_plan("1.0.0", "2.0.0", v2_);
  plan.fetch = [&](const DownloadProgress&) -> Result<std::uint64_t> {
    return fail(Errc::network, "connection reset");
  };
  InstallFailure why;
  auto r = run_install(*state_, *slots_, plan, {}, &why);
  ASSERT_FALSE(r);
  EXPECT_FALSE(why.delta_unusable) << "a network error says nothing about the delta";
  auto rec = state_->install("detector");
  ASSERT_TRUE(rec);
  ASSERT_TRUE(*rec);
  EXPECT_EQ((*rec)->step, "download");
}

}  // namespace
}  // namespace mota::agent
