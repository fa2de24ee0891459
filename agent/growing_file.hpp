#pragma once
// A file that one thread appends to (the downloader) read as a stream by another (the unpacker),
// so a package is unpacked while it downloads: one pass over the bytes, the page cache in
// between, memory bounded by the reader's buffer.
//
// The producer announces how many bytes are in the file (advance), and the end (finish). An
// advance to fewer bytes than before means the file was restarted (the server ignored a Range
// request): every read from then on fails, and so does a read that overlapped the restart, so the
// reader never mixes bytes of two passes. The caller then falls back to reading the complete
// file afterwards.
//
// Thread-safety: advance/finish from one producer thread, reader() from one consumer thread.

#include <condition_variable>
#include <cstdint>
#include <filesystem>
#include <mutex>

#include "common/fs.hpp"
#include "storage/package.hpp"

namespace mota::agent {

class GrowingFile {
 public:
  explicit GrowingFile(std::filesystem::path path) : path_(std::move(path)) {}

  // Producer: bytes [0, size) of the file are written. Call before truncating the file with
  // size 0 (the restart is then seen before any read can overlap it).
  void advance(std::uint64_t size);
  // Producer: no more bytes. ok: the reader gets end-of-stream at the last advanced size;
  // otherwise its reads fail with Errc::cancelled ("the download failed").
  void finish(bool ok);

  // Consumer: a storage::ReadFn that blocks until bytes are available. Errors: Errc::cancelled
  // after a failed finish, Errc::io for read errors and for a restart ("... restarted").
  storage::ReadFn reader();

  bool restarted() const;

 private:
  Result<std::size_t> read(std::span<std::byte> out);

  std::filesystem::path path_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::uint64_t available_ = 0;
  std::uint64_t generation_ = 0;  // bumped by every restart
  bool finished_ = false;
  bool ok_ = false;
  // Consumer side only.
  fs::File file_;
  bool open_ = false;
  std::uint64_t pos_ = 0;
};

}  // namespace mota::agent
