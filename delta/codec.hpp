#pragma once
// The zstd calls of the delta engine (backend: delta/platform/zstd/). Each function is a single
// frame in one call; contexts are per thread and reused.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "common/result.hpp"

namespace mota::delta::codec {

// Compresses `src` into one standard zstd frame (content size recorded). With a non-empty
// `prefix` the frame references it (ZSTD_CCtx_refPrefix, long-distance matching, window covering
// prefix + src): exactly what `zstd --patch-from=<prefix file>` produces and decodes.
Result<std::vector<std::byte>> compress(std::span<const std::byte> src, int level,
                                        std::span<const std::byte> prefix = {});

// Decodes one frame into `out`, which must be exactly the frame's content size; anything else
// (another size, trailing bytes, a damaged frame, a window over 2^31) is Errc::parse.
Status decompress(std::span<const std::byte> frame, std::span<std::byte> out,
                  std::span<const std::byte> prefix = {});

// Worst-case compressed size of n bytes.
std::size_t bound(std::size_t n);

}  // namespace mota::delta::codec
