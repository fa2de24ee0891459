// runtime.toml parsing: every integer key refuses a value of another type with a message naming
// the key, and never converts a float (the toml fuzzer found that toml++'s float-to-integer
// conversion is undefined behaviour for out-of-range floats; UBSan in CI halts on it).
#include "runtime/config.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mota::runtime {
namespace {

TEST(RuntimeConfig, IntegerKeysRefuseFloatsAndStringsByName) {
  for (const char* key :
       {"http_threads", "pool_size", "engine_threads", "warmup_runs", "load_nice",
        "load_idle_escalate_ms", "load_yield_ms", "max_body_bytes", "load_timeout_s"}) {
    for (const char* value : {"488888888888888888888888888888888888888888888888880.0", "-1e300",
                              "2.0", "nan", "inf", "\"4\""}) {
      const std::string text = std::string(key) + " = " + value + "\n";
      auto c = parse_config(text, "runtime.toml");
      ASSERT_FALSE(c.has_value()) << text;
      EXPECT_NE(c.error().message().find(std::string(key) + ": must be an integer"),
                std::string::npos)
          << c.error().message();
      EXPECT_NE(c.error().message().find("runtime.toml"), std::string::npos) << c.error().message();
    }
  }
}

TEST(RuntimeConfig, IntegerKeysTakeIntegersWithinTheirRange) {
  auto c = parse_config("max_body_bytes = 2048\npool_size = 3\n", "runtime.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->server.max_body_bytes, 2048u);
  EXPECT_EQ(c->store.load.pool_size, 3);
  auto big = parse_config("max_body_bytes = 9223372036854775807\n", "runtime.toml");
  ASSERT_FALSE(big.has_value());
  EXPECT_NE(big.error().message().find("max_body_bytes: must be between 1024 and"),
            std::string::npos)
      << big.error().message();
}

// First loads run in a child by default (runtime/store.hpp, isolate_with); the deadline is in
// seconds.
TEST(RuntimeConfig, FirstLoadsAreIsolatedByDefaultWithADeadline) {
  auto c = parse_config("", "runtime.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_TRUE(c->isolate_loads);
  EXPECT_EQ(c->store.load_timeout, std::chrono::seconds(300));
  c = parse_config("isolate_loads = false\nload_timeout_s = 20\n", "runtime.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_FALSE(c->isolate_loads);
  EXPECT_EQ(c->store.load_timeout, std::chrono::seconds(20));
  auto bad = parse_config("isolate_loads = 1\n", "runtime.toml");
  ASSERT_FALSE(bad.has_value());
  EXPECT_NE(bad.error().message().find("isolate_loads: must be true or false"), std::string::npos);
  bad = parse_config("load_timeout_s = 0\n", "runtime.toml");
  ASSERT_FALSE(bad.has_value());
}

}  // namespace
}  // namespace mota::runtime
