#pragma once
// Where the tensors of a weights file lie, for formats whose layout is cheap to read: safetensors
// (JSON header), ONNX (initializers' raw_data inside the protobuf) and GGUF (tensor infos).
// A delta cuts chunks at tensor boundaries and matches a tensor to the old tensor of the same
// name, so tensors that moved, grew or were reordered still meet their old bytes.

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace mota::delta {

struct Tensor {
  std::string name;
  std::uint64_t offset = 0;  // in the file
  std::uint64_t size = 0;
  int width = 0;  // element width in bytes (1, 2, 4, 8); 0 unknown
};

struct Layout {
  std::string format = "raw";   // "safetensors", "onnx", "gguf" or "raw" (nothing recognised)
  std::vector<Tensor> tensors;  // sorted by offset, non-overlapping, inside the file
};

// Reads exactly buf.size() bytes at the offset.
using PreadFn = std::function<Status(std::span<std::byte>, std::uint64_t)>;

// Recognises the file by its content (not its name). A file that looks like a known format but
// does not parse is returned as "raw": the layout only guides chunking, it is never trusted.
Layout parse_layout(const PreadFn& pread, std::uint64_t file_size);

}  // namespace mota::delta
