#pragma once
// The .mdelta wire format (docs/delta.md is the reference). Little-endian, fixed-size headers,
// each protected by an XXH64 of its bytes so that a damaged header is reported as such instead
// of sending the decoder on a long read.

#include <array>
#include <cstdint>
#include <span>
#include <string>

#include "common/result.hpp"
#include "delta/delta.hpp"

namespace mota::delta::format {

inline constexpr std::array<char, 8> kMagic = {'\x89', 'M', 'D', 'E', 'L', 'T', 'A', '\n'};
inline constexpr std::array<char, 8> kFileEnd = {'M', 'D', 'F', 'I', 'L', 'E', 'N', 'D'};
inline constexpr std::array<char, 8> kPackageEnd = {'M', 'D', 'P', 'K', 'G', 'E', 'N', 'D'};
inline constexpr std::uint32_t kVersion = 1;
inline constexpr std::uint32_t kKindFile = 1;
inline constexpr std::uint32_t kKindPackage = 2;

// Bounds a decoder enforces on untrusted input (so memory stays bounded by a few chunks).
inline constexpr std::uint64_t kMaxChunk = std::uint64_t(32) << 20;
inline constexpr std::uint64_t kMaxPrefixFactor = 3;  // prefix ref_size <= 3 * max_chunk
inline constexpr std::uint64_t kMaxPackageJson = std::uint64_t(8) << 20;

inline constexpr std::size_t kFileHeaderSize = 88;
inline constexpr std::size_t kRecordSize = 64;
inline constexpr std::size_t kFileTrailerSize = 40;
inline constexpr std::size_t kPackageHeaderSize = 32;

struct FileHeader {
  std::uint64_t old_size = 0;
  std::array<std::uint8_t, 32> old_sha256{};
  std::uint64_t new_size = 0;
  std::uint64_t chunk_count = 0;
  std::uint32_t max_chunk = 0;
  std::uint8_t layout = 0;  // 0 raw, 1 safetensors, 2 onnx, 3 gguf
};

struct Record {
  Method method = Method::zstd;
  std::uint8_t width = 0;
  std::uint64_t raw_size = 0;
  std::uint64_t ref_offset = 0;
  std::uint64_t ref_size = 0;
  std::uint64_t ref_hash = 0;
  std::uint64_t out_hash = 0;
  std::uint64_t payload_size = 0;
};

std::array<std::byte, kFileHeaderSize> encode(const FileHeader& h);
// Checks magic, version, kind and the header hash; Errc::parse says which.
Result<FileHeader> decode_file_header(std::span<const std::byte, kFileHeaderSize> b);
std::array<std::byte, kRecordSize> encode(const Record& r);
Result<Record> decode_record(std::span<const std::byte, kRecordSize> b);

std::string layout_name(std::uint8_t code);
std::uint8_t layout_code(const std::string& name);

// Reads exactly out.size() bytes; a stream ending earlier is Errc::parse ("truncated").
Status read_exact(const ReadFn& in, std::span<std::byte> out, const char* what);

}  // namespace mota::delta::format

namespace mota::delta {
// Reads one file delta's header, records and trailer, skipping payloads (file_delta.cpp).
Result<FileDeltaInfo> inspect_file_delta(const ReadFn& delta);
}  // namespace mota::delta
