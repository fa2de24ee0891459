#include "common/window.hpp"

#include <array>
#include <cctype>

namespace mota {
namespace {

constexpr std::array<std::string_view, 7> kDays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::uint8_t kEveryDay = 0x7f;

std::string_view trim(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

std::optional<int> day_index(std::string_view s) {
  if (s.size() != 3) return std::nullopt;
  for (std::size_t i = 0; i < kDays.size(); ++i) {
    bool same = true;
    for (std::size_t k = 0; k < 3; ++k) {
      same = same && std::tolower(static_cast<unsigned char>(s[k])) ==
                         std::tolower(static_cast<unsigned char>(kDays[i][k]));
    }
    if (same) return int(i);
  }
  return std::nullopt;
}

// "HH:MM" -> minutes; 24:00 only when `end`.
std::optional<int> minute_of(std::string_view s, bool end) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (std::size_t i : {0u, 1u, 3u, 4u}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  const int h = (s[0] - '0') * 10 + (s[1] - '0');
  const int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m > 59) return std::nullopt;
  if (h == 24 && m == 0 && end) return 1440;
  if (h > 23) return std::nullopt;
  return h * 60 + m;
}

std::string two(int v) {
  return std::string(1, char('0' + v / 10)) + char('0' + v % 10);
}

std::string hhmm(int minutes) {
  return two(minutes / 60) + ":" + two(minutes % 60);
}

// Monday = 0 from tm_wday (Sunday = 0).
int monday_index(int tm_wday) {
  return (tm_wday + 6) % 7;
}

bool has_day(std::uint8_t days, int monday_idx) {
  return (days >> ((monday_idx % 7 + 7) % 7)) & 1u;
}

}  // namespace

Result<InstallWindow> InstallWindow::parse(std::string_view text) {
  const std::string quoted = "install window \"" + std::string(text.substr(0, 80)) + "\"";
  auto bad = [&](const std::string& why) {
    return fail(Errc::invalid_argument, quoted + ": " + why);
  };
  if (text.size() > kMaxWindowBytes) {
    return bad("longer than " + std::to_string(kMaxWindowBytes) + " bytes");
  }
  const std::string_view t = trim(text);
  const auto space = t.rfind(' ');
  if (space == std::string_view::npos) {
    return bad("expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 01:00-05:00\"");
  }
  const std::string_view days_text = trim(t.substr(0, space));
  const std::string_view times = t.substr(space + 1);
  InstallWindow w;
  if (days_text == "daily" || days_text == "*") {
    w.days = kEveryDay;
  } else {
    std::size_t pos = 0;
    while (pos <= days_text.size()) {
      const auto comma = days_text.find(',', pos);
      const std::string_view part = trim(days_text.substr(
          pos, comma == std::string_view::npos ? std::string_view::npos : comma - pos));
      const auto dash = part.find('-');
      const auto first = day_index(trim(part.substr(0, dash)));
      const auto last =
          dash == std::string_view::npos ? first : day_index(trim(part.substr(dash + 1)));
      if (!first || !last) {
        return bad("\"" + std::string(part) +
                   "\" is not a day or day range (Mon..Sun, Mon-Fri, daily)");
      }
      for (int d = *first;; d = (d + 1) % 7) {
        w.days |= std::uint8_t(1u << d);
        if (d == *last) break;
      }
      if (comma == std::string_view::npos) break;
      pos = comma + 1;
    }
  }
  const auto dash = times.find('-');
  if (dash == std::string_view::npos) return bad("expected HH:MM-HH:MM after the days");
  const auto start = minute_of(times.substr(0, dash), false);
  const auto end = minute_of(times.substr(dash + 1), true);
  if (!start) return bad("\"" + std::string(times.substr(0, dash)) + "\" is not a time (HH:MM)");
  if (!end) {
    return bad("\"" + std::string(times.substr(dash + 1)) + "\" is not a time (HH:MM, or 24:00)");
  }
  w.start = *start;
  // An end at or before the start ends the next day (22:00-04:00); equal means a whole day.
  w.length = *end > *start ? *end - *start : *end + 1440 - *start;
  if (w.length > 1440) w.length -= 1440;
  return w;
}

std::string InstallWindow::text() const {
  std::string days_text;
  if (days == kEveryDay) {
    days_text = "daily";
  } else {
    // Runs of consecutive days (not wrapping: "Mon,Sat-Sun" stays readable as "Mon,Sat,Sun").
    for (int d = 0; d < 7;) {
      if (!has_day(days, d)) {
        ++d;
        continue;
      }
      int e = d;
      while (e + 1 < 7 && has_day(days, e + 1)) ++e;
      if (!days_text.empty()) days_text += ",";
      days_text += std::string(kDays[std::size_t(d)]);
      if (e == d + 1) days_text += "," + std::string(kDays[std::size_t(e)]);
      if (e > d + 1) days_text += "-" + std::string(kDays[std::size_t(e)]);
      d = e + 1;
    }
  }
  const int end = start + length;
  return days_text + " " + hhmm(start) + "-" + (end == 1440 ? "24:00" : hhmm(end % 1440));
}

Result<WindowSet> WindowSet::parse(const std::vector<std::string>& texts) {
  if (texts.size() > kMaxWindows) {
    return fail(Errc::invalid_argument, "more than " + std::to_string(kMaxWindows) +
                                            " install windows (" + std::to_string(texts.size()) +
                                            ")");
  }
  WindowSet set;
  for (const auto& t : texts) set.windows_.push_back(MOTA_TRY(InstallWindow::parse(t)));
  return set;
}

bool WindowSet::allows(const std::tm& local) const {
  if (windows_.empty()) return true;
  const int day = monday_index(local.tm_wday);
  const int minute = local.tm_hour * 60 + local.tm_min;
  for (const auto& w : windows_) {
    // Opened today, or opened yesterday and runs past midnight.
    if (has_day(w.days, day) && minute >= w.start && minute < w.start + w.length) return true;
    if (has_day(w.days, day - 1) && minute + 1440 < w.start + w.length) return true;
  }
  return false;
}

bool WindowSet::allows(std::time_t t) const {
  if (windows_.empty()) return true;
  std::tm local{};
  if (!localtime_r(&t, &local)) return false;
  return allows(local);
}

std::optional<std::time_t> WindowSet::next_open(std::time_t t) const {
  if (windows_.empty()) return std::nullopt;
  std::tm now{};
  if (!localtime_r(&t, &now)) return std::nullopt;
  std::optional<std::time_t> best;
  for (int ahead = 0; ahead <= 8; ++ahead) {
    for (const auto& w : windows_) {
      std::tm day = now;
      day.tm_mday += ahead;
      day.tm_hour = w.start / 60;
      day.tm_min = w.start % 60;
      day.tm_sec = 0;
      day.tm_isdst = -1;
      const std::time_t open = std::mktime(&day);  // normalises tm_wday
      if (open == std::time_t(-1) || open <= t || !has_day(w.days, monday_index(day.tm_wday))) {
        continue;
      }
      if (!best || open < *best) best = open;
    }
    if (best) break;
  }
  return best;
}

std::string WindowSet::text() const {
  std::string out;
  for (const auto& w : windows_) out += (out.empty() ? "" : ", ") + w.text();
  return out;
}

std::string format_local_minute(std::time_t t) {
  std::tm local{};
  if (!localtime_r(&t, &local)) return "?";
  return std::string(kDays[std::size_t(monday_index(local.tm_wday))]) + " " +
         hhmm(local.tm_hour * 60 + local.tm_min);
}

}  // namespace mota
