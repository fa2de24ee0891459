#include "manager/fleet/metadata_refresher.hpp"

#include <algorithm>
#include <vector>

namespace mota::manager {

namespace stdfs = std::filesystem;
using std::chrono::seconds;

seconds check_interval(const Settings& settings) {
  seconds smallest = seconds(60) * 2;
  for (const char* role : {"targets", "snapshot", "timestamp"}) {
    smallest = std::min(smallest, settings.refresh_window(role));
  }
  return std::clamp(smallest / 2, seconds(1), seconds(60));
}

MetadataRefresher::MetadataRefresher(stdfs::path repo_dir, RefresherOptions options,
                                     std::chrono::milliseconds interval)
    : dir_(std::move(repo_dir)), options_(std::move(options)), interval_(interval) {}

Result<std::unique_ptr<MetadataRefresher>> MetadataRefresher::start(stdfs::path repo_dir,
                                                                    RefresherOptions options) {
  auto repo = MOTA_TRY(Repository::open(repo_dir, options.now));
  const auto& s = repo.settings();
  const std::chrono::milliseconds interval =
      options.interval.count() > 0 ? options.interval : check_interval(s);
  const std::string every = interval.count() % 1000 == 0
                                ? std::to_string(interval.count() / 1000) + " s"
                                : std::to_string(interval.count()) + " ms";
  if (options.resign) {
    log::info("metadata refresh: checking every " + every +
              "; timestamp, snapshot and targets are re-signed when they expire within their "
              "refresh window (timestamp: " +
              format_duration(s.refresh_window("timestamp")) + " before expiry)");
  } else {
    log::info("metadata refresh is off (--no-refresh): checking expiry every " + every +
              "; `mota timestamp refresh` must run elsewhere");
  }
  std::unique_ptr<MetadataRefresher> r(
      new MetadataRefresher(std::move(repo_dir), std::move(options), interval));
  r->check();
  r->thread_ = std::thread([p = r.get()] { p->loop(); });
  return r;
}

MetadataRefresher::~MetadataRefresher() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void MetadataRefresher::loop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, interval_, [this] { return stop_; })) {
    lock.unlock();
    check();
    lock.lock();
  }
}

void MetadataRefresher::log_once(const std::string& key, const std::string& state, log::Level level,
                                 const std::string& message) {
  auto it = logged_state_.find(key);
  if (it != logged_state_.end() && it->second == state) return;
  logged_state_[key] = state;
  log::write(level, message);
}

void MetadataRefresher::check() {
  auto repo = Repository::open(dir_, options_.now);
  if (!repo) {
    log_once("open", repo.error().message(), log::Level::error,
             "metadata refresh: " + repo.error().message());
    return;
  }
  logged_state_.erase("open");
  // A lock-free look first: the exclusive lock is taken only when something is due, so a long
  // publish (which holds the lock, and re-signs the timestamp itself) is not waited for.
  auto st = repo->expiry_status();
  if (!st) {
    log_once("status", st.error().message(), log::Level::error,
             "metadata expiry check: " + st.error().message());
    return;
  }
  logged_state_.erase("status");
  std::vector<RoleExpiry> roles = std::move(*st);
  const bool online_due = std::any_of(
      roles.begin(), roles.end(), [](const RoleExpiry& e) { return e.role != "root" && e.due; });
  // Why a due role is still due after this check.
  std::map<std::string, std::string> why_not;
  if (!options_.resign) {
    for (const auto& e : roles) why_not[e.role] = "auto-refresh is off (--no-refresh)";
  } else if (online_due) {
    auto r = repo->refresh();
    if (!r) {
      log_once("refresh", r.error().message(), log::Level::error,
               "metadata refresh failed: " + r.error().message());
      for (const auto& e : roles) why_not[e.role] = "re-signing failed (above)";
    } else {
      logged_state_.erase("refresh");
      roles = r->roles;
      if (r->changed()) {
        std::string what;
        for (const auto& e : roles) {
          const bool done = (e.role == "timestamp") ||
                            (e.role == "snapshot" && r->resigned_snapshot) ||
                            (e.role == "targets" && r->resigned_targets);
          if (!done) continue;
          what += (what.empty() ? "" : ", ") + e.role + " version " + std::to_string(e.version) +
                  " (expires " + format_time(e.expires) + ")";
        }
        log::info("metadata refreshed: re-signed " + what,
                  {{"TIMESTAMP_VERSION", std::to_string(r->timestamp_version)}});
      }
      for (const auto& m : r->missing_keys) {
        const auto colon = m.find(':');
        why_not[m.substr(0, colon)] = "its key is not on this host (" + m.substr(colon + 2) + ")";
      }
    }
  }
  const TimePoint now = options_.now();
  for (const auto& e : roles) {
    const std::string key = "role " + e.role;
    if (!e.due) {
      logged_state_.erase(key);
      continue;
    }
    const std::string state = std::to_string(e.version) + (e.expired ? " expired" : " due");
    std::string message = describe_expiry(e, now);
    if (e.role == "root") {
      message += ": " + renew_hint("root");
    } else {
      auto w = why_not.find(e.role);
      message += " and is not re-signed here: " +
                 (w != why_not.end() ? w->second : std::string("not re-signed")) +
                 "; devices refuse metadata " + (e.expired ? "since " : "after ") +
                 format_time(e.expires) +
                 ": run `mota timestamp refresh` or keep the key on this host";
    }
    log_once(key, state, e.expired ? log::Level::error : log::Level::warn, message);
  }
}

}  // namespace mota::manager
