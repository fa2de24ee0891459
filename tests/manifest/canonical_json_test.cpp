// Tests for manifest/canonical_json.hpp: the OLPC canonical form securesystemslib signs, and the
// strict parser for untrusted JSON.
#include "manifest/canonical_json.hpp"

#include <gtest/gtest.h>

#include <string>

namespace mota {
namespace {

std::string canon(std::string_view text) {
  auto j = parse_json(text);
  EXPECT_TRUE(j) << text << ": " << j.error().message();
  if (!j) return "<parse error>";
  auto c = canonical_json(*j);
  EXPECT_TRUE(c) << text << ": " << c.error().message();
  return c ? *c : "<canonical error>";
}

TEST(CanonicalJson, Scalars) {
  EXPECT_EQ(canon("null"), "null");
  EXPECT_EQ(canon("true"), "true");
  EXPECT_EQ(canon("false"), "false");
  EXPECT_EQ(canon("0"), "0");
  EXPECT_EQ(canon("-0"), "0");
  EXPECT_EQ(canon("-17"), "-17");
  EXPECT_EQ(canon("18446744073709551615"), "18446744073709551615");
  EXPECT_EQ(canon("-9223372036854775808"), "-9223372036854775808");
  EXPECT_EQ(canon(" \n\t{ } "), "{}");
  EXPECT_EQ(canon("[ ]"), "[]");
}

TEST(CanonicalJson, StringsEscapeOnlyQuoteAndBackslash) {
  EXPECT_EQ(canon(R"("a\"b\\c/d")"), R"("a\"b\\c/d")");
  // Control characters are written as raw bytes, exactly as securesystemslib does.
  EXPECT_EQ(canon(R"("\u0001\n\t\r\b\f\u001f")"), std::string("\"\x01\n\t\r\b\f\x1f\""));
  // Non-ASCII stays UTF-8, whether it arrived escaped or raw.
  EXPECT_EQ(canon(R"("\u00e9\u2603\ud83d\ude00")"), "\"\xc3\xa9\xe2\x98\x83\xf0\x9f\x98\x80\"");
  EXPECT_EQ(canon("\"\xc3\xa9\xe2\x98\x83\""), "\"\xc3\xa9\xe2\x98\x83\"");
  // A NUL inside a string is kept.
  EXPECT_EQ(canon(R"("a\u0000b")"), std::string("\"a\0b\"", 5));
  // Strings built in code are written the same way.
  EXPECT_EQ(*canonical_json(Json("tab\there \"q\" \\")), "\"tab\there \\\"q\\\" \\\\\"");
}

TEST(CanonicalJson, KnownDocument) {
  // A TUF-shaped document, canonicalised by hand following securesystemslib's encode_canonical.
  const char* text = R"({
    "signed": {"version": 3, "_type": "targets", "expires": "2030-01-01T00:00:00Z",
               "targets": {"b.bin": {"length": 10, "hashes": {"sha256": "ab"}},
                           "a.bin": {"length": 0, "hashes": {"sha512": "cd", "sha256": "ef"},
                                     "custom": {"x": [true, null, "y"]}}}},
    "signatures": []
  })";
  EXPECT_EQ(canon(text),
            R"({"signatures":[],"signed":{"_type":"targets","expires":"2030-01-01T00:00:00Z",)"
            R"("targets":{"a.bin":{"custom":{"x":[true,null,"y"]},"hashes":{"sha256":"ef",)"
            R"("sha512":"cd"},"length":0},"b.bin":{"hashes":{"sha256":"ab"},"length":10}},)"
            R"("version":3}})");
}

TEST(CanonicalJson, NestedSortingKeepsArrayOrder) {
  EXPECT_EQ(canon(R"({"b":1,"a":{"d":[3,{"z":1,"y":2},1],"c":null}})"),
            R"({"a":{"c":null,"d":[3,{"y":2,"z":1},1]},"b":1})");
}

TEST(CanonicalJson, KeysSortByUtf8Bytes) {
  // Bytes order: "" < "B" < "_" < "a" < "aa" < "z" < U+00E9 < U+FFFF < U+1F600. (UTF-16 order
  // would put U+1F600 before U+FFFF; byte order and code point order agree.)
  EXPECT_EQ(
      canon(R"({"z":0,"\ud83d\ude00":8,"\uffff":7,"\u00e9":6,"aa":4,"a":3,"_":2,"B":1,"":0})"),
      "{\"\":0,\"B\":1,\"_\":2,\"a\":3,\"aa\":4,\"z\":0,\"\xc3\xa9\":6,\"\xef\xbf\xbf\":7,"
      "\"\xf0\x9f\x98\x80\":8}");
}

TEST(CanonicalJson, RoundTripsThroughParse) {
  const char* text = R"({"k":[1,-2,{"\\":"\"","x":false}],"a":"\u00e9"})";
  std::string c = canon(text);
  auto again = parse_json(c);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(*again, *parse_json(text));
  EXPECT_EQ(*canonical_json(*again), c);
}

TEST(CanonicalJson, FloatsAreRejected) {
  for (const char* text :
       {"1.5", "1.0", "1e3", "[1,{\"a\":2.5}]", "-1e300", "18446744073709551616"}) {
    auto j = parse_json(text);
    ASSERT_TRUE(j) << text;
    auto c = canonical_json(*j);
    ASSERT_FALSE(c) << text << " canonicalised to " << *c;
    EXPECT_EQ(c.error().code(), Errc::invalid_argument);
    EXPECT_NE(c.error().message().find("non-integer"), std::string::npos) << c.error().message();
  }
  EXPECT_FALSE(canonical_json(Json(0.25)));
}

TEST(CanonicalJson, BinaryValuesAreRejected) {
  auto c = canonical_json(Json::binary({1, 2, 3}));
  ASSERT_FALSE(c);
  EXPECT_EQ(c.error().code(), Errc::invalid_argument);
}

// ------------------------------------------------------------------------------------------------
// parse_json

TEST(ParseJson, DuplicateKeysAreRejected) {
  auto r = parse_json(R"({"version":1,"version":2})");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::parse);
  EXPECT_NE(r.error().message().find("duplicate object key \"version\""), std::string::npos)
      << r.error().message();
  EXPECT_NE(r.error().message().find("top level"), std::string::npos) << r.error().message();

  auto nested = parse_json(R"({"signed":{"meta":[{},{"a":1,"b":2,"a":3}]}})");
  ASSERT_FALSE(nested);
  EXPECT_EQ(nested.error().code(), Errc::parse);
  EXPECT_NE(nested.error().message().find("/signed/meta/1"), std::string::npos)
      << nested.error().message();

  // The same key in different objects is fine.
  EXPECT_TRUE(parse_json(R"({"a":{"a":1},"b":{"a":2},"c":[{"a":1},{"a":2}]})"));
  // Keys that only differ once unescaped are the same key.
  EXPECT_FALSE(parse_json(R"({"\u0061":1,"a":2})"));
}

TEST(ParseJson, DepthLimit) {
  auto nest = [](int n, const char* open, const char* close) {
    std::string s;
    for (int i = 0; i < n; ++i) s += open;
    s += "1";
    for (int i = 0; i < n; ++i) s += close;
    return s;
  };
  EXPECT_TRUE(parse_json(nest(64, "[", "]")));
  EXPECT_TRUE(parse_json(nest(64, "{\"a\":", "}")));
  for (const std::string& deep : {nest(65, "[", "]"), nest(65, "{\"a\":", "}")}) {
    auto r = parse_json(deep);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().code(), Errc::too_large);
    EXPECT_NE(r.error().message().find("64"), std::string::npos) << r.error().message();
  }
}

TEST(ParseJson, DepthBombFailsFast) {
  // A million opening brackets: rejected at depth 65, without recursion or a huge DOM.
  std::string bomb(1'000'000, '[');
  auto r = parse_json(bomb);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
}

TEST(ParseJson, SizeLimit) {
  std::string doc = R"({"a":"0123456789"})";  // 18 bytes
  EXPECT_TRUE(parse_json(doc, doc.size()));
  auto r = parse_json(doc, doc.size() - 1);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
  EXPECT_NE(r.error().message().find("18 bytes"), std::string::npos) << r.error().message();
  EXPECT_NE(r.error().message().find("17"), std::string::npos) << r.error().message();
}

TEST(ParseJson, MalformedInputReportsPosition) {
  const char* bad[] = {
      "",
      "{",
      "[1,]",
      "{\"a\":1,}",
      "{'a':1}",
      "01",
      "NaN",
      "[1] x",
      "/* comment */ 1",
      "\"\xff\"",     // invalid UTF-8
      "\"\\ud800\"",  // lone surrogate
      "\"a\x01\"",    // raw control character in a string
      "{\"a\" 1}",
      "tru",
      "\"unterminated",
  };
  for (const char* text : bad) {
    auto r = parse_json(text);
    ASSERT_FALSE(r) << "accepted: " << text;
    EXPECT_EQ(r.error().code(), Errc::parse) << text;
    EXPECT_NE(r.error().message().find("line 1, column"), std::string::npos)
        << text << ": " << r.error().message();
  }
  auto multi = parse_json("{\n  \"a\": 1,\n  \"b\": ]\n}");
  ASSERT_FALSE(multi);
  EXPECT_NE(multi.error().message().find("line 3, column"), std::string::npos)
      << multi.error().message();
}

TEST(ParseJson, DecodesEscapesAndKeepsTypes) {
  auto r = parse_json(R"({"s":"\u00e9\n","i":-3,"u":3,"f":0.5,"b":false,"n":null,"a":[]})");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ((*r)["s"], "\xc3\xa9\n");
  EXPECT_TRUE((*r)["i"].is_number_integer());
  EXPECT_TRUE((*r)["u"].is_number_unsigned());
  EXPECT_TRUE((*r)["f"].is_number_float());
  EXPECT_TRUE((*r)["b"].is_boolean());
  EXPECT_TRUE((*r)["n"].is_null());
  EXPECT_TRUE((*r)["a"].is_array());
  EXPECT_EQ(r->size(), 7u);
}

}  // namespace
}  // namespace mota
