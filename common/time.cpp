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

namespace {

bool is_leap_year(int year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

int days_in_month(int year, int month) {
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && is_leap_year(year) ? 29 : kDays[month - 1];
}

}  // namespace

Result<TimePoint> parse_time(std::string_view s) {
  const std::string quoted = "bad timestamp '" + std::string(s) + "'";
  auto bad = [&] { return fail(Errc::parse, quoted + " (want YYYY-MM-DDTHH:MM:SSZ)"); };
  auto impossible = [&](const std::string& why) { return fail(Errc::parse, quoted + ": " + why); };
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
  int year, mon, day, hour, min, sec;
  if (!num(0, 4, year) || !num(5, 2, mon) || !num(8, 2, day) || !num(11, 2, hour) ||
      !num(14, 2, min) || !num(17, 2, sec)) {
    return bad();
  }
  // Every field is checked against the calendar: timegm() would quietly normalise an impossible
  // date (2030-02-31 into March 3), so an expiry would mean a day nobody wrote.
  if (mon < 1 || mon > 12) return impossible("there is no month " + std::to_string(mon));
  if (day < 1 || day > days_in_month(year, mon)) {
    return impossible(std::string(s.substr(0, 7)) + " has no day " + std::to_string(day) +
                      " (it has " + std::to_string(days_in_month(year, mon)) + ")");
  }
  if (hour > 23) return impossible("there is no hour " + std::to_string(hour) + " (00-23)");
  if (min > 59) return impossible("there is no minute " + std::to_string(min) + " (00-59)");
  // POSIX time has no leap seconds, and python-tuf and go-tuf refuse :60 as well.
  if (sec > 59) return impossible("there is no second " + std::to_string(sec) + " (00-59)");
  std::tm tm{};
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
