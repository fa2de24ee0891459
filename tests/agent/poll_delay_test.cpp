// poll_delay: the daemon's wait between polls, plain and backing off after failures.

#include <gtest/gtest.h>

#include "agent/agent.hpp"

namespace mota::agent {
namespace {

using namespace std::chrono_literals;

TEST(PollDelay, GoodPollWaitsTheIntervalPlusJitter) {
  Config c;
  c.poll_interval = 300s;
  c.poll_jitter = 30000ms;
  std::mt19937_64 rng(1);
  bool varied = false;
  auto first = poll_delay(c, 0, rng);
  for (int i = 0; i < 200; ++i) {
    auto d = poll_delay(c, 0, rng);
    EXPECT_GE(d, 300000ms);
    EXPECT_LE(d, 330000ms);
    varied |= d != first;
  }
  EXPECT_TRUE(varied) << "jitter spreads a fleet's polls";
}

TEST(PollDelay, FailuresBackOffExponentiallyUpToTheCap) {
  Config c;
  c.poll_interval = 60s;
  c.poll_jitter = 0ms;
  std::mt19937_64 rng(2);
  for (unsigned n = 1; n <= 10; ++n) {
    const auto full = std::min<std::chrono::milliseconds>(60000ms * (1 << n), kMaxBackoff);
    for (int i = 0; i < 50; ++i) {
      auto d = poll_delay(c, n, rng);
      EXPECT_GE(d, full / 2) << n;
      EXPECT_LE(d, full) << n;
    }
  }
  // Very many failures stay at the cap (no overflow).
  EXPECT_LE(poll_delay(c, 1000, rng), kMaxBackoff);
  // An interval longer than the cap is never shortened by backing off.
  c.poll_interval = 7200s;
  EXPECT_GE(poll_delay(c, 3, rng), 3600000ms);
  EXPECT_LE(poll_delay(c, 3, rng), 7200000ms);
}

}  // namespace
}  // namespace mota::agent
