// What mota-runtime loads at its start (runtime/startup.hpp): the agent's committed slots, their
// fallbacks, and runtime.toml's [[model]] list, with real ONNX models.
#include "runtime/startup.hpp"

#include <gtest/gtest.h>

#include "manifest/serving.hpp"
#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

namespace stdfs = std::filesystem;

class Startup : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::SlotSpec slim;
    slim.version = "1.0.0";
    slim.onnx = testing::slim_onnx();
    testing::make_slot(slot("a"), slim);
    testing::SlotSpec rfb = slim;
    rfb.version = "2.0.0";
    rfb.onnx = testing::rfb_onnx();
    testing::make_slot(slot("b"), rfb);
    config_.agent_state_dir = dir_ / "state";
    stdfs::create_directories(config_.agent_state_dir);
  }
  stdfs::path slot(const std::string& s) const { return dir_ / "state" / "models" / "face" / s; }
  void write_manifest(bool with_fallback) {
    ServingManifest m;
    ServingModel face{"face", {slot("b"), "2.0.0"}, std::nullopt};
    if (with_fallback) face.fallback = ServingSlot{slot("a"), "1.0.0"};
    m.models.push_back(face);
    ASSERT_TRUE(write_serving_manifest(config_.agent_state_dir, m));
  }
  void truncate(const stdfs::path& file) {
    auto bytes = test::read_file(file);
    test::write_file(file, bytes.substr(0, bytes.size() / 2));
  }
  std::string served(ModelStore& store) {
    auto m = store.get("face");
    return m ? m->info().version + "@" + m->info().slot.filename().string() : "";
  }

  test::TempDir dir_;
  Config config_;
};

TEST_F(Startup, LoadsTheCommittedSlotAndIgnoresAConfiguredOneOfTheSameName) {
  write_manifest(true);
  config_.models.push_back({"face", slot("a")});
  ModelStore store;
  auto loads = load_startup_models(store, config_);
  EXPECT_EQ(served(store), "2.0.0@b");
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(loads[0].source, "agent");
  EXPECT_FALSE(loads[0].fallback);
  EXPECT_TRUE(loads[0].error.empty());
}

TEST_F(Startup, ACommittedSlotThatDoesNotLoadFallsBackToThePreviousOne) {
  write_manifest(true);
  truncate(slot("b") / "model.onnx");
  ModelStore store;
  auto loads = load_startup_models(store, config_);
  EXPECT_EQ(served(store), "1.0.0@a");
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_TRUE(loads[0].fallback);
  EXPECT_FALSE(loads[0].error.empty());
}

TEST_F(Startup, NothingLoadsWhenNeitherSlotDoes) {
  write_manifest(false);
  truncate(slot("b") / "model.onnx");
  ModelStore store;
  auto loads = load_startup_models(store, config_);
  EXPECT_EQ(served(store), "");
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_TRUE(loads[0].slot.empty());
  EXPECT_NE(loads[0].error.find("load face"), std::string::npos) << loads[0].error;
}

TEST_F(Startup, ADamagedOrMissingManifestLeavesTheConfiguredModels) {
  config_.models.push_back({"face", slot("a")});
  {
    ModelStore store;  // no serving.json yet: the agent committed nothing
    load_startup_models(store, config_);
    EXPECT_EQ(served(store), "1.0.0@a");
  }
  test::write_file(config_.agent_state_dir / kServingFile, "{\"format\": 1, \"models\": 7}");
  ModelStore store;
  auto loads = load_startup_models(store, config_);
  EXPECT_EQ(served(store), "1.0.0@a");
  ASSERT_EQ(loads.size(), 1u);
  EXPECT_EQ(loads[0].source, "config");
}

}  // namespace
}  // namespace mota::runtime
