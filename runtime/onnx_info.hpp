#pragma once
// A tiny reader for the top of an ONNX ModelProto (protobuf wire format), enough to name what a
// model needs in an error message: the IR version and the default-domain opset. It reads untrusted
// bytes with bounds checks and never allocates per field.

#include <cstdint>
#include <optional>
#include <string_view>

namespace mota::runtime {

struct OnnxInfo {
  std::int64_t ir_version = 0;
  std::optional<std::int64_t> opset;  // version of the "" / "ai.onnx" domain, if declared
};

// nullopt when the bytes are not a well-formed protobuf message at the top level.
std::optional<OnnxInfo> read_onnx_info(std::string_view bytes);

}  // namespace mota::runtime
