// Loads yield to serving (runtime/backend.hpp): the gate between ServingScope (an inference in
// flight) and yield_to_serving on a loading thread, its budget, and a real OpenCV load whose
// parallel loops pass through the yield points (OpenCV's cv::parallel_for_ interposed).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "runtime/backend.hpp"
#include "tests/runtime/runtime_support.hpp"

namespace mota::runtime {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

// Holds one inference "in flight" on its own thread for `hold`.
class Busy {
 public:
  explicit Busy(std::chrono::milliseconds hold)
      : thread_([this, hold] {
          ServingScope s;
          started_ = true;
          std::this_thread::sleep_for(hold);
        }) {
    while (!started_.load()) std::this_thread::sleep_for(1ms);
  }
  ~Busy() { thread_.join(); }

 private:
  std::atomic<bool> started_{false};
  std::thread thread_;
};

TEST(LoadYield, WaitsForInFlightInferenceThenGoesOn) {
  EXPECT_EQ(serving_in_flight(), 0);
  LoadYieldScope scope(5000ms);
  auto t0 = Clock::now();
  {
    Busy busy(300ms);
    EXPECT_EQ(serving_in_flight(), 1);
    yield_to_serving();  // returns when the inference ends, not at the budget
    double waited = ms_since(t0);
    EXPECT_GE(waited, 250);
    EXPECT_LT(waited, 3000);
  }
  EXPECT_EQ(serving_in_flight(), 0);
  EXPECT_GE(scope.waited(), 250ms);
  // Nothing in flight: no wait.
  auto t1 = Clock::now();
  yield_to_serving();
  EXPECT_LT(ms_since(t1), 50);
  EXPECT_EQ(scope.steps(), 2u);
}

TEST(LoadYield, TheBudgetBoundsTheTotalWait) {
  // Under continuous traffic a load must still finish: once its budget is spent it stops waiting.
  LoadYieldScope scope(100ms);
  Busy busy(1500ms);
  auto t0 = Clock::now();
  yield_to_serving();
  double first = ms_since(t0);
  EXPECT_GE(first, 80);
  EXPECT_LT(first, 1000);
  auto t1 = Clock::now();
  for (int i = 0; i < 100; ++i) yield_to_serving();  // budget spent: no more waiting
  EXPECT_LT(ms_since(t1), 50);
  EXPECT_LT(scope.waited(), 1000ms);
}

TEST(LoadYield, NoScopeOrZeroBudgetNeverWaits) {
  Busy busy(500ms);
  auto t0 = Clock::now();
  yield_to_serving();  // not a loading thread
  {
    LoadYieldScope off(0ms);
    yield_to_serving();
    EXPECT_EQ(off.waited(), std::chrono::nanoseconds(0));
  }
  EXPECT_LT(ms_since(t0), 100);
}

TEST(LoadYield, ALoadPassesYieldPointsInEveryEngineLoopAndWaitsForServing) {
  init_engines(0);  // as mota-runtime serve does: LoadOptions::serial takes effect
  testing::SlotSpec spec;
  spec.onnx = testing::slim_onnx();
  test::TempDir tmp;
  testing::make_slot(tmp / "a", spec);
  auto manifest = read_slot_manifest(tmp / "a");
  ASSERT_TRUE(manifest) << manifest.error().message();
  auto backend = backend_for("onnx");
  ASSERT_TRUE(backend);
  LoadOptions opts;
  opts.pool_size = 1;
  opts.serial = true;

  // Nothing served: the load runs through, and its parallel loops reached the yield points (one
  // per loop, far more than the per-instance ones): OpenCV's loops on a loading thread go through
  // mota's cv::parallel_for_, not OpenCV's process-wide parallel slot.
  std::uint64_t idle_steps = 0;
  {
    LoadYieldScope scope(10000ms);
    auto m = (*backend)->load(*manifest, tmp / "a", opts);
    ASSERT_TRUE(m) << m.error().message();
    idle_steps = scope.steps();
    EXPECT_LT(scope.waited(), 50ms);
  }
  EXPECT_GT(idle_steps, 20u);

  // An inference in flight for 400 ms: the load waits for it.
  {
    LoadYieldScope scope(10000ms);
    auto t0 = Clock::now();
    Busy busy(400ms);
    auto m = (*backend)->load(*manifest, tmp / "a", opts);
    ASSERT_TRUE(m) << m.error().message();
    EXPECT_GE(ms_since(t0), 350);
    EXPECT_GE(scope.waited(), 300ms);
  }
}

}  // namespace
}  // namespace mota::runtime
