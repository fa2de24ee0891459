#pragma once
// File utilities with the crash-safety discipline mota relies on everywhere:
// write to a temporary file in the same directory, fsync it, rename over the target, fsync the
// directory. A reader (or a reboot) sees the old content or the new one, never a torn file.

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota::fs {

namespace stdfs = std::filesystem;

// Reads a whole file; refuses (Errc::too_large) one bigger than max_bytes so a hostile or
// corrupted file cannot exhaust memory, and (Errc::invalid_argument) anything but a regular file
// without blocking on it (a FIFO without a writer, a device that never ends).
Result<std::string> read_file(const stdfs::path& path, std::uint64_t max_bytes = 64u << 20);

// Atomically replaces `path` with `data` (temp + fsync + rename + fsync dir). `mode` applies to
// the new file (0600 for keys). The parent directory must exist.
Status write_file_atomic(const stdfs::path& path, std::string_view data, mode_t mode = 0644);

// fsync() a directory so a rename or create inside it survives power loss.
Status fsync_dir(const stdfs::path& dir);

// mkdir -p with `mode` for the directories it creates; fsyncs each parent it changed.
Status make_dirs(const stdfs::path& dir, mode_t mode = 0755);

// rm -rf that reports failures instead of throwing; a missing path is success.
Status remove_all(const stdfs::path& path);

// Free bytes available to an unprivileged user on the filesystem holding `path`.
Result<std::uint64_t> free_space(const stdfs::path& path);

// An owned file descriptor. Move-only; closes on destruction.
class File {
 public:
  File() = default;
  explicit File(int fd) : fd_(fd) {}
  File(File&& o) noexcept : fd_(o.release()) {}
  File& operator=(File&& o) noexcept;
  File(const File&) = delete;
  File& operator=(const File&) = delete;
  ~File();

  static Result<File> open_read(const stdfs::path& path);
  // flags are open(2) flags added to O_WRONLY|O_CLOEXEC (e.g. O_CREAT|O_TRUNC, O_APPEND).
  static Result<File> open_write(const stdfs::path& path, int flags, mode_t mode = 0644);

  int fd() const noexcept { return fd_; }
  bool is_open() const noexcept { return fd_ >= 0; }
  int release() noexcept {
    int f = fd_;
    fd_ = -1;
    return f;
  }

  Status write_all(std::span<const std::byte> data);
  Status write_all(std::string_view data) {
    return write_all(std::as_bytes(std::span(data.data(), data.size())));
  }
  // Reads up to buf.size() bytes; 0 means end of file.
  Result<std::size_t> read_some(std::span<std::byte> buf);
  // Reads exactly buf.size() bytes at `offset` or fails (short file = Errc::parse).
  Status pread_exact(std::span<std::byte> buf, std::uint64_t offset);
  Result<std::uint64_t> size() const;
  Status sync();
  Status close();

 private:
  int fd_ = -1;
};

// A file written under a temporary name beside `target` and published by commit(). If commit()
// is never reached the temporary is removed, so a failed or interrupted write leaves nothing.
class AtomicFile {
 public:
  static Result<AtomicFile> create(const stdfs::path& target, mode_t mode = 0644);
  AtomicFile(AtomicFile&&) noexcept = default;
  AtomicFile& operator=(AtomicFile&&) noexcept = default;
  ~AtomicFile();

  File& file() { return file_; }
  const stdfs::path& temp_path() const { return temp_; }
  Status write_all(std::span<const std::byte> data) { return file_.write_all(data); }
  Status write_all(std::string_view data) { return file_.write_all(data); }
  // fsync, rename over the target, fsync the directory.
  Status commit();

 private:
  AtomicFile() = default;
  File file_;
  stdfs::path target_;
  stdfs::path temp_;
  bool committed_ = false;
};

}  // namespace mota::fs
