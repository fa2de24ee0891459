#pragma once
// The update lock (docs/agent.md, "Install windows and update locks"): a file that applications
// on the device hold a SHARED flock(2) on while they do work a model switch must not interrupt
// (a batch being inferred, a machine cycle). The agent takes it EXCLUSIVELY, without waiting,
// just before a switch and keeps it through the trial and the commit; while any application holds
// it, the switch is deferred. From a shell: `flock -s /run/mota-agent/update.lock my-job`.
//
// The lock is the kernel's: it goes with the process that holds it (a crashed application leaves
// no stale lock). An application that takes it while the agent switches waits (or, with
// LOCK_NB, learns the switch is under way) until the commit.
//
// Thread-safety: an UpdateLock is owned by one thread.

#include <filesystem>
#include <optional>

#include "common/result.hpp"

namespace mota::agent {

class UpdateLock {
 public:
  // Opens `path` (creating it, mode 0644, and its directory, 0755, when missing) and takes the
  // exclusive lock without waiting. std::nullopt when another process holds the lock; Errc::io
  // when the file cannot be opened or created.
  static Result<std::optional<UpdateLock>> try_acquire(const std::filesystem::path& path);

  UpdateLock(UpdateLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  UpdateLock& operator=(UpdateLock&& other) noexcept;
  UpdateLock(const UpdateLock&) = delete;
  UpdateLock& operator=(const UpdateLock&) = delete;
  ~UpdateLock();  // releases the lock

 private:
  explicit UpdateLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

}  // namespace mota::agent
