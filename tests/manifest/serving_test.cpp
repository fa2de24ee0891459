// The serving manifest (manifest/serving.hpp): what the agent writes and the runtime reads.
#include "manifest/serving.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <functional>

#include "manifest/canonical_json.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

ServingManifest sample() {
  ServingManifest m;
  m.models.push_back({"zeta", {"/var/lib/mota/models/zeta/a", "1.0.0"}, std::nullopt});
  m.models.push_back({"face",
                      {"/var/lib/mota/models/face/b", "2.0.0"},
                      ServingSlot{"/var/lib/mota/models/face/a", "1.0.0"}});
  return m;
}

TEST(ServingManifest, RoundTripsSortedAndDeterministic) {
  const std::string text = sample().serialize();
  auto back = ServingManifest::parse(text);
  ASSERT_TRUE(back) << back.error().message();
  ASSERT_EQ(back->models.size(), 2u);
  EXPECT_EQ(back->models[0].name, "face");  // sorted by name
  EXPECT_EQ(back->models[0].committed.slot, "/var/lib/mota/models/face/b");
  ASSERT_TRUE(back->models[0].fallback);
  EXPECT_EQ(back->models[0].fallback->version, "1.0.0");
  EXPECT_FALSE(back->models[1].fallback);
  EXPECT_EQ(back->serialize(), text);
  EXPECT_NE(back->find("zeta"), nullptr);
  EXPECT_EQ(back->find("nope"), nullptr);
}

TEST(ServingManifest, DamagedFilesAreRefusedNamingTheField) {
  const Json good = Json::parse(sample().serialize());
  struct Case {
    const char* what;
    std::function<void(Json&)> edit;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"format", [](Json& j) { j["format"] = 2; }, "format"},
      {"models", [](Json& j) { j.erase("models"); }, "models"},
      {"entry", [](Json& j) { j["models"][0] = 5; }, "models[0]: not an object"},
      {"name", [](Json& j) { j["models"][0]["name"] = "../x"; }, "models[0].name"},
      {"repeat", [](Json& j) { j["models"][1]["name"] = "face"; }, "'face' repeated"},
      {"relative", [](Json& j) { j["models"][0]["slot"] = "models/face/b"; }, "not absolute"},
      {"version", [](Json& j) { j["models"][0]["version"] = "two"; }, "semantic version"},
      {"fallback", [](Json& j) { j["models"][0]["fallback"] = Json::object(); },
       "models[0].fallback.slot"},
  };
  for (const auto& c : cases) {
    Json j = good;
    c.edit(j);
    auto r = ServingManifest::parse(j.dump());
    ASSERT_FALSE(r) << c.what;
    EXPECT_EQ(r.error().code(), Errc::parse) << c.what;
    EXPECT_NE(r.error().message().find(c.message), std::string::npos)
        << c.what << ": " << r.error().message();
  }
  EXPECT_FALSE(ServingManifest::parse("{\"format\": 1, \"models\": ["));
  EXPECT_FALSE(ServingManifest::parse(std::string(2u << 20, ' ')));  // bounded
}

TEST(ServingManifest, FileIsAbsentUntilWrittenAndRewrittenOnlyWhenItChanges) {
  test::TempDir dir;
  auto none = read_serving_manifest(dir.path());
  ASSERT_TRUE(none) << none.error().message();
  EXPECT_FALSE(none->has_value());
  ASSERT_TRUE(write_serving_manifest(dir.path(), sample()));
  const auto path = dir / kServingFile;
  const auto inode = [&] {
    struct stat st {};
    EXPECT_EQ(::stat(path.c_str(), &st), 0);
    return st.st_ino;
  };
  const auto first = inode();
  ASSERT_TRUE(write_serving_manifest(dir.path(), sample()));  // same bytes: not replaced
  EXPECT_EQ(inode(), first);
  auto changed = sample();
  changed.models[0].committed.version = "1.0.1";
  ASSERT_TRUE(write_serving_manifest(dir.path(), changed));  // replaced by rename
  EXPECT_NE(inode(), first);
  auto read = read_serving_manifest(dir.path());
  ASSERT_TRUE(read && read->has_value());
  EXPECT_EQ((*read)->find("zeta")->committed.version, "1.0.1");
  test::write_file(path, "garbage");
  auto bad = read_serving_manifest(dir.path());
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find(path.string()), std::string::npos);
}

}  // namespace
}  // namespace mota
