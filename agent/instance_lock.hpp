#pragma once
// One agent per state directory. Two agents on one state directory (a manual `check-once` beside
// the daemon) wrote the same partial download at once and corrupted it. Every mota-agent command
// that installs (run, check-once, install) first takes an exclusive flock(2) on
// <state_dir>/agent.lock and holds it until it exits; a second one fails at once with who holds
// it. The holder writes "<pid> <command>" into the file for that message. The lock is the kernel's:
// it goes with the process (a SIGKILL or a power cut leaves no stale lock; the file itself stays).
//
// Commands that only read (status) take no lock. `unblock` writes one database transaction,
// which SQLite serialises with the daemon's, so it needs no lock either: it asks a running daemon
// to poll at once instead (SIGUSR1 to the holder, see running_daemon()).
//
// Thread-safety: an InstanceLock is owned by one thread; the functions are safe to call anywhere.

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace mota::agent {

inline constexpr const char* kLockFile = "agent.lock";

class InstanceLock {
 public:
  // Creates state_dir if missing and takes the lock without waiting. Errc::already_exists when
  // another process holds it: "another mota-agent (pid N, `mota-agent run`) is using DIR; ..."
  // with what to do about it. Errc::io for other failures.
  static Result<InstanceLock> acquire(const std::filesystem::path& state_dir,
                                      std::string_view command);
  InstanceLock(InstanceLock&& other) noexcept;
  InstanceLock& operator=(InstanceLock&& other) noexcept;
  InstanceLock(const InstanceLock&) = delete;
  InstanceLock& operator=(const InstanceLock&) = delete;
  ~InstanceLock();  // releases the lock (closing the descriptor)

 private:
  explicit InstanceLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Who holds the lock of state_dir now: its pid and command, or nullopt when nobody does.
struct LockHolder {
  pid_t pid = 0;  // 0 when the file does not say (being written)
  std::string command;
};
std::optional<LockHolder> lock_holder(const std::filesystem::path& state_dir);

}  // namespace mota::agent
