#include "common/time.hpp"

#include <cstdio>
#include <ctime>

namespace mota {

std::string format_time(Clock::time_point t) {
  return format_time(std::chrono::time_point_cast<std::chrono::seconds>(t));
}

std::string format_time(TimePoint t) {
  std::time_t tt = static_cast<std::time_t>(t.time_since_epoch().count());
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  // Four digits for every year parse_time accepts (strftime's %Y writes "625", not "0625").
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

Result<TimePoint> parse_time(std::string_view s) {
  auto bad = [&] {
    return fail(Errc::parse, "bad timestamp '" + std::string(s) + "' (want YYYY-MM-DDTHH:MM:SSZ)");
  };
  if (s.size() != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
      s[16] != ':' || s[19] != 'Z') {
    return bad();
  }
  auto num = [&](std::size_t pos, std::size_t len, int& out) {
    out = 0;
    for (std::size_t i = pos; i < pos + len; ++i) {
      if (s[i] < '0' || s[i] > '9') return false;
      out = out * 10 + (s[i] - '0');
    }
    return true;
  };
  std::tm tm{};
  int year, mon, day, hour, min, sec;
  if (!num(0, 4, year) || !num(5, 2, mon) || !num(8, 2, day) || !num(11, 2, hour) ||
      !num(14, 2, min) || !num(17, 2, sec)) {
    return bad();
  }
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hour > 23 || min > 59 || sec > 60) return bad();
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hour;
  tm.tm_min = min;
  tm.tm_sec = sec;
  std::time_t tt = ::timegm(&tm);
  return TimePoint(std::chrono::seconds(tt));
}

Result<std::chrono::seconds> parse_duration(std::string_view s) {
  std::size_t i = 0;
  long long n = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
    n = n * 10 + (s[i] - '0');
    if (n > (1LL << 40)) return fail(Errc::parse, "duration '" + std::string(s) + "' is too large");
    ++i;
  }
  std::string_view unit = s.substr(i);
  if (i == 0)
    return fail(Errc::parse,
                "bad duration '" + std::string(s) + "' (want e.g. 30s, 12h, 7d, 3mo, 1y)");
  long long mult = 0;
  if (unit == "s")
    mult = 1;
  else if (unit == "m")
    mult = 60;
  else if (unit == "h")
    mult = 3600;
  else if (unit == "d")
    mult = 86400;
  else if (unit == "w")
    mult = 7 * 86400;
  else if (unit == "mo")
    mult = 30 * 86400;
  else if (unit == "y")
    mult = 365 * 86400;
  else
    return fail(Errc::parse,
                "bad duration unit in '" + std::string(s) + "' (use s, m, h, d, w, mo, y)");
  return std::chrono::seconds(n * mult);
}

}  // namespace mota
