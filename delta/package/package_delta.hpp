#pragma once
// Package deltas: the layer above the delta engine (delta/delta.hpp) that knows model packages.
// A package delta holds, for every file of the new model version, a copy instruction, a file
// delta against a file of the old version, or a file delta against nothing (a new file); applying
// it writes a tree byte-identical to a full install (as storage::unpack would), checked file by
// file against the new model.json and by the tree digest. Format in docs/delta.md.
//
// Thread-safety: every function is reentrant; none keeps state between calls.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

#include "common/result.hpp"
#include "delta/delta.hpp"
#include "storage/package.hpp"

namespace mota::delta {

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

// A ReadFn and storage::ReadFn are one type: a package stream can feed a delta and back.
static_assert(std::is_same_v<ReadFn, storage::ReadFn>);

}  // namespace mota::delta
