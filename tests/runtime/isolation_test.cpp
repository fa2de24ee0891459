// First loads in a child process (runtime/store.hpp, StoreOptions::isolate_with): the deadline of
// a load that never ends, and that a slot's check is run once per content, not per load. The
// child is the real mota-runtime behind a small wrapper script (fault injection: a hang, and a
// count of the calls); ServerTest.ModelsThatCrashTheEngineLeaveAServingRuntimeServing covers
// real crashing models end to end.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <chrono>
#include <string>

#include "runtime/store.hpp"
#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

namespace stdfs = std::filesystem;

class Isolation : public ::testing::Test {
 protected:
  void SetUp() override {
    testing::SlotSpec v1;
    v1.onnx = testing::slim_onnx();
    testing::make_slot(tmp_ / "v1", v1);
  }
  // An executable script at tmp_/name.
  stdfs::path script(const std::string& name, const std::string& body) {
    const auto path = tmp_ / name;
    test::write_file(path, "#!/bin/sh\n" + body);
    ::chmod(path.c_str(), 0755);
    return path;
  }
  std::size_t calls() {
    const auto path = tmp_ / "calls";
    if (!stdfs::exists(path)) return 0;
    const std::string text = test::read_file(path);
    return static_cast<std::size_t>(std::count(text.begin(), text.end(), '\n'));
  }
  test::TempDir tmp_;
};

TEST_F(Isolation, ALoadThatNeverEndsIsRefusedAtTheDeadline) {
  StoreOptions options;
  options.isolate_with = script("hang", "exec sleep 600\n");
  options.load_timeout = std::chrono::milliseconds(300);
  ModelStore store(options);
  auto r = store.load("face", tmp_ / "v1");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
  EXPECT_NE(r.error().message().find("loading did not finish within 300 ms in a check process "
                                     "(killed); not loaded"),
            std::string::npos)
      << r.error().message();
  EXPECT_EQ(store.get("face"), nullptr);
}

TEST_F(Isolation, EachSlotContentIsCheckedOnce) {
  StoreOptions options;
  options.isolate_with =
      script("count", "echo \"$*\" >> '" + (tmp_ / "calls").string() + "'\nexec '" +
                          test::build_path("runtime/mota-runtime").string() + "' \"$@\"\n");
  ModelStore store(options);
  auto first = store.load("face", tmp_ / "v1");
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(calls(), 1u);
  EXPECT_NE(test::read_file(tmp_ / "calls").find("probe " + stdfs::canonical(tmp_ / "v1").string()),
            std::string::npos);
  ASSERT_TRUE(store.load("face", tmp_ / "v1"));
  EXPECT_EQ(calls(), 1u) << "the same files: checked already";
  // New content in the same place (an agent re-staging a slot): checked again.
  testing::SlotSpec v2;
  v2.onnx = testing::rfb_onnx();
  v2.version = "2.0.0";
  testing::make_slot(tmp_ / "v1", v2);
  ASSERT_TRUE(store.load("face", tmp_ / "v1"));
  EXPECT_EQ(calls(), 2u);
  EXPECT_EQ(store.get("face")->info().version, "2.0.0");
}

}  // namespace
}  // namespace mota::runtime
