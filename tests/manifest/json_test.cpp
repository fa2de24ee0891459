// manifest/json.hpp: typed reads of untrusted JSON answer an error naming the field and what it
// got, and never throw (nlohmann's value()/get<>()/at() throw type_error on a wrong type).

#include "manifest/json.hpp"

#include <gtest/gtest.h>

#include <limits>

namespace mota {
namespace {

Json doc() {
  return Json::parse(R"({"seq": 7, "name": "detector", "ok": true, "p99": 1.5, "neg": -3,
                         "big": 18446744073709551615, "nothing": null, "list": [1],
                         "obj": {"a": 1}, "float": 3.0})");
}

TEST(JsonGet, ReadsEachTypeItHolds) {
  const Json j = doc();
  EXPECT_EQ(json_get<std::int64_t>(j, "seq").value(), 7);
  EXPECT_EQ(json_get<std::uint64_t>(j, "seq").value(), 7u);
  EXPECT_EQ(json_get<std::string>(j, "name").value(), "detector");
  EXPECT_EQ(json_get<bool>(j, "ok").value(), true);
  EXPECT_EQ(json_get<double>(j, "p99").value(), 1.5);
  EXPECT_EQ(json_get<double>(j, "seq").value(), 7.0);  // any number is a double
  EXPECT_EQ(json_get<std::int64_t>(j, "neg").value(), -3);
  EXPECT_EQ(json_get<std::uint64_t>(j, "big").value(), std::numeric_limits<std::uint64_t>::max());
  EXPECT_EQ(json_get_object(j, "obj").value(), &j["obj"]);
  EXPECT_EQ(json_get_array(j, "list").value(), &j["list"]);
}

TEST(JsonGet, WrongTypesAreErrorsThatSayWhatAndWhy) {
  const Json j = doc();
  auto expect = [](const auto& r, const std::string& message) {
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::parse);
    EXPECT_EQ(r.error().message(), message);
  };
  expect(json_get<std::int64_t>(j, "name"), "field 'name' must be an integer, got string");
  expect(json_get<std::int64_t>(j, "float"), "field 'float' must be an integer, got number");
  expect(json_get<std::string>(j, "seq"), "field 'seq' must be a string, got integer");
  expect(json_get<bool>(j, "seq"), "field 'seq' must be a boolean, got integer");
  expect(json_get<double>(j, "name"), "field 'name' must be a number, got string");
  expect(json_get<std::uint64_t>(j, "neg"), "field 'neg' must be a non-negative integer, got -3");
  expect(json_get<std::int64_t>(j, "big"),
         "field 'big' must be an integer within int64, got 18446744073709551615");
  expect(json_get<std::string>(j, "absent"), "field 'absent' is missing");
  expect(json_get<std::string>(j, "nothing"), "field 'nothing' must be a string, got null");
  expect(json_get<std::string>(Json::array(), "seq"),
         "expected an object with field 'seq', got array");
  expect(json_get_object(j, "list"), "field 'list' must be an object, got array");
  expect(json_get_array(j, "obj"), "field 'obj' must be an array, got object");
}

TEST(JsonGet, OptionalAndFallbackReads) {
  const Json j = doc();
  EXPECT_EQ(json_get_optional<std::string>(j, "absent").value(), std::nullopt);
  EXPECT_EQ(json_get_optional<std::string>(j, "nothing").value(), std::nullopt);
  EXPECT_EQ(json_get_optional<std::string>(Json(), "x").value(), std::nullopt);
  auto wrong = json_get_optional<std::string>(j, "seq");
  ASSERT_FALSE(wrong);
  EXPECT_EQ(wrong.error().message(), "field 'seq' must be a string, got integer");
  EXPECT_EQ(json_get_or<std::string>(j, "seq", "dflt"), "dflt");
  EXPECT_EQ(json_get_or<std::string>(Json::array(), "seq", "dflt"), "dflt");
  EXPECT_EQ(json_get_or<std::uint64_t>(j, "neg", 9), 9u);
  EXPECT_EQ(json_get_or<std::uint64_t>(j, "seq", 9), 7u);
}

}  // namespace
}  // namespace mota
