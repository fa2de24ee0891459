#pragma once
// Internal to mota_storage: the only place that talks to libarchive. A zstd-compressed pax tar
// writer with normalised entries and a pull-style tar reader. package.cpp holds all policy
// (what is allowed in a package); this layer only moves bytes and reports entry headers.
//
// Neither class is thread-safe; each instance is used by one thread at a time.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "common/result.hpp"
#include "storage/package.hpp"

namespace mota::storage::tar {

// Receives compressed output in order. An error stops the writer and is returned by the call
// that triggered the write.
using SinkFn = std::function<Status(std::span<const std::byte>)>;

// Writes a pax (restricted) tar through a zstd filter. Every entry is a regular file with mode
// 0644, mtime 0, uid/gid 0, no user/group names: the output depends only on paths, sizes, bytes
// and the compression level.
class Writer {
 public:
  // `sink` must stay valid until close() or destruction. `raw_names`: store paths as raw bytes
  // (pax hdrcharset=BINARY) — needed only when a path has non-ASCII bytes; pure-ASCII archives are
  // then plain ustar entries that every tar reads without a warning.
  static Result<std::unique_ptr<Writer>> open(SinkFn sink, int zstd_level, bool raw_names);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Starts an entry; exactly `size` bytes must then be written with write().
  Status begin_file(const std::string& path, std::uint64_t size);
  Status write(std::span<const std::byte> data);
  // Finishes the archive (end-of-archive blocks, zstd end of frame) and flushes the sink.
  Status close();

  struct Impl;

 private:
  explicit Writer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

enum class EntryType {
  file,
  directory,
  symlink,
  hardlink,
  character_device,
  block_device,
  fifo,
  socket,
  unknown
};
std::string_view entry_type_name(EntryType t);

struct Entry {
  std::string path;  // as stored (UTF-8 when the archive says so), not validated
  EntryType type = EntryType::unknown;
  bool size_known = false;
  std::uint64_t size = 0;
};

// Reads a tar (optionally through one or more decompression filters; only zstd is enabled) from
// a pull source. Memory is bounded by libarchive's and zstd's fixed buffers (zstd's decoder
// refuses windows over 128 MiB by default), independent of the archive size.
class Reader {
 public:
  // `source` must stay valid for the reader's lifetime.
  static Result<std::unique_ptr<Reader>> open(const ReadFn& source);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  // The next entry header; std::nullopt at the end of the archive.
  Result<std::optional<Entry>> next();
  // Data of the current entry; 0 at its end.
  Result<std::size_t> read(std::span<std::byte> buf);
  // True when the stream is exactly one zstd frame sequence around a tar (checked after next()).
  bool zstd_compressed() const;

  struct Impl;

 private:
  explicit Reader(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace mota::storage::tar
