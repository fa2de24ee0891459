#include "delta/layout.hpp"

#include <algorithm>
#include <cstring>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

namespace mota::delta {
namespace {

// Buffered forward/random reader over a PreadFn: protobuf and GGUF headers are read a few bytes
// at a time.
class Cursor {
 public:
  Cursor(const PreadFn& pread, std::uint64_t size) : pread_(pread), size_(size) {}
  std::uint64_t pos() const { return pos_; }
  std::uint64_t size() const { return size_; }
  void seek(std::uint64_t p) { pos_ = p; }
  Status bytes(std::byte* out, std::size_t n) {
    if (n > size_ || pos_ > size_ - n) return fail(Errc::parse, "past end of file");
    while (n > 0) {
      if (pos_ < buf_start_ || pos_ >= buf_start_ + buf_.size()) MOTA_TRY(fill());
      std::size_t off = static_cast<std::size_t>(pos_ - buf_start_);
      std::size_t take = std::min(n, buf_.size() - off);
      std::memcpy(out, buf_.data() + off, take);
      out += take;
      n -= take;
      pos_ += take;
    }
    return {};
  }
  template <class T>
  Result<T> le() {
    T v;
    MOTA_TRY(bytes(reinterpret_cast<std::byte*>(&v), sizeof v));
    return v;
  }
  Result<std::uint64_t> varint() {
    std::uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      auto b = MOTA_TRY(le<std::uint8_t>());
      v |= std::uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    return fail(Errc::parse, "varint too long");
  }
  Result<std::string> string(std::uint64_t n) {
    if (n > 65536) return fail(Errc::parse, "name too long");
    std::string s(n, '\0');
    MOTA_TRY(bytes(reinterpret_cast<std::byte*>(s.data()), n));
    return s;
  }

 private:
  Status fill() {
    buf_start_ = pos_;
    buf_.resize(static_cast<std::size_t>(std::min<std::uint64_t>(65536, size_ - pos_)));
    return pread_(buf_, buf_start_);
  }
  const PreadFn& pread_;
  std::uint64_t size_;
  std::uint64_t pos_ = 0;
  std::uint64_t buf_start_ = 0;
  std::vector<std::byte> buf_;
};

// Sorts, drops empty/overlapping/duplicate-name tensors.
Layout finish(std::string format, std::vector<Tensor> ts, std::uint64_t file_size) {
  std::sort(ts.begin(), ts.end(),
            [](const Tensor& a, const Tensor& b) { return a.offset < b.offset; });
  Layout l;
  l.format = std::move(format);
  std::set<std::string> names;
  std::uint64_t end = 0;
  for (auto& t : ts) {
    if (t.size == 0 || t.offset < end || t.offset > file_size || t.size > file_size - t.offset)
      continue;
    if (!names.insert(t.name).second) continue;
    end = t.offset + t.size;
    l.tensors.push_back(std::move(t));
  }
  if (l.tensors.empty()) l.format = "raw";
  return l;
}

int safetensors_width(const std::string& dtype) {
  static const std::map<std::string, int> w = {
      {"F64", 8},  {"I64", 8}, {"U64", 8}, {"F32", 4}, {"I32", 4}, {"U32", 4}, {"F16", 2},
      {"BF16", 2}, {"I16", 2}, {"U16", 2}, {"I8", 1},  {"U8", 1},  {"BOOL", 1}};
  auto it = w.find(dtype);
  return it == w.end() ? 1 : it->second;
}

Result<Layout> parse_safetensors(const PreadFn& pread, std::uint64_t size) {
  Cursor c(pread, size);
  auto n = MOTA_TRY(c.le<std::uint64_t>());
  if (n < 2 || n > (100u << 20) || n > size - 8) return fail(Errc::parse, "not safetensors");
  std::string header(n, '\0');
  MOTA_TRY(c.bytes(reinterpret_cast<std::byte*>(header.data()), n));
  if (header[0] != '{') return fail(Errc::parse, "not safetensors");
  auto j = nlohmann::json::parse(header, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return fail(Errc::parse, "safetensors: bad header");
  std::vector<Tensor> ts;
  const std::uint64_t base = 8 + n;
  for (auto& [name, v] : j.items()) {
    if (name == "__metadata__" || !v.is_object()) continue;
    auto offs = v.find("data_offsets");
    auto dt = v.find("dtype");
    if (offs == v.end() || !offs->is_array() || offs->size() != 2 || dt == v.end() ||
        !dt->is_string() || !(*offs)[0].is_number_unsigned() || !(*offs)[1].is_number_unsigned())
      continue;
    std::uint64_t b = (*offs)[0].get<std::uint64_t>(), e = (*offs)[1].get<std::uint64_t>();
    if (e < b || b > size) continue;
    ts.push_back(Tensor{name, base + b, e - b, safetensors_width(dt->get<std::string>())});
  }
  return finish("safetensors", std::move(ts), size);
}

int onnx_width(std::uint64_t data_type) {
  switch (data_type) {
    case 1:
    case 6:
    case 12:
      return 4;  // float, int32, uint32
    case 4:
    case 5:
    case 10:
    case 16:
      return 2;  // uint16, int16, float16, bfloat16
    case 7:
    case 11:
    case 13:
      return 8;  // int64, double, uint64
    default:
      return 1;
  }
}

Status skip_field(Cursor& c, std::uint64_t wire) {
  switch (wire) {
    case 0:
      MOTA_TRY(c.varint());
      return {};
    case 1:
      c.seek(c.pos() + 8);
      return {};
    case 5:
      c.seek(c.pos() + 4);
      return {};
    case 2: {
      auto n = MOTA_TRY(c.varint());
      if (n > c.size() - std::min(c.size(), c.pos())) return fail(Errc::parse, "field too long");
      c.seek(c.pos() + n);
      return {};
    }
    default:
      return fail(Errc::parse, "bad wire type");
  }
}

Result<Tensor> parse_onnx_tensor(Cursor& c, std::uint64_t end) {
  Tensor t;
  std::uint64_t data_type = 0;
  while (c.pos() < end) {
    auto key = MOTA_TRY(c.varint());
    const std::uint64_t field = key >> 3, wire = key & 7;
    if (wire == 2 && (field == 8 || field == 9 || field == 4)) {
      auto n = MOTA_TRY(c.varint());
      if (n > end - std::min(end, c.pos())) return fail(Errc::parse, "tensor field too long");
      if (field == 8) {
        t.name = MOTA_TRY(c.string(n));
      } else {
        t.offset = c.pos();
        t.size = n;
        if (field == 4) data_type = 1;  // float_data: packed fixed32
        c.seek(c.pos() + n);
      }
    } else if (field == 2 && wire == 0) {
      data_type = MOTA_TRY(c.varint());
    } else {
      MOTA_TRY(skip_field(c, wire));
    }
  }
  t.width = onnx_width(data_type);
  return t;
}

Result<Layout> parse_onnx(const PreadFn& pread, std::uint64_t size) {
  Cursor c(pread, size);
  std::vector<Tensor> ts;
  bool graph = false;
  while (c.pos() < size) {
    auto key = MOTA_TRY(c.varint());
    const std::uint64_t field = key >> 3, wire = key & 7;
    if (field == 0) return fail(Errc::parse, "not onnx");
    if (field == 7 && wire == 2) {  // ModelProto.graph
      auto n = MOTA_TRY(c.varint());
      if (n > size - c.pos()) return fail(Errc::parse, "graph too long");
      const std::uint64_t gend = c.pos() + n;
      graph = true;
      while (c.pos() < gend) {
        auto k = MOTA_TRY(c.varint());
        if ((k >> 3) == 5 && (k & 7) == 2) {  // GraphProto.initializer
          auto tn = MOTA_TRY(c.varint());
          if (tn > gend - std::min(gend, c.pos())) return fail(Errc::parse, "tensor too long");
          const std::uint64_t tend = c.pos() + tn;
          auto t = MOTA_TRY(parse_onnx_tensor(c, tend));
          if (t.size > 0 && !t.name.empty()) ts.push_back(std::move(t));
          c.seek(tend);
        } else {
          MOTA_TRY(skip_field(c, k & 7));
        }
      }
      c.seek(gend);
    } else {
      MOTA_TRY(skip_field(c, wire));
    }
    if (c.pos() > size) return fail(Errc::parse, "not onnx");
  }
  if (!graph) return fail(Errc::parse, "not onnx");
  return finish("onnx", std::move(ts), size);
}

Status gguf_skip_value(Cursor& c, std::uint32_t type, int depth) {
  static const int fixed[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
  if (type > 12) return fail(Errc::parse, "gguf: bad value type");
  if (type == 8) {
    auto n = MOTA_TRY(c.le<std::uint64_t>());
    if (n > c.size()) return fail(Errc::parse, "gguf: string too long");
    c.seek(c.pos() + n);
    return {};
  }
  if (type == 9) {
    if (depth > 2) return fail(Errc::parse, "gguf: nested arrays");
    auto et = MOTA_TRY(c.le<std::uint32_t>());
    auto n = MOTA_TRY(c.le<std::uint64_t>());
    if (n > c.size()) return fail(Errc::parse, "gguf: array too long");
    if (et != 8 && et != 9 && et <= 12) {
      c.seek(c.pos() + n * static_cast<std::uint64_t>(fixed[et]));
      return {};
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      MOTA_TRY(gguf_skip_value(c, et, depth + 1));
      if (c.pos() > c.size()) return fail(Errc::parse, "gguf: past end");
    }
    return {};
  }
  c.seek(c.pos() + static_cast<std::uint64_t>(fixed[type]));
  return {};
}

Result<Layout> parse_gguf(const PreadFn& pread, std::uint64_t size) {
  Cursor c(pread, size);
  auto magic = MOTA_TRY(c.le<std::uint32_t>());
  if (magic != 0x46554747) return fail(Errc::parse, "not gguf");  // "GGUF"
  auto version = MOTA_TRY(c.le<std::uint32_t>());
  if (version < 2 || version > 3) return fail(Errc::parse, "gguf: unsupported version");
  auto n_tensors = MOTA_TRY(c.le<std::uint64_t>());
  auto n_kv = MOTA_TRY(c.le<std::uint64_t>());
  if (n_tensors > (1u << 20) || n_kv > (1u << 20)) return fail(Errc::parse, "gguf: too many");
  std::uint64_t alignment = 32;
  for (std::uint64_t i = 0; i < n_kv; ++i) {
    auto klen = MOTA_TRY(c.le<std::uint64_t>());
    auto key = MOTA_TRY(c.string(klen));
    auto type = MOTA_TRY(c.le<std::uint32_t>());
    if (key == "general.alignment" && type == 4) {
      alignment = MOTA_TRY(c.le<std::uint32_t>());
      if (alignment == 0 || (alignment & (alignment - 1))) return fail(Errc::parse, "alignment");
    } else {
      MOTA_TRY(gguf_skip_value(c, type, 0));
    }
    if (c.pos() > size) return fail(Errc::parse, "gguf: past end");
  }
  struct Info {
    std::string name;
    std::uint32_t type;
    std::uint64_t offset;
  };
  std::vector<Info> infos;
  for (std::uint64_t i = 0; i < n_tensors; ++i) {
    auto nlen = MOTA_TRY(c.le<std::uint64_t>());
    auto name = MOTA_TRY(c.string(nlen));
    auto ndims = MOTA_TRY(c.le<std::uint32_t>());
    if (ndims > 8) return fail(Errc::parse, "gguf: too many dims");
    c.seek(c.pos() + 8 * std::uint64_t(ndims));
    auto type = MOTA_TRY(c.le<std::uint32_t>());
    auto off = MOTA_TRY(c.le<std::uint64_t>());
    infos.push_back(Info{std::move(name), type, off});
  }
  const std::uint64_t data = (c.pos() + alignment - 1) / alignment * alignment;
  if (data > size) return fail(Errc::parse, "gguf: past end");
  std::sort(infos.begin(), infos.end(),
            [](const Info& a, const Info& b) { return a.offset < b.offset; });
  // Sizes from the next tensor's offset: no table of quantisation block sizes needed.
  std::vector<Tensor> ts;
  for (std::size_t i = 0; i < infos.size(); ++i) {
    if (infos[i].offset > size - data) break;
    std::uint64_t start = data + infos[i].offset;
    std::uint64_t end =
        i + 1 < infos.size() ? data + std::min(infos[i + 1].offset, size - data) : size;
    if (end <= start) continue;
    int w = infos[i].type == 0 ? 4 : (infos[i].type == 1 || infos[i].type == 30) ? 2 : 1;
    ts.push_back(Tensor{infos[i].name, start, end - start, w});
  }
  return finish("gguf", std::move(ts), size);
}

}  // namespace

Layout parse_layout(const PreadFn& pread, std::uint64_t file_size) {
  if (file_size < 16) return {};
  std::byte head[8];
  if (!pread(head, 0)) return {};
  if (std::memcmp(head, "GGUF", 4) == 0) {
    auto l = parse_gguf(pread, file_size);
    return l ? *l : Layout{};
  }
  if (auto l = parse_safetensors(pread, file_size)) return *l;
  // ONNX: a ModelProto starts with ir_version (field 1, varint): key byte 0x08.
  if (head[0] == std::byte{0x08}) {
    auto l = parse_onnx(pread, file_size);
    if (l) return *l;
  }
  return {};
}

}  // namespace mota::delta
