#pragma once
// Residual transforms of the xor/sub methods: combine a new chunk with the aligned old bytes
// (zero-padded past their end) and split the result into byte planes, so that the bytes that
// rarely change (sign/exponent) form long compressible runs apart from the noisy mantissa bytes.

#include <cstddef>
#include <span>

namespace mota::delta {

// residual = shuffle(new ^ old) (xor) or shuffle(new - old) per little-endian element of
// `width` bytes (sub), old zero past its end. Shuffle: plane b holds byte b of every element;
// the tail shorter than one element stays bytewise at the end. out.size() == neu.size().
void encode_residual(bool sub, int width, std::span<const std::byte> neu,
                     std::span<const std::byte> old, std::span<std::byte> out);
// The inverse, in place and in one pass: `io` holds the aligned old bytes, zero-padded to
// residual.size() (== io.size()), and becomes the new chunk. In place because the apply path
// reads the old region straight into the output buffer (one buffer and one copy less per chunk).
void apply_residual(bool sub, int width, std::span<const std::byte> residual,
                    std::span<std::byte> io);

}  // namespace mota::delta
