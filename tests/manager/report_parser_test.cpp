// parse_report (manager/fleet/report_parser.hpp) against a reference written with nlohmann's DOM:
// the tree-based parser the ingest used before. Both must accept and refuse the same reports, with
// the same status and message, and take apart the same fields; each item's body is kept as the
// text the device sent. The differences: nesting deeper than 64 levels is refused (nlohmann's
// parser has no limit), and so are bytes after a NUL that follows the value (nlohmann stops there).

#include "manager/fleet/report_parser.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "tests/support/report_reference.hpp"

namespace mota::manager {
namespace {

using Json = nlohmann::json;

// Same outcome from both; on success the same fields, the same body value, and the body compact
// and in source order.
void expect_same(const std::string& body, const std::string& id = "dev-1",
                 std::size_t max_items = 50) {
  SCOPED_TRACE(body);
  auto want = test::reference_parse_report(body, id, max_items);
  auto got = parse_report(body, id, max_items);
  ASSERT_EQ(got.has_value(), want.has_value())
      << (got ? "accepted" : got.error().message()) << " vs "
      << (want ? "accepted" : want.error().message());
  if (!want) {
    EXPECT_EQ(got.error().message(), want.error().message());
    EXPECT_EQ(got.error().http_status(), want.error().http_status());
    EXPECT_EQ(got.error().code(), want.error().code());
    return;
  }
  ASSERT_EQ(got->device, want->device);
  ASSERT_EQ(got->items.size(), want->items.size());
  for (std::size_t i = 0; i < want->items.size(); ++i) {
    SCOPED_TRACE("item " + std::to_string(i));
    const ReportItem& g = got->items[i];
    const ReportItem& w = want->items[i];
    EXPECT_EQ(g.seq, w.seq);
    EXPECT_EQ(g.event, w.event);
    EXPECT_EQ(g.created_at, w.created_at);
    EXPECT_EQ(Json::parse(g.body), Json::parse(w.body));
    // Stored as the device sent it: a verbatim piece of the request.
    EXPECT_NE(body.find(g.body), std::string::npos) << g.body;
    EXPECT_EQ(g.model, w.model);
    EXPECT_EQ(g.from, w.from);
    EXPECT_EQ(g.to, w.to);
    EXPECT_EQ(g.state, w.state);
    EXPECT_EQ(g.step, w.step);
    EXPECT_EQ(g.error, w.error);
    EXPECT_EQ(g.channel, w.channel);
    EXPECT_EQ(g.slot, w.slot);
    EXPECT_EQ(g.agent_version, w.agent_version);
    EXPECT_EQ(g.arch, w.arch);
    ASSERT_EQ(g.models.size(), w.models.size());
    for (std::size_t m = 0; m < w.models.size(); ++m) {
      EXPECT_EQ(g.models[m].model, w.models[m].model);
      EXPECT_EQ(g.models[m].version, w.models[m].version);
      EXPECT_EQ(g.models[m].slot, w.models[m].slot);
      EXPECT_EQ(g.models[m].channel, w.models[m].channel);
      EXPECT_EQ(g.models[m].committed, w.models[m].committed);
    }
    EXPECT_EQ(g.labels, w.labels);
    ASSERT_EQ(g.field.size(), w.field.size());
    for (std::size_t f = 0; f < w.field.size(); ++f) {
      EXPECT_EQ(g.field[f].model, w.field[f].model);
      EXPECT_EQ(g.field[f].version, w.field[f].version);
      EXPECT_EQ(g.field[f].load, w.field[f].load);
      EXPECT_EQ(g.field[f].inferences, w.field[f].inferences);
      EXPECT_EQ(g.field[f].errors, w.field[f].errors);
      EXPECT_EQ(g.field[f].latency, w.field[f].latency);
    }
    ASSERT_EQ(g.blocked.has_value(), w.blocked.has_value());
    if (!w.blocked) continue;
    ASSERT_EQ(g.blocked->size(), w.blocked->size());
    for (std::size_t b = 0; b < w.blocked->size(); ++b) {
      EXPECT_EQ((*g.blocked)[b].model, (*w.blocked)[b].model);
      EXPECT_EQ((*g.blocked)[b].version, (*w.blocked)[b].version);
      EXPECT_EQ((*g.blocked)[b].reason, (*w.blocked)[b].reason);
      EXPECT_EQ((*g.blocked)[b].since, (*w.blocked)[b].since);
    }
  }
}

TEST(ReportParser, AgentShapedReportsMatchTheTreeParser) {
  expect_same(R"({"device":"dev-1","batch":[
    {"seq":1,"kind":"event","created_at":"2030-01-01T00:00:00Z","body":{"device":"dev-1",
     "model":"detector","from":"1.0.0","to":"1.1.0","state":"installed","step":"commit",
     "error":"","bytes":48234112,"kind":"delta","saved_bytes":1000,"duration_ms":2000.5,
     "channel":"stable","slot":"b"}},
    {"seq":2,"kind":"heartbeat","created_at":"2030-01-01T00:00:01Z","body":{"agent_version":"0.1.0",
     "arch":"aarch64","slot":"a","ram_total_bytes":4294967296,"load":[0.5,1.0,2],"models":[
       {"model":"detector","slot":"b","version":"1.1.0","committed":true,"channel":"stable"},
       {"model":"classifier","slot":"a","version":"0.2.0","committed":false}],
     "blocked":[{"model":"detector","version":"1.2.0","reason":"install detector 1.2.0: probe: output: scores[0] is 0.5","since":"2030-01-01T00:00:00Z"}]}},
    {"seq":9007199254740993,"kind":"event","created_at":"x","body":{}}]})");
  // An agent's heartbeat with nothing blocked: an empty list, not an absent one.
  auto empty = parse_report(
      R"({"device":"dev-1","batch":[{"seq":1,"kind":"heartbeat","body":{"blocked":[]}},
        {"seq":2,"kind":"heartbeat","body":{}}]})",
      "dev-1", 50);
  ASSERT_TRUE(empty) << empty.error().message();
  ASSERT_TRUE(empty->items[0].blocked.has_value());
  EXPECT_TRUE(empty->items[0].blocked->empty());
  EXPECT_FALSE(empty->items[1].blocked.has_value());
  expect_same(R"({"batch":[],"device":"dev-1","extra":{"a":[1,{"b":null}]}})");
  expect_same(R"( { "device" : "dev-1" , "batch" : [ { "seq" : 3 , "kind" : "heartbeat" ,
      "body" : { "models" : [ ] , "arch" : "x86_64" } } ] } )");
}

TEST(ReportParser, OddButValidShapesMatchTheTreeParser) {
  // Non-string fields count as absent; containers where strings were expected too.
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","created_at":5,"body":{
      "model":7,"from":null,"to":["1.0.0"],"state":{"x":"installed"},"step":true,"error":1.5,
      "channel":false,"slot":7}}]})");
  // A slot of "" (nothing served) is not an absent one; null is.
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":{"slot":""}},
      {"seq":2,"kind":"event","body":{"slot":"a","slot":null}}]})");
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"heartbeat","body":{
      "agent_version":1,"arch":{"a":1},"models":{"model":"x"}}}]})");
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"heartbeat","body":{"models":[
      1,"x",null,[{"model":"nested"}],{"version":"1.0.0"},{"model":"","version":"2"},
      {"model":"m","version":3,"slot":["a"],"committed":"yes","channel":{}},
      {"model":"n","committed":1},{"model":"o","committed":false,"extra":{"committed":true}}]}}]})");
  // Escapes, control characters, non-ASCII text and \u sequences survive the round trip.
  expect_same(
      "{\"device\":\"dev-1\",\"batch\":[{\"seq\":1,\"kind\":\"event\",\"body\":{\"error\":"
      "\"quote \\\" backslash \\\\ nl \\n tab \\t bell \\u0007 del \x7f \\u00e9 \xc3\xa9 "
      "\\ud83d\\ude00 / \\/\",\"model\":\"caf\xc3\xa9\",\"n\":-0.0,\"f\":1e300,\"g\":2.0,"
      "\"h\":-12,\"i\":18446744073709551615,\"j\":1.25e-7}}]}");
  // Duplicate members: the last one counts, as in a DOM (the stored body keeps them all).
  expect_same(R"({"device":"x","device":"dev-1","batch":7,"batch":[{"seq":"1","seq":2,
      "kind":"nope","kind":"event","body":{"model":"a","dup":1},"body":{"model":"b","to":"2.0.0",
      "model":"c","dup":2}}]})");
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"heartbeat","body":{"models":[
      {"model":"a"}],"models":[{"model":"b","model":"c"}],"arch":"x","arch":null,"dup":0}}]})");
  // Block lists: odd entries are left out, a list that is not an array is not reported, the last
  // of two counts, and an event's "blocked" is not a device's.
  expect_same(R"({"device":"dev-1","batch":[{"seq":1,"kind":"heartbeat","body":{"blocked":[
      1,"x",null,[{"model":"nested"}],{"version":"1.0.0"},{"model":"","version":"2"},
      {"model":"m","version":3,"reason":["r"],"since":{}},{"model":"n","reason":"a\nb"},
      {"model":"o","extra":{"model":"p"}}]}},
      {"seq":2,"kind":"heartbeat","body":{"blocked":{"model":"x"}}},
      {"seq":3,"kind":"heartbeat","body":{"blocked":[{"model":"a"}],"blocked":null}},
      {"seq":4,"kind":"heartbeat","body":{"blocked":null,"blocked":[{"model":"b","model":"c"}]}},
      {"seq":5,"kind":"event","body":{"blocked":[{"model":"e"}]}}]})");
  // Nesting inside a body: up to 64 levels in all, as the tree parser; deeper is refused.
  auto nested = [](int levels) {
    std::string deep =
        "{\"device\":\"dev-1\",\"batch\":[{\"seq\":1,\"kind\":\"event\",\"body\":{\"x\":";
    for (int i = 0; i < levels; ++i) deep += i % 2 ? "{\"k\":" : "[";
    deep += "1";
    for (int i = levels - 1; i >= 0; --i) deep += i % 2 ? "}" : "]";
    return deep + "}}]}";
  };
  expect_same(nested(60));
  // nlohmann stops at a NUL byte; the parser, like RFC 8259, allows only whitespace after the
  // value (found by tests/fuzz/report_fuzz.cpp).
  const std::string nul("{\"device\":\"dev-1\",\"batch\":[]}\0{\"x\"", 34);
  ASSERT_TRUE(test::reference_parse_report(nul, "dev-1", 50));
  auto r = parse_report(nul, "dev-1", 50);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "report: body is not a JSON object");
  for (int levels : {61, 200, 100000}) {
    auto r = parse_report(nested(levels), "dev-1", 50);
    ASSERT_FALSE(r) << levels;
    EXPECT_EQ(r.error().http_status(), 400);
    EXPECT_EQ(r.error().message(), "report: JSON nested deeper than 64 levels");
  }
}

TEST(ReportParser, RefusalsMatchTheTreeParserInOrderAndWording) {
  for (
      const std::string body : {
          "",
          "{",
          "{\"device\": ",
          "[]",
          "[1]",
          "7",
          "\"s\"",
          "null",
          "{\"device\":\"dev-1\",\"batch\":[]} trailing",
          "{\"device\":\"dev-1\",\"batch\":[,]}",
          "{\"device\":\"dev-1\",\"batch\":[{\"seq\":1,\"kind\":\"event\",\"body\":{\"a\":\"\xff\"}"
          "}]}",
          "{\"device\":\"dev-1\",\"batch\":[{\"seq\":1e999}]}",
          "{}",
          R"({"device":5,"batch":[]})",
          R"({"device":["dev-1"],"batch":[]})",
          R"({"device":"dev-2","batch":[]})",
          R"({"device":"dev-2"})",
          R"({"device":"dev-1"})",
          R"({"device":"dev-1","batch":{}})",
          R"({"device":"dev-1","batch":"[]"})",
          R"({"device":"dev-1","batch":[1]})",
          R"({"device":"dev-1","batch":[[]]})",
          R"({"device":"dev-1","batch":[{"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":0,"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":-4,"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":1.0,"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":"1","kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":9223372036854775808,"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":{},"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":2,"kind":"event","body":{}},{"seq":2,"kind":"event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"Event","body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":["event"],"body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"body":{}}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"event"}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":[]}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":"{}"}]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":{}},7]})",
          R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","body":{}},{"seq":3,"kind":"x","body":{}}]})",
      }) {
    expect_same(body);
  }
}

TEST(ReportParser, TooManyItemsIsRefusedWithTheCount) {
  std::string body = R"({"device":"dev-1","batch":[)";
  for (int i = 1; i <= 12; ++i) {
    if (i > 1) body += ",";
    body += i == 7 ? "\"junk\""
                   : R"({"seq":)" + std::to_string(i) + R"(,"kind":"event","body":{"x":[1,2]}})";
  }
  body += "]}";
  for (std::size_t max :
       {std::size_t{0}, std::size_t{5}, std::size_t{11}, std::size_t{12}, std::size_t{13}}) {
    expect_same(body, "dev-1", max);
  }
  auto r = parse_report(body, "dev-1", 5);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status(), 413);
  EXPECT_EQ(r.error().message(), "report: 12 items is over the limit of 5");
}

// The finding: one 3.5 MB heartbeat became 180,000 rows and stalled every device's reports. A
// report is bounded in what it can make the writer do: names, errors, models per heartbeat and
// in the whole report; each refusal says which item and what.
TEST(ReportParser, PerReportLimitsRefuseFloodsOfRowsAndHugeFields) {
  auto heartbeat = [](std::int64_t seq, std::size_t models, const std::string& version = "1") {
    Json list = Json::array();
    for (std::size_t i = 0; i < models; ++i) {
      list.push_back({{"model", "m" + std::to_string(i)}, {"version", version}, {"slot", "a"}});
    }
    return Json{{"seq", seq}, {"kind", "heartbeat"}, {"body", {{"models", list}}}};
  };
  auto report = [](const Json& batch) { return Json{{"device", "d"}, {"batch", batch}}.dump(); };
  auto refused = [&](const std::string& body, const std::string& words) {
    expect_same(body, "d", 5000);
    auto r = parse_report(body, "d", 5000);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().http_status(), 413);
    EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
  };
  EXPECT_TRUE(parse_report(report(Json::array({heartbeat(1, kMaxInventory)})), "d", 5000));
  refused(report(Json::array({heartbeat(1, kMaxInventory + 1)})),
          "batch[0].body lists 257 models, over the limit of 256 per heartbeat");
  Json many = Json::array();
  for (int i = 1; i <= 17; ++i) many.push_back(heartbeat(i, 256));
  refused(report(many), "batch[16]: the report's heartbeats list more than 4096 models in all");
  refused(report(Json::array({heartbeat(1, 1, std::string(kMaxReportField + 1, 'v'))})),
          "batch[0].models[] is 257 bytes, over the limit of 256");
  Json ev = {{"seq", 1},
             {"kind", "event"},
             {"body", {{"model", "m"}, {"state", "failed"}, {"error", std::string(9000, 'e')}}}};
  refused(report(Json::array({ev})), "batch[0].error is 9000 bytes, over the limit of 8192");
  ev["body"]["error"] = "short";
  ev["body"]["to"] = std::string(300, 't');
  refused(report(Json::array({ev})), "batch[0].to is 300 bytes");
  // A control character in a name is refused (400); in an error it is kept (shown escaped).
  ev["body"]["to"] = "2.0.0\u001b[2J";
  expect_same(report(Json::array({ev})), "d", 5000);
  auto r = parse_report(report(Json::array({ev})), "d", 5000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status(), 400);
  EXPECT_EQ(r.error().message(), "report: batch[0].to contains a control character");
  ev["body"]["to"] = "2.0.0";
  ev["body"]["error"] = "line 1\nline 2\u001b[31m";
  EXPECT_TRUE(parse_report(report(Json::array({ev})), "d", 5000));
  Json hb_bad = heartbeat(1, 1, "1\n2");
  r = parse_report(report(Json::array({hb_bad})), "d", 5000);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message(), "report: batch[0].models[] contains a control character");
  // A heartbeat's body is not an event's: an event-only field there is not a reason.
  Json hb = heartbeat(1, 1);
  hb["body"]["to"] = std::string(300, 't');
  expect_same(report(Json::array({hb})), "d", 5000);
  EXPECT_TRUE(parse_report(report(Json::array({hb})), "d", 5000));
}

// Labels (common/labels.hpp): kept as an object of strings; a bad one is a 400 naming it, more
// than kMaxLabels a 413; a heartbeat without them (older agents) reports none.
TEST(ReportParser, HeartbeatLabelsAreCheckedAndKept) {
  auto report = [](const Json& labels) {
    Json body = {{"models", Json::array()}};
    if (!labels.is_null()) body["labels"] = labels;
    return Json{{"device", "d"},
                {"batch", Json::array({{{"seq", 1}, {"kind", "heartbeat"}, {"body", body}}})}}
        .dump();
  };
  const Json good = {{"site", "plant-3"}, {"hw", "orin-nano"}, {"mota/arch", "aarch64"}};
  expect_same(report(good), "d");
  auto r = parse_report(report(good), "d", 50);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(r->items[0].labels);
  EXPECT_EQ(*r->items[0].labels,
            (Labels{{"hw", "orin-nano"}, {"mota/arch", "aarch64"}, {"site", "plant-3"}}));
  r = parse_report(report(nullptr), "d", 50);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->items[0].labels) << "no member: nothing reported";
  r = parse_report(report(Json::array({"site"})), "d", 50);
  ASSERT_TRUE(r);
  EXPECT_FALSE(r->items[0].labels) << "not an object: nothing reported";
  expect_same(report(Json::array({"site"})), "d");

  struct Case {
    Json labels;
    int status;
    std::string words;
  };
  Json many = Json::object();
  for (std::size_t i = 0; i <= kMaxLabels; ++i) many["k" + std::to_string(i)] = "v";
  for (const Case& c : {
           Case{{{"site", "plant 3"}}, 400, "label site value \"plant 3\""},
           Case{{{"site", 3}}, 400, "label site value \"\""},
           Case{{{"site", ""}}, 400, "label site value \"\""},
           Case{{{"bad key", "x"}}, 400, "label key \"bad key\""},
           Case{{{"site", "a\u001b[2J"}}, 400, "\\x1b"},
           Case{{{std::string(64, 'k'), "v"}}, 400, "label key"},
           Case{many, 413, "batch[0].labels has 65 labels, over the limit of 64"},
       }) {
    SCOPED_TRACE(c.labels.dump());
    expect_same(report(c.labels), "d");
    r = parse_report(report(c.labels), "d", 50);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().http_status(), c.status);
    EXPECT_NE(r.error().message().find(c.words), std::string::npos) << r.error().message();
  }
}

TEST(ReportParser, HeartbeatFieldHealthIsCheckedAndKept) {
  auto report = [](const Json& entry) {
    Json body = {{"models", Json::array()}, {"field", Json::array({entry})}};
    return Json{{"device", "d"},
                {"batch", Json::array({{{"seq", 1}, {"kind", "heartbeat"}, {"body", body}}})}}
        .dump();
  };
  const Json good = {{"model", "det"},
                     {"version", "1.1.0"},
                     {"load", "ab12/3"},
                     {"inferences", 1200},
                     {"errors", 3},
                     {"latency", Json::array({Json::array({40, 900}), Json::array({41, 300})})}};
  expect_same(report(good), "d");
  auto r = parse_report(report(good), "d", 50);
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_EQ(r->items[0].field.size(), 1u);
  const ReportField& f = r->items[0].field[0];
  EXPECT_EQ(f.model, "det");
  EXPECT_EQ(f.version, "1.1.0");
  EXPECT_EQ(f.load, "ab12/3");
  EXPECT_EQ(f.inferences, 1200u);
  EXPECT_EQ(f.errors, 3u);
  EXPECT_EQ(f.latency,
            (std::vector<std::pair<std::uint64_t, std::uint64_t>>{{40, 900}, {41, 300}}));
  // A member given twice counts as its last value, a bad first one included.
  std::string text = report(good);
  const std::string dup = R"("inferences":-1,"inferences":1200)";
  text.replace(text.find("\"inferences\":1200"), std::string("\"inferences\":1200").size(), dup);
  expect_same(text, "d");
  ASSERT_TRUE(parse_report(text, "d", 50));

  struct Case {
    Json entry;
    std::string words;
  };
  Json many = Json::array();
  for (std::size_t i = 0; i <= kLatencyBuckets; ++i) many.push_back(Json::array({i, 1}));
  auto with = [&](const char* key, Json v) {
    Json e = good;
    e[key] = std::move(v);
    return e;
  };
  for (const Case& c : {
           Case{with("inferences", -1), "inferences is not an integer in 0..2^53"},
           Case{with("inferences", 1.5), "inferences is not an integer in 0..2^53"},
           Case{with("errors", "3"), "errors is not an integer in 0..2^53"},
           Case{with("errors", 9007199254740993ull), "errors is not an integer in 0..2^53"},
           Case{with("latency", Json::object()), kBadLatency},
           Case{with("latency", Json::array({Json::array({1, 2, 3})})), kBadLatency},
           Case{with("latency", Json::array({Json::array({1})})), kBadLatency},
           Case{with("latency", many), kBadLatency},
           Case{with("latency", Json::array({Json::array({94, 1})})), "out of range"},
           Case{with("latency", Json::array({Json::array({5, 1}), Json::array({5, 1})})),
                "does not follow bucket 5"},
           Case{with("latency",
                     Json::array({Json::array({1, 9007199254740992ull}), Json::array({2, 1})})),
                "more than 2^53"},
           Case{with("version", "1.0\n"), "control character"},
       }) {
    SCOPED_TRACE(c.entry.dump());
    expect_same(report(c.entry), "d");
    r = parse_report(report(c.entry), "d", 50);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().http_status(), 400);
    EXPECT_NE(r.error().message().find(c.words), std::string::npos) << r.error().message();
  }
  // More entries than a heartbeat may list.
  Json body = {{"field", Json::array()}};
  for (std::size_t i = 0; i <= kMaxInventory; ++i) {
    Json e = good;
    e["model"] = "m" + std::to_string(i);
    body["field"].push_back(e);
  }
  const std::string big =
      Json{{"device", "d"},
           {"batch", Json::array({{{"seq", 1}, {"kind", "heartbeat"}, {"body", body}}})}}
          .dump();
  expect_same(big, "d");
  r = parse_report(big, "d", 50);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().http_status(), 413);
}

// Random reports built from agent-like pieces and odd ones, compared with the reference.
TEST(ReportParser, RandomReportsMatchTheTreeParser) {
  std::mt19937_64 rng(20261122);
  auto pick = [&](std::initializer_list<Json> xs) {
    auto it = xs.begin();
    std::advance(it, rng() % xs.size());
    return *it;
  };
  auto text = [&]() {
    return pick({"", "1.0.0", "2.3.4-rc.1", "installed", "failed", "rolled_back", "a\"b\\c\n",
                 "\xc3\xa9t\xc3\xa9", "x"});
  };
  auto value = [&]() -> Json {
    return pick({text(), text(), 7, -3, 2.5, true, false, nullptr, Json::array({1, "x"}),
                 Json{{"k", text()}}});
  };
  for (int n = 0; n < 400; ++n) {
    Json batch = Json::array();
    std::int64_t seq = 0;
    const int items = int(rng() % 6);
    for (int i = 0; i < items; ++i) {
      Json item = Json::object();
      seq += rng() % 20 == 0 ? 0 : 1 + std::int64_t(rng() % 3);
      item["seq"] = rng() % 30 == 0 ? value() : Json(seq);
      item["kind"] = rng() % 20 == 0 ? value() : Json(rng() % 2 ? "event" : "heartbeat");
      if (rng() % 4) item["created_at"] = text();
      Json body = Json::object();
      for (const char* k : {"model", "from", "to", "state", "step", "error", "channel", "slot",
                            "agent_version", "arch", "other"}) {
        if (rng() % 3 == 0) continue;
        body[k] = rng() % 5 == 0 ? value() : Json(text());
      }
      if (rng() % 2) {
        Json models = Json::array();
        for (int m = int(rng() % 4); m > 0; --m) {
          Json e = Json::object();
          for (const char* k : {"model", "version", "slot", "channel"}) {
            if (rng() % 4) e[k] = rng() % 6 == 0 ? value() : Json(text());
          }
          if (rng() % 2) e["committed"] = rng() % 4 == 0 ? value() : Json(bool(rng() % 2));
          models.push_back(rng() % 10 == 0 ? value() : e);
        }
        body["models"] = rng() % 10 == 0 ? value() : models;
      }
      if (rng() % 2) {
        Json blocked = Json::array();
        for (int b = int(rng() % 3); b > 0; --b) {
          Json e = Json::object();
          for (const char* k : {"model", "version", "reason", "since"}) {
            if (rng() % 4) e[k] = rng() % 6 == 0 ? value() : Json(text());
          }
          blocked.push_back(rng() % 10 == 0 ? value() : e);
        }
        body["blocked"] = rng() % 10 == 0 ? value() : blocked;
      }
      if (rng() % 3 == 0) {
        Json labels = Json::object();
        for (int l = int(rng() % 3); l > 0; --l) {
          labels[pick({"site", "hw", "mota/arch", "bad key", "x"})] =
              rng() % 8 == 0 ? value() : Json(pick({"plant-3", "orin", "a b", "v"}));
        }
        body["labels"] = rng() % 8 == 0 ? value() : labels;
      }
      if (rng() % 3 == 0) {
        Json field = Json::array();
        for (int f = int(rng() % 3); f > 0; --f) {
          Json e = Json::object();
          for (const char* k : {"model", "version", "load"}) {
            if (rng() % 4) e[k] = rng() % 6 == 0 ? value() : Json(text());
          }
          for (const char* k : {"inferences", "errors"}) {
            if (rng() % 4) e[k] = rng() % 6 == 0 ? value() : Json(rng() % 100000);
          }
          Json latency = Json::array();
          std::uint64_t bucket = rng() % 10;
          for (int b = int(rng() % 4); b > 0; --b) {
            latency.push_back(rng() % 12 == 0 ? value() : Json::array({bucket, rng() % 50}));
            bucket += rng() % 8 == 0 ? 0 : 1 + rng() % 30;
          }
          if (rng() % 4) e["latency"] = rng() % 10 == 0 ? value() : latency;
          field.push_back(rng() % 10 == 0 ? value() : e);
        }
        body["field"] = rng() % 8 == 0 ? value() : field;
      }
      item["body"] = rng() % 25 == 0 ? value() : body;
      batch.push_back(rng() % 40 == 0 ? value() : item);
    }
    Json doc = {{"device", rng() % 30 == 0 ? value() : Json("dev-1")},
                {"batch", rng() % 30 == 0 ? value() : batch}};
    std::string s = doc.dump(rng() % 3 == 0 ? 2 : -1);
    expect_same(s, "dev-1", rng() % 10 == 0 ? 2 : 50);
    if (::testing::Test::HasFailure()) break;
  }
}

// Byte-level mutations of valid reports (flipped, inserted, deleted and duplicated bytes, from a
// set rich in JSON syntax, escapes, UTF-8 lead bytes and digits): both parsers must agree on
// every one, valid or not.
TEST(ReportParser, MutatedReportsMatchTheTreeParser) {
  std::mt19937_64 rng(42);
  const std::string seeds[] = {
      R"({"device":"dev-1","batch":[{"seq":1,"kind":"event","created_at":"t","body":{"model":"m","from":"1.0.0","to":"2.0.0","state":"failed","error":"e\u00e9\n","n":-1.5e3}},{"seq":2,"kind":"heartbeat","body":{"arch":"x","models":[{"model":"m","version":"1","committed":true}],"blocked":[{"model":"m","version":"2","reason":"r","since":"t"}]}}]})",
      "{\"device\":\"dev-1\",\"batch\":[{\"seq\":7,\"kind\":\"event\",\"body\":{\"s\":"
      "\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\\ud83d\\ude00\",\"a\":[true,false,null,0,-0,1e5,0.25]"
      "}}]}",
  };
  const char alphabet[] =
      "{}[]:,\"\\/ubfnrt0123456789-+.eE \n\t\x7f\x80\xbf\xc2\xdf\xe0\xed\xf0\xf4\xff"
      "az";
  int accepted = 0;
  for (int n = 0; n < 20000; ++n) {
    std::string s = seeds[rng() % 2];
    for (int m = 1 + int(rng() % 3); m > 0; --m) {
      const std::size_t at = rng() % s.size();
      const char c = alphabet[rng() % (sizeof alphabet - 1)];
      switch (rng() % 4) {
        case 0:
          s[at] = c;
          break;
        case 1:
          s.insert(s.begin() + std::ptrdiff_t(at), c);
          break;
        case 2:
          s.erase(at, 1 + rng() % 3);
          break;
        default:
          s.insert(at, s.substr(at, 1 + rng() % 8));
          break;
      }
      if (s.empty()) s = "{";
    }
    expect_same(s);
    if (parse_report(s, "dev-1", 50)) ++accepted;
    if (::testing::Test::HasFailure()) break;
  }
  // The mutations must exercise both outcomes, or this test proves nothing.
  EXPECT_GT(accepted, 500);
  EXPECT_LT(accepted, 19500);
}

}  // namespace
}  // namespace mota::manager
