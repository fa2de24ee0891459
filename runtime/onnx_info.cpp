#include "runtime/onnx_info.hpp"

namespace mota::runtime {

namespace {

struct Reader {
  std::string_view s;
  std::size_t pos = 0;

  bool varint(std::uint64_t& out) {
    out = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos >= s.size()) return false;
      auto b = static_cast<unsigned char>(s[pos++]);
      out |= static_cast<std::uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  // Skips one field of the given wire type; false on malformed input.
  bool skip(unsigned wire, std::string_view* bytes = nullptr) {
    std::uint64_t v = 0;
    switch (wire) {
      case 0:
        return varint(v);
      case 1:
        if (s.size() - pos < 8) return false;
        pos += 8;
        return true;
      case 2:
        if (!varint(v) || v > s.size() - pos) return false;
        if (bytes) *bytes = s.substr(pos, v);
        pos += v;
        return true;
      case 5:
        if (s.size() - pos < 4) return false;
        pos += 4;
        return true;
      default:
        return false;
    }
  }
};

// OperatorSetIdProto: domain = 1 (string), version = 2 (int64).
std::optional<std::pair<std::string_view, std::int64_t>> read_opset(std::string_view bytes) {
  Reader r{bytes};
  std::string_view domain;
  std::int64_t version = 0;
  while (r.pos < bytes.size()) {
    std::uint64_t key = 0;
    if (!r.varint(key)) return std::nullopt;
    unsigned field = static_cast<unsigned>(key >> 3), wire = key & 7;
    if (field == 1 && wire == 2) {
      if (!r.skip(2, &domain)) return std::nullopt;
    } else if (field == 2 && wire == 0) {
      std::uint64_t v = 0;
      if (!r.varint(v)) return std::nullopt;
      version = static_cast<std::int64_t>(v);
    } else if (!r.skip(wire)) {
      return std::nullopt;
    }
  }
  return std::make_pair(domain, version);
}

}  // namespace

std::optional<OnnxInfo> read_onnx_info(std::string_view bytes) {
  Reader r{bytes};
  OnnxInfo info;
  bool any = false;
  while (r.pos < bytes.size()) {
    std::uint64_t key = 0;
    if (!r.varint(key)) return std::nullopt;
    unsigned field = static_cast<unsigned>(key >> 3), wire = key & 7;
    if (field == 0) return std::nullopt;
    if (field == 1 && wire == 0) {  // ir_version
      std::uint64_t v = 0;
      if (!r.varint(v)) return std::nullopt;
      info.ir_version = static_cast<std::int64_t>(v);
    } else if (field == 8 && wire == 2) {  // opset_import
      std::string_view sub;
      if (!r.skip(2, &sub)) return std::nullopt;
      auto op = read_opset(sub);
      if (!op) return std::nullopt;
      if (op->first.empty() || op->first == "ai.onnx") info.opset = op->second;
    } else if (!r.skip(wire)) {
      return std::nullopt;
    }
    any = true;
  }
  if (!any || info.ir_version == 0) return std::nullopt;
  return info;
}

}  // namespace mota::runtime
