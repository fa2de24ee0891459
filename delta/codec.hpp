#pragma once
// The zstd calls of the delta engine (backend: delta/platform/zstd/). Each function is a single
// frame in one call; contexts are per thread and reused.

#include <cstddef>
#include <cstdint>
#include <memory>
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

// A decompression context kept for many frames (one per decoding worker: creating a zstd
// context per chunk costs allocations and cold tables). Movable, not thread-safe: one thread
// uses it at a time. Same contract as decompress() above.
class Decompressor {
 public:
  Decompressor();
  ~Decompressor();
  Decompressor(Decompressor&&) noexcept;
  Decompressor& operator=(Decompressor&&) noexcept;
  Status decompress(std::span<const std::byte> frame, std::span<std::byte> out,
                    std::span<const std::byte> prefix = {});

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Worst-case compressed size of n bytes.
std::size_t bound(std::size_t n);

}  // namespace mota::delta::codec
