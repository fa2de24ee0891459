#include "delta/transform.hpp"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace mota::delta {
namespace {

template <class T>
inline T load(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Element i of the old bytes, zero-padded past old_n.
template <class T>
inline T old_elem(const std::byte* old, std::size_t old_n, std::size_t off) {
  if (off + sizeof(T) <= old_n) return load<T>(old + off);
  T y = 0;
  if (off < old_n) std::memcpy(&y, old + off, old_n - off);
  return y;
}

template <class T>
void encode_w(bool sub, const std::byte* neu, const std::byte* old, std::size_t old_n,
              std::byte* out, std::size_t n) {
  constexpr std::size_t w = sizeof(T);
  const std::size_t elems = n / w;
  const std::size_t full = std::min(elems, old_n / w);
  auto put = [&](std::size_t i, T r) {
    for (std::size_t b = 0; b < w; ++b)
      out[b * elems + i] = static_cast<std::byte>((r >> (8 * b)) & 0xff);
  };
  for (std::size_t i = 0; i < full; ++i) {
    const T x = load<T>(neu + i * w), y = load<T>(old + i * w);
    put(i, sub ? static_cast<T>(x - y) : static_cast<T>(x ^ y));
  }
  for (std::size_t i = full; i < elems; ++i) {
    const T x = load<T>(neu + i * w), y = old_elem<T>(old, old_n, i * w);
    put(i, sub ? static_cast<T>(x - y) : static_cast<T>(x ^ y));
  }
  for (std::size_t off = elems * w; off < n; ++off) {
    const auto x = std::to_integer<std::uint8_t>(neu[off]);
    const std::uint8_t y = off < old_n ? std::to_integer<std::uint8_t>(old[off]) : 0;
    out[off] = std::byte(static_cast<std::uint8_t>(sub ? x - y : x ^ y));
  }
}

// Un-shuffles and combines in one pass. Separate loops for xor and sub and restrict pointers
// let the compiler vectorise them (this loop runs over every byte of every xor/sub chunk).
template <class T, bool kSub>
void apply_w(const std::uint8_t* __restrict res, std::uint8_t* __restrict io, std::size_t n) {
  constexpr std::size_t w = sizeof(T);
  const std::size_t elems = n / w;
  for (std::size_t i = 0; i < elems; ++i) {
    T r = 0;
    for (std::size_t b = 0; b < w; ++b)
      r |= static_cast<T>(static_cast<T>(res[b * elems + i]) << (8 * b));
    T y;
    std::memcpy(&y, io + i * w, w);
    y = kSub ? static_cast<T>(y + r) : static_cast<T>(y ^ r);
    std::memcpy(io + i * w, &y, w);
  }
  for (std::size_t off = elems * w; off < n; ++off)
    io[off] = kSub ? static_cast<std::uint8_t>(io[off] + res[off]) : io[off] ^ res[off];
}

template <class T>
void apply_t(bool sub, const std::byte* res, std::byte* io, std::size_t n) {
  auto* r = reinterpret_cast<const std::uint8_t*>(res);
  auto* o = reinterpret_cast<std::uint8_t*>(io);
  if (sub) {
    apply_w<T, true>(r, o, n);
  } else {
    apply_w<T, false>(r, o, n);
  }
}

}  // namespace

void encode_residual(bool sub, int width, std::span<const std::byte> neu,
                     std::span<const std::byte> old, std::span<std::byte> out) {
  const std::size_t old_n = std::min(old.size(), neu.size());
  switch (width) {
    case 2:
      return encode_w<std::uint16_t>(sub, neu.data(), old.data(), old_n, out.data(), neu.size());
    case 4:
      return encode_w<std::uint32_t>(sub, neu.data(), old.data(), old_n, out.data(), neu.size());
    case 8:
      return encode_w<std::uint64_t>(sub, neu.data(), old.data(), old_n, out.data(), neu.size());
    default:
      return encode_w<std::uint8_t>(sub, neu.data(), old.data(), old_n, out.data(), neu.size());
  }
}

void apply_residual(bool sub, int width, std::span<const std::byte> residual,
                    std::span<std::byte> io) {
  const std::size_t n = std::min(residual.size(), io.size());
  switch (width) {
    case 2:
      return apply_t<std::uint16_t>(sub, residual.data(), io.data(), n);
    case 4:
      return apply_t<std::uint32_t>(sub, residual.data(), io.data(), n);
    case 8:
      return apply_t<std::uint64_t>(sub, residual.data(), io.data(), n);
    default:
      return apply_t<std::uint8_t>(sub, residual.data(), io.data(), n);
  }
}

}  // namespace mota::delta
