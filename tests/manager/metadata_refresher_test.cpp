// MetadataRefresher (mota serve's re-signing thread) on a real repository with a clock the test
// moves: it re-signs a due timestamp by itself, and without the key it logs the condition once
// per role version (a warning, then an error once expired), not at every check.
#include "manager/fleet/metadata_refresher.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "manifest/tuf/metadata.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;
using std::chrono::hours;
using namespace std::chrono_literals;

class RefresherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Settings s;
    s.zstd_level = 3;
    ASSERT_TRUE(Repository::init(dir_, s, clock()).has_value());
  }

  NowFn clock() const {
    return [t = t_] { return *t; };
  }

  std::uint64_t timestamp_version() const {
    auto ts = tuf::parse_timestamp(test::read_file(dir_ / "repo/metadata/timestamp.json"));
    EXPECT_TRUE(ts.has_value());
    return ts ? ts->signed_.version : 0;
  }

  // Polls `pred` until it holds or 10 s pass.
  static bool eventually(const std::function<bool()>& pred) {
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (std::chrono::steady_clock::now() < until) {
      if (pred()) return true;
      std::this_thread::sleep_for(10ms);
    }
    return pred();
  }

  static std::size_t count(const std::string& text, const std::string& needle) {
    std::size_t n = 0;
    for (auto p = text.find(needle); p != std::string::npos; p = text.find(needle, p + 1)) ++n;
    return n;
  }

  test::TempDir tmp_;
  stdfs::path dir_ = tmp_ / "repo";
  std::shared_ptr<TimePoint> t_ = std::make_shared<TimePoint>(now_seconds());
};

TEST(CheckInterval, HalfTheSmallestWindowWithinOneToSixtySeconds) {
  Settings s;
  EXPECT_EQ(check_interval(s), 60s);
  s.expiry.timestamp = 20s;
  EXPECT_EQ(check_interval(s), 5s);
  s.expiry.timestamp = 1s;
  EXPECT_EQ(check_interval(s), 1s);
}

TEST_F(RefresherTest, ReSignsADueTimestampOnce) {
  RefresherOptions o;
  o.interval = 20ms;
  o.now = clock();
  auto r = MetadataRefresher::start(dir_, o);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ((*r)->interval(), 20ms);
  EXPECT_EQ(timestamp_version(), 1u);  // fresh: nothing to do
  *t_ += hours(14);                    // inside the 12 h window of the 1d timestamp
  ASSERT_TRUE(eventually([&] { return timestamp_version() == 2u; }));
  r->reset();  // stops and joins
  // Fresh again: further checks change nothing.
  o.interval = std::chrono::hours(1);  // the test runs the checks itself
  auto again = MetadataRefresher::start(dir_, o);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  const std::string before = test::read_file(dir_ / "repo/metadata/timestamp.json");
  for (int i = 0; i < 5; ++i) (*again)->check();
  EXPECT_EQ(test::read_file(dir_ / "repo/metadata/timestamp.json"), before);
  EXPECT_EQ(timestamp_version(), 2u);
}

TEST_F(RefresherTest, WithoutTheKeyLogsOncePerStateNotPerCheck) {
  stdfs::rename(dir_ / "keys/timestamp.pem", tmp_ / "timestamp.pem");
  RefresherOptions o;
  o.interval = std::chrono::hours(1);  // the test runs every check itself
  o.now = clock();
  ::testing::internal::CaptureStderr();
  auto r = MetadataRefresher::start(dir_, o);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  (*r)->check();
  *t_ += hours(14);
  for (int i = 0; i < 5; ++i) (*r)->check();
  *t_ += hours(11);  // expired
  for (int i = 0; i < 5; ++i) (*r)->check();
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count(log, "WARN timestamp version 1 expires "), 1u) << log;
  EXPECT_EQ(count(log, "ERROR timestamp version 1 expired at "), 1u) << log;
  EXPECT_NE(log.find("is not re-signed here: its key is not on this host (" + dir_.string() +
                     "/keys/timestamp.pem: No such file or directory); devices refuse metadata "
                     "since "),
            std::string::npos)
      << log;
  EXPECT_NE(log.find("run `mota timestamp refresh` or keep the key on this host"),
            std::string::npos)
      << log;
  EXPECT_EQ(log.find("metadata refreshed"), std::string::npos) << log;
  EXPECT_EQ(timestamp_version(), 1u);

  // The key back: the next check renews it, and the condition clears.
  stdfs::rename(tmp_ / "timestamp.pem", dir_ / "keys/timestamp.pem");
  ::testing::internal::CaptureStderr();
  (*r)->check();
  (*r)->check();
  const std::string after = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(count(after, "metadata refreshed: re-signed timestamp version 2"), 1u) << after;
  EXPECT_EQ(after.find("WARN"), std::string::npos) << after;
  EXPECT_EQ(after.find("ERROR"), std::string::npos) << after;
  EXPECT_EQ(timestamp_version(), 2u);
}

TEST_F(RefresherTest, NotARepository) {
  auto r = MetadataRefresher::start(tmp_ / "nothing");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), Errc::not_found);
  EXPECT_NE(r.error().message().find("is not a mota repository"), std::string::npos);
}

}  // namespace
}  // namespace mota::manager
