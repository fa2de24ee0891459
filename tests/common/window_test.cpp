#include "common/window.hpp"

#include <gtest/gtest.h>

#include <cstdlib>

namespace mota {
namespace {

// A broken-down local time: day 0 = Monday.
std::tm at(int monday_day, int hour, int minute) {
  std::tm t{};
  t.tm_wday = (monday_day + 1) % 7;
  t.tm_hour = hour;
  t.tm_min = minute;
  return t;
}

WindowSet set(std::vector<std::string> texts) {
  auto s = WindowSet::parse(texts);
  EXPECT_TRUE(s) << s.error().message();
  return s ? *s : WindowSet{};
}

TEST(InstallWindow, ParsesDaysTimesAndWrapsPastMidnight) {
  auto w = InstallWindow::parse("Mon-Fri 01:00-05:00");
  ASSERT_TRUE(w) << w.error().message();
  EXPECT_EQ(w->days, 0x1f);
  EXPECT_EQ(w->start, 60);
  EXPECT_EQ(w->length, 240);
  w = InstallWindow::parse("daily 22:00-04:00");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->days, 0x7f);
  EXPECT_EQ(w->length, 360);
  w = InstallWindow::parse("  sat,SUN   00:00-24:00 ");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->days, 0x60);
  EXPECT_EQ(w->length, 1440);
  w = InstallWindow::parse("Fri-Mon 23:30-00:30");  // day ranges wrap past Sunday
  ASSERT_TRUE(w);
  EXPECT_EQ(w->days, 0x71);
  EXPECT_EQ(w->length, 60);
  w = InstallWindow::parse("* 10:00-10:00");  // equal ends: the whole day from 10:00
  ASSERT_TRUE(w);
  EXPECT_EQ(w->length, 1440);
}

TEST(InstallWindow, CanonicalTextRoundTrips) {
  for (const char* text : {"Mon-Fri 01:00-05:00", "daily 22:00-04:00", "Sat,Sun 00:00-24:00",
                           "Mon,Wed,Fri 12:00-13:00", "Mon,Sat,Sun 23:30-00:30", "Tue 00:00-00:01",
                           "daily 10:00-10:00"}) {
    auto w = InstallWindow::parse(text);
    ASSERT_TRUE(w) << text << ": " << w.error().message();
    EXPECT_EQ(w->text(), text);
    EXPECT_EQ(*InstallWindow::parse(w->text()), *w);
  }
  EXPECT_EQ(InstallWindow::parse("* 01:00-02:00")->text(), "daily 01:00-02:00");
  EXPECT_EQ(InstallWindow::parse("Fri-Mon 01:00-02:00")->text(), "Mon,Fri-Sun 01:00-02:00");
}

TEST(InstallWindow, ErrorsSayWhichPartAndWhy) {
  struct Case {
    const char* text;
    const char* why;
  } cases[] = {
      {"", "expected DAYS HH:MM-HH:MM"},
      {"01:00-05:00", "expected DAYS HH:MM-HH:MM"},
      {"Mon-Fry 01:00-05:00", "\"Mon-Fry\" is not a day or day range"},
      {"Mon 25:00-26:00", "\"25:00\" is not a time (HH:MM)"},
      {"Mon 01:00-24:01", "\"24:01\" is not a time (HH:MM, or 24:00)"},
      {"Mon 24:00-01:00", "\"24:00\" is not a time (HH:MM)"},
      {"Mon 1:00-05:00", "\"1:00\" is not a time"},
      {"Mon 01:60-05:00", "\"01:60\" is not a time"},
      {"Mon 01:00", "expected HH:MM-HH:MM after the days"},
      {"Mon,,Tue 01:00-02:00", "\"\" is not a day or day range"},
  };
  for (const auto& c : cases) {
    auto w = InstallWindow::parse(c.text);
    ASSERT_FALSE(w) << c.text;
    EXPECT_EQ(w.error().code(), Errc::invalid_argument);
    EXPECT_NE(w.error().message().find(c.why), std::string::npos)
        << c.text << ": " << w.error().message();
    EXPECT_EQ(w.error().message().rfind("install window \"", 0), 0u) << w.error().message();
  }
  EXPECT_FALSE(InstallWindow::parse(std::string(kMaxWindowBytes + 1, 'M')));
  EXPECT_FALSE(WindowSet::parse(std::vector<std::string>(kMaxWindows + 1, "daily 01:00-02:00")));
  EXPECT_TRUE(WindowSet::parse(std::vector<std::string>(kMaxWindows, "daily 01:00-02:00")));
}

TEST(WindowSet, AllowsInsideAnyWindowIncludingPastMidnight) {
  const WindowSet nights = set({"Mon-Fri 22:00-04:00"});
  EXPECT_TRUE(nights.allows(at(0, 22, 0)));    // Monday 22:00 opens
  EXPECT_TRUE(nights.allows(at(1, 3, 59)));    // Tuesday early: Monday's window
  EXPECT_FALSE(nights.allows(at(1, 4, 0)));    // the end is exclusive
  EXPECT_FALSE(nights.allows(at(0, 3, 0)));    // Monday early: Sunday opened none
  EXPECT_TRUE(nights.allows(at(5, 2, 0)));     // Saturday early: Friday's window
  EXPECT_FALSE(nights.allows(at(5, 22, 30)));  // Saturday night: none
  EXPECT_FALSE(nights.allows(at(2, 12, 0)));
  const WindowSet two = set({"Sat,Sun 00:00-24:00", "Wed 12:00-13:00"});
  EXPECT_TRUE(two.allows(at(6, 23, 59)));
  EXPECT_TRUE(two.allows(at(2, 12, 30)));
  EXPECT_FALSE(two.allows(at(2, 13, 0)));
  EXPECT_FALSE(two.allows(at(0, 0, 0)));  // Monday 00:00: Sunday's window ended at 24:00
  EXPECT_TRUE(WindowSet{}.allows(at(3, 3, 3)));
}

TEST(WindowSet, NextOpeningIsInLocalTime) {
  setenv("TZ", "UTC", 1);
  tzset();
  const WindowSet w = set({"Mon-Fri 01:00-05:00"});
  // 2026-12-05 is a Saturday; 12:00 UTC. The next opening is Monday 2026-12-07 01:00.
  const std::time_t sat_noon = 1796472000;
  ASSERT_FALSE(w.allows(sat_noon));
  auto next = w.next_open(sat_noon);
  ASSERT_TRUE(next);
  EXPECT_EQ(*next, 1796472000 + 37 * 3600);
  EXPECT_EQ(format_local_minute(*next), "Mon 01:00");
  EXPECT_TRUE(w.allows(*next));
  EXPECT_FALSE(w.allows(*next - 60));
  EXPECT_FALSE(WindowSet{}.next_open(sat_noon));
}

}  // namespace
}  // namespace mota
