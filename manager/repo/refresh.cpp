#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <tuple>

#include "common/log.hpp"
#include "manager/repo/repository.hpp"
#include "manager/repo/store.hpp"

namespace mota::manager {

using namespace detail;
using std::chrono::seconds;

namespace {

// "45s", "12 min", "5h", "3d": a rough span for messages (format_duration is exact, for files).
std::string rough_duration(seconds s) {
  const long long n = s.count() < 0 ? -s.count() : s.count();
  if (n < 120) return std::to_string(n) + "s";
  if (n < 2 * 3600) return std::to_string(n / 60) + " min";
  if (n < 2 * 86400) return std::to_string(n / 3600) + "h";
  return std::to_string(n / 86400) + "d";
}

}  // namespace

Result<RefreshResult> Repository::refresh(const RefreshOptions& options) {
  const Paths p(dir_);
  auto lock = MOTA_TRY(DirLock::acquire(p.lock, true));
  State st = MOTA_TRY(load_state(p));
  const TimePoint now = now_();
  MOTA_TRY(check_root_usable(st, now));
  const std::vector<RoleExpiry> before = expiry_of(st, settings_, now);
  auto due = [&](std::string_view role) {
    for (const auto& e : before) {
      if (e.role == role)
        return e.due || (options.valid_for && e.expires < now + *options.valid_for);
    }
    return false;
  };
  Settings settings = settings_;
  if (options.valid_for) {
    for (auto* lifetime :
         {&settings.expiry.targets, &settings.expiry.snapshot, &settings.expiry.timestamp}) {
      *lifetime = std::max(*lifetime, *options.valid_for);
    }
  }
  // A new targets version needs a new snapshot, which needs a new timestamp.
  const bool want_targets = due("targets");
  const bool want_snapshot = want_targets || due("snapshot");
  const bool want_timestamp = want_snapshot || due("timestamp") || options.force;

  // Keys kept off this host leave their role (and what depends on it) as it is; the rest is
  // still renewed, so a host holding only the timestamp key keeps the timestamp fresh.
  std::map<std::string, std::string> missing;  // role -> why its key cannot be read
  auto key_here = [&](const char* role) {
    const stdfs::path key = p.key(role);
    if (::access(key.c_str(), R_OK) == 0) return true;
    missing[role] = key.string() + ": " + std::strerror(errno);
    return false;
  };
  const bool timestamp_key = !want_timestamp || key_here("timestamp");
  const bool snapshot_key = !want_snapshot || key_here("snapshot");
  const bool targets_key = !want_targets || key_here("targets");
  const bool targets = want_targets && targets_key && snapshot_key && timestamp_key;
  const bool snapshot = (targets || due("snapshot")) && snapshot_key && timestamp_key;
  const bool timestamp = (snapshot || due("timestamp") || options.force) && timestamp_key;

  RefreshResult r;
  // Each role that needed renewing and was not, with the keys it lacked (its own and those of
  // the roles that must be re-signed after it).
  for (const auto& [role, wanted, done, chain] :
       {std::tuple<const char*, bool, bool, int>{"targets", due("targets"), targets, 0},
        {"snapshot", due("snapshot"), snapshot, 1},
        {"timestamp", due("timestamp") || options.force, timestamp, 2}}) {
    if (!wanted || done) continue;
    std::string why;
    static constexpr const char* kChain[] = {"targets", "snapshot", "timestamp"};
    for (int k = chain; k < 3; ++k) {
      auto it = missing.find(kChain[k]);
      if (it != missing.end()) why += (why.empty() ? "" : "; ") + it->second;
    }
    r.missing_keys.push_back(std::string(role) + ": " + why);
  }
  if (timestamp) {
    Publish what;
    if (targets) what.targets = st.targets.signed_;
    what.snapshot = snapshot;
    Cleanup cleanup;
    MOTA_TRY_CTX(publish(p, st, settings, now, std::move(what), cleanup), "publish");
    r.resigned_timestamp = true;
    r.resigned_snapshot = snapshot;
    r.resigned_targets = targets;
    log::debug("metadata re-signed", {{"VERSION", std::to_string(st.timestamp.signed_.version)},
                                      {"ROLES", std::string(targets ? "targets,snapshot,timestamp"
                                                            : snapshot ? "snapshot,timestamp"
                                                                       : "timestamp")}});
  }
  r.timestamp_version = st.timestamp.signed_.version;
  r.roles = expiry_of(st, settings_, now);
  if (r.roles[0].due)
    r.warnings.push_back(describe_expiry(r.roles[0], now) + ": " + renew_hint("root"));
  return r;
}

Result<RefreshResult> Repository::refresh_timestamp() {
  return refresh(RefreshOptions{.force = true});
}

Result<std::vector<RoleExpiry>> Repository::expiry_status() const {
  const Paths p(dir_);
  const State st = MOTA_TRY(load_state(p));
  return expiry_of(st, settings_, now_());
}

std::string describe_expiry(const RoleExpiry& r, TimePoint now) {
  const std::string what = r.role + " version " + std::to_string(r.version);
  if (r.expired) {
    return what + " expired at " + format_time(r.expires) + " (" + rough_duration(now - r.expires) +
           " ago)";
  }
  return what + " expires " + format_time(r.expires) + " (in " + rough_duration(r.expires - now) +
         ", within its " + format_duration(r.window) + " refresh window)";
}

std::string renew_hint(std::string_view role) {
  if (role == "root") {
    return "sign a new root version with `mota key rotate root` (needs the offline root key)";
  }
  return "run `mota timestamp refresh` (or keep `mota serve` running with the " +
         std::string(role) + " key on its host)";
}

}  // namespace mota::manager
