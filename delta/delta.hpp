#pragma once
// The delta engine: delta updates for files (.mdelta; format in docs/delta.md). It knows bytes
// and files only; package deltas (a model tree per version) are the layer above it,
// delta/package/package_delta.hpp (library mota_package_delta, which links storage).
//
// A file delta splits the NEW file into chunks (a few MiB, or per tensor where a format parser
// knows the layout: safetensors, ONNX initializers, GGUF) and encodes each chunk with whichever
// is smallest: a copy of identical bytes of the old file, zstd with the matching old region as
// prefix (a standard zstd frame: `zstd -d --patch-from=<region>` decodes it), XOR or subtraction
// against the aligned old bytes with byte-plane shuffling then zstd, or plain zstd. Chunks are
// independent, offsets are 64-bit, and memory is bounded by a few chunks whatever the file size.
//
// Thread-safety: every function is reentrant; none keeps state between calls. Functions that take
// a callback call it only from the calling thread.

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace mota::delta {

namespace stdfs = std::filesystem;

// Pull-style source of delta bytes (e.g. straight from a download): fills the buffer, returns the
// bytes read, 0 at end of stream. The same type as storage::ReadFn (a package stream can feed it).
using ReadFn = std::function<Result<std::size_t>(std::span<std::byte>)>;
// Push-style sink for bytes produced in order. An error stops the operation and is returned.
using WriteFn = std::function<Status(std::span<const std::byte>)>;

// How a chunk of the new file is encoded. Values are the on-disk codes (docs/delta.md).
enum class Method : std::uint8_t {
  copy = 0,    // bytes of the old file at ref_offset
  zstd = 1,    // plain zstd frame
  prefix = 2,  // zstd frame compressed with old[ref_offset, +ref_size) as prefix (--patch-from)
  xor_ = 3,    // zstd(shuffle(new XOR old)) against old at ref_offset, zero-padded
  sub = 4,     // zstd(shuffle(new - old)) per little-endian element of elem_width bytes
};
inline constexpr int kMethodCount = 5;
const char* method_name(Method m);

struct MethodStats {
  std::uint64_t chunks = 0;
  std::uint64_t raw_bytes = 0;      // bytes of the new file encoded with this method
  std::uint64_t encoded_bytes = 0;  // record headers + payloads
};

struct FileDeltaInfo {
  std::uint64_t old_size = 0;
  std::string old_sha256;  // hex
  std::uint64_t new_size = 0;
  std::string new_sha256;  // hex (from the trailer; empty if the stream was cut short)
  std::uint64_t chunks = 0;
  std::uint64_t delta_size = 0;  // bytes of this file delta, header to trailer
  std::string layout;            // "safetensors", "onnx", "gguf" or "raw": how the new file was cut
  std::array<MethodStats, kMethodCount> methods{};
};

struct DiffOptions {
  int level = 19;                                     // zstd level of the final encoding, 1..22
  std::uint64_t chunk_size = std::uint64_t(4) << 20;  // max raw bytes per chunk, 64 KiB..32 MiB
  int threads = 0;                                    // 0: hardware concurrency
  bool parse_formats = true;                          // per-tensor chunks for known formats
};

// Encodes NEW against OLD and writes the delta to `sink` in order (no seeking), reading both
// files with pread: memory is about (threads + 1) * 4 chunks. The old file may be empty or
// missing-as-empty (`old_path` empty): then every chunk is plain zstd.
Result<FileDeltaInfo> diff(const stdfs::path& old_path, const stdfs::path& new_path,
                           const WriteFn& sink, const DiffOptions& options = {});
// diff() into `out_path`, atomically (temporary + rename: a failure leaves nothing).
Result<FileDeltaInfo> diff_files(const stdfs::path& old_path, const stdfs::path& new_path,
                                 const stdfs::path& out_path, const DiffOptions& options = {});

struct ApplyOptions {
  int threads = 2;           // decoding workers (1..64); output is still produced in order
  bool verify_base = false;  // hash the whole old file against the delta's base sha256 first
  std::uint64_t max_new_size = std::uint64_t(1) << 42;  // refuse to produce more (4 TiB)
};

struct ApplyResult {
  std::uint64_t new_size = 0;
  std::string new_sha256;  // hex; equal to the delta's, checked
  std::uint64_t delta_bytes = 0;
};

// Decodes one file delta read from `delta` (consuming exactly its bytes, so it can sit inside a
// larger stream) against the old file, pushing the new file to `sink` in order. The old file is
// read with pread, only where chunks refer to it. `delta` and `sink` are called on the calling
// thread only; `threads` workers decode chunks and feed the output's sha256 meanwhile.
// Memory: (threads + 2) chunks in flight plus one chunk-sized scratch buffer per worker (about
// 40 MiB at 4 MiB chunks and 2 threads), independent of the file size.
// Errors: Errc::parse for a malformed or truncated delta, Errc::verification for a delta whose
// base does not match the old file (size, or a referenced region whose hash differs: a modified
// base or a delta for another version) or whose output does not match its recorded hashes,
// Errc::too_large past the limits. Bytes already pushed to `sink` are then garbage: write to a
// temporary (apply_file does) or verify before use.
Result<ApplyResult> apply(const stdfs::path& old_path, const ReadFn& delta, const WriteFn& sink,
                          const ApplyOptions& options = {});
// apply() from a delta file into `out_path`, atomically: a failure leaves nothing at out_path.
Result<ApplyResult> apply_file(const stdfs::path& old_path, const stdfs::path& delta_path,
                               const stdfs::path& out_path, const ApplyOptions& options = {});

// A ReadFn over a file (reads sequentially from the start).
Result<ReadFn> file_reader(const stdfs::path& path);

}  // namespace mota::delta
