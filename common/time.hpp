#pragma once
// UTC timestamps in the one format TUF metadata uses: "2030-01-01T00:00:00Z".
#include <chrono>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota {

using Clock = std::chrono::system_clock;
using TimePoint = std::chrono::time_point<Clock, std::chrono::seconds>;

inline TimePoint now_seconds() {
  return std::chrono::time_point_cast<std::chrono::seconds>(Clock::now());
}

// Formats as YYYY-MM-DDTHH:MM:SSZ (second precision, UTC).
std::string format_time(Clock::time_point t);
// The same for a parsed timestamp: every time parse_time accepts (up to year 9999) formats, while
// a Clock::time_point (nanoseconds) only reaches the year 2262.
std::string format_time(TimePoint t);
// Parses YYYY-MM-DDTHH:MM:SSZ strictly (the 'Z' is required; no fractions, no offsets). A date
// or time that does not exist (2030-02-31, Feb 29 outside leap years, month 13, hour 24, minute
// or second 60) is Errc::parse with a message saying which field is impossible.
Result<TimePoint> parse_time(std::string_view s);

// Parses a duration such as "1d", "12h", "30m", "45s", "3mo" (30 days), "1y" (365 days), "2w".
Result<std::chrono::seconds> parse_duration(std::string_view s);

}  // namespace mota
