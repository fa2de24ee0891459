#include "manifest/channel.hpp"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace mota {
namespace {

const char* kValid = R"({"model": "det", "channel": "stable", "version": "1.2.0",
  "rollout": {"percent": 25, "salt": "0123456789abcdef", "fallback_version": "1.1.0"},
  "min_version": "1.0.0", "allow_downgrade": false, "updated": "2026-11-21T10:00:00Z"})";

TEST(Channel, ParsesValid) {
  auto c = Channel::parse(kValid);
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->model, "det");
  EXPECT_EQ(c->channel, "stable");
  EXPECT_EQ(c->version, "1.2.0");
  EXPECT_EQ(c->rollout.percent, 25u);
  EXPECT_EQ(c->rollout.salt, "0123456789abcdef");
  EXPECT_EQ(c->rollout.fallback_version, "1.1.0");
  EXPECT_EQ(c->min_version, "1.0.0");
  EXPECT_FALSE(c->allow_downgrade);
  EXPECT_EQ(c->updated, "2026-11-21T10:00:00Z");
}

TEST(Channel, RoundTripsThroughSerialize) {
  auto c = Channel::parse(kValid);
  ASSERT_TRUE(c.has_value());
  auto again = Channel::parse(c->serialize());
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(again->to_json(), c->to_json());
  EXPECT_EQ(again->serialize(), c->serialize());
}

TEST(Channel, RolloutAbsentMeansEveryone) {
  auto c = Channel::parse(
      R"({"model":"det","channel":"beta","version":"2.0.0","updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->rollout.percent, 100u);
  EXPECT_EQ(wanted_version(*c, "any-device", {}), "2.0.0");
}

// Found by the channel fuzzer: a channel without "rollout" was written back with
// "rollout": {"percent": 100, "salt": ""}, which its own parser refuses (salt must be 16 hex
// digits). An absent rollout stays absent.
TEST(Channel, RolloutAbsentRoundTripsThroughSerialize) {
  auto c = Channel::parse(
      R"({"model":"det","channel":"beta","version":"2.0.0","updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_FALSE(c->to_json().contains("rollout"));
  auto again = Channel::parse(c->serialize());
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(again->serialize(), c->serialize());
  EXPECT_EQ(wanted_version(*again, "any-device", {}), "2.0.0");
}

TEST(Channel, UnknownFieldsIgnored) {
  auto c = Channel::parse(
      R"({"model":"det","channel":"beta","version":"2.0.0","updated":"2026-01-01T00:00:00Z",
          "future_field": {"x": 1}})");
  ASSERT_TRUE(c.has_value()) << c.error().message();
}

struct BadCase {
  std::string json;
  std::string expected;  // substring of the error message
};

TEST(Channel, ParseErrorsNameTheField) {
  const std::string u = R"("updated":"2026-01-01T00:00:00Z")";
  const std::vector<BadCase> cases = {
      {"", "channel"},
      {"[1,2]", "not a JSON object"},
      {"{\"channel\":\"s\",\"version\":\"1.0.0\"," + u + "}", "model: missing"},
      {"{\"model\":\"Bad Name\",\"channel\":\"s\",\"version\":\"1.0.0\"," + u + "}",
       "model: 'Bad Name' is not a valid model name"},
      {"{\"model\":\"m\",\"version\":\"1.0.0\"," + u + "}", "channel: missing"},
      {"{\"model\":\"m\",\"channel\":\"../x\",\"version\":\"1.0.0\"," + u + "}",
       "not a valid channel name"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"one\"," + u + "}",
       "version: 'one' is not a semantic version"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":7," + u + "}", "version: not a string"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\"}", "updated: missing"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"updated\":\"yesterday\"}",
       "updated: 'yesterday' is not"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":5," + u + "}",
       "rollout: not an object"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"salt\":"
       "\"0123456789abcdef\"}," +
           u + "}",
       "rollout.percent: missing"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":120,"
       "\"salt\":\"0123456789abcdef\"}," +
           u + "}",
       "rollout.percent: 120 is not an integer in 0..100"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":12.5,"
       "\"salt\":\"0123456789abcdef\"}," +
           u + "}",
       "rollout.percent: 12.5 is not an integer"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":-1,"
       "\"salt\":\"0123456789abcdef\"}," +
           u + "}",
       "rollout.percent: -1 is not an integer"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":10}," +
           u + "}",
       "rollout.salt: missing"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":10,"
       "\"salt\":\"XYZ\"}," +
           u + "}",
       "rollout.salt: 'XYZ' is not 16 lower-case hex digits"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":10,"
       "\"salt\":\"0123456789abcdef\",\"fallback_version\":\"x\"}," +
           u + "}",
       "rollout.fallback_version: 'x' is not a semantic version"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"rollout\":{\"percent\":100,"
       "\"salt\":\"0123456789abcdef\",\"fallback_version\":\"0.9.0\"}," +
           u + "}",
       "must be absent when percent is 100"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"min_version\":\"2.0.0\"," + u +
           "}",
       "version: 1.0.0 is below min_version 2.0.0"},
      {"{\"model\":\"m\",\"channel\":\"s\",\"version\":\"1.0.0\",\"allow_downgrade\":\"yes\"," + u +
           "}",
       "allow_downgrade: not a boolean"},
      {"{\"model\":\"m\",\"model\":\"n\",\"channel\":\"s\",\"version\":\"1.0.0\"," + u + "}",
       "channel"},
  };
  for (const auto& c : cases) {
    auto r = Channel::parse(c.json);
    ASSERT_FALSE(r.has_value()) << "accepted: " << c.json;
    EXPECT_EQ(r.error().code(), Errc::parse) << c.json;
    EXPECT_NE(r.error().message().find(c.expected), std::string::npos)
        << "message '" << r.error().message() << "' lacks '" << c.expected << "'";
  }
}

// Targeting (manifest/channel.hpp "targeted"): devices whose labels match get the targeted
// version, within its percentage; the others, and agents that ignore the section, follow the rest.
TEST(Channel, TargetedVersionGoesOnlyToMatchingDevices) {
  auto c = Channel::parse(R"({"model":"det","channel":"stable","version":"1.0.0",
    "targeted":{"select":" site = plant-3 , hw in (rpi5, orin-nano) ","version":"2.0.0",
                "percent":100,"salt":"0123456789abcdef"},
    "updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(c) << c.error().message();
  ASSERT_TRUE(c->targeted);
  EXPECT_EQ(c->targeted->select, "site=plant-3,hw in (orin-nano,rpi5)") << "canonical";
  const Labels in = {{"site", "plant-3"}, {"hw", "rpi5"}};
  const Labels out = {{"site", "plant-4"}, {"hw", "rpi5"}};
  EXPECT_EQ(wanted_version(*c, "d1", in), "2.0.0");
  EXPECT_TRUE(in_target(*c, "d1", in));
  EXPECT_EQ(wanted_version(*c, "d1", out), "1.0.0");
  EXPECT_EQ(wanted_version(*c, "d1", {}), "1.0.0");
  EXPECT_FALSE(in_target(*c, "d1", {}));
  auto again = Channel::parse(c->serialize());
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->serialize(), c->serialize());
  EXPECT_EQ(again->to_json()["targeted"]["select"], "site=plant-3,hw in (orin-nano,rpi5)");

  // Within the target, the percentage samples by the target's salt; monotone as it grows.
  Channel t = *c;
  int taken = 0;
  for (int i = 0; i < 2000; ++i) {
    t.targeted->percent = 30;
    const std::string d = "dev-" + std::to_string(i);
    const bool at30 = wanted_version(t, d, in) == "2.0.0";
    taken += at30;
    EXPECT_EQ(at30, rollout_bucket(t.targeted->salt, d) < 3000) << d;
    t.targeted->percent = 60;
    if (at30) {
      EXPECT_EQ(wanted_version(t, d, in), "2.0.0") << d;
    }
    EXPECT_EQ(wanted_version(t, d, out), "1.0.0") << d;
  }
  EXPECT_GT(taken, 450);
  EXPECT_LT(taken, 750);
  // The target's devices outside the percentage keep what the target ran (its fallback).
  t.targeted->percent = 30;
  t.targeted->fallback_version = "1.5.0";
  for (int i = 0; i < 200; ++i) {
    const std::string d = "dev-" + std::to_string(i);
    const bool sampled = rollout_bucket(t.targeted->salt, d) < 3000;
    EXPECT_EQ(wanted_version(t, d, in), sampled ? "2.0.0" : "1.5.0") << d;
    EXPECT_EQ(wanted_version(t, d, out), "1.0.0") << d;
  }
  auto fb = Channel::parse(t.serialize());
  ASSERT_TRUE(fb) << fb.error().message();
  EXPECT_EQ(fb->targeted->fallback_version, "1.5.0");

  // A first release: the rest of the file offers the version to 0%, so devices outside the
  // target (and agents before targeting) want nothing.
  auto first = Channel::parse(R"({"model":"det","channel":"stable","version":"2.0.0",
    "rollout":{"percent":0,"salt":"0123456789abcdef"},
    "targeted":{"select":"site=plant-3","version":"2.0.0","percent":100,"salt":"0123456789abcdef"},
    "updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(first) << first.error().message();
  EXPECT_EQ(wanted_version(*first, "d1", in), "2.0.0");
  EXPECT_EQ(wanted_version(*first, "d1", out), "");
}

TEST(Channel, TargetedSectionErrorsNameTheField) {
  auto parse = [](const std::string& targeted, const std::string& extra = "") {
    return Channel::parse(R"({"model":"m","channel":"s","version":"1.0.0","targeted":)" + targeted +
                          extra + R"(,"updated":"2026-01-01T00:00:00Z"})");
  };
  const std::string salt = R"("salt":"0123456789abcdef")";
  for (const auto& [targeted, words] : std::vector<std::pair<std::string, std::string>>{
           {"5", "targeted: not an object"},
           {"{\"version\":\"2.0.0\",\"percent\":10," + salt + "}", "targeted.select: missing"},
           {"{\"select\":\"site=\",\"version\":\"2.0.0\",\"percent\":10," + salt + "}",
            "targeted.select: requirement 1"},
           {"{\"select\":\"\",\"version\":\"2.0.0\",\"percent\":10," + salt + "}",
            "targeted.select: empty selector"},
           {"{\"select\":\"a\",\"version\":\"two\",\"percent\":10," + salt + "}",
            "targeted.version: 'two' is not a semantic version"},
           {"{\"select\":\"a\",\"version\":\"2.0.0\"," + salt + "}", "targeted.percent: missing"},
           {"{\"select\":\"a\",\"version\":\"2.0.0\",\"percent\":101," + salt + "}",
            "targeted.percent: 101 is not an integer in 0..100"},
           {"{\"select\":\"a\",\"version\":\"2.0.0\",\"percent\":10,\"salt\":\"x\"}",
            "targeted.salt: 'x' is not 16"},
           {"{\"select\":\"a\",\"version\":\"2.0.0\",\"percent\":100," + salt +
                ",\"fallback_version\":\"1.0.0\"}",
            "targeted.fallback_version: must be absent when percent is 100"},
       }) {
    auto r = parse(targeted);
    ASSERT_FALSE(r) << targeted;
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  }
  auto below = parse("{\"select\":\"a\",\"version\":\"0.5.0\",\"percent\":10," + salt + "}",
                     R"(,"min_version":"1.0.0")");
  ASSERT_FALSE(below);
  EXPECT_NE(below.error().message().find("targeted.version: 0.5.0 is below min_version 1.0.0"),
            std::string::npos)
      << below.error().message();
}

TEST(Channel, TargetPath) {
  EXPECT_EQ(channel_target_path("stable", "det"), "channels/stable/det.json");
}

TEST(Rollout, BucketIsDeterministicAndInRange) {
  EXPECT_EQ(rollout_bucket("0123456789abcdef", "dev-1"),
            rollout_bucket("0123456789abcdef", "dev-1"));
  for (int i = 0; i < 1000; ++i) {
    EXPECT_LT(rollout_bucket("0123456789abcdef", "dev-" + std::to_string(i)), 10000u);
  }
  // The salt matters: a different salt reorders devices.
  int same = 0;
  for (int i = 0; i < 100; ++i) {
    const std::string d = "dev-" + std::to_string(i);
    same += rollout_bucket("0123456789abcdef", d) == rollout_bucket("fedcba9876543210", d);
  }
  EXPECT_LT(same, 5);
}

TEST(Rollout, BucketMatchesDefinition) {
  // Pinned values (computed independently with Python's hashlib): agents and the manager must
  // agree on the formula forever, so a change to it has to break this test.
  EXPECT_EQ(rollout_bucket("s", "d"), 9410u);
  EXPECT_EQ(rollout_bucket("0123456789abcdef", "device-42"), 4941u);
}

TEST(Rollout, RoughlyUniform) {
  // 10,000 devices: each tenth of the bucket space holds 10% +- 2%.
  std::vector<int> decile(10, 0);
  for (int i = 0; i < 10000; ++i) {
    ++decile[rollout_bucket("a1b2c3d4e5f60718", "device-" + std::to_string(i)) / 1000];
  }
  for (int d = 0; d < 10; ++d) {
    EXPECT_GT(decile[d], 800) << "decile " << d;
    EXPECT_LT(decile[d], 1200) << "decile " << d;
  }
  // And each percentage selects about that share.
  Channel c;
  c.version = "2.0.0";
  c.rollout.salt = "a1b2c3d4e5f60718";
  c.rollout.fallback_version = "1.0.0";
  for (unsigned pct : {1u, 5u, 25u, 50u, 90u}) {
    c.rollout.percent = pct;
    int in = 0;
    for (int i = 0; i < 10000; ++i)
      in += wanted_version(c, "device-" + std::to_string(i), {}) == "2.0.0";
    EXPECT_NEAR(in, int(pct) * 100, 200) << pct << "%";
  }
}

TEST(Rollout, MonotoneInPercent) {
  Channel c;
  c.version = "2.0.0";
  c.rollout.salt = "00ff00ff00ff00ff";
  c.rollout.fallback_version = "1.0.0";
  int in5 = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string d = "device-" + std::to_string(i);
    c.rollout.percent = 5;
    if (wanted_version(c, d, {}) != "2.0.0") continue;
    ++in5;
    for (unsigned pct : {6u, 25u, 50u, 100u}) {
      c.rollout.percent = pct;
      EXPECT_EQ(wanted_version(c, d, {}), "2.0.0") << d << " left the rollout at " << pct << "%";
    }
  }
  EXPECT_GT(in5, 300);
}

TEST(Rollout, EdgesZeroAndHundred) {
  Channel c;
  c.version = "2.0.0";
  c.rollout.salt = "00ff00ff00ff00ff";
  c.rollout.fallback_version = "1.0.0";
  c.rollout.percent = 0;
  for (int i = 0; i < 500; ++i) EXPECT_EQ(wanted_version(c, "d" + std::to_string(i), {}), "1.0.0");
  c.rollout.percent = 100;
  for (int i = 0; i < 500; ++i) EXPECT_EQ(wanted_version(c, "d" + std::to_string(i), {}), "2.0.0");
  // A first rollout without fallback: devices outside want nothing.
  c.rollout.percent = 0;
  c.rollout.fallback_version.clear();
  EXPECT_EQ(wanted_version(c, "d1", {}), "");
}

// Paced rollouts publish shares finer than 1% ("bp"); the file stays readable by agents from
// before "bp", which read the percentage rounded down: never a larger share than the others get.
TEST(Rollout, BasisPointSharesAndOlderAgentsNeverJoinEarly) {
  auto c = Channel::parse(R"({"model":"det","channel":"stable","version":"2.0.0",
    "rollout":{"percent":3,"bp":347,"salt":"0123456789abcdef","fallback_version":"1.0.0"},
    "updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(c) << c.error().message();
  EXPECT_EQ(c->rollout.share_bp(), 347u);
  EXPECT_EQ(Channel::parse(c->serialize())->to_json(), c->to_json());
  Channel old_agent = *c;  // what an agent that ignores "bp" sees
  old_agent.rollout.bp.reset();
  int in_new = 0, in_old = 0;
  for (int i = 0; i < 20000; ++i) {
    const std::string d = "device-" + std::to_string(i);
    const unsigned bucket = rollout_bucket(c->rollout.salt, d);
    const bool n = wanted_version(*c, d, {}) == "2.0.0";
    const bool o = wanted_version(old_agent, d, {}) == "2.0.0";
    EXPECT_EQ(n, bucket < 347) << d;
    EXPECT_TRUE(!o || n) << d << " joins earlier on an older agent";
    in_new += n;
    in_old += o;
  }
  EXPECT_GT(in_new, in_old);
  // Whole percentages are written without "bp": files without pacing keep their bytes.
  Share s;
  s.set_share_bp(2500);
  EXPECT_FALSE(s.bp);
  EXPECT_EQ(s.percent, 25u);
  s.set_share_bp(2501);
  EXPECT_EQ(s.bp, 2501u);
  EXPECT_EQ(s.percent, 25u);
  // The same in the targeted section.
  auto t = Channel::parse(R"({"model":"det","channel":"stable","version":"1.0.0",
    "targeted":{"select":"site=a","version":"2.0.0","percent":0,"bp":12,"salt":"0123456789abcdef",
    "fallback_version":"1.0.0"},"updated":"2026-01-01T00:00:00Z"})");
  ASSERT_TRUE(t) << t.error().message();
  EXPECT_EQ(t->targeted->share_bp(), 12u);
  EXPECT_EQ(Channel::parse(t->serialize())->serialize(), t->serialize());
}

TEST(Rollout, BasisPointErrorsNameTheField) {
  const std::string head = R"({"model":"det","channel":"stable","version":"2.0.0","rollout":{)";
  const std::string tail = R"(,"salt":"0123456789abcdef"},"updated":"2026-01-01T00:00:00Z"})";
  struct Case {
    const char* share;
    const char* message;
  } cases[] = {
      {R"("percent":3,"bp":447)", "rollout.bp: 447 basis points do not round down to percent 3"},
      {R"("percent":3,"bp":10001)", "rollout.bp: 10001 is not an integer in 0..10000"},
      {R"("percent":3,"bp":-1)", "rollout.bp: -1 is not an integer in 0..10000"},
      {R"("percent":3,"bp":"347")", "rollout.bp: \"347\" is not an integer in 0..10000"},
      {R"("percent":3,"bp":3.5)", "rollout.bp: 3.5 is not an integer in 0..10000"},
  };
  for (const auto& k : cases) {
    auto c = Channel::parse(head + k.share + tail);
    ASSERT_FALSE(c) << k.share;
    EXPECT_EQ(c.error().message(), std::string("channel: ") + k.message);
  }
}

}  // namespace
}  // namespace mota
