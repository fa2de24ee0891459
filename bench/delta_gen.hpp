#pragma once
// Generated model-weight pairs for the delta tests and bench/delta.sh: safetensors files whose
// tensors look like trained weights to a compressor (gaussian, sigma 0.02), and a "new" version
// derived the way real updates derive from a base (fine-tune noise on every weight or on a few
// tensors, a replaced head, reordered/grown/shrunk tensor sets, int8 re-quantisation). The
// generator is written out (splitmix64 + Box-Muller) so the bytes are the same everywhere.
// Header-only: used by tests/delta/*_test.cpp and bench/delta_gen.cpp.

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace mota::bench {

enum class PairKind {
  full_finetune,     // small noise on every weight
  partial_finetune,  // noise on 1 tensor in 5, the rest identical
  head_replaced,     // the last tensor re-drawn, the rest identical
  reordered,         // same tensors, written in another order, light fine-tune on some
  grown,             // two new tensors, one tensor grows
  shrunk,            // two tensors dropped
  requantised,       // int8: fine-tune then quantise again
  identical,
  unrelated,  // a different seed
};

inline const char* pair_kind_name(PairKind k) {
  switch (k) {
    case PairKind::full_finetune:
      return "full-finetune";
    case PairKind::partial_finetune:
      return "partial-finetune";
    case PairKind::head_replaced:
      return "head-replaced";
    case PairKind::reordered:
      return "reordered";
    case PairKind::grown:
      return "grown";
    case PairKind::shrunk:
      return "shrunk";
    case PairKind::requantised:
      return "requantised";
    case PairKind::identical:
      return "identical";
    case PairKind::unrelated:
      return "unrelated";
  }
  return "?";
}

class Rng {
 public:
  explicit Rng(std::uint64_t seed) : s_(seed) {}
  std::uint64_t next() {
    std::uint64_t z = (s_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * (1.0 / 9007199254740992.0); }
  double gauss() {
    double u = uniform(), v = uniform();
    if (u < 1e-300) u = 1e-300;
    return std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v);
  }

 private:
  std::uint64_t s_;
};

inline std::uint64_t name_seed(const std::string& name, std::uint64_t seed) {
  std::uint64_t h = 1469598103934665603ULL ^ seed;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// IEEE binary16 from float, round to nearest even (normal and subnormal; no NaN inputs here).
inline std::uint16_t to_half(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000;
  std::int32_t exp = std::int32_t((x >> 23) & 0xff) - 127 + 15;
  std::uint32_t mant = x & 0x7fffff;
  if (exp >= 31) return static_cast<std::uint16_t>(sign | 0x7c00);
  if (exp <= 0) {
    if (exp < -10) return static_cast<std::uint16_t>(sign);
    mant |= 0x800000;
    const int shift = 14 - exp;
    std::uint32_t h = mant >> shift;
    const std::uint32_t rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (h & 1))) ++h;
    return static_cast<std::uint16_t>(sign | h);
  }
  std::uint32_t h = (std::uint32_t(exp) << 10) | (mant >> 13);
  const std::uint32_t rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) ++h;
  return static_cast<std::uint16_t>(sign | h);
}

struct TensorSpec {
  std::string name;
  std::uint64_t elems;
};

// Element type of a generated file: "F32", "F16" or "I8".
inline int dtype_width(const std::string& dtype) {
  return dtype == "F32" ? 4 : dtype == "F16" ? 2 : 1;
}

// The weights of one tensor: base draw for (name, seed), then the update's noise if any.
inline std::vector<std::uint8_t> tensor_bytes(const std::string& dtype, const TensorSpec& t,
                                              std::uint64_t seed, double noise,
                                              std::uint64_t noise_seed) {
  Rng base(name_seed(t.name, seed));
  Rng delta(name_seed(t.name, noise_seed));
  const int w = dtype_width(dtype);
  std::vector<std::uint8_t> out(t.elems * std::uint64_t(w));
  // int8: per-tensor symmetric scale, as a quantiser would pick it (max |w| / 127).
  const float scale = 0.02f * 4.5f / 127.0f * (noise > 0 ? float(1.0 + noise * 3) : 1.0f);
  for (std::uint64_t i = 0; i < t.elems; ++i) {
    double v = 0.02 * base.gauss();
    if (noise > 0) v += v * noise * delta.gauss() + 0.02 * noise * 0.1 * delta.gauss();
    const float f = static_cast<float>(v);
    if (w == 4) {
      std::memcpy(&out[i * 4], &f, 4);
    } else if (w == 2) {
      const std::uint16_t h = to_half(f);
      std::memcpy(&out[i * 2], &h, 2);
    } else {
      long q = std::lround(f / scale);
      q = q < -127 ? -127 : q > 127 ? 127 : q;
      out[i] = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
    }
  }
  return out;
}

// One side of a pair: tensor order, and per tensor the noise level (0 = base weights).
struct Side {
  std::vector<TensorSpec> tensors;
  std::map<std::string, double> noise;
  std::map<std::string, std::uint64_t> reseed;  // a tensor re-drawn from another seed
};

inline bool write_safetensors(const std::string& path, const std::string& dtype, const Side& side,
                              std::uint64_t seed) {
  std::string header = "{";
  std::uint64_t off = 0;
  const int w = dtype_width(dtype);
  for (std::size_t i = 0; i < side.tensors.size(); ++i) {
    const auto& t = side.tensors[i];
    const std::uint64_t n = t.elems * std::uint64_t(w);
    header += (i ? "," : "") + std::string("\"") + t.name + "\":{\"dtype\":\"" + dtype +
              "\",\"shape\":[" + std::to_string(t.elems) + "],\"data_offsets\":[" +
              std::to_string(off) + "," + std::to_string(off + n) + "]}";
    off += n;
  }
  header += "}";
  while ((header.size() + 8) % 8) header += ' ';
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return false;
  std::uint64_t hl = header.size();
  bool ok = std::fwrite(&hl, 8, 1, f) == 1 && std::fwrite(header.data(), 1, hl, f) == hl;
  for (const auto& t : side.tensors) {
    if (!ok) break;
    auto n = side.noise.find(t.name);
    auto r = side.reseed.find(t.name);
    const std::uint64_t s = r != side.reseed.end() ? r->second : seed;
    auto bytes = tensor_bytes(dtype, t, s, n != side.noise.end() ? n->second : 0.0, seed * 31 + 7);
    ok = std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size();
  }
  return std::fclose(f) == 0 && ok;
}

// Writes OLD and NEW for `kind` with about `total_bytes` of weights each.
inline bool write_pair(PairKind kind, const std::string& dtype, std::uint64_t total_bytes,
                       const std::string& old_path, const std::string& new_path,
                       std::uint64_t seed = 1) {
  const int n = 16;
  const std::uint64_t per = total_bytes / std::uint64_t(dtype_width(dtype)) / n;
  Side old;
  for (int i = 0; i < n; ++i) {
    // Varied sizes, as layers are: 0.5x .. 1.5x the mean.
    old.tensors.push_back({"layers." + std::to_string(i) + ".weight", per / 2 + per * i / n});
  }
  old.tensors.push_back({"head.weight", per / 2});
  Side neu = old;
  const double ft = 0.01;  // relative fine-tune noise
  switch (kind) {
    case PairKind::full_finetune:
    case PairKind::requantised:
      for (auto& t : neu.tensors) neu.noise[t.name] = ft;
      break;
    case PairKind::partial_finetune:
      for (std::size_t i = 0; i < neu.tensors.size(); i += 5) neu.noise[neu.tensors[i].name] = ft;
      break;
    case PairKind::head_replaced:
      neu.reseed["head.weight"] = seed + 1000;
      break;
    case PairKind::reordered:
      for (std::size_t i = 0; i + 1 < neu.tensors.size(); i += 2)
        std::swap(neu.tensors[i], neu.tensors[i + 1]);
      for (std::size_t i = 0; i < neu.tensors.size(); i += 3) neu.noise[neu.tensors[i].name] = ft;
      break;
    case PairKind::grown:
      neu.tensors.insert(neu.tensors.begin() + 3, {"adapter.0.weight", per / 3});
      neu.tensors.push_back({"adapter.1.weight", per / 4});
      neu.tensors.back().elems += 0;
      neu.tensors[0].elems += per / 8;  // a grown embedding: first rows identical
      break;
    case PairKind::shrunk:
      neu.tensors.erase(neu.tensors.begin() + 2);
      neu.tensors.erase(neu.tensors.begin() + 7);
      break;
    case PairKind::identical:
      break;
    case PairKind::unrelated:
      return write_safetensors(old_path, dtype, old, seed) &&
             write_safetensors(new_path, dtype, neu, seed + 12345);
  }
  return write_safetensors(old_path, dtype, old, seed) &&
         write_safetensors(new_path, dtype, neu, seed);
}

}  // namespace mota::bench
