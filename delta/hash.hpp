#pragma once
// XXH64 (the xxHash 64-bit algorithm, seed 0): a fast non-cryptographic checksum for chunk
// integrity inside a delta. The authentication of a result is always a sha256 (trailer, or the
// signed model.json); these hashes only say early and precisely which chunk or base region is
// wrong.

#include <cstddef>
#include <cstdint>
#include <span>

namespace mota::delta {

std::uint64_t xxh64(std::span<const std::byte> data, std::uint64_t seed = 0);

}  // namespace mota::delta
