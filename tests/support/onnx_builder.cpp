#include "tests/support/onnx_builder.hpp"

#include <cstring>

namespace mota::test::onnx {

std::string pb_varint(std::uint64_t v) {
  std::string out;
  while (v >= 0x80) {
    out += static_cast<char>((v & 0x7f) | 0x80);
    v >>= 7;
  }
  out += static_cast<char>(v);
  return out;
}

std::string pb_key(int field, int wire) {
  return pb_varint((static_cast<std::uint64_t>(field) << 3) | static_cast<std::uint64_t>(wire));
}

std::string pb_int(int field, std::uint64_t v) {
  return pb_key(field, 0) + pb_varint(v);
}

std::string pb_bytes(int field, const std::string& s) {
  return pb_key(field, 2) + pb_varint(s.size()) + s;
}

namespace {

std::string sint(int field, std::int64_t v) {
  return pb_int(field, static_cast<std::uint64_t>(v));  // two's complement, as protobuf int64
}

// ValueInfoProto: name 1, type 2 (TypeProto.tensor_type 1: elem_type 1, shape 2 (dim 1: value 1,
// param 2)).
std::string value_bytes(const Value& v) {
  std::string tensor = pb_int(1, static_cast<std::uint64_t>(v.elem_type));
  if (v.shape) {
    std::string shape;
    for (const auto& d : *v.shape) {
      std::string dim;
      if (!d.param.empty()) {
        dim = pb_bytes(2, d.param);
      } else if (d.value >= 0) {
        dim = sint(1, d.value);
      }
      shape += pb_bytes(1, dim);
    }
    tensor += pb_bytes(2, shape);
  }
  return pb_bytes(1, v.name) + pb_bytes(2, pb_bytes(1, tensor));
}

// TensorProto: dims 1, data_type 2, name 8, raw_data 9, external_data 13, data_location 14.
std::string tensor_bytes(const Tensor& t) {
  std::string out;
  for (auto d : t.dims) out += sint(1, d);
  out += pb_int(2, static_cast<std::uint64_t>(t.elem_type));
  out += pb_bytes(8, t.name);
  if (t.external) {
    out += pb_bytes(13, pb_bytes(1, "location") + pb_bytes(2, "weights.bin"));
    out += pb_int(14, 1);
  } else {
    out += pb_bytes(9, t.raw);
  }
  return out;
}

// AttributeProto: name 1, f 2, i 3, s 4, t 5, g 6, ints 8, type 20.
std::string attr_bytes(const Attr& a) {
  std::string out = pb_bytes(1, a.name);
  switch (a.kind) {
    case Attr::kInt:
      out += sint(3, a.i) + pb_int(20, 2);
      break;
    case Attr::kFloat: {
      std::uint32_t bits;
      std::memcpy(&bits, &a.f, 4);
      std::string le(4, '\0');
      for (int i = 0; i < 4; ++i) le[i] = static_cast<char>((bits >> (8 * i)) & 0xff);
      out += pb_key(2, 5) + le + pb_int(20, 1);
      break;
    }
    case Attr::kInts:
      for (auto v : a.ints) out += sint(8, v);
      out += pb_int(20, 7);
      break;
    case Attr::kString:
      out += pb_bytes(4, a.s) + pb_int(20, 3);
      break;
    case Attr::kTensor:
      out += pb_bytes(5, tensor_bytes(a.t.at(0))) + pb_int(20, 4);
      break;
    case Attr::kGraph:
      out += pb_bytes(6, a.graph_bytes) + pb_int(20, 5);
      break;
  }
  return out;
}

// NodeProto: input 1, output 2, name 3, op_type 4, attribute 5, domain 7.
std::string node_bytes(const Node& n) {
  std::string out;
  for (const auto& i : n.inputs) out += pb_bytes(1, i);
  for (const auto& o : n.outputs) out += pb_bytes(2, o);
  if (!n.name.empty()) out += pb_bytes(3, n.name);
  out += pb_bytes(4, n.op_type);
  for (const auto& a : n.attrs) out += pb_bytes(5, attr_bytes(a));
  if (!n.domain.empty()) out += pb_bytes(7, n.domain);
  return out;
}

template <class T>
std::string raw_of(const std::vector<T>& v) {
  std::string out(v.size() * sizeof(T), '\0');
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

}  // namespace

Value value(std::string name, std::vector<Dim> shape, int elem_type) {
  return Value{std::move(name), elem_type, std::move(shape)};
}

Tensor floats(std::string name, std::vector<std::int64_t> dims, const std::vector<float>& v) {
  return Tensor{std::move(name), kFloat, std::move(dims), raw_of(v), false};
}

Tensor int64s(std::string name, std::vector<std::int64_t> dims,
              const std::vector<std::int64_t>& v) {
  return Tensor{std::move(name), kInt64, std::move(dims), raw_of(v), false};
}

Attr attr(std::string name, std::int64_t v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kInt;
  a.i = v;
  return a;
}
Attr attr(std::string name, float v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kFloat;
  a.f = v;
  return a;
}
Attr attr(std::string name, std::vector<std::int64_t> v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kInts;
  a.ints = std::move(v);
  return a;
}
Attr attr(std::string name, std::string v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kString;
  a.s = std::move(v);
  return a;
}
Attr attr(std::string name, Tensor v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kTensor;
  a.t.push_back(std::move(v));
  return a;
}
Attr attr(std::string name, const Graph& v) {
  Attr a;
  a.name = std::move(name);
  a.kind = Attr::kGraph;
  a.graph_bytes = v.bytes();
  return a;
}

Node node(std::string op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
          std::vector<Attr> attrs, std::string domain) {
  Node n;
  n.op_type = std::move(op_type);
  n.inputs = std::move(inputs);
  n.outputs = std::move(outputs);
  n.attrs = std::move(attrs);
  n.domain = std::move(domain);
  return n;
}

// GraphProto: node 1, name 2, initializer 5, input 11, output 12, value_info 13.
std::string Graph::bytes() const {
  std::string out;
  for (const auto& n : nodes) out += pb_bytes(1, node_bytes(n));
  out += pb_bytes(2, name);
  for (const auto& t : initializers) out += pb_bytes(5, tensor_bytes(t));
  for (const auto& v : inputs) out += pb_bytes(11, value_bytes(v));
  for (const auto& v : outputs) out += pb_bytes(12, value_bytes(v));
  for (const auto& v : value_info) out += pb_bytes(13, value_bytes(v));
  return out;
}

// ModelProto: ir_version 1, producer_name 2, producer_version 3, graph 7, opset_import 8
// (domain 1, version 2).
std::string Model::bytes() const {
  std::string out = sint(1, ir_version);
  for (const auto& [domain, version] : opsets) {
    out += pb_bytes(8, pb_bytes(1, domain) + sint(2, version));
  }
  if (!producer_name.empty()) out += pb_bytes(2, producer_name);
  if (!producer_version.empty()) out += pb_bytes(3, producer_version);
  out += pb_bytes(7, graph.bytes());
  return out;
}

Model unary(const std::string& op_type, std::vector<Dim> dims, std::int64_t opset) {
  Model m;
  m.opsets = {{"", opset}};
  m.graph.inputs = {value("x", dims)};
  m.graph.outputs = {value("y", dims)};
  m.graph.nodes = {node(op_type, {"x"}, {"y"})};
  return m;
}

}  // namespace mota::test::onnx
