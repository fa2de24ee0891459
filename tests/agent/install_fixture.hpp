#pragma once
// The fixture of the in-process install tests: a real state database and slot set for model
// "detector" in a temporary directory, and real packages to install.

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "agent/install.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent::testing {

class InstallFixture : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(state_dir());
    auto st = StateStore::open(state_dir());
    ASSERT_TRUE(st) << st.error().message();
    state_ = std::make_unique<StateStore>(std::move(*st));
    auto slots = SlotSet::open(state_dir(), "detector");
    ASSERT_TRUE(slots) << slots.error().message();
    slots_ = std::make_unique<SlotSet>(std::move(*slots));
  }
  std::filesystem::path state_dir() const { return work_ / "state"; }

  // Packs detector `version` whose model.onnx holds `weights` into work_/detector-<version>.mota
  // and returns the plan that installs it (no fetch: the package is local).
  InstallPlan pack(const std::string& version, const std::string& weights) {
    auto src = work_ / ("src-" + version);
    test::write_file(src / "model.json", R"({
      "name": "detector", "framework": "onnx", "entry": "model.onnx",
      "inputs": [{"name": "input", "shape": [1, 3], "dtype": "float32"}],
      "outputs": [{"name": "scores", "shape": [1, 2], "dtype": "float32"}]
    })");
    test::write_file(src / "model.onnx", weights);
    storage::PackOptions opts;
    opts.version = version;
    auto out = work_ / ("detector-" + version + ".mota");
    auto r = storage::pack(src, out, opts);
    EXPECT_TRUE(r) << r.error().message();
    InstallPlan plan;
    plan.model = "detector";
    plan.to_version = version;
    plan.tree_digest = r ? r->tree_digest : "";
    plan.package = out;
    return plan;
  }
  std::optional<Slot> current() {
    auto c = slots_->current();
    EXPECT_TRUE(c);
    return c ? *c : std::nullopt;
  }

  test::TempDir work_;
  std::unique_ptr<StateStore> state_;
  std::unique_ptr<SlotSet> slots_;
};

}  // namespace mota::agent::testing
