// `mota release add --health-input FILE`: the publisher's model runs once through the real
// mota-runtime, and the package carries the input, the recorded output and the health section,
// so the agent's probe passes on exactly what was published. The source directory is never
// touched; a model that does not run publishes nothing.
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>

#include "manager/release/release.hpp"
#include "manager/repo/repository.hpp"
#include "manager/verify/verify.hpp"
#include "manifest/crypto.hpp"
#include "storage/package.hpp"
#include "tests/support/test_support.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

std::map<std::string, std::string> tree_hash(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (const auto& e : stdfs::recursive_directory_iterator(dir)) {
    const std::string rel = stdfs::relative(e.path(), dir).string();
    out[rel] = e.is_directory() ? "dir" : crypto::sha256_hex(test::read_file(e.path()));
  }
  return out;
}

// 1x3x240x320 float32 in [-1, 1), deterministic: UltraFace's input.
std::string test_image() {
  std::string out(3 * 240 * 320 * 4, '\0');
  for (std::size_t i = 0; i < 3 * 240 * 320; ++i) {
    const float f = (static_cast<float>((i * 7 + i / 320 * 13) % 255) - 127.0f) / 128.0f;
    std::memcpy(out.data() + i * 4, &f, 4);
  }
  return out;
}

std::string runtime_bin() {
  return test::build_path("runtime/mota-runtime").string();
}

class HealthInputTest : public ::testing::Test {
 protected:
  void SetUp() override {
    repo_dir_ = tmp_ / "repo";
    Settings s;
    s.zstd_level = 3;
    auto r = Repository::init(repo_dir_, s);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    image_ = tmp_ / "image.bin";
    test::write_file(image_, test_image());
  }

  // UltraFace slim with a source health section whose other values must survive.
  stdfs::path face_model(const std::string& tag, const std::string& onnx) {
    const stdfs::path d = tmp_ / tag;
    test::write_file(d / "model.json", R"({
      "name": "face", "framework": "onnx", "entry": "model.onnx",
      "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
      "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
                  {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}],
      "health": {"input": "health/input.bin", "tolerance": 0.01, "latency_budget_ms": 3000,
                 "soak_s": 3}
    })");
    test::write_file(d / "model.onnx", onnx);
    test::write_file(d / "labels.txt", "background\nface\n");
    return d;
  }

  std::string slim() {
    return test::read_file(test::shared_model("ultraface/version-slim-320.onnx"));
  }
  // A well-formed ONNX whose operators OpenCV does not have: every Relu renamed Relv.
  static std::string relv(std::string onnx) {
    for (auto at = onnx.find("Relu"); at != std::string::npos; at = onnx.find("Relu", at)) {
      onnx[at + 3] = 'v';
    }
    return onnx;
  }

  // `load_check`: false as with --no-load-check, so a model that does not load reaches the
  // health recording (the load check would refuse it first).
  Result<ReleaseResult> add(const stdfs::path& src, const std::string& version, HealthRecording h,
                            bool load_check = true) {
    auto repo = Repository::open(repo_dir_);
    EXPECT_TRUE(repo.has_value());
    ReleaseOptions o;
    o.health = std::move(h);
    o.checks.load = load_check;
    return repo->add_release(src, version, o);
  }

  HealthRecording recording() {
    HealthRecording h;
    h.input = image_;
    h.runtime = runtime_bin();
    return h;
  }

  // The release fails with `needle` in its message and leaves the repository as it was.
  void expect_refused(const stdfs::path& src, HealthRecording h, const std::string& needle,
                      Errc code, bool load_check = true) {
    const auto before = tree_hash(repo_dir_);
    const auto src_before = tree_hash(src);
    auto r = add(src, "9.0.0", std::move(h), load_check);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), code) << r.error().message();
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << r.error().message();
    EXPECT_EQ(tree_hash(repo_dir_), before);
    EXPECT_EQ(tree_hash(src), src_before);
  }

  test::TempDir tmp_;
  stdfs::path repo_dir_, image_;
};

TEST_F(HealthInputTest, RecordsWhatTheRuntimeComputesAndTheProbePasses) {
  const auto src = face_model("face", slim());
  const auto src_before = tree_hash(src);
  HealthRecording h = recording();
  h.latency_budget_ms = 5000;
  auto r = add(src, "1.0.0", h);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  // The publisher's directory is exactly as it was (no health files, no model.json edits).
  EXPECT_EQ(tree_hash(src), src_before);
  EXPECT_TRUE(stdfs::is_empty(repo_dir_ / "tmp"));

  const auto& rel = r->release;
  const auto pkg = repo_dir_ / "repo/targets/models/face/1.0.0" / (rel.sha256 + ".face-1.0.0.mota");
  const auto slot = tmp_ / "slot";
  auto unpacked = storage::unpack_file(pkg, slot);
  ASSERT_TRUE(unpacked.has_value()) << unpacked.error().message();
  EXPECT_EQ(unpacked->tree_digest, rel.tree_digest);
  const auto& m = unpacked->manifest;
  ASSERT_TRUE(m.health.has_value());
  EXPECT_EQ(m.health->input, "health/input.bin");
  EXPECT_EQ(m.health->expected_output, "health/expected.bin");
  EXPECT_DOUBLE_EQ(m.health->tolerance, 0.01);          // kept from the source
  EXPECT_DOUBLE_EQ(m.health->latency_budget_ms, 5000);  // given
  EXPECT_DOUBLE_EQ(m.health->soak_s, 3);                // kept
  EXPECT_EQ(test::read_file(slot / "health/input.bin"), test::read_file(image_));

  // What `mota-runtime run` computes on the published model is what was recorded.
  auto run = test::run({runtime_bin(), "run", slot.string(), "--input", image_.string(), "--output",
                        (tmp_ / "out.bin").string()});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const std::string expected = test::read_file(slot / "health/expected.bin");
  EXPECT_EQ(expected.size(), (4420u * 2 + 4420u * 4) * 4);
  EXPECT_EQ(test::read_file(tmp_ / "out.bin"), expected);
  // And the agent's probe passes on the unpacked package.
  auto probe = test::run({runtime_bin(), "probe", slot.string(), "--json"});
  EXPECT_EQ(probe.exit_code, 0) << probe.out << probe.err;
  EXPECT_NE(probe.out.find("\"ok\": true"), std::string::npos) << probe.out;

  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();
}

TEST_F(HealthInputTest, SourceListingItsFilesGetsTheHealthFilesListed) {
  // A source model.json with a files list (and a stale expected output on disk) must come out
  // listing the new health files, or the packer would refuse it.
  const auto src = face_model("listed", slim());
  test::write_file(src / "health/expected.bin", "stale");
  const std::string onnx = slim();
  const std::string labels = "background\nface\n";
  test::write_file(
      src / "model.json",
      R"({"name": "face", "framework": "onnx", "entry": "model.onnx",
      "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
      "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
                  {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}],
      "files": [{"path": "health/expected.bin", "size": 5, "sha256": ")" +
          crypto::sha256_hex("stale") + R"("},
                {"path": "labels.txt", "size": )" +
          std::to_string(labels.size()) + R"(, "sha256": ")" + crypto::sha256_hex(labels) + R"("},
                {"path": "model.onnx", "size": )" +
          std::to_string(onnx.size()) + R"(, "sha256": ")" + crypto::sha256_hex(onnx) + R"("}]})");
  auto r = add(src, "1.0.0", recording());
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(test::read_file(src / "health/expected.bin"), "stale");
  auto v = Repository::verify(repo_dir_);
  ASSERT_TRUE(v.has_value()) << v.error().message();
  auto unpacked = storage::unpack_file(
      repo_dir_ / "repo/targets/models/face/1.0.0" / (r->release.sha256 + ".face-1.0.0.mota"),
      tmp_ / "slot");
  ASSERT_TRUE(unpacked.has_value()) << unpacked.error().message();
  EXPECT_NE(test::read_file(tmp_ / "slot/health/expected.bin"), "stale");
  EXPECT_DOUBLE_EQ(unpacked->manifest.health->tolerance, 1e-3);  // the default
  auto probe = test::run({runtime_bin(), "probe", (tmp_ / "slot").string()});
  EXPECT_EQ(probe.exit_code, 0) << probe.out << probe.err;
}

TEST_F(HealthInputTest, AModelThatDoesNotRunPublishesNothing) {
  ASSERT_TRUE(add(face_model("good", slim()), "1.0.0", recording()).has_value());
  // A truncated ONNX does not even get there: the model check refuses it.
  const std::string onnx = slim();
  expect_refused(face_model("cut", onnx.substr(0, onnx.size() / 2)), recording(),
                 "model check: model.onnx: not an ONNX model", Errc::verification);
  // An operator the runtime does not have, published without the load check: the runtime cannot
  // load it for the recording, and says why.
  const auto bad = face_model("bad", relv(onnx));
  expect_refused(bad, recording(), "health input: the model does not run: ", Errc::verification,
                 /*load_check=*/false);
  auto again = add(bad, "9.0.0", recording(), /*load_check=*/false);
  ASSERT_FALSE(again.has_value());
  const std::string msg = again.error().message();
  const std::string reason = msg.substr(msg.find("does not run: ") + 14);
  EXPECT_GT(reason.size(), 10u) << msg;  // mota-runtime's reason, not just an exit status
  EXPECT_EQ(reason.find("exit status"), std::string::npos) << msg;
  EXPECT_NE(reason.find("Relv"), std::string::npos) << msg;
  // It names the publisher's directory, not the scratch copy that no longer exists.
  EXPECT_EQ(msg.find(".work-"), std::string::npos) << msg;
  EXPECT_NE(msg.find(bad.string()), std::string::npos) << msg;

  // Input of the wrong size for the model's declared input.
  test::write_file(tmp_ / "short.bin", std::string(1000, '\0'));
  HealthRecording h = recording();
  h.input = tmp_ / "short.bin";
  expect_refused(face_model("good2", slim()), h, "input", Errc::verification);
  // No such input file.
  h.input = tmp_ / "missing.bin";
  expect_refused(face_model("good3", slim()), h, "missing.bin", Errc::not_found);
  // No such runtime binary.
  h = recording();
  h.runtime = tmp_ / "no-runtime";
  expect_refused(face_model("good4", slim()), h, "no-runtime", Errc::not_found);
  // Nonsense health values.
  h = recording();
  h.tolerance = -1;
  expect_refused(face_model("good5", slim()), h, "tolerance", Errc::invalid_argument);
}

TEST_F(HealthInputTest, FindsTheRuntimeBesideTheExecutable) {
  // This test binary lives in BUILD/tests/, the runtime in BUILD/runtime/.
  auto found = find_runtime_binary();
  ASSERT_TRUE(found.has_value()) << found.error().message();
  EXPECT_EQ(found->filename(), "mota-runtime");
  EXPECT_TRUE(stdfs::equivalent(*found, runtime_bin())) << *found;
}

TEST_F(HealthInputTest, Cli) {
  const std::string mota = test::build_path("manager/mota").string();
  const auto src = face_model("face", slim());
  // The runtime is found beside `mota` (BUILD/manager/../runtime/) without --runtime.
  auto r = test::run({mota, "release", "add", src.string(), "--version", "1.0.0", "--health-input",
                      image_.string(), "--health-tolerance", "0.002", "--health-soak-s", "0",
                      "--repo", repo_dir_.string()});
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("health check recorded"), std::string::npos) << r.out;
  auto repo = Repository::open(repo_dir_);
  auto rels = repo->list_releases();
  ASSERT_EQ(rels->size(), 1u);
  auto m = storage::read_manifest(repo_dir_ / "repo/targets/models/face/1.0.0" /
                                  ((*rels)[0].sha256 + ".face-1.0.0.mota"));
  ASSERT_TRUE(m.has_value()) << m.error().message();
  ASSERT_TRUE(m->health.has_value());
  EXPECT_DOUBLE_EQ(m->health->tolerance, 0.002);
  EXPECT_DOUBLE_EQ(m->health->soak_s, 0);
  EXPECT_DOUBLE_EQ(m->health->latency_budget_ms, 3000);

  // A failing model: exit 1, mota-runtime's reason on stderr, nothing published.
  const auto bad = face_model("bad", relv(slim()));
  const auto before = tree_hash(repo_dir_);
  r = test::run({mota, "release", "add", bad.string(), "--version", "1.1.0", "--health-input",
                 image_.string(), "--no-load-check", "--repo", repo_dir_.string()});
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("the model does not run"), std::string::npos) << r.err;
  EXPECT_EQ(tree_hash(repo_dir_), before);
  // --health-* without --health-input is a usage error.
  r = test::run({mota, "release", "add", src.string(), "--version", "1.2.0", "--health-soak-s", "5",
                 "--repo", repo_dir_.string()});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("--health-input"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace mota::manager
