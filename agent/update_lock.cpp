#include "agent/update_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>

namespace mota::agent {

Result<std::optional<UpdateLock>> UpdateLock::try_acquire(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path.parent_path(), ec)) {
    std::filesystem::create_directories(path.parent_path(), ec);
    if (ec) {
      return fail(Errc::io,
                  "update lock: create " + path.parent_path().string() + ": " + ec.message());
    }
    std::filesystem::permissions(path.parent_path(), std::filesystem::perms(0755), ec);
  }
  // Read-only is enough for flock(2): applications that may not write the file can lock it.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0644);
  if (fd < 0) return fail(errno_error("update lock: open", path.string(), errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    ::close(fd);
    if (err == EWOULDBLOCK) return std::optional<UpdateLock>();
    return fail(errno_error("update lock: flock", path.string(), err));
  }
  return std::optional<UpdateLock>(UpdateLock(fd));
}

UpdateLock& UpdateLock::operator=(UpdateLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

UpdateLock::~UpdateLock() {
  if (fd_ >= 0) ::close(fd_);
}

}  // namespace mota::agent
