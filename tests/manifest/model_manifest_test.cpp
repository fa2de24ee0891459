#include "manifest/model_manifest.hpp"

#include <gtest/gtest.h>

#include <functional>
#include <string>

#include "manifest/crypto.hpp"

namespace mota {
namespace {

const std::string kShaA(64, 'a');
const std::string kShaB(64, 'b');
const std::string kShaC(64, 'c');

Json full_manifest() {
  return Json::parse(R"({
    "name": "face-detector", "version": "1.2.0-rc.1+build.5", "framework": "onnx",
    "entry": "model.onnx", "description": "UltraFace slim 320",
    "files": [
      {"path": "health/expected.bin", "size": 35360, "sha256": ")" +
                     kShaA + R"("},
      {"path": "health/input.bin", "size": 921600, "sha256": ")" +
                     kShaB + R"("},
      {"path": "labels.txt", "size": 5, "sha256": ")" +
                     kShaC + R"("},
      {"path": "model.onnx", "size": 1195330, "sha256": ")" +
                     kShaA + R"("}
    ],
    "inputs":  [ {"name": "input",  "shape": [1, 3, 240, 320], "dtype": "float32"} ],
    "outputs": [ {"name": "scores", "shape": [-1, 4420, 2], "dtype": "float32"},
                 {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float16"} ],
    "labels": "labels.txt",
    "requirements": {"min_ram_mb": 256, "arch": ["x86_64", "aarch64"], "accelerators": []},
    "metrics": {"accuracy": 0.91, "latency_ms": 12.5, "params": 300000},
    "health": {"input": "health/input.bin", "expected_output": "health/expected.bin",
               "tolerance": 0.001, "latency_budget_ms": 250, "soak_s": 10}
  })");
}

Json minimal_manifest() {
  return Json::parse(R"({"name": "m", "version": "0.0.1", "framework": "other",
    "entry": "w.bin", "files": [{"path": "w.bin", "size": 0, "sha256": ")" +
                     kShaA + R"("}]})");
}

TEST(ModelManifest, ParsesFullManifest) {
  auto m = ModelManifest::parse(full_manifest().dump());
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->name, "face-detector");
  EXPECT_EQ(m->version, "1.2.0-rc.1+build.5");
  EXPECT_EQ(m->framework, "onnx");
  EXPECT_EQ(m->entry, "model.onnx");
  EXPECT_EQ(m->description, "UltraFace slim 320");
  ASSERT_EQ(m->files.size(), 4u);
  EXPECT_EQ(m->files[3].path, "model.onnx");
  EXPECT_EQ(m->files[3].size, 1195330u);
  EXPECT_EQ(m->files[3].sha256, kShaA);
  ASSERT_EQ(m->inputs.size(), 1u);
  EXPECT_EQ(m->inputs[0].shape, (std::vector<std::int64_t>{1, 3, 240, 320}));
  ASSERT_EQ(m->outputs.size(), 2u);
  EXPECT_EQ(m->outputs[0].shape[0], -1);
  EXPECT_EQ(m->outputs[1].dtype, "float16");
  EXPECT_EQ(m->labels, "labels.txt");
  EXPECT_EQ(m->requirements.min_ram_mb, 256u);
  EXPECT_EQ(m->requirements.arch, (std::vector<std::string>{"x86_64", "aarch64"}));
  EXPECT_TRUE(m->requirements.accelerators.empty());
  EXPECT_DOUBLE_EQ(m->metrics["accuracy"].get<double>(), 0.91);
  ASSERT_TRUE(m->health.has_value());
  EXPECT_EQ(m->health->input, "health/input.bin");
  EXPECT_EQ(m->health->expected_output, "health/expected.bin");
  EXPECT_DOUBLE_EQ(m->health->tolerance, 0.001);
  EXPECT_DOUBLE_EQ(m->health->latency_budget_ms, 250);
  EXPECT_DOUBLE_EQ(m->health->soak_s, 10);
}

TEST(ModelManifest, MinimalManifestGetsDefaults) {
  auto m = ModelManifest::parse(minimal_manifest().dump());
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_TRUE(m->inputs.empty());
  EXPECT_TRUE(m->labels.empty());
  EXPECT_FALSE(m->health.has_value());
  EXPECT_EQ(m->requirements.min_ram_mb, 0u);
  EXPECT_TRUE(m->metrics.is_object());
  EXPECT_TRUE(m->metrics.empty());
}

TEST(ModelManifest, HealthDefaults) {
  Json j = minimal_manifest();
  j["health"] = {{"input", "w.bin"}};
  auto m = ModelManifest::parse(j.dump());
  ASSERT_TRUE(m) << m.error().message();
  ASSERT_TRUE(m->health);
  EXPECT_TRUE(m->health->expected_output.empty());
  EXPECT_DOUBLE_EQ(m->health->tolerance, 1e-3);
  EXPECT_DOUBLE_EQ(m->health->latency_budget_ms, 1000);
  EXPECT_DOUBLE_EQ(m->health->soak_s, 0);
}

TEST(ModelManifest, SerializeIsDeterministicAndRoundTrips) {
  auto m = ModelManifest::parse(full_manifest().dump());
  ASSERT_TRUE(m);
  std::string text = m->serialize();
  EXPECT_EQ(text.back(), '\n');
  EXPECT_EQ(text.substr(0, 4), "{\n  ");  // 2-space indentation
  // Keys sorted: "description" < "entry" < "files" < ... < "version".
  EXPECT_LT(text.find("\"description\""), text.find("\"entry\""));
  EXPECT_LT(text.find("\"entry\""), text.find("\"files\""));
  EXPECT_LT(text.find("\"requirements\""), text.find("\"version\""));

  auto again = ModelManifest::parse(text);
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->serialize(), text);
  // Key order in the input does not matter.
  Json reordered = Json::parse(full_manifest().dump());
  auto m2 = ModelManifest::parse(reordered.dump(4));
  ASSERT_TRUE(m2);
  EXPECT_EQ(m2->serialize(), text);
}

TEST(ModelManifest, SourceManifestMayOmitFilesNameAndVersion) {
  Json j = full_manifest();
  j.erase("files");
  j.erase("name");
  j.erase("version");
  EXPECT_TRUE(ModelManifest::parse(j.dump(), /*require_files=*/false));
  auto strict = ModelManifest::parse(j.dump());
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().code(), Errc::parse);

  j = full_manifest();
  j.erase("files");
  strict = ModelManifest::parse(j.dump());
  ASSERT_FALSE(strict);
  EXPECT_EQ(strict.error().message(), "files: required");
  // A source manifest that does list files is still checked strictly.
  j = full_manifest();
  j["files"][0]["sha256"] = "zz";
  EXPECT_FALSE(ModelManifest::parse(j.dump(), false));
}

struct BadCase {
  const char* what;
  std::function<void(Json&)> mutate;
  std::string message;  // the whole error message
};

TEST(ModelManifest, RejectsEveryMalformedField) {
  const std::vector<BadCase> cases = {
      {"unknown field", [](Json& j) { j["colour"] = "red"; }, "colour: unknown field"},
      {"name missing", [](Json& j) { j.erase("name"); }, "name: required"},
      {"name type", [](Json& j) { j["name"] = 5; }, "name: must be a string"},
      {"name upper", [](Json& j) { j["name"] = "Face"; },
       "name: must match [a-z0-9][a-z0-9._-]* and be at most 64 characters"},
      {"name long", [](Json& j) { j["name"] = std::string(65, 'a'); },
       "name: must match [a-z0-9][a-z0-9._-]* and be at most 64 characters"},
      {"name leading dash", [](Json& j) { j["name"] = "-x"; },
       "name: must match [a-z0-9][a-z0-9._-]* and be at most 64 characters"},
      {"version missing", [](Json& j) { j.erase("version"); }, "version: required"},
      {"version bad", [](Json& j) { j["version"] = "1.2"; },
       "version: '1.2' is not a semantic version (want MAJOR.MINOR.PATCH)"},
      {"version leading zero", [](Json& j) { j["version"] = "01.2.3"; },
       "version: '01.2.3' is not a semantic version (leading zero)"},
      {"framework", [](Json& j) { j["framework"] = "pytorch"; },
       "framework: \"pytorch\" is not one of onnx, tflite, gguf, tensorrt, other"},
      {"framework missing", [](Json& j) { j.erase("framework"); }, "framework: required"},
      {"entry missing", [](Json& j) { j.erase("entry"); }, "entry: required"},
      {"entry unlisted", [](Json& j) { j["entry"] = "other.onnx"; },
       "entry: \"other.onnx\" is not listed in files"},
      {"entry dotdot", [](Json& j) { j["entry"] = "../model.onnx"; },
       "entry: \"../model.onnx\" is not a valid relative path"},
      {"entry model.json", [](Json& j) { j["entry"] = "model.json"; },
       "entry: must not be model.json"},
      {"description type", [](Json& j) { j["description"] = Json::array(); },
       "description: must be a string"},
      {"files type", [](Json& j) { j["files"] = Json::object(); }, "files: must be an array"},
      {"files element", [](Json& j) { j["files"][1] = "labels.txt"; },
       "files[1]: must be an object"},
      {"files unknown key", [](Json& j) { j["files"][0]["mode"] = 420; },
       "files[0].mode: unknown field"},
      {"files path missing", [](Json& j) { j["files"][0].erase("path"); },
       "files[0].path: required"},
      {"files path absolute", [](Json& j) { j["files"][0]["path"] = "/etc/passwd"; },
       "files[0].path: \"/etc/passwd\" is not a valid relative path"},
      {"files path dotdot", [](Json& j) { j["files"][0]["path"] = "health/../../x"; },
       "files[0].path: \"health/../../x\" is not a valid relative path"},
      {"files path empty component", [](Json& j) { j["files"][0]["path"] = "health//x"; },
       "files[0].path: \"health//x\" is not a valid relative path"},
      {"files path dot", [](Json& j) { j["files"][0]["path"] = "./health"; },
       "files[0].path: \"./health\" is not a valid relative path"},
      {"files path backslash", [](Json& j) { j["files"][0]["path"] = "health\\x"; },
       "files[0].path: \"health\\x\" is not a valid relative path"},
      {"files path newline", [](Json& j) { j["files"][0]["path"] = "health\nx"; },
       "files[0].path: \"health\nx\" is not a valid relative path"},
      {"files path model.json", [](Json& j) { j["files"][0]["path"] = "model.json"; },
       "files[0].path: must not be model.json"},
      {"files size negative", [](Json& j) { j["files"][2]["size"] = -1; },
       "files[2].size: must be a non-negative integer"},
      {"files size float", [](Json& j) { j["files"][2]["size"] = 1.5; },
       "files[2].size: must be a non-negative integer"},
      {"files size string", [](Json& j) { j["files"][2]["size"] = "5"; },
       "files[2].size: must be a non-negative integer"},
      {"files size missing", [](Json& j) { j["files"][2].erase("size"); },
       "files[2].size: required"},
      {"files sha short", [](Json& j) { j["files"][3]["sha256"] = "abc"; },
       "files[3].sha256: must be 64 lower-case hex digits"},
      {"files sha upper", [](Json& j) { j["files"][3]["sha256"] = std::string(64, 'A'); },
       "files[3].sha256: must be 64 lower-case hex digits"},
      {"files sha non-hex", [](Json& j) { j["files"][3]["sha256"] = std::string(64, 'g'); },
       "files[3].sha256: must be 64 lower-case hex digits"},
      {"files unsorted", [](Json& j) { std::swap(j["files"][2], j["files"][3]); },
       "files[3].path: \"labels.txt\" is out of order (files must be sorted by path)"},
      {"files duplicate", [](Json& j) { j["files"][1]["path"] = "health/expected.bin"; },
       "files[1].path: \"health/expected.bin\" is listed twice"},
      {"files file and dir",
       [](Json& j) {
         j["files"][1]["path"] = "health/expected.bin/x";
         j["health"]["input"] = "health/expected.bin/x";
       },
       "files[1].path: \"health/expected.bin/x\" is inside \"health/expected.bin\", which is a "
       "file"},
      {"inputs type", [](Json& j) { j["inputs"] = 1; }, "inputs: must be an array"},
      {"inputs element", [](Json& j) { j["inputs"][0] = 1; }, "inputs[0]: must be an object"},
      {"inputs zero dim", [](Json& j) { j["inputs"][0]["shape"][2] = 0; },
       "inputs[0].shape[2]: must be a positive integer or -1"},
      {"inputs -2 dim", [](Json& j) { j["inputs"][0]["shape"][2] = -2; },
       "inputs[0].shape[2]: must be a positive integer or -1"},
      {"inputs float dim", [](Json& j) { j["inputs"][0]["shape"][3] = 2.5; },
       "inputs[0].shape[3]: must be a positive integer or -1"},
      {"inputs string dim", [](Json& j) { j["inputs"][0]["shape"][0] = "1"; },
       "inputs[0].shape[0]: must be a positive integer or -1"},
      {"inputs shape type", [](Json& j) { j["inputs"][0]["shape"] = 3; },
       "inputs[0].shape: must be an array"},
      {"inputs name empty", [](Json& j) { j["inputs"][0]["name"] = ""; },
       "inputs[0].name: must not be empty"},
      {"inputs dtype", [](Json& j) { j["inputs"][0]["dtype"] = "float64"; },
       "inputs[0].dtype: \"float64\" is not one of float32, float16, int8, uint8, int32, int64"},
      {"outputs shape missing", [](Json& j) { j["outputs"][1].erase("shape"); },
       "outputs[1].shape: required"},
      {"outputs unknown", [](Json& j) { j["outputs"][0]["layout"] = "nchw"; },
       "outputs[0].layout: unknown field"},
      {"labels unlisted", [](Json& j) { j["labels"] = "names.txt"; },
       "labels: \"names.txt\" is not listed in files"},
      {"labels type", [](Json& j) { j["labels"] = true; }, "labels: must be a string"},
      {"requirements type", [](Json& j) { j["requirements"] = "lots"; },
       "requirements: must be an object"},
      {"requirements ram", [](Json& j) { j["requirements"]["min_ram_mb"] = -5; },
       "requirements.min_ram_mb: must be a non-negative integer"},
      {"requirements arch", [](Json& j) { j["requirements"]["arch"][1] = 64; },
       "requirements.arch[1]: must be a non-empty string"},
      {"requirements accel", [](Json& j) { j["requirements"]["accelerators"] = "cuda"; },
       "requirements.accelerators: must be an array of strings"},
      {"requirements unknown", [](Json& j) { j["requirements"]["gpu"] = true; },
       "requirements.gpu: unknown field"},
      {"metrics type", [](Json& j) { j["metrics"] = Json::array(); }, "metrics: must be an object"},
      {"metrics value", [](Json& j) { j["metrics"]["accuracy"] = "high"; },
       "metrics.accuracy: must be a number"},
      {"health type", [](Json& j) { j["health"] = 1; }, "health: must be an object"},
      {"health input missing", [](Json& j) { j["health"].erase("input"); },
       "health.input: required"},
      {"health input unlisted", [](Json& j) { j["health"]["input"] = "in.bin"; },
       "health.input: \"in.bin\" is not listed in files"},
      {"health expected unlisted", [](Json& j) { j["health"]["expected_output"] = "out.bin"; },
       "health.expected_output: \"out.bin\" is not listed in files"},
      {"health tolerance", [](Json& j) { j["health"]["tolerance"] = -0.1; },
       "health.tolerance: must not be negative"},
      {"health latency", [](Json& j) { j["health"]["latency_budget_ms"] = 0; },
       "health.latency_budget_ms: must be positive"},
      {"health soak", [](Json& j) { j["health"]["soak_s"] = "10"; },
       "health.soak_s: must be a number"},
      {"health unknown", [](Json& j) { j["health"]["retries"] = 3; },
       "health.retries: unknown field"},
  };
  for (const auto& c : cases) {
    Json j = full_manifest();
    c.mutate(j);
    auto m = ModelManifest::parse(j.dump());
    ASSERT_FALSE(m) << c.what;
    EXPECT_EQ(m.error().code(), Errc::parse) << c.what;
    EXPECT_EQ(m.error().message(), c.message) << c.what;
  }
}

TEST(ModelManifest, RejectsMalformedJsonText) {
  for (std::string text : {"", "[]", "\"x\"", "{", "{\"name\": }", "{} {}"}) {
    auto m = ModelManifest::parse(text);
    ASSERT_FALSE(m) << text;
    EXPECT_EQ(m.error().code(), Errc::parse) << text;
  }
  auto arr = ModelManifest::parse("[]");
  EXPECT_EQ(arr.error().message(), "must be a JSON object");
  // Duplicate keys are ambiguous between parsers: refused.
  auto dup = ModelManifest::parse(R"({"name": "a", "name": "b"})");
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code(), Errc::parse);
  EXPECT_NE(dup.error().message().find("name"), std::string::npos) << dup.error().message();
}

TEST(ModelManifest, RejectsOversizedText) {
  Json j = full_manifest();
  j["description"] = std::string(kMaxManifestBytes, 'x');
  auto m = ModelManifest::parse(j.dump());
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), Errc::too_large);
}

TEST(ModelManifest, ValidModelName) {
  EXPECT_TRUE(valid_model_name("a"));
  EXPECT_TRUE(valid_model_name("0face-detector_v2.1"));
  EXPECT_TRUE(valid_model_name(std::string(64, 'x')));
  EXPECT_FALSE(valid_model_name(""));
  EXPECT_FALSE(valid_model_name(std::string(65, 'x')));
  EXPECT_FALSE(valid_model_name("Face"));
  EXPECT_FALSE(valid_model_name(".hidden"));
  EXPECT_FALSE(valid_model_name("_x"));
  EXPECT_FALSE(valid_model_name("a b"));
  EXPECT_FALSE(valid_model_name("a/b"));
}

TEST(ModelManifest, ValidPackagePath) {
  EXPECT_TRUE(valid_package_path("a"));
  EXPECT_TRUE(valid_package_path("a/b/c.bin"));
  EXPECT_TRUE(valid_package_path(".hidden/x"));
  EXPECT_TRUE(valid_package_path("...x"));
  EXPECT_TRUE(valid_package_path("gr\xc3\xbc\xc3\x9f/e"));  // UTF-8 is fine
  EXPECT_TRUE(valid_package_path(std::string(1024, 'p')));
  EXPECT_FALSE(valid_package_path(std::string(1025, 'p')));
  EXPECT_FALSE(valid_package_path(""));
  EXPECT_FALSE(valid_package_path("/a"));
  EXPECT_FALSE(valid_package_path("a/"));
  EXPECT_FALSE(valid_package_path("a//b"));
  EXPECT_FALSE(valid_package_path("."));
  EXPECT_FALSE(valid_package_path(".."));
  EXPECT_FALSE(valid_package_path("a/./b"));
  EXPECT_FALSE(valid_package_path("a/../b"));
  EXPECT_FALSE(valid_package_path("a\\b"));
  EXPECT_FALSE(valid_package_path(std::string("a\0b", 3)));
  EXPECT_FALSE(valid_package_path("a\nb"));
  EXPECT_FALSE(valid_package_path("a\x7f"));
}

TEST(ModelManifest, TreeDigestFormat) {
  std::vector<FileEntry> e = {{"b/x", 10, kShaB}, {"a", 3, kShaA}};
  std::string expected = crypto::sha256_hex(kShaA + " 3 a\n" + kShaB + " 10 b/x\n");
  EXPECT_EQ(tree_digest(e), expected);
}

TEST(ModelManifest, TreeDigestProperties) {
  std::vector<FileEntry> base = {
      {"model.json", 700, kShaC}, {"a/b.bin", 5, kShaA}, {"a.bin", 1ull << 40, kShaB}};
  std::string d = tree_digest(base);
  EXPECT_EQ(d.size(), 64u);
  // Independent of input order.
  std::vector<FileEntry> reversed(base.rbegin(), base.rend());
  EXPECT_EQ(tree_digest(reversed), d);
  std::vector<FileEntry> rotated = {base[1], base[2], base[0]};
  EXPECT_EQ(tree_digest(rotated), d);

  // Any change to a hash, size or path changes it.
  for (std::size_t i = 0; i < base.size(); ++i) {
    auto sha = base;
    sha[i].sha256[63] = sha[i].sha256[63] == 'a' ? 'b' : 'a';
    EXPECT_NE(tree_digest(sha), d) << i;
    auto size = base;
    size[i].size += 1;
    EXPECT_NE(tree_digest(size), d) << i;
    auto path = base;
    path[i].path += "x";
    EXPECT_NE(tree_digest(path), d) << i;
  }
  // Adding or removing an entry changes it.
  auto more = base;
  more.push_back({"z", 0, kShaA});
  EXPECT_NE(tree_digest(more), d);
  auto fewer = base;
  fewer.pop_back();
  EXPECT_NE(tree_digest(fewer), d);
  EXPECT_NE(tree_digest({}), d);
}

}  // namespace
}  // namespace mota
