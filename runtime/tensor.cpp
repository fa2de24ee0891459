#include "runtime/tensor.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>

namespace mota::runtime {

namespace {

constexpr std::size_t kMaxTensorBytes = std::size_t{4} << 30;
constexpr std::size_t kMaxTensors = 64;
constexpr std::size_t kMaxRank = 8;

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

template <class T>
void append_value(std::string& out, T v) {
  char buf[sizeof(T)];
  std::memcpy(buf, &v, sizeof(T));
  out.append(buf, sizeof(T));
}

template <class T>
T load(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Converts one JSON number into the element type, refusing values the type cannot hold.
Status append_json_number(std::string& out, const Json& v, DType t) {
  if (!v.is_number()) return fail(Errc::parse, "element is not a number");
  switch (t) {
    case DType::float32:
      append_value(out, static_cast<float>(v.get<double>()));
      return {};
    case DType::float16:
      return fail(Errc::unsupported, "float16 is not accepted in JSON; use the raw encoding");
    default:
      break;
  }
  if (!v.is_number_integer()) return fail(Errc::parse, "element is not an integer");
  std::int64_t i = v.is_number_unsigned()
                       ? static_cast<std::int64_t>(std::min<std::uint64_t>(
                             v.get<std::uint64_t>(), std::numeric_limits<std::int64_t>::max()))
                       : v.get<std::int64_t>();
  auto in_range = [&](std::int64_t lo, std::int64_t hi) { return i >= lo && i <= hi; };
  switch (t) {
    case DType::int8:
      if (!in_range(-128, 127)) return fail(Errc::parse, "element out of int8 range");
      append_value(out, static_cast<std::int8_t>(i));
      return {};
    case DType::uint8:
      if (!in_range(0, 255)) return fail(Errc::parse, "element out of uint8 range");
      append_value(out, static_cast<std::uint8_t>(i));
      return {};
    case DType::int32:
      if (!in_range(INT32_MIN, INT32_MAX)) return fail(Errc::parse, "element out of int32 range");
      append_value(out, static_cast<std::int32_t>(i));
      return {};
    default:
      append_value(out, i);
      return {};
  }
}

}  // namespace

std::string_view dtype_name(DType t) {
  switch (t) {
    case DType::float32:
      return "float32";
    case DType::float16:
      return "float16";
    case DType::int8:
      return "int8";
    case DType::uint8:
      return "uint8";
    case DType::int32:
      return "int32";
    case DType::int64:
      return "int64";
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (DType t :
       {DType::float32, DType::float16, DType::int8, DType::uint8, DType::int32, DType::int64}) {
    if (dtype_name(t) == name) return t;
  }
  return std::nullopt;
}

std::size_t dtype_size(DType t) {
  switch (t) {
    case DType::float32:
    case DType::int32:
      return 4;
    case DType::float16:
      return 2;
    case DType::int8:
    case DType::uint8:
      return 1;
    case DType::int64:
      return 8;
  }
  return 1;
}

Result<Shape> parse_shape(std::string_view text) {
  Shape shape;
  text = trim(text);
  if (text.empty()) return fail(Errc::parse, "empty shape");
  std::size_t i = 0;
  while (i <= text.size()) {
    std::size_t end = text.find_first_of(",x", i);
    if (end == std::string_view::npos) end = text.size();
    std::string_view part = trim(text.substr(i, end - i));
    std::int64_t d = 0;
    auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), d);
    if (part.empty() || ec != std::errc() || p != part.data() + part.size() || d <= 0) {
      return fail(Errc::parse,
                  "shape \"" + std::string(text) + "\": dimensions must be positive integers");
    }
    shape.push_back(d);
    if (shape.size() > kMaxRank) {
      return fail(Errc::parse, "shape \"" + std::string(text) + "\": more than 8 dimensions");
    }
    i = end + 1;
  }
  return shape;
}

std::string format_shape(const Shape& shape) {
  std::string out;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i) out += ',';
    out += std::to_string(shape[i]);
  }
  return out;
}

Result<std::size_t> byte_size(const Shape& shape, DType dtype) {
  std::size_t n = dtype_size(dtype);
  for (auto d : shape) {
    if (d <= 0) {
      return fail(Errc::invalid_argument,
                  "shape [" + format_shape(shape) + "]: dimensions must be positive");
    }
    if (static_cast<std::uint64_t>(d) > kMaxTensorBytes / n) {
      return fail(Errc::too_large, "shape [" + format_shape(shape) + "] is over 4 GiB");
    }
    n *= static_cast<std::size_t>(d);
  }
  return n;
}

std::string format_specs(const std::vector<TensorInfo>& specs) {
  std::string out;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    if (i) out += ';';
    out += specs[i].name;
    out += ':';
    out += dtype_name(specs[i].dtype);
    out += ':';
    out += format_shape(specs[i].shape);
  }
  return out;
}

Result<std::vector<TensorInfo>> parse_specs(std::string_view header) {
  std::vector<TensorInfo> out;
  std::size_t i = 0;
  while (i <= header.size()) {
    std::size_t end = header.find(';', i);
    if (end == std::string_view::npos) end = header.size();
    std::string_view item = trim(header.substr(i, end - i));
    std::string where = "tensor " + std::to_string(out.size());
    std::size_t c1 = item.find(':');
    std::size_t c2 = c1 == std::string_view::npos ? c1 : item.find(':', c1 + 1);
    if (c2 == std::string_view::npos) {
      return fail(Errc::parse,
                  where + ": expected name:dtype:shape, got \"" + std::string(item) + "\"");
    }
    TensorInfo t;
    t.name = std::string(trim(item.substr(0, c1)));
    auto dt = parse_dtype(trim(item.substr(c1 + 1, c2 - c1 - 1)));
    if (!dt) {
      return fail(Errc::parse, where + ": unknown dtype \"" +
                                   std::string(item.substr(c1 + 1, c2 - c1 - 1)) +
                                   "\" (float32, float16, int8, uint8, int32, int64)");
    }
    t.dtype = *dt;
    t.shape = MOTA_TRY_CTX(parse_shape(item.substr(c2 + 1)), where);
    out.push_back(std::move(t));
    if (out.size() > kMaxTensors) return fail(Errc::too_large, "more than 64 tensors");
    i = end + 1;
  }
  return out;
}

Status split_raw_views(std::string_view body, const std::vector<TensorInfo>& specs,
                       std::vector<TensorView>& out) {
  out.clear();
  std::size_t off = 0;
  for (std::size_t i = 0; i < specs.size(); ++i) {
    const auto& s = specs[i];
    // Labels are built on the error paths only: the serving path does not allocate here.
    auto label = [&] {
      return "tensor " + std::to_string(i) + (s.name.empty() ? "" : " (" + s.name + ")");
    };
    auto n = byte_size(s.shape, s.dtype);
    if (!n) return fail(std::move(n).error().context(label()));
    if (body.size() - off < *n) {
      return fail(Errc::parse, label() + ": needs " + std::to_string(*n) + " bytes at offset " +
                                   std::to_string(off) + ", the body has " +
                                   std::to_string(body.size()));
    }
    out.push_back({s.name, s.dtype, s.shape, body.substr(off, *n)});
    off += *n;
  }
  if (off != body.size()) {
    return fail(Errc::parse, "body has " + std::to_string(body.size()) + " bytes, the tensors [" +
                                 format_specs(specs) + "] take " + std::to_string(off));
  }
  return {};
}

Result<std::vector<Tensor>> split_raw(std::string_view body, const std::vector<TensorInfo>& specs) {
  std::vector<TensorView> views;
  MOTA_TRY(split_raw_views(body, specs, views));
  std::vector<Tensor> out;
  out.reserve(views.size());
  for (std::size_t i = 0; i < views.size(); ++i) {
    out.push_back({specs[i].name, specs[i].dtype, specs[i].shape, std::string(views[i].data)});
  }
  return out;
}

std::string join_raw(const std::vector<Tensor>& tensors) {
  std::string out;
  std::size_t n = 0;
  for (const auto& t : tensors) n += t.data.size();
  out.reserve(n);
  for (const auto& t : tensors) out += t.data;
  return out;
}

Json tensors_to_json(const std::vector<Tensor>& tensors) {
  Json arr = Json::array();
  for (const auto& t : tensors) {
    Json data = Json::array();
    const char* p = t.data.data();
    std::size_t n = t.elements(), sz = dtype_size(t.dtype);
    for (std::size_t i = 0; i < n; ++i, p += sz) {
      switch (t.dtype) {
        case DType::float32: {
          float f = load<float>(p);
          // JSON has no NaN/Inf: they become null, which a reader must treat as "not finite".
          if (std::isfinite(f)) {
            data.push_back(f);
          } else {
            data.push_back(nullptr);
          }
          break;
        }
        case DType::float16:
          data.push_back(load<std::uint16_t>(p));  // raw bits; documented
          break;
        case DType::int8:
          data.push_back(load<std::int8_t>(p));
          break;
        case DType::uint8:
          data.push_back(load<std::uint8_t>(p));
          break;
        case DType::int32:
          data.push_back(load<std::int32_t>(p));
          break;
        case DType::int64:
          data.push_back(load<std::int64_t>(p));
          break;
      }
    }
    arr.push_back({{"name", t.name},
                   {"dtype", dtype_name(t.dtype)},
                   {"shape", t.shape},
                   {"data", std::move(data)}});
  }
  return arr;
}

Result<std::vector<Tensor>> tensors_from_json(const Json& array) {
  if (!array.is_array()) return fail(Errc::parse, "tensors: must be an array");
  if (array.size() > kMaxTensors) return fail(Errc::too_large, "more than 64 tensors");
  std::vector<Tensor> out;
  for (std::size_t i = 0; i < array.size(); ++i) {
    const Json& j = array[i];
    std::string where = "tensors[" + std::to_string(i) + "]";
    if (!j.is_object()) return fail(Errc::parse, where + ": must be an object");
    Tensor t;
    if (j.contains("name")) {
      if (!j["name"].is_string()) return fail(Errc::parse, where + ".name: must be a string");
      t.name = j["name"].get<std::string>();
    }
    if (j.contains("dtype")) {
      auto dt = j["dtype"].is_string() ? parse_dtype(j["dtype"].get<std::string>()) : std::nullopt;
      if (!dt) return fail(Errc::parse, where + ".dtype: unknown type");
      t.dtype = *dt;
    }
    if (!j.contains("shape") || !j["shape"].is_array() || j["shape"].empty() ||
        j["shape"].size() > kMaxRank) {
      return fail(Errc::parse, where + ".shape: must be an array of 1 to 8 positive integers");
    }
    for (const auto& d : j["shape"]) {
      if (!d.is_number_integer() || d.get<std::int64_t>() <= 0) {
        return fail(Errc::parse, where + ".shape: must be an array of 1 to 8 positive integers");
      }
      t.shape.push_back(d.get<std::int64_t>());
    }
    std::size_t n = MOTA_TRY_CTX(byte_size(t.shape, t.dtype), where);
    if (!j.contains("data") || !j["data"].is_array()) {
      return fail(Errc::parse, where + ".data: must be an array of numbers");
    }
    const Json& data = j["data"];
    if (data.size() * dtype_size(t.dtype) != n) {
      return fail(Errc::parse, where + ".data: has " + std::to_string(data.size()) +
                                   " elements, the shape [" + format_shape(t.shape) + "] needs " +
                                   std::to_string(n / dtype_size(t.dtype)));
    }
    t.data.reserve(n);
    for (std::size_t k = 0; k < data.size(); ++k) {
      MOTA_TRY_CTX(append_json_number(t.data, data[k], t.dtype),
                   where + ".data[" + std::to_string(k) + "]");
    }
    out.push_back(std::move(t));
  }
  return out;
}

std::optional<double> max_abs_diff(std::string_view a, std::string_view b) {
  if (a.size() != b.size() || a.size() % 4 != 0) return std::nullopt;
  double worst = 0;
  for (std::size_t i = 0; i < a.size(); i += 4) {
    float x = load<float>(a.data() + i), y = load<float>(b.data() + i);
    if (!std::isfinite(x) || !std::isfinite(y)) return std::nullopt;
    worst = std::max(worst, std::fabs(static_cast<double>(x) - static_cast<double>(y)));
  }
  return worst;
}

bool all_finite(const Tensor& t) {
  if (t.dtype == DType::float32) {
    for (std::size_t i = 0; i + 4 <= t.data.size(); i += 4) {
      if (!std::isfinite(load<float>(t.data.data() + i))) return false;
    }
  } else if (t.dtype == DType::float16) {
    for (std::size_t i = 0; i + 2 <= t.data.size(); i += 2) {
      if ((load<std::uint16_t>(t.data.data() + i) & 0x7c00) == 0x7c00) return false;
    }
  }
  return true;
}

}  // namespace mota::runtime
