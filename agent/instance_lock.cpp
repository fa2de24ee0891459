#include "agent/instance_lock.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <utility>

#include "common/fs.hpp"

namespace mota::agent {

namespace {

// What the holder wrote: "<pid> <command>\n" (empty while it is being written).
LockHolder read_holder(int fd) {
  LockHolder h;
  char buf[256];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  if (n <= 0) return h;
  buf[n] = '\0';
  char* end = nullptr;
  const long pid = std::strtol(buf, &end, 10);
  if (end == buf || pid <= 0) return h;
  h.pid = static_cast<pid_t>(pid);
  std::string rest(end);
  while (!rest.empty() && (rest.front() == ' ')) rest.erase(0, 1);
  while (!rest.empty() && (rest.back() == '\n' || rest.back() == ' ')) rest.pop_back();
  h.command = rest;
  return h;
}

std::string describe(const LockHolder& h) {
  if (h.pid == 0) return "another mota-agent";
  return "another mota-agent (pid " + std::to_string(h.pid) +
         (h.command.empty() ? "" : ", `mota-agent " + h.command + "`") + ")";
}

}  // namespace

Result<InstanceLock> InstanceLock::acquire(const std::filesystem::path& state_dir,
                                           std::string_view command) {
  MOTA_TRY_CTX(fs::make_dirs(state_dir), "state_dir");
  const auto path = state_dir / kLockFile;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return fail(errno_error("open", path.string(), errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err != EWOULDBLOCK) {
      ::close(fd);
      return fail(errno_error("lock", path.string(), err));
    }
    const LockHolder h = read_holder(fd);
    ::close(fd);
    std::string msg = describe(h) + " is using " + state_dir.string() +
                      "; one agent per state directory: stop it first (systemctl stop mota-agent)";
    if (h.command == "run" && h.pid > 0) {
      msg += ", or make the daemon poll now: kill -USR1 " + std::to_string(h.pid) +
             " (systemctl kill -s USR1 mota-agent)";
    }
    return fail(Errc::already_exists, msg);
  }
  const std::string line = std::to_string(::getpid()) + " " + std::string(command) + "\n";
  if (::ftruncate(fd, 0) != 0 ||
      ::pwrite(fd, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
    const int err = errno;
    ::close(fd);
    return fail(errno_error("write", path.string(), err));
  }
  return InstanceLock(fd);
}

InstanceLock::InstanceLock(InstanceLock&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}

InstanceLock& InstanceLock::operator=(InstanceLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

InstanceLock::~InstanceLock() {
  if (fd_ >= 0) ::close(fd_);
}

std::optional<LockHolder> lock_holder(const std::filesystem::path& state_dir) {
  const auto path = state_dir / kLockFile;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return std::nullopt;
  // A shared lock is granted only while nobody holds the exclusive one.
  if (::flock(fd, LOCK_SH | LOCK_NB) == 0) {
    ::close(fd);
    return std::nullopt;
  }
  LockHolder h = read_holder(fd);
  ::close(fd);
  return h;
}

}  // namespace mota::agent
