// libFuzzer harness for the model.json parser (manifest/model_manifest.hpp): the manifest inside
// every package a device downloads or finds on a USB stick. Any crash, exception, sanitizer
// report, leak or hang is a bug; errors are fine. What the parser accepts must hold its promises
// (valid name and version, entry and labels among the files, every file path valid, files sorted
// and unique) and must survive a round trip: parse(serialize(m)) succeeds and serializes to the
// same bytes. Built with -DMOTA_FUZZ=ON and clang; run with `FUZZ_TARGET=modeljson scripts/fuzz`.
// With MOTA_FUZZ_SEEDS=<dir> set, initialisation writes example manifests there.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "common/semver.hpp"
#include "manifest/model_manifest.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

[[noreturn]] void finding(const char* what, std::string_view input) {
  std::fprintf(stderr, "model.json: %s\ninput: %.*s\n", what, int(input.size()), input.data());
  std::abort();
}

void write_seeds(const stdfs::path& dir) {
  const std::string sha(64, 'a');
  std::ofstream(dir / "full") << R"({"name": "face-detector", "version": "1.2.0-rc.1+b7",
  "framework": "onnx", "entry": "model.onnx", "description": "UltraFace slim 320 \u00e9",
  "files": [{"path": "health/expected.bin", "size": 17680, "sha256": ")"
                              << sha << R"("},
            {"path": "health/input.bin", "size": 921600, "sha256": ")"
                              << sha << R"("},
            {"path": "labels.txt", "size": 3, "sha256": ")"
                              << sha << R"("},
            {"path": "model.onnx", "size": 1195330, "sha256": ")"
                              << sha << R"("}],
  "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
  "outputs": [{"name": "scores", "shape": [1, -1, 2], "dtype": "float16"}],
  "labels": "labels.txt",
  "requirements": {"min_ram_mb": 256, "arch": ["x86_64", "aarch64"], "accelerators": ["cuda"]},
  "metrics": {"accuracy": 0.91, "latency_ms": 12.5, "nested": {"a": [1, null, true]}},
  "health": {"input": "health/input.bin", "expected_output": "health/expected.bin",
             "tolerance": 0.001, "latency_budget_ms": 250, "soak_s": 10}})";
  std::ofstream(dir / "source") << R"({"name": "m", "version": "0.0.1", "framework": "other",
  "entry": "w.bin"})";
  std::ofstream(dir / "minimal") << R"({"name":"a.b_c-d","version":"10.20.30","framework":"gguf",)"
                                 << R"("entry":"x","files":[{"path":"x","size":0,"sha256":")" << sha
                                 << R"("}]})";
}

void check(std::string_view input, bool require_files) {
  auto m = ModelManifest::parse(input, require_files);
  if (!m) {
    if (m.error().message().empty()) finding("an error without a message", input);
    return;
  }
  // A source manifest may leave the name to the packer (empty); a name it gives must be valid.
  if ((require_files || !m->name.empty()) && !valid_model_name(m->name)) {
    finding("accepted an invalid name", input);
  }
  if (!require_files) return;  // a source manifest: name, version and files may be missing
  if (!SemVer::parse(m->version)) finding("accepted an invalid version", input);
  {
    for (const auto& f : m->files) {
      if (!valid_package_path(f.path)) finding("accepted an invalid file path", input);
    }
    auto listed = [&](const std::string& p) {
      return std::any_of(m->files.begin(), m->files.end(),
                         [&](const FileEntry& f) { return f.path == p; });
    };
    if (!listed(m->entry)) finding("accepted an entry that is not a file", input);
    if (!m->labels.empty() && !listed(m->labels)) finding("accepted unlisted labels", input);
    if (!std::is_sorted(m->files.begin(), m->files.end(),
                        [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; }) ||
        std::adjacent_find(m->files.begin(), m->files.end(), [](const auto& a, const auto& b) {
          return a.path == b.path;
        }) != m->files.end()) {
      finding("accepted files that are not sorted and unique", input);
    }
  }
  const std::string out = m->serialize();
  auto again = ModelManifest::parse(out, true);
  if (!again) finding(("its own output does not parse: " + again.error().message()).c_str(), out);
  if (again->serialize() != out) finding("the round trip changes the manifest", input);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check(input, true);
  check(input, false);
  return 0;
}
