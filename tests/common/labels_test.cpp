#include "common/labels.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mota {
namespace {

Labels plant3_orin() {
  return {{"site", "plant-3"}, {"hw", "orin-nano"}, {"mota/arch", "aarch64"}};
}

bool selects(std::string_view selector, const Labels& labels) {
  auto s = Selector::parse(selector);
  EXPECT_TRUE(s) << selector << ": " << (s ? "" : s.error().message());
  return s && s->matches(labels);
}

TEST(Labels, KeysAndValues) {
  for (const char* k : {"site", "hw", "mota/arch", "a", "x.y_z-1/2", "A9"}) {
    EXPECT_TRUE(valid_label_key(k)) << k;
  }
  for (const char* k : {"", "-a", "a-", "/a", "a b", "a=b", "a,b", "é", "a\nb", "a!"}) {
    EXPECT_FALSE(valid_label_key(k)) << k;
  }
  EXPECT_TRUE(valid_label_key(std::string(63, 'k')));
  EXPECT_FALSE(valid_label_key(std::string(64, 'k')));
  for (const char* v : {"plant-3", "1.2.0+git", "a:b", "_x", "-"})
    EXPECT_TRUE(valid_label_value(v));
  for (const char* v : {"", "a b", "a,b", "(x)", "a/b", "a\x1b"}) {
    EXPECT_FALSE(valid_label_value(v)) << v;
  }
  EXPECT_FALSE(valid_label_value(std::string("a\0b", 3)));
  EXPECT_FALSE(valid_label_value(std::string(64, 'v')));
  auto bad = check_label("site", "plant 3");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("label site value \"plant 3\""), std::string::npos)
      << bad.error().message();
  EXPECT_TRUE(check_label("site", "plant-3"));
}

TEST(Labels, MergeLetsTheSecondWin) {
  const Labels m = merge_labels({{"site", "a"}, {"hw", "x"}}, {{"site", "b"}, {"canary", "1"}});
  EXPECT_EQ(m, (Labels{{"site", "b"}, {"hw", "x"}, {"canary", "1"}}));
}

TEST(Selectors, EveryOperator) {
  const Labels l = plant3_orin();
  EXPECT_TRUE(selects("site=plant-3", l));
  EXPECT_TRUE(selects("site==plant-3", l));
  EXPECT_FALSE(selects("site=plant-4", l));
  EXPECT_TRUE(selects("site!=plant-4", l));
  EXPECT_FALSE(selects("site!=plant-3", l));
  EXPECT_TRUE(selects("missing!=x", l));  // absent counts as "not equal"
  EXPECT_TRUE(selects("hw in (orin-nano,rpi5)", l));
  EXPECT_FALSE(selects("hw in (rpi5, xavier)", l));
  EXPECT_FALSE(selects("missing in (x)", l));
  EXPECT_TRUE(selects("hw notin (rpi5)", l));
  EXPECT_FALSE(selects("hw notin (rpi5,orin-nano)", l));
  EXPECT_TRUE(selects("missing notin (x)", l));
  EXPECT_TRUE(selects("site", l));
  EXPECT_FALSE(selects("canary", l));
  EXPECT_TRUE(selects("!canary", l));
  EXPECT_FALSE(selects("!site", l));
  EXPECT_TRUE(selects("mota/arch=aarch64", l));
}

TEST(Selectors, AllRequirementsMustHold) {
  const Labels l = plant3_orin();
  EXPECT_TRUE(selects("site=plant-3,hw in (orin-nano,rpi5),!canary", l));
  EXPECT_TRUE(selects("  site = plant-3 ,  hw  in ( rpi5 , orin-nano ) , ! canary  ", l));
  EXPECT_FALSE(selects("site=plant-3,hw in (orin-nano,rpi5),canary", l));
  Labels canary = l;
  canary["canary"] = "yes";
  EXPECT_FALSE(selects("site=plant-3,hw in (orin-nano,rpi5),!canary", canary));
}

TEST(Selectors, CanonicalTextRoundTrips) {
  auto s = Selector::parse(" site == plant-3 , hw in ( rpi5,orin-nano, rpi5 ) ,!canary,x!=1,y ");
  ASSERT_TRUE(s) << s.error().message();
  EXPECT_EQ(s->text(), "site=plant-3,hw in (orin-nano,rpi5),!canary,x!=1,y");
  auto again = Selector::parse(s->text());
  ASSERT_TRUE(again);
  EXPECT_EQ(again->text(), s->text());
  ASSERT_EQ(s->requirements().size(), 5u);
  EXPECT_EQ(s->requirements()[1].op, Requirement::Op::in);
  EXPECT_EQ(s->requirements()[1].values, (std::vector<std::string>{"orin-nano", "rpi5"}));
}

TEST(Selectors, MalformedOnesSayWhatAndWhere) {
  struct Case {
    std::string text, message;
  };
  for (const Case& c : {
           Case{"", "empty selector"},
           Case{"   ", "empty selector"},
           Case{"site=", "requirement 1 \"site=\" (at the end): expected a label value"},
           Case{"site=a,", "requirement 2"},
           Case{"hw in orin", "expected '(' after in"},
           Case{"hw in (a,b", "expected ',' or ')' in the set"},
           Case{"hw in ()", "expected a label value"},
           Case{"hw like x", "expected =, ==, !=, in or notin after \"hw\""},
           Case{"site=a b", "expected ',' or the end"},
           Case{"-site", "invalid label key \"-site\""},
           Case{"site-=a", "invalid label key \"site-\""},
           Case{"!", "expected a label key"},
           Case{"!a=b", "expected ',' or the end"},
           Case{"a=\x1b[2J", "\\x1b"},
           Case{std::string(4097, 'a'), "longer than 4096 bytes"},
           Case{"site=" + std::string(64, 'v'), "invalid label value"},
       }) {
    auto s = Selector::parse(c.text);
    ASSERT_FALSE(s) << c.text;
    EXPECT_EQ(s.error().code(), Errc::invalid_argument);
    EXPECT_NE(s.error().message().find(c.message), std::string::npos)
        << c.text << " -> " << s.error().message();
  }
  std::string many;
  for (int i = 0; i < 65; ++i) many += (i ? ",k" : "k") + std::to_string(i);
  auto s = Selector::parse(many);
  ASSERT_FALSE(s);
  EXPECT_NE(s.error().message().find("more than 64 requirements"), std::string::npos);
}

}  // namespace
}  // namespace mota
