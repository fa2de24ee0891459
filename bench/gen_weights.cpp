// mota-bench-gen-weights: writes a benchmark model directory whose weights look like real fp32
// weights to a compressor (gaussian float32, so zstd saves only a few percent, mostly from the
// narrow exponent range), with the same bytes on every machine for a given size and seed.
//
//   mota-bench-gen-weights DIR SIZE_MIB [SEED]
//
// DIR gets model.json (name "bench-model", with a health section), model.onnx (SIZE_MIB MiB of
// weights, not an ONNX graph: model.json says framework "other", so `mota release add` does not
// check it as one), labels.txt and health/{input,expected}.bin. Exit 0 on success, 1 on an I/O
// error, 2 on bad arguments. The random generator and the gaussian transform are written out here
// rather than taken from <random>, whose distributions differ between standard libraries.

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

namespace {

namespace stdfs = std::filesystem;

// splitmix64: small, fast, and good enough for benchmark data.
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1]: never 0, so log() below is finite.
  double uniform() { return (static_cast<double>(next() >> 11) + 1.0) * 0x1.0p-53; }

 private:
  std::uint64_t state_;
};

// Box-Muller: two gaussian floats per call, scaled like initialised/trained layer weights.
void fill_gaussian(Rng& rng, std::vector<float>& out, float stddev) {
  constexpr double kTwoPi = 6.283185307179586;
  for (std::size_t i = 0; i + 1 < out.size(); i += 2) {
    double r = std::sqrt(-2.0 * std::log(rng.uniform())) * stddev;
    double t = kTwoPi * rng.uniform();
    out[i] = static_cast<float>(r * std::cos(t));
    out[i + 1] = static_cast<float>(r * std::sin(t));
  }
}

bool write_gaussian(const stdfs::path& path, std::uint64_t bytes, Rng& rng, float stddev) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) {
    std::fprintf(stderr, "%s: cannot create: %s\n", path.c_str(), std::strerror(errno));
    return false;
  }
  std::vector<float> buf((1u << 20) / sizeof(float));  // 1 MiB per write
  bool ok = true;
  while (ok && bytes > 0) {
    fill_gaussian(rng, buf, stddev);
    std::size_t n = bytes < (1u << 20) ? static_cast<std::size_t>(bytes) : (1u << 20);
    ok = std::fwrite(buf.data(), 1, n, f) == n;
    bytes -= n;
  }
  if (std::fclose(f) != 0) ok = false;
  if (!ok) std::fprintf(stderr, "%s: write failed: %s\n", path.c_str(), std::strerror(errno));
  return ok;
}

bool write_text(const stdfs::path& path, const std::string& text) {
  std::FILE* f = std::fopen(path.c_str(), "wb");
  bool ok = f && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  if (f && std::fclose(f) != 0) ok = false;
  if (!ok) std::fprintf(stderr, "%s: write failed: %s\n", path.c_str(), std::strerror(errno));
  return ok;
}

constexpr const char* kManifest = R"({
  "name": "bench-model",
  "framework": "other",
  "entry": "model.onnx",
  "description": "mota benchmark model: gaussian fp32 weights",
  "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
  "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"}],
  "labels": "labels.txt",
  "requirements": {"min_ram_mb": 512, "arch": []},
  "metrics": {"latency_ms": 15},
  "health": {"input": "health/input.bin", "expected_output": "health/expected.bin",
             "tolerance": 0.001, "latency_budget_ms": 250, "soak_s": 10}
}
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3 || argc > 4) {
    std::fprintf(stderr, "usage: %s DIR SIZE_MIB [SEED]\n", argv[0]);
    return 2;
  }
  char* end = nullptr;
  errno = 0;
  unsigned long long mib = std::strtoull(argv[2], &end, 10);
  if (errno != 0 || *end != '\0' || mib == 0 || mib > (1ull << 20)) {
    std::fprintf(stderr, "SIZE_MIB: expected 1..1048576, got '%s'\n", argv[2]);
    return 2;
  }
  std::uint64_t seed = 42;
  if (argc == 4) {
    errno = 0;
    seed = std::strtoull(argv[3], &end, 10);
    if (errno != 0 || *end != '\0') {
      std::fprintf(stderr, "SEED: expected an unsigned integer, got '%s'\n", argv[3]);
      return 2;
    }
  }
  const stdfs::path dir = argv[1];
  std::error_code ec;
  stdfs::create_directories(dir / "health", ec);
  if (ec) {
    std::fprintf(stderr, "%s: cannot create: %s\n", dir.c_str(), ec.message().c_str());
    return 1;
  }
  Rng rng(seed);
  const bool ok = write_text(dir / "model.json", kManifest) &&
                  write_text(dir / "labels.txt", "background\nface\n") &&
                  write_gaussian(dir / "model.onnx", mib << 20, rng, 0.02f) &&
                  write_gaussian(dir / "health" / "input.bin", 3 * 240 * 320 * 4, rng, 1.0f) &&
                  write_gaussian(dir / "health" / "expected.bin", 4420 * 2 * 4, rng, 1.0f);
  return ok ? 0 : 1;
}
