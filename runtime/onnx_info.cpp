#include "runtime/onnx_info.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <unordered_set>

namespace mota::runtime {

namespace {

// Protobuf wire types.
constexpr unsigned kVarint = 0, kFixed64 = 1, kBytes = 2, kFixed32 = 5;

struct Field {
  unsigned number = 0;
  unsigned wire = 0;
  std::uint64_t value = 0;  // kVarint
  std::string_view bytes;   // kBytes (points into the buffer)
  std::size_t at = 0;       // absolute offset of the field's key
  std::size_t data_at = 0;  // absolute offset of `bytes`
};

tl::unexpected<Error> malformed(const std::string& what, std::size_t at) {
  return fail(Errc::parse, "not an ONNX model: " + what + " at byte " + std::to_string(at));
}

// One protobuf message's fields, in order. `base` is the message's offset in the file, so errors
// name absolute byte offsets.
class Fields {
 public:
  Fields(std::string_view s, std::size_t base) : s_(s), base_(base) {}

  // Reads the next field into `f`; false at the end of the message.
  Result<bool> next(Field& f) {
    if (pos_ >= s_.size()) return false;
    f.at = base_ + pos_;
    std::uint64_t key = 0;
    if (!varint(key)) return malformed("truncated field", f.at);
    f.number = static_cast<unsigned>(std::min<std::uint64_t>(key >> 3, 0xffffffffu));
    f.wire = static_cast<unsigned>(key & 7);
    if (f.number == 0) return malformed("field number 0", f.at);
    switch (f.wire) {
      case kVarint:
        if (!varint(f.value)) return malformed("truncated field", f.at);
        return true;
      case kFixed64:
        if (s_.size() - pos_ < 8) return malformed("truncated field", f.at);
        pos_ += 8;
        return true;
      case kBytes: {
        std::uint64_t n = 0;
        if (!varint(n) || n > s_.size() - pos_) return malformed("truncated field", f.at);
        f.data_at = base_ + pos_;
        f.bytes = s_.substr(pos_, n);
        pos_ += n;
        return true;
      }
      case kFixed32:
        if (s_.size() - pos_ < 4) return malformed("truncated field", f.at);
        pos_ += 4;
        return true;
      default:  // 3 and 4 (groups, never used by ONNX), 6, 7
        return malformed("unsupported wire type " + std::to_string(f.wire), f.at);
    }
  }

 private:
  bool varint(std::uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= s_.size()) return false;
      auto b = static_cast<unsigned char>(s_[pos_++]);
      out |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;  // more than 10 bytes
  }

  std::string_view s_;
  std::size_t base_;
  std::size_t pos_ = 0;
};

// Well-formed UTF-8 (no overlong forms, surrogates or code points above U+10FFFF) without C0
// control characters or DEL.
bool printable_utf8(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) return false;
      ++i;
      continue;
    }
    int n = 0;
    std::uint32_t cp = 0;
    if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<std::size_t>(n)) return false;
    for (int k = 1; k <= n; ++k) {
      const auto d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3f);
    }
    static constexpr std::uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += static_cast<std::size_t>(n) + 1;
  }
  return true;
}

Status expect_wire(const Field& f, unsigned wire, const char* what) {
  if (f.wire == wire) return {};
  return malformed(std::string(what) + " (field " + std::to_string(f.number) + ") has wire type " +
                       std::to_string(f.wire),
                   f.at);
}

// Walks a ModelProto into an OnnxModel, keeping the limits.
class ModelReader {
 public:
  explicit ModelReader(OnnxModel& m) : m_(m) {}

  Status model(std::string_view bytes) {
    base_ = bytes.data();
    Fields fs(bytes, 0);
    Field f;
    bool graph_seen = false;
    while (MOTA_TRY(fs.next(f))) {
      switch (f.number) {
        case 1:  // ir_version
          MOTA_TRY(expect_wire(f, kVarint, "ir_version"));
          m_.ir_version = static_cast<std::int64_t>(f.value);
          break;
        case 2:  // producer_name
          MOTA_TRY(expect_wire(f, kBytes, "producer_name"));
          m_.producer_name = MOTA_TRY(keep(f.bytes));
          break;
        case 3:  // producer_version
          MOTA_TRY(expect_wire(f, kBytes, "producer_version"));
          m_.producer_version = MOTA_TRY(keep(f.bytes));
          break;
        case 7:  // graph
          MOTA_TRY(expect_wire(f, kBytes, "graph"));
          if (graph_seen) return malformed("a second graph", f.at);
          graph_seen = true;
          MOTA_TRY(graph(f.bytes, f.data_at, 0));
          break;
        case 8:  // opset_import
          MOTA_TRY(expect_wire(f, kBytes, "opset_import"));
          MOTA_TRY(opset(f.bytes, f.data_at));
          break;
        default:  // domain, model_version, doc_string, metadata_props, training_info, functions
          break;
      }
    }
    if (m_.ir_version <= 0) return fail(Errc::parse, "not an ONNX model: no ir_version");
    if (!graph_seen) return fail(Errc::parse, "not an ONNX model: no graph");
    return {};
  }

 private:
  // Copies a name out of the buffer (`s` points into it). Protobuf strings are UTF-8; a name
  // that is not, or that holds a control character, is refused, so every message, JSON document
  // and terminal shows exactly what the model says.
  Result<std::string> keep(std::string_view s) {
    if (!printable_utf8(s)) {
      return malformed("a name that is not printable UTF-8",
                       static_cast<std::size_t>(s.data() - base_));
    }
    if (s.size() > kOnnxMaxNameBytes - kept_) {
      return fail(Errc::too_large, "ONNX model names more than " +
                                       std::to_string(kOnnxMaxNameBytes >> 20) +
                                       " MiB of names in total");
    }
    kept_ += s.size();
    return std::string(s);
  }

  Status opset(std::string_view bytes, std::size_t base) {
    if (m_.opsets.size() >= kOnnxMaxOpsets) {
      return fail(Errc::too_large,
                  "ONNX model imports more than " + std::to_string(kOnnxMaxOpsets) + " opsets");
    }
    OnnxOpset o;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 1) {
        MOTA_TRY(expect_wire(f, kBytes, "opset domain"));
        o.domain = MOTA_TRY(keep(f.bytes));
      } else if (f.number == 2) {
        MOTA_TRY(expect_wire(f, kVarint, "opset version"));
        o.version = static_cast<std::int64_t>(f.value);
      }
    }
    if (o.domain == "ai.onnx") o.domain.clear();
    m_.opsets.push_back(std::move(o));
    return {};
  }

  Status graph(std::string_view bytes, std::size_t base, int depth) {
    if (depth > kOnnxMaxDepth) {
      return fail(Errc::too_large, "ONNX model nests subgraphs more than " +
                                       std::to_string(kOnnxMaxDepth) + " deep");
    }
    // The main graph's inputs, outputs and initializers; a subgraph's are skipped.
    const bool main = depth == 0;
    std::vector<OnnxValue> inputs;
    std::unordered_set<std::string_view> init_names;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      switch (f.number) {
        case 1:  // node
          MOTA_TRY(expect_wire(f, kBytes, "node"));
          MOTA_TRY(node(f.bytes, f.data_at, depth));
          break;
        case 5:  // initializer (TensorProto)
          MOTA_TRY(expect_wire(f, kBytes, "initializer"));
          if (main) {
            if (m_.initializers.size() >= kOnnxMaxInitializers) {
              return fail(Errc::too_large, "ONNX graph has more than " +
                                               std::to_string(kOnnxMaxInitializers) +
                                               " initializers");
            }
            auto [name, external] = MOTA_TRY(tensor_name(f.bytes, f.data_at));
            m_.initializers.push_back(MOTA_TRY(keep(name)));
            if (external) ++m_.external_initializers;
          }
          break;
        case 11:  // input
        case 12:  // output
          MOTA_TRY(expect_wire(f, kBytes, f.number == 11 ? "graph input" : "graph output"));
          if (main) {
            if (inputs.size() + m_.outputs.size() >= kOnnxMaxValues) {
              return fail(Errc::too_large, "ONNX graph has more than " +
                                               std::to_string(kOnnxMaxValues) +
                                               " inputs and outputs");
            }
            OnnxValue v = MOTA_TRY(value_info(f.bytes, f.data_at));
            (f.number == 11 ? inputs : m_.outputs).push_back(std::move(v));
          }
          break;
        default:  // name, doc_string, value_info, sparse_initializer, quantization_annotation
          break;
      }
    }
    if (main) {
      // IR < 4 lists every initializer as an input too (the UltraFace exports do): those are
      // weights, not what a caller feeds.
      for (const auto& n : m_.initializers) init_names.insert(n);
      for (auto& v : inputs) {
        if (!init_names.count(v.name)) m_.inputs.push_back(std::move(v));
      }
    }
    return {};
  }

  Status node(std::string_view bytes, std::size_t base, int depth) {
    if (m_.nodes.size() >= kOnnxMaxNodes) {
      return fail(Errc::too_large,
                  "ONNX model has more than " + std::to_string(kOnnxMaxNodes) + " nodes");
    }
    // Subgraph attributes are read after the node itself is listed, so a parent comes before
    // its body's nodes.
    std::vector<std::pair<std::string_view, std::size_t>> bodies;
    OnnxNode n;
    n.depth = depth;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      switch (f.number) {
        case 1:  // input
          MOTA_TRY(expect_wire(f, kBytes, "node input"));
          n.inputs.push_back(MOTA_TRY(keep(f.bytes)));
          break;
        case 2:  // output
          MOTA_TRY(expect_wire(f, kBytes, "node output"));
          n.outputs.push_back(MOTA_TRY(keep(f.bytes)));
          break;
        case 4:  // op_type
          MOTA_TRY(expect_wire(f, kBytes, "op_type"));
          n.op_type = MOTA_TRY(keep(f.bytes));
          break;
        case 7:  // domain
          MOTA_TRY(expect_wire(f, kBytes, "node domain"));
          n.domain = MOTA_TRY(keep(f.bytes));
          break;
        case 5:  // attribute
          MOTA_TRY(expect_wire(f, kBytes, "attribute"));
          n.attributes.push_back(MOTA_TRY(attribute(f.bytes, f.data_at, bodies)));
          break;
        default:  // name, doc_string
          break;
      }
    }
    if (n.op_type.empty()) return malformed("a node without op_type", base);
    if (n.domain == "ai.onnx") n.domain.clear();
    m_.nodes.push_back(std::move(n));
    for (const auto& [g, at] : bodies) {
      ++m_.subgraphs;
      MOTA_TRY(graph(g, at, depth + 1));
    }
    return {};
  }

  // The attribute's name (1); its graphs (g = 6, graphs = 11) go to `bodies`. Values are skipped
  // (a tensor attribute's data like an initializer's).
  Result<std::string> attribute(std::string_view bytes, std::size_t base,
                                std::vector<std::pair<std::string_view, std::size_t>>& bodies) {
    std::string_view name;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 1) {
        MOTA_TRY(expect_wire(f, kBytes, "attribute name"));
        name = f.bytes;
      } else if (f.number == 6 || f.number == 11) {
        MOTA_TRY(expect_wire(f, kBytes, "graph attribute"));
        bodies.emplace_back(f.bytes, f.data_at);
      }
    }
    return keep(name);
  }

  // TensorProto: the name (8) and whether the data is external (data_location 14 = 1). The data
  // fields (raw_data 9 and the typed ones) are length-delimited and skipped where they are.
  Result<std::pair<std::string_view, bool>> tensor_name(std::string_view bytes, std::size_t base) {
    std::string_view name;
    bool external = false;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 8) {
        MOTA_TRY(expect_wire(f, kBytes, "initializer name"));
        name = f.bytes;
      } else if (f.number == 14 && f.wire == kVarint) {
        external = f.value == 1;
      }
    }
    return std::make_pair(name, external);
  }

  // ValueInfoProto: name (1), type (2) -> TypeProto.tensor_type (1) -> elem_type (1), shape (2)
  // -> dim (1) -> dim_value (1) | dim_param (2).
  Result<OnnxValue> value_info(std::string_view bytes, std::size_t base) {
    OnnxValue v;
    v.tensor = false;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 1) {
        MOTA_TRY(expect_wire(f, kBytes, "value name"));
        v.name = MOTA_TRY(keep(f.bytes));
      } else if (f.number == 2) {
        MOTA_TRY(expect_wire(f, kBytes, "value type"));
        Fields ts(f.bytes, f.data_at);
        Field t;
        while (MOTA_TRY(ts.next(t))) {
          if (t.number != 1) continue;  // sequence, map, optional, sparse tensor, denotation
          MOTA_TRY(expect_wire(t, kBytes, "tensor type"));
          v.tensor = true;
          MOTA_TRY(tensor_type(t.bytes, t.data_at, v));
        }
      }
    }
    return v;
  }

  Status tensor_type(std::string_view bytes, std::size_t base, OnnxValue& v) {
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 1) {
        MOTA_TRY(expect_wire(f, kVarint, "elem_type"));
        v.elem_type = static_cast<int>(std::min<std::uint64_t>(f.value, 0x7fffffff));
      } else if (f.number == 2) {
        MOTA_TRY(expect_wire(f, kBytes, "shape"));
        std::vector<OnnxDim> dims;
        Fields ds(f.bytes, f.data_at);
        Field d;
        while (MOTA_TRY(ds.next(d))) {
          if (d.number != 1) continue;
          MOTA_TRY(expect_wire(d, kBytes, "dim"));
          if (dims.size() >= kOnnxMaxRank) {
            return fail(Errc::too_large, "ONNX value \"" + v.name + "\" has more than " +
                                             std::to_string(kOnnxMaxRank) + " dimensions");
          }
          dims.push_back(MOTA_TRY(dim(d.bytes, d.data_at)));
        }
        v.shape = std::move(dims);
      }
    }
    return {};
  }

  Result<OnnxDim> dim(std::string_view bytes, std::size_t base) {
    OnnxDim out;
    Fields fs(bytes, base);
    Field f;
    while (MOTA_TRY(fs.next(f))) {
      if (f.number == 1) {
        MOTA_TRY(expect_wire(f, kVarint, "dim_value"));
        auto v = static_cast<std::int64_t>(f.value);
        // A negative dim_value is not a size; treat it as unknown, like ONNX's own checker.
        out.value = v >= 0 ? v : -1;
        out.param.clear();
      } else if (f.number == 2) {
        MOTA_TRY(expect_wire(f, kBytes, "dim_param"));
        out.param = MOTA_TRY(keep(f.bytes));
        out.value = -1;
      }
    }
    return out;
  }

  OnnxModel& m_;
  const char* base_ = nullptr;
  std::size_t kept_ = 0;
};

}  // namespace

int OnnxNode::given_inputs() const {
  return static_cast<int>(
      std::count_if(inputs.begin(), inputs.end(), [](const std::string& i) { return !i.empty(); }));
}

bool OnnxNode::has_attribute(std::string_view name) const {
  return std::find(attributes.begin(), attributes.end(), name) != attributes.end();
}

std::optional<std::int64_t> OnnxModel::opset(std::string_view domain) const {
  if (domain == "ai.onnx") domain = "";
  for (const auto& o : opsets) {
    if (o.domain == domain) return o.version;
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::size_t>> OnnxModel::operator_counts() const {
  std::map<std::string, std::size_t> counts;
  for (const auto& n : nodes) {
    ++counts[n.domain.empty() ? n.op_type : n.domain + ":" + n.op_type];
  }
  return {counts.begin(), counts.end()};
}

Result<OnnxModel> read_onnx_model(std::string_view bytes) {
  OnnxModel m;
  ModelReader r(m);
  MOTA_TRY(r.model(bytes));
  return m;
}

Result<OnnxModel> read_onnx_file(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error("open", path.string(), errno));
  struct Closer {
    int fd;
    ~Closer() { ::close(fd); }
  } closer{fd};
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno_error("stat", path.string(), errno));
  if (!S_ISREG(st.st_mode)) return fail(Errc::io, path.string() + " is not a regular file");
  if (st.st_size == 0) {
    return fail(Errc::parse, path.string() + ": not an ONNX model: the file is empty");
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED) return fail(errno_error("mmap", path.string(), errno));
  struct Unmap {
    void* p;
    std::size_t n;
    ~Unmap() { ::munmap(p, n); }
  } unmap{p, size};
  (void)::madvise(p, size, MADV_SEQUENTIAL);
  return read_onnx_model(std::string_view(static_cast<const char*>(p), size));
}

std::string onnx_dtype_name(int t) {
  static const char* const kNames[] = {
      "undefined",      "float32",    "uint8",          "int8",       "uint16",   "int16",
      "int32",          "int64",      "string",         "bool",       "float16",  "float64",
      "uint32",         "uint64",     "complex64",      "complex128", "bfloat16", "float8e4m3fn",
      "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4",      "int4",     "float4e2m1"};
  if (t >= 0 && static_cast<std::size_t>(t) < std::size(kNames)) return kNames[t];
  return "type-" + std::to_string(t);
}

std::string format_onnx_shape(const std::optional<std::vector<OnnxDim>>& shape) {
  if (!shape) return "(no shape)";
  std::string s = "[";
  for (std::size_t i = 0; i < shape->size(); ++i) {
    const auto& d = (*shape)[i];
    if (i) s += ",";
    s += d.fixed() ? std::to_string(d.value) : d.param.empty() ? "?" : d.param;
  }
  return s + "]";
}

}  // namespace mota::runtime
