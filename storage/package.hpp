#pragma once
// .mota packages: a zstd-compressed tar holding model.json first, then every file it lists in
// path order. Packing is deterministic (fixed mtime/uid/gid/mode, sorted entries); unpacking is
// strict and streaming with memory independent of package size.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <span>
#include <string>

#include "common/result.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::storage {

using Progress = std::function<void(std::uint64_t done, std::uint64_t total)>;

struct PackOptions {
  std::string version;         // if set, overrides/sets model.json "version"
  std::string name;            // if set, overrides/sets model.json "name"
  int compression_level = 10;  // zstd level 1..19
  Progress progress;           // called as input bytes are consumed; may be empty
};

struct PackResult {
  ModelManifest manifest;   // as written into the package (files filled in)
  std::string tree_digest;  // see tree_digest() in manifest/model_manifest.hpp
  std::uint64_t package_size = 0;
  std::string package_sha256;
};

// Packs `model_dir` (which must contain model.json) into `out_path`, atomically. The file list
// in model.json is computed from the directory (every regular file except model.json); if the
// source lists files, each must match what is on disk. Refuses symlinks and special files.
// Hidden files are packed like any other; a file named like mota's own temporary files
// (".<name>.tmp-*", an interrupted atomic write) is refused, as is an out_path inside model_dir.
// Empty directories are not recorded (a package holds files; directories are implied).
Result<PackResult> pack(const std::filesystem::path& model_dir,
                        const std::filesystem::path& out_path, const PackOptions& options = {});

// Pull-style byte source: fills the buffer, returns bytes read, 0 at end of stream.
using ReadFn = std::function<Result<std::size_t>(std::span<std::byte>)>;

struct UnpackLimits {
  std::uint64_t max_total_bytes = std::uint64_t(64) << 30;  // sum of file sizes
  std::uint64_t max_files = 100000;
  // false: file contents are not hashed while written (sizes and everything else still are).
  // Only for a caller that authenticates every byte of the stream itself — a download checked
  // against its signed sha256 before the tree is used — so the tree is covered by that hash
  // (model.json included, whose entries give the tree digest). Saves a second SHA-256 pass.
  bool check_file_hashes = true;
};

struct UnpackResult {
  ModelManifest manifest;
  std::string tree_digest;
  std::uint64_t bytes_written = 0;
};

// Unpacks a package stream into `dest_dir`, which must not exist (it is created). Rejects, with a
// message naming the entry: anything but regular files and directories, absolute or ".."
// paths, a first entry that is not model.json, files not listed in model.json or listed twice,
// sizes different from model.json, hash mismatches, missing files, totals over the limits.
// Every file is hashed while written and fsynced; the directory tree is fsynced. On any
// failure dest_dir is removed, so nothing is left behind.
Result<UnpackResult> unpack(const ReadFn& source, const std::filesystem::path& dest_dir,
                            const UnpackLimits& limits = {}, const Progress& progress = {});
Result<UnpackResult> unpack_file(const std::filesystem::path& package,
                                 const std::filesystem::path& dest_dir,
                                 const UnpackLimits& limits = {}, const Progress& progress = {});

// Reads only model.json from a package (it is the first entry) without unpacking the rest.
Result<ModelManifest> read_manifest(const std::filesystem::path& package);

// Verifies an unpacked tree against its model.json: every listed file present with the right
// size and sha256, nothing else but directories, and returns the tree digest.
Result<UnpackResult> verify_tree(const std::filesystem::path& dir);

}  // namespace mota::storage
