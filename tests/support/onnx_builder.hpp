#pragma once
// A small ONNX (ModelProto) writer for tests: graphs with inputs and outputs (shapes with fixed,
// symbolic or unknown dimensions), value_info, nodes with attributes (ints, floats, strings,
// tensors, subgraphs), initializers (raw data, optionally marked as external), opset imports.
// It writes protobuf wire format directly, so tests need neither libonnx nor protobuf, and can
// also write what no exporter would (wrong wire types, huge counts) for the reader's tests.
//
//   onnx::Model m;
//   m.opsets = {{"", 13}};
//   m.graph.inputs = {onnx::value("x", {1, 4})};
//   m.graph.outputs = {onnx::value("y", {1, 4})};
//   m.graph.nodes = {onnx::node("Relu", {"x"}, {"y"})};
//   std::string bytes = m.bytes();

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace mota::test::onnx {

// TensorProto.DataType values used by tests.
enum ElemType : int {
  kFloat = 1,
  kUint8 = 2,
  kInt8 = 3,
  kInt32 = 6,
  kInt64 = 7,
  kBool = 9,
  kFloat16 = 10,
  kDouble = 11,
};

struct Dim {
  std::int64_t value = -1;           // >= 0: dim_value
  std::string param;                 // non-empty: dim_param; both unset: an unknown dimension
  Dim(std::int64_t v) : value(v) {}  // NOLINT: {1, 3, "batch"} reads naturally
  Dim(const char* p) : param(p) {}   // NOLINT
  static Dim unknown() { return Dim(std::int64_t{-1}); }
};

struct Value {
  std::string name;
  int elem_type = kFloat;
  std::optional<std::vector<Dim>> shape;  // nullopt: no shape field
};
Value value(std::string name, std::vector<Dim> shape, int elem_type = kFloat);

struct Tensor {
  std::string name;
  int elem_type = kFloat;
  std::vector<std::int64_t> dims;
  std::string raw;        // raw_data, little-endian
  bool external = false;  // data_location = EXTERNAL with a "location" entry (raw left empty)
};
Tensor floats(std::string name, std::vector<std::int64_t> dims, const std::vector<float>& v);
Tensor int64s(std::string name, std::vector<std::int64_t> dims, const std::vector<std::int64_t>& v);

struct Graph;

struct Attr {
  std::string name;
  // Exactly one of these is used, by `kind`.
  enum Kind { kInt, kFloat, kInts, kString, kTensor, kGraph } kind = kInt;
  std::int64_t i = 0;
  float f = 0;
  std::vector<std::int64_t> ints;
  std::string s;
  std::vector<Tensor> t;    // one element for kTensor
  std::string graph_bytes;  // kGraph: the GraphProto, serialised when the attribute is made
};
Attr attr(std::string name, std::int64_t v);
Attr attr(std::string name, float v);
Attr attr(std::string name, std::vector<std::int64_t> v);
Attr attr(std::string name, std::string v);
Attr attr(std::string name, Tensor v);
Attr attr(std::string name, const Graph& v);

struct Node {
  std::string op_type;
  std::vector<std::string> inputs, outputs;
  std::vector<Attr> attrs;
  std::string domain;
  std::string name;
};
Node node(std::string op_type, std::vector<std::string> inputs, std::vector<std::string> outputs,
          std::vector<Attr> attrs = {}, std::string domain = "");

struct Graph {
  std::string name = "g";
  std::vector<Node> nodes;
  std::vector<Value> inputs, outputs, value_info;
  std::vector<Tensor> initializers;
  std::string bytes() const;  // GraphProto
};

struct Model {
  std::int64_t ir_version = 8;
  std::vector<std::pair<std::string, std::int64_t>> opsets = {{"", 13}};
  std::string producer_name = "mota-tests", producer_version = "1";
  Graph graph;
  std::string bytes() const;  // ModelProto
};

// y = op_type(x), x and y float32 of shape `dims`: the smallest runnable model.
Model unary(const std::string& op_type, std::vector<Dim> dims, std::int64_t opset = 13);

// Protobuf wire primitives, for tests that write malformed bytes on purpose.
std::string pb_varint(std::uint64_t v);
std::string pb_key(int field, int wire);
std::string pb_int(int field, std::uint64_t v);
std::string pb_bytes(int field, const std::string& s);

}  // namespace mota::test::onnx
