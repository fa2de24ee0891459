#pragma once
// model.json: the manifest at the root of every model package. It says what the model is (name,
// semver version, framework, entry file), lists every file with size and sha256, declares
// inputs/outputs, requirements, metrics, and the health section the agent's checks use.
//
// Example:
// {
//   "name": "face-detector", "version": "1.2.0", "framework": "onnx",
//   "entry": "model.onnx", "description": "UltraFace slim 320",
//   "files": [ {"path": "model.onnx", "size": 1195330, "sha256": "e9ad..."} ],
//   "inputs":  [ {"name": "input",  "shape": [1,3,240,320], "dtype": "float32"} ],
//   "outputs": [ {"name": "scores", "shape": [1,4420,2], "dtype": "float32"} ],
//   "labels": "labels.txt",
//   "requirements": {"min_ram_mb": 256, "arch": ["x86_64", "aarch64"], "accelerators": []},
//   "metrics": {"accuracy": 0.91, "latency_ms": 12.5},
//   "health": {"input": "health/input.bin", "expected_output": "health/expected.bin",
//              "tolerance": 0.001, "latency_budget_ms": 250, "soak_s": 10}
// }

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "manifest/canonical_json.hpp"

namespace mota {

inline constexpr const char* kManifestName = "model.json";
inline constexpr std::uint64_t kMaxManifestBytes = 1u << 20;

struct FileEntry {
  std::string path;  // relative, '/'-separated, no "..", no leading '/', no "model.json"
  std::uint64_t size = 0;
  std::string sha256;  // lower-case hex
};

struct TensorSpec {
  std::string name;
  std::vector<std::int64_t> shape;  // -1 for a dynamic dimension
  std::string dtype;                // float32, float16, int8, uint8, int32, int64
};

struct Requirements {
  std::uint64_t min_ram_mb = 0;
  std::vector<std::string> arch;          // empty: any (names as uname -m: x86_64, aarch64, armv7l)
  std::vector<std::string> accelerators;  // e.g. "cuda", "tensorrt"; empty: none needed
};

struct HealthSpec {
  std::string input;            // file in the package, raw little-endian input tensor(s)
  std::string expected_output;  // file in the package; empty: only NaN/Inf and latency checked
  double tolerance = 1e-3;      // max absolute difference per element
  double latency_budget_ms = 1000;
  double soak_s = 0;
};

struct ModelManifest {
  std::string name;       // [a-z0-9][a-z0-9._-]{0,63}
  std::string version;    // semver
  std::string framework;  // onnx, tflite, gguf, tensorrt, other
  std::string entry;      // must be one of files
  std::string description;
  std::vector<FileEntry> files;  // sorted by path, unique
  std::vector<TensorSpec> inputs, outputs;
  std::string labels;  // optional; must be one of files
  Requirements requirements;
  Json metrics = Json::object();  // free-form numbers: accuracy, latency_ms, ...
  std::optional<HealthSpec> health;

  // Parses and validates (every error names the field: "files[2].sha256: not 64 hex digits").
  // `require_files`: false accepts a source manifest whose "files" list is absent, to be filled
  // in by the packer.
  static Result<ModelManifest> parse(std::string_view json_text, bool require_files = true);
  Json to_json() const;
  // Pretty JSON (2-space indent, sorted keys, trailing newline): deterministic bytes.
  std::string serialize() const;
};

// Valid model name: starts with [a-z0-9], then [a-z0-9._-], at most 64 characters.
bool valid_model_name(std::string_view name);
// Valid relative path inside a package: non-empty '/'-separated components, none empty, ".",
// or "..", no leading '/', no '\\', NUL or other control character, at most 1024 bytes.
bool valid_package_path(std::string_view path);

// The package's tree digest: sha256 over the entries sorted by path (byte order) of
// "<sha256> <size> <path>\n", covering every file in the package *including* model.json.
// It identifies the content independent of compression and archive layout.
std::string tree_digest(std::vector<FileEntry> entries);

}  // namespace mota
