#pragma once
// Delta updates for model files and model packages (.mdelta; format in docs/delta.md).
//
// A file delta splits the NEW file into chunks (a few MiB, or per tensor where a format parser
// knows the layout: safetensors, ONNX initializers, GGUF) and encodes each chunk with whichever
// is smallest: a copy of identical bytes of the old file, zstd with the matching old region as
// prefix (a standard zstd frame: `zstd -d --patch-from=<region>` decodes it), XOR or subtraction
// against the aligned old bytes with byte-plane shuffling then zstd, or plain zstd. Chunks are
// independent, offsets are 64-bit, and memory is bounded by a few chunks whatever the file size.
//
// A package delta holds, for every file of the new model version, a copy instruction, a file
// delta against a file of the old version, or a file delta against nothing (a new file); applying
// it writes a tree byte-identical to a full install, checked file by file against the new
// model.json and by the tree digest.
//
// Thread-safety: every function is reentrant; none keeps state between calls. Functions that take
// a callback call it only from the calling thread.

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "storage/package.hpp"

namespace mota::delta {

namespace stdfs = std::filesystem;

// Pull-style source of delta bytes (e.g. straight from a download): fills the buffer, returns the
// bytes read, 0 at end of stream. Same contract as storage::ReadFn.
using ReadFn = storage::ReadFn;
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

// ---- packages ----

struct PackageSide {
  std::string name, version, tree_digest;
};

struct PackageFileInfo {
  std::string path;
  std::string kind;  // "copy", "delta" or "new"
  std::string base;  // path in the old version ("copy", "delta"), empty for "new"
  std::uint64_t size = 0;
  std::optional<FileDeltaInfo> delta;  // for "delta" and "new" (when the stream was read)
};

struct PackageDeltaInfo {
  PackageSide from, to;
  std::string manifest_text;  // the new model.json, verbatim
  std::vector<PackageFileInfo> files;
  std::uint64_t delta_size = 0;
  std::uint64_t new_total_size = 0;  // sum of the new files' sizes
};

// Writes a package delta from the unpacked model tree `old_dir` to `new_dir` (each holding a
// model.json listing its files, as storage::unpack leaves them). Each new file is copied from an
// identical old file (same sha256), delta-encoded against the old file of the same path, or
// encoded alone. Atomic: nothing is left at out_path on failure.
Result<PackageDeltaInfo> diff_package_dirs(const stdfs::path& old_dir, const stdfs::path& new_dir,
                                           const stdfs::path& out_path,
                                           const DiffOptions& options = {});

struct PackageApplyOptions {
  ApplyOptions file;
  storage::UnpackLimits limits;  // max_total_bytes / max_files of the new tree
};

// Applies a package delta streamed from `delta` on top of the model tree `old_dir`, writing the
// new tree into `dest_dir`, which must not exist (it is created). Before writing, the delta's
// base (name, version, tree digest computed from old_dir/model.json) must match old_dir, else
// Errc::verification naming both. Every written file is checked against the new model.json
// (size and sha256), files are fsynced, and the result's tree digest is checked against the one
// the delta names. On any failure dest_dir is removed: nothing is left behind. Old files are
// trusted only through the hashes the delta records (pass file.verify_base to hash them
// all first; the agent verifies the slot's tree digest instead).
Result<storage::UnpackResult> apply_package(const stdfs::path& old_dir, const ReadFn& delta,
                                            const stdfs::path& dest_dir,
                                            const PackageApplyOptions& options = {});
Result<storage::UnpackResult> apply_package_file(const stdfs::path& old_dir,
                                                 const stdfs::path& delta_path,
                                                 const stdfs::path& dest_dir,
                                                 const PackageApplyOptions& options = {});

// ---- inspection ----

struct DeltaInfo {
  bool is_package = false;
  std::optional<FileDeltaInfo> file;        // a file delta
  std::optional<PackageDeltaInfo> package;  // a package delta
};

// Reads a delta's headers and chunk records (skipping payloads) without any old file.
Result<DeltaInfo> inspect(const ReadFn& delta);
Result<DeltaInfo> inspect_file(const stdfs::path& delta_path);
// Reads only the header of a package delta: what it applies to and produces (the agent checks
// `from` against its active slot before downloading the rest).
Result<PackageDeltaInfo> read_package_header(const ReadFn& delta);

// A ReadFn over a file (reads sequentially from the start).
Result<ReadFn> file_reader(const stdfs::path& path);

}  // namespace mota::delta
