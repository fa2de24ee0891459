#pragma once
// Keeps a repository's online metadata fresh from inside `mota serve`, so a fleet does not freeze
// when nobody publishes: a background thread looks at the expiry of every role each check
// interval (Repository::expiry_status, no lock) and, when an online role is due (the refresh
// rule, Settings::refresh_window), re-signs it with Repository::refresh under the repository
// lock like every publisher (the rollout ticker and the CLI included), logging each re-sign.
//
// Roles whose key is not on this host (operators who keep keys elsewhere), and every role when
// re-signing is off (`mota serve --no-refresh`), are only watched: a warning when a role enters
// its refresh window, an error once it has expired ("devices refuse metadata after <time>: run
// `mota timestamp refresh` or keep the key on this host"), each once per role version rather
// than at every check. A due root is always only warned about (its key belongs offline).
//
// Thread-safety: start() and the destructor are called from one thread (serve's); the
// destructor stops and joins the background thread. check() must not run concurrently with the
// background thread's own checks (tests call it with an interval longer than the test).

#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/log.hpp"
#include "common/result.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {

struct RefresherOptions {
  bool resign = true;  // false: watch and warn only (`mota serve --no-refresh`)
  // Time between checks; zero: check_interval(settings) of the repository.
  std::chrono::milliseconds interval{0};
  NowFn now = now_seconds;  // tests move it
};

// Often enough for the shortest refresh window: half the smallest window of the online roles,
// between 1 s and 60 s (a 20 s timestamp, window 10 s: every 5 s; the 1d default: every 60 s).
std::chrono::seconds check_interval(const Settings& settings);

class MetadataRefresher {
 public:
  // Opens the repository (Errc::not_found when `repo_dir` is none), runs one check at once (so
  // what is due or expired is renewed or reported before serving starts) and starts the thread.
  static Result<std::unique_ptr<MetadataRefresher>> start(std::filesystem::path repo_dir,
                                                          RefresherOptions options = {});
  ~MetadataRefresher();
  MetadataRefresher(const MetadataRefresher&) = delete;
  MetadataRefresher& operator=(const MetadataRefresher&) = delete;

  // One check: re-sign what is due (when resigning), then log about what is still due or
  // expired. Errors (a wrong key, an expired root, the lock held for 30 s by a publisher while
  // something is due) are logged, not returned: the next check tries again.
  void check();

  std::chrono::milliseconds interval() const { return interval_; }

 private:
  MetadataRefresher(std::filesystem::path repo_dir, RefresherOptions options,
                    std::chrono::milliseconds interval);
  void loop();
  // Logs `message` at `level` unless `key` was last logged in the same `state` (a role
  // version and whether it is due or expired), so a condition is reported once, not per check.
  void log_once(const std::string& key, const std::string& state, log::Level level,
                const std::string& message);

  const std::filesystem::path dir_;
  const RefresherOptions options_;
  const std::chrono::milliseconds interval_;
  std::map<std::string, std::string> logged_state_;  // key -> state (check()'s thread only)
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace mota::manager
