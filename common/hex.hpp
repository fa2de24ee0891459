#pragma once
#include <cstddef>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota {
// Lower-case hex of bytes.
std::string to_hex(std::span<const std::byte> data);
inline std::string to_hex(std::string_view data) {
  return to_hex(std::as_bytes(std::span(data.data(), data.size())));
}
// Decodes hex (either case); Errc::parse on odd length or a non-hex character.
Result<std::string> from_hex(std::string_view hex);
}  // namespace mota
