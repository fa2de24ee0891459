// libFuzzer harness for mota-runtime's tensor request parsing (runtime/tensor.hpp), what
// /v1/models/<name>/infer does with a client's request: the X-Mota-Inputs header
// ("name:dtype:shape;..."), cutting a raw body into tensors by it, and the JSON body
// ({"inputs": [...]}). The input is "<header>\n<raw body>"; the whole input is also tried as a
// JSON body. Any crash, exception, sanitizer report, leak or hang is a bug; errors are fine.
// Invariants: specs survive format_specs/parse_specs, a raw body cut into views is the body again
// when joined, and finite JSON tensors survive tensors_to_json/tensors_from_json. Built with
// -DMOTA_FUZZ=ON and clang; run with `FUZZ_TARGET=tensor scripts/fuzz`. With MOTA_FUZZ_SEEDS=<dir>
// set, initialisation writes example requests there.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "runtime/tensor.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;
using namespace mota::runtime;

[[noreturn]] void finding(const std::string& what, std::string_view input) {
  std::fprintf(stderr, "tensor: %s\ninput: %.*s\n", what.c_str(), int(input.size()), input.data());
  std::abort();
}

bool same(const std::vector<TensorInfo>& a, const std::vector<TensorInfo>& b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i].name != b[i].name || a[i].dtype != b[i].dtype || a[i].shape != b[i].shape) {
      return false;
    }
  }
  return true;
}

void write_seeds(const stdfs::path& dir) {
  std::ofstream(dir / "raw", std::ios::binary)
      << "input:float32:1,3,2,2; ids : int64 : 2x1\n"
      << std::string(12 * 4, '\x01') << std::string(16, '\x02');
  std::ofstream(dir / "positional", std::ios::binary) << ":uint8:4;:int8:1;:float16:2;:int32:1\n"
                                                      << std::string(4 + 1 + 4 + 4, '\x7f');
  std::ofstream(dir / "json", std::ios::binary)
      << R"({"inputs": [{"name": "x", "dtype": "float32", "shape": [2, 2],)"
         R"( "data": [1.5, -2, 3e-3, 0]}, {"dtype": "int64", "shape": [1], "data": [-9]},)"
         R"( {"name": "h", "dtype": "float16", "shape": [2], "data": [15360, 31744]},)"
         R"( {"dtype": "uint8", "shape": [1, 1], "data": [255]}]})";
}

void raw(std::string_view input) {
  const std::size_t nl = input.find('\n');
  if (nl == std::string_view::npos) return;
  const std::string_view header = input.substr(0, nl), body = input.substr(nl + 1);
  auto specs = parse_specs(header);
  if (!specs) return;
  auto again = parse_specs(format_specs(*specs));
  if (!again || !same(*specs, *again)) finding("specs change through format_specs", input);
  std::vector<TensorView> views;
  if (!split_raw_views(body, *specs, views)) return;
  std::string joined;
  for (const auto& v : views) joined += v.data;
  if (joined != body) finding("the tensors are not the body", input);
  auto tensors = split_raw(body, *specs);
  if (!tensors || join_raw(*tensors) != body) finding("split_raw differs from the views", input);
}

void json(std::string_view input) {
  Json doc = Json::parse(input, nullptr, false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("inputs")) return;
  auto tensors = tensors_from_json(doc["inputs"]);
  if (!tensors) return;
  for (const auto& t : *tensors) {
    auto n = byte_size(t.shape, t.dtype);
    if (!n || *n != t.data.size()) finding("a tensor's bytes do not match its shape", input);
    if (!all_finite(t) && t.dtype == DType::float32) return;  // NaN/Inf become null
  }
  auto again = tensors_from_json(tensors_to_json(*tensors));
  if (!again) finding("its own JSON does not parse: " + again.error().message(), input);
  if (join_raw(*again) != join_raw(*tensors)) finding("the JSON round trip changes data", input);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (const char* seeds = std::getenv("MOTA_FUZZ_SEEDS")) write_seeds(seeds);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  raw(input);
  json(input);
  return 0;
}
