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

template <class T>
void decode_w(bool sub, const std::byte* res, const std::byte* old, std::size_t old_n,
              std::byte* out, std::size_t n) {
  constexpr std::size_t w = sizeof(T);
  const std::size_t elems = n / w;
  const std::size_t full = std::min(elems, old_n / w);
  auto get = [&](std::size_t i) {
    T r = 0;
    for (std::size_t b = 0; b < w; ++b)
      r |= static_cast<T>(static_cast<T>(std::to_integer<std::uint8_t>(res[b * elems + i]))
                          << (8 * b));
    return r;
  };
  if (sub) {
    for (std::size_t i = 0; i < full; ++i) {
      const T r = static_cast<T>(get(i) + load<T>(old + i * w));
      std::memcpy(out + i * w, &r, w);
    }
  } else {
    for (std::size_t i = 0; i < full; ++i) {
      const T r = static_cast<T>(get(i) ^ load<T>(old + i * w));
      std::memcpy(out + i * w, &r, w);
    }
  }
  for (std::size_t i = full; i < elems; ++i) {
    const T y = old_elem<T>(old, old_n, i * w);
    const T r = sub ? static_cast<T>(get(i) + y) : static_cast<T>(get(i) ^ y);
    std::memcpy(out + i * w, &r, w);
  }
  for (std::size_t off = elems * w; off < n; ++off) {
    const auto x = std::to_integer<std::uint8_t>(res[off]);
    const std::uint8_t y = off < old_n ? std::to_integer<std::uint8_t>(old[off]) : 0;
    out[off] = std::byte(static_cast<std::uint8_t>(sub ? x + y : x ^ y));
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

void decode_residual(bool sub, int width, std::span<const std::byte> residual,
                     std::span<const std::byte> old, std::span<std::byte> out) {
  const std::size_t n = residual.size();
  const std::size_t old_n = std::min(old.size(), n);
  switch (width) {
    case 2:
      return decode_w<std::uint16_t>(sub, residual.data(), old.data(), old_n, out.data(), n);
    case 4:
      return decode_w<std::uint32_t>(sub, residual.data(), old.data(), old_n, out.data(), n);
    case 8:
      return decode_w<std::uint64_t>(sub, residual.data(), old.data(), old_n, out.data(), n);
    default:
      return decode_w<std::uint8_t>(sub, residual.data(), old.data(), old_n, out.data(), n);
  }
}

}  // namespace mota::delta
