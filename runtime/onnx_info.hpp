#pragma once
// A reader for the structure of an ONNX model (a ModelProto in protobuf wire format): IR version,
// opset imports, producer, the graph's inputs and outputs (name, element type, shape), every node's
// operator, and the initializers' names. Used where a model must be checked before an engine
// reads it: `mota release add` (publish), the OpenCV backend's load (before cv::dnn::readNet), and
// `mota-runtime inspect`.
//
// Why by hand and not with libonnx (Debian ships 1.12): parsing into protobuf objects copies the
// whole model, weights included, into memory (a 1 GB model costs 1 GB more), and this must run
// before OpenCV reads the file and on a publish host that may not have OpenCV at all. This reader
// walks the bytes in place: an initializer's data (raw_data, float_data, ...) is skipped as one
// length-delimited field, never copied or decoded. What it keeps is small: names, shapes, one
// entry per node.
//
// The bytes are untrusted: every length is checked against the buffer, every count against the
// limits below (Errc::too_large), and nesting (subgraphs of If/Loop/Scan) is bounded, so hostile
// bytes cost at most a linear scan and bounded memory. Malformed bytes give Errc::parse with the
// byte offset ("not an ONNX model: truncated field at byte 754").
//
// Subgraphs: the body graphs of If, Loop and Scan (graph attributes) are read too; their nodes are
// listed with depth >= 1, so the operator list and the backend checks (runtime/onnx_limits.hpp)
// see every operator the model runs. Their inputs, outputs and initializers are not listed (they
// are the subgraph's, not the model's). Model-local functions (ModelProto.functions) are not
// expanded: a node calling one is listed under the function's domain and name.
//
// Strictness beyond protobuf: a field with the wrong wire type for its number is an error (a
// protobuf parser would fail too), and so is a second `graph` field (protobuf would merge the two;
// no exporter writes that), and a name (of a value, node input or output, operator, domain,
// attribute, producer) that is not UTF-8 or holds a control character: what the reader returns
// is safe to print and to put in JSON.
//
// Thread-safety: free functions on caller-owned data; no shared state.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace mota::runtime {

// Bounds on what one model may contain. Far above real models (the largest vision and language
// models have well under 100,000 nodes), low enough that the reader's memory stays bounded.
inline constexpr std::size_t kOnnxMaxNodes = 500'000;
inline constexpr std::size_t kOnnxMaxValues = 100'000;  // graph inputs + outputs
inline constexpr std::size_t kOnnxMaxInitializers = 2'000'000;
inline constexpr std::size_t kOnnxMaxOpsets = 256;
inline constexpr std::size_t kOnnxMaxRank = 64;              // dims of one input/output
inline constexpr int kOnnxMaxDepth = 8;                      // subgraphs within subgraphs
inline constexpr std::size_t kOnnxMaxNameBytes = 64u << 20;  // all names kept, together

struct OnnxDim {
  std::int64_t value = -1;  // >= 0: a fixed size; -1: symbolic (param set) or unknown
  std::string param;        // dim_param, e.g. "batch"; empty when fixed or unknown
  bool fixed() const { return value >= 0; }
};

// A graph input or output.
struct OnnxValue {
  std::string name;
  int elem_type = 0;   // TensorProto.DataType; 0 when undefined or not a tensor
  bool tensor = true;  // false: a sequence, map or optional value (type shown as "non-tensor")
  // nullopt when the graph gives no shape (rank unknown); else one entry per dimension.
  std::optional<std::vector<OnnxDim>> shape;
};

struct OnnxNode {
  std::string op_type;
  std::string domain;               // "" = the default domain (ai.onnx)
  std::vector<std::string> inputs;  // as written: an omitted optional input is ""
  std::vector<std::string> outputs;
  std::vector<std::string> attributes;  // attribute names
  int depth = 0;                        // 0: the main graph; n: inside n levels of subgraphs

  int given_inputs() const;  // inputs that are not omitted ("")
  bool has_attribute(std::string_view name) const;
};

struct OnnxOpset {
  std::string domain;  // "" = ai.onnx
  std::int64_t version = 0;
};

struct OnnxModel {
  std::int64_t ir_version = 0;
  std::vector<OnnxOpset> opsets;
  std::string producer_name, producer_version;
  std::vector<OnnxValue> inputs;          // the main graph's inputs that are not initializers
  std::vector<OnnxValue> outputs;         // the main graph's outputs
  std::vector<OnnxNode> nodes;            // in file order, subgraph nodes after their parent node
  std::vector<std::string> initializers;  // names of the main graph's initializers
  std::size_t external_initializers = 0;  // initializers whose data lives in another file
  std::size_t subgraphs = 0;              // graph attributes read (If/Loop/Scan bodies)

  // The version imported for `domain` ("" and "ai.onnx" are the same domain), if any.
  std::optional<std::int64_t> opset(std::string_view domain = "") const;
  // (operator, node count), sorted by name; an operator outside the default domain is named
  // "domain:op_type".
  std::vector<std::pair<std::string, std::size_t>> operator_counts() const;
};

// Reads `bytes` as an ONNX ModelProto. The result owns its strings (it does not point into
// `bytes`). Errors: Errc::parse (malformed, no ir_version, no graph), Errc::too_large (a limit
// above exceeded).
Result<OnnxModel> read_onnx_model(std::string_view bytes);

// The same on a file, which is mapped read-only rather than read, so a model of several GB costs
// no memory beyond what the reader keeps. Errc::io / not_found for the file itself. The file must
// not shrink while it is read (a mapped read past its new end is SIGBUS).
Result<OnnxModel> read_onnx_file(const std::filesystem::path& path);

// mota's name for an ONNX element type: "float32", "float16", "int8", "uint8", "int32", "int64"
// (the dtypes of model.json), and "float64", "bool", "string", "bfloat16", "int16", "uint16",
// "uint32", "uint64", "complex64", "complex128", "float8e4m3fn", ... for the others;
// "undefined" for 0 and "type-N" for numbers ONNX does not define.
std::string onnx_dtype_name(int elem_type);

// "[1,3,240,320]", with a symbolic dimension as its name ("[batch,3,240,320]"), an unknown one as
// "?", and "(no shape)" when the rank is unknown.
std::string format_onnx_shape(const std::optional<std::vector<OnnxDim>>& shape);

}  // namespace mota::runtime
