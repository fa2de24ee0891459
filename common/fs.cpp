#include "common/fs.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <random>

namespace mota::fs {

File& File::operator=(File&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = o.release();
  }
  return *this;
}

File::~File() {
  if (fd_ >= 0) ::close(fd_);
}

Result<File> File::open_read(const stdfs::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error("open", path.string(), errno));
  return File(fd);
}

Result<File> File::open_write(const stdfs::path& path, int flags, mode_t mode) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC | flags, mode);
  if (fd < 0) return fail(errno_error("open", path.string(), errno));
  return File(fd);
}

Status File::write_all(std::span<const std::byte> data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd_, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_error("write", "", errno));
    }
    data = data.subspan(static_cast<std::size_t>(n));
  }
  return {};
}

Result<std::size_t> File::read_some(std::span<std::byte> buf) {
  for (;;) {
    ssize_t n = ::read(fd_, buf.data(), buf.size());
    if (n >= 0) return static_cast<std::size_t>(n);
    if (errno != EINTR) return fail(errno_error("read", "", errno));
  }
}

Status File::pread_exact(std::span<std::byte> buf, std::uint64_t offset) {
  while (!buf.empty()) {
    ssize_t n = ::pread(fd_, buf.data(), buf.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail(errno_error("pread", "", errno));
    }
    if (n == 0) return fail(Errc::parse, "unexpected end of file");
    buf = buf.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return {};
}

Result<std::uint64_t> File::size() const {
  struct stat st {};
  if (::fstat(fd_, &st) != 0) return fail(errno_error("fstat", "", errno));
  return static_cast<std::uint64_t>(st.st_size);
}

Status File::sync() {
  if (::fsync(fd_) != 0) return fail(errno_error("fsync", "", errno));
  return {};
}

Status File::close() {
  int fd = release();
  if (fd >= 0 && ::close(fd) != 0) return fail(errno_error("close", "", errno));
  return {};
}

Result<std::string> read_file(const stdfs::path& path, std::uint64_t max_bytes) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (a slot's model.json made a FIFO would
  // hold the caller, and every lock it holds, for ever); non-regular files are refused below.
  // On a regular file the flag changes nothing.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) return fail(errno_error("open", path.string(), errno));
  File f(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return fail(errno_error("stat", path.string(), errno));
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::invalid_argument,
                path.string() + " is not a regular file (a FIFO, device or socket is refused)");
  }
  auto size = MOTA_TRY(f.size());
  if (size > max_bytes) {
    return fail(Errc::too_large, path.string() + " is " + std::to_string(size) +
                                     " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::string out;
  out.resize(static_cast<std::size_t>(size));
  std::size_t got = 0;
  for (;;) {
    if (got == out.size()) {
      // The file may have grown since fstat: read on, within the limit.
      if (out.size() >= max_bytes) break;
      out.resize(std::min<std::uint64_t>(max_bytes, out.size() + 65536));
    }
    auto n = MOTA_TRY_CTX(
        f.read_some(std::as_writable_bytes(std::span(out.data() + got, out.size() - got))),
        path.string());
    if (n == 0) break;
    got += n;
  }
  out.resize(got);
  return out;
}

Status fsync_dir(const stdfs::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return fail(errno_error("open directory", dir.string(), errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0) return fail(errno_error("fsync directory", dir.string(), err));
  return {};
}

static std::string random_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kChars[] = "abcdefghijklmnopqrstuvwxyz0123456789";
  std::string s(8, 'x');
  for (auto& c : s) c = kChars[rng() % (sizeof(kChars) - 1)];
  return s;
}

Result<AtomicFile> AtomicFile::create(const stdfs::path& target, mode_t mode) {
  AtomicFile af;
  af.target_ = target;
  // A dot-prefixed temp name in the same directory: rename() is then atomic (same filesystem),
  // and a static server never lists it as content.
  af.temp_ = target.parent_path() / ("." + target.filename().string() + ".tmp-" + random_suffix());
  af.file_ = MOTA_TRY(File::open_write(af.temp_, O_CREAT | O_EXCL, mode));
  // open() applies the umask; keys need exactly the mode asked for.
  if (::fchmod(af.file_.fd(), mode) != 0)
    return fail(errno_error("chmod", af.temp_.string(), errno));
  return af;
}

AtomicFile::~AtomicFile() {
  if (!committed_ && !temp_.empty()) {
    file_ = File();
    ::unlink(temp_.c_str());
  }
}

Status AtomicFile::commit() {
  MOTA_TRY_CTX(file_.sync(), temp_.string());
  MOTA_TRY_CTX(file_.close(), temp_.string());
  if (::rename(temp_.c_str(), target_.c_str()) != 0) {
    return fail(errno_error("rename", temp_.string() + " -> " + target_.string(), errno));
  }
  committed_ = true;
  return fsync_dir(target_.parent_path());
}

Status write_file_atomic(const stdfs::path& path, std::string_view data, mode_t mode) {
  auto af = MOTA_TRY(AtomicFile::create(path, mode));
  MOTA_TRY_CTX(af.write_all(data), "write " + af.temp_path().string());
  return af.commit();
}

Status make_dirs(const stdfs::path& dir, mode_t mode) {
  if (dir.empty()) return {};
  struct stat st {};
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return fail(Errc::io, dir.string() + " exists and is not a directory");
    return {};
  }
  stdfs::path parent = dir.parent_path();
  if (!parent.empty() && parent != dir) MOTA_TRY(make_dirs(parent, mode));
  if (::mkdir(dir.c_str(), mode) != 0 && errno != EEXIST) {
    return fail(errno_error("mkdir", dir.string(), errno));
  }
  return fsync_dir(parent.empty() ? stdfs::path(".") : parent);
}

Status remove_all(const stdfs::path& path) {
  std::error_code ec;
  stdfs::remove_all(path, ec);
  if (ec) return fail(Errc::io, "remove " + path.string() + ": " + ec.message());
  return {};
}

Result<std::uint64_t> free_space(const stdfs::path& path) {
  struct statvfs sv {};
  if (::statvfs(path.c_str(), &sv) != 0) return fail(errno_error("statvfs", path.string(), errno));
  return static_cast<std::uint64_t>(sv.f_bavail) * sv.f_frsize;
}

}  // namespace mota::fs
