#pragma once
// Tensors as mota-runtime moves them: a name, an element type, a shape and the raw little-endian
// bytes (row-major, C order). Also the two wire encodings the HTTP API uses for them:
//
//   raw:  body = the tensors' bytes concatenated in order; their layout travels in one header,
//         "name:dtype:d0,d1,...;name:dtype:..." (X-Mota-Inputs on requests, X-Mota-Outputs on
//         answers). A name may be empty (inputs are then taken by position).
//   JSON: {"inputs"|"outputs": [{"name", "dtype", "shape": [..], "data": [numbers, flat]}]}
//         for small tensors (every element is a JSON number; float16 is not offered there).
//
// Every parser here reads untrusted bytes: sizes are overflow-checked and each error says which
// tensor and what is wrong. Pure functions, thread-safe.

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"
#include "manifest/canonical_json.hpp"

namespace mota::runtime {

static_assert(std::endian::native == std::endian::little,
              "mota-runtime passes tensor bytes through as little-endian");

enum class DType { float32, float16, int8, uint8, int32, int64 };

std::string_view dtype_name(DType t);
std::optional<DType> parse_dtype(std::string_view name);
std::size_t dtype_size(DType t);

using Shape = std::vector<std::int64_t>;

// "1,3,240,320" (also accepts 'x' as separator). Every dimension must be a positive integer.
Result<Shape> parse_shape(std::string_view text);
std::string format_shape(const Shape& shape);  // "1,3,240,320"
// Number of bytes of a tensor of this shape and type; Errc::too_large on overflow or beyond
// 4 GiB, Errc::invalid_argument for a non-positive dimension.
Result<std::size_t> byte_size(const Shape& shape, DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::float32;
  Shape shape;  // empty: not known before a run
};

struct Tensor {
  std::string name;
  DType dtype = DType::float32;
  Shape shape;
  std::string data;  // raw little-endian bytes, exactly byte_size(shape, dtype) of them

  std::size_t elements() const { return data.size() / dtype_size(dtype); }
  TensorInfo info() const { return {name, dtype, shape}; }
};

// A tensor whose bytes (and shape) belong to someone else: the serving path cuts the request body
// into views instead of copying it. Everything it points to must outlive the view.
struct TensorView {
  std::string_view name;
  DType dtype = DType::float32;
  std::span<const std::int64_t> shape;
  std::string_view data;  // exactly byte_size(shape, dtype) bytes

  static TensorView of(const Tensor& t) { return {t.name, t.dtype, t.shape, t.data}; }
};

// --- raw encoding ---
std::string format_specs(const std::vector<TensorInfo>& specs);
Result<std::vector<TensorInfo>> parse_specs(std::string_view header);
// Cuts `body` into tensors of the given layouts; the sizes must add up exactly.
Result<std::vector<Tensor>> split_raw(std::string_view body, const std::vector<TensorInfo>& specs);
// The same without copying: the views borrow `body` and `specs`. `out` is cleared first (its
// capacity is reused). Same errors as split_raw.
Status split_raw_views(std::string_view body, const std::vector<TensorInfo>& specs,
                       std::vector<TensorView>& out);
std::string join_raw(const std::vector<Tensor>& tensors);

// --- JSON encoding ---
Json tensors_to_json(const std::vector<Tensor>& tensors);
// `array` is the "inputs"/"outputs" array.
Result<std::vector<Tensor>> tensors_from_json(const Json& array);

// Largest absolute difference between two float32 tensors of the same size; nullopt if either
// holds a NaN or Inf.
std::optional<double> max_abs_diff(std::string_view a, std::string_view b);
// True if a float32/float16 tensor holds no NaN or Inf (integer tensors always pass). For float16
// only the exponent bits are inspected.
bool all_finite(const Tensor& t);

}  // namespace mota::runtime
