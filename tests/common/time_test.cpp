// parse_time / format_time (common/time.hpp): the calendar is checked, not normalised.

#include "common/time.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace mota {
namespace {

TEST(ParseTime, RealDatesRoundTrip) {
  for (const char* s : {"2030-01-02T03:04:05Z", "2028-02-29T23:59:59Z", "2000-02-29T00:00:00Z",
                        "2030-04-30T12:00:00Z", "2030-12-31T23:59:59Z", "1970-01-01T00:00:00Z"}) {
    auto t = parse_time(s);
    ASSERT_TRUE(t) << s << ": " << t.error().message();
    EXPECT_EQ(format_time(*t), s);
  }
  EXPECT_EQ(parse_time("1970-01-02T00:00:00Z")->time_since_epoch().count(), 86400);
}

TEST(ParseTime, DatesThatDoNotExistAreRefused) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"2030-02-31T00:00:00Z", "2030-02 has no day 31 (it has 28)"},
      {"2030-02-30T00:00:00Z", "2030-02 has no day 30 (it has 28)"},
      {"2030-02-29T00:00:00Z", "2030-02 has no day 29 (it has 28)"},  // not a leap year
      {"2100-02-29T00:00:00Z", "2100-02 has no day 29 (it has 28)"},  // century, not leap
      {"2028-02-30T00:00:00Z", "2028-02 has no day 30 (it has 29)"},
      {"2030-04-31T00:00:00Z", "2030-04 has no day 31 (it has 30)"},
      {"2030-06-31T00:00:00Z", "2030-06 has no day 31 (it has 30)"},
      {"2030-09-31T00:00:00Z", "2030-09 has no day 31 (it has 30)"},
      {"2030-11-31T00:00:00Z", "2030-11 has no day 31 (it has 30)"},
      {"2030-01-32T00:00:00Z", "2030-01 has no day 32 (it has 31)"},
      {"2030-01-00T00:00:00Z", "2030-01 has no day 0 (it has 31)"},
      {"2030-13-01T00:00:00Z", "there is no month 13"},
      {"2030-00-01T00:00:00Z", "there is no month 0"},
      {"2030-01-01T24:00:00Z", "there is no hour 24 (00-23)"},
      {"2030-01-01T23:60:00Z", "there is no minute 60 (00-59)"},
      {"2030-01-01T23:59:60Z", "there is no second 60 (00-59)"},
      {"2030-01-01T23:59:99Z", "there is no second 99 (00-59)"},
  };
  for (const auto& [s, why] : cases) {
    auto t = parse_time(s);
    ASSERT_FALSE(t) << s << " was accepted as " << format_time(*t);
    EXPECT_EQ(t.error().code(), Errc::parse) << s;
    EXPECT_EQ(t.error().message(), "bad timestamp '" + s + "': " + why);
  }
}

TEST(ParseTime, MalformedTextIsRefused) {
  for (const char* s : {"2030-01-02T03:04:05", "2030-01-02 03:04:05Z", "2030-01-02T03:04:05+00:00",
                        "2030-01-02T03:04:05.5Z", "2030-1-02T03:04:05Z", "203a-01-02T03:04:05Z",
                        "2030-01-02T03:04:-5Z", ""}) {
    auto t = parse_time(s);
    ASSERT_FALSE(t) << s;
    EXPECT_EQ(t.error().code(), Errc::parse);
    EXPECT_EQ(t.error().message(),
              "bad timestamp '" + std::string(s) + "' (want YYYY-MM-DDTHH:MM:SSZ)");
  }
}

}  // namespace
}  // namespace mota
