#include "manager/fleet/rollout.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "common/log.hpp"
#include "common/semver.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manifest/channel.hpp"
#include "manifest/crypto.hpp"

namespace mota::manager {

namespace {

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

std::string join_percents(const std::vector<unsigned>& p) {
  std::string out;
  for (unsigned v : p) out += (out.empty() ? "" : ",") + std::to_string(v);
  return out;
}

std::string pct(double rate) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f%%", rate * 100.0);
  return buf;
}

std::string bp_text(unsigned bp) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g%%", bp / 100.0);
  return buf;
}

// NULL for nullopt (the gate is off), as bind_all binds it.
std::optional<std::int64_t> optional_int(std::optional<unsigned> v) {
  return v ? std::optional<std::int64_t>(*v) : std::nullopt;
}

std::string plural(std::int64_t n, const char* what) {
  return std::to_string(n) + " " + what + (n == 1 ? "" : "s");
}

constexpr const char* kRolloutColumns =
    "SELECT id, channel, model, version, previous_version, percents, step, max_failure_bp, "
    "min_devices, step_after, salt, state, started_at, step_started_at, updated_at, selector, "
    "previous_selector, rate_per_min, share_bp, paced_at, start_at, begun, install_window, "
    "max_error_bp, max_latency_regression, min_inferences FROM rollouts";

Result<RolloutInfo> read_rollout(const storage::Statement& st) {
  RolloutInfo r;
  r.id = st.column_int64(0);
  r.channel = st.column_text(1);
  r.model = st.column_text(2);
  r.version = st.column_text(3);
  r.previous_version = st.column_text(4);
  r.percents = MOTA_TRY_CTX(parse_percents(st.column_text(5)),
                            "fleet database: rollout " + std::to_string(r.id));
  r.step = int(st.column_int64(6));
  if (r.step < 0 || std::size_t(r.step) >= r.percents.size()) {
    return fail(Errc::internal, "fleet database: rollout " + std::to_string(r.id) + ": step " +
                                    std::to_string(r.step) + " out of range");
  }
  r.max_failure_bp = unsigned(st.column_int64(7));
  r.min_devices = st.column_int64(8);
  r.step_after = st.column_int64(9);
  r.salt = st.column_text(10);
  r.state = st.column_text(11);
  r.started_at = st.column_int64(12);
  r.step_started_at = st.column_int64(13);
  r.updated_at = st.column_int64(14);
  r.select = st.column_text(15);
  r.previous_select = st.column_text(16);
  r.rate_per_min = unsigned(st.column_int64(17));
  // NULL (rollouts from before pacing): the step's percentage.
  r.share_bp = st.column_is_null(18) ? r.percent() * 100 : unsigned(st.column_int64(18));
  r.paced_at = st.column_int64(19);
  r.start_at = st.column_int64(20);
  {
    // Written by start_rollout from canonical texts; anything else reads as no window.
    const Json w = Json::parse(st.column_text(22), nullptr, false);
    if (w.is_array()) {
      for (const auto& t : w) {
        if (t.is_string()) r.install_window.push_back(t.get<std::string>());
      }
    }
  }
  if (!st.column_is_null(23)) r.max_error_bp = unsigned(st.column_int64(23));
  if (!st.column_is_null(24)) r.max_latency_regression_pct = unsigned(st.column_int64(24));
  r.min_inferences = st.column_int64(25);
  if (st.column_int64(21) == 0 && r.state == "running") {
    r.state = "scheduled";
    r.share_bp = 0;
  }
  return r;
}

Result<std::optional<RolloutInfo>> load_one(storage::Database& db, const std::string& channel,
                                            const std::string& model, bool active_only) {
  auto st = MOTA_TRY(db.prepare(std::string(kRolloutColumns) + " WHERE channel = ? AND model = ?" +
                                (active_only ? " AND state IN ('running', 'paused')" : "") +
                                " ORDER BY id DESC LIMIT 1"));
  MOTA_TRY(st.bind_all(channel, model));
  if (MOTA_TRY(st.step()) != storage::Step::row) return std::optional<RolloutInfo>();
  return std::optional<RolloutInfo>(MOTA_TRY(read_rollout(st)));
}

Result<RolloutInfo> load_active(storage::Database& db, const std::string& channel,
                                const std::string& model) {
  auto r = MOTA_TRY(load_one(db, channel, model, true));
  if (!r) {
    return fail(Errc::not_found,
                "no running or paused rollout of " + model + " on channel " + channel);
  }
  return std::move(*r);
}

Status load_transitions(storage::Database& db, RolloutInfo& info) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT at, state, step, percent, reason FROM rollout_transitions WHERE rollout_id = ? "
      "ORDER BY at, rowid"));
  MOTA_TRY(st.bind(1, info.id));
  info.transitions.clear();
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    RolloutTransition t;
    t.at = st.column_int64(0);
    t.state = st.column_text(1);
    t.step = int(st.column_int64(2));
    t.percent = unsigned(st.column_int64(3));
    t.reason = st.column_text(4);
    info.transitions.push_back(std::move(t));
  }
  return {};
}

// Calls `each(device, version, failed_version, failed_at, rolled_back_from)` for every admitted
// device of the model on the channel (or that never said its channel) that `select` matches
// (nullptr: every one), by the labels the device reported.
template <class Each>
Status for_rollout_devices(storage::Database& db, const std::string& model,
                           const std::string& channel, const Selector* select, Each each) {
  // Read from the installed_rollout covering index (migration 0003); only admitted devices
  // decide (migration 0005: the few others come from the devices_unadmitted partial index), so
  // devices nobody vouched for can neither advance nor halt a rollout. A selector needs each
  // device's labels: a look-up in devices per row, only then.
  std::vector<std::string> params = {model, channel};
  std::string sql =
      select ? "SELECT i.device, i.version, i.failed_version, i.failed_at, i.rolled_back_from, "
               "d.labels FROM installed i JOIN devices d ON d.id = i.device WHERE i.model = ? AND "
               "(i.channel = ? OR i.channel = '') AND d.admission = 'admitted'"
             : "SELECT device, version, failed_version, failed_at, rolled_back_from FROM "
               "installed WHERE model = ? AND (channel = ? OR channel = '') AND device NOT IN "
               "(SELECT id FROM devices WHERE admission <> 'admitted')";
  if (select) {
    // Narrowed in SQL first (fleet_db.hpp selector_prefilter), by the labels the device reports.
    if (auto pre = selector_prefilter(*select, "d.labels", "", params); !pre.empty()) {
      sql += " AND " + pre;
    }
  }
  auto st = MOTA_TRY(db.prepare(sql));
  for (std::size_t i = 0; i < params.size(); ++i) MOTA_TRY(st.bind(int(i + 1), params[i]));
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    if (select && !select->matches(parse_labels_json(st.column_text(5)))) continue;
    each(st.column_text(0), st.column_text(1), st.column_text(2), st.column_int64(3),
         st.column_text(4));
  }
  return {};
}

Status compute_counts(storage::Database& db, RolloutInfo& info) {
  RolloutCounts c;
  std::optional<Selector> select;
  if (!info.select.empty()) {
    select = MOTA_TRY_CTX(Selector::parse(info.select),
                          "fleet database: rollout " + std::to_string(info.id));
  }
  const unsigned limit = info.share_bp;
  MOTA_TRY(for_rollout_devices(
      db, info.model, info.channel, select ? &*select : nullptr,
      [&](const std::string& device, const std::string& version, const std::string& failed_version,
          std::int64_t failed_at, const std::string& rolled_back_from) {
        if (limit < 10000 && rollout_bucket(info.salt, device) >= limit) return;
        ++c.targeted;
        if (version == info.version) {
          ++c.updated;
        } else if (rolled_back_from == info.version) {
          ++c.rolled_back;
        } else if (failed_version == info.version && failed_at >= info.started_at) {
          ++c.failed;
        } else {
          ++c.pending;
        }
      }));
  const std::int64_t bad = c.failed + c.rolled_back;
  const std::int64_t decided = c.updated + bad;
  const std::int64_t denom = std::max(decided, std::min(info.min_devices, c.targeted));
  c.failure_rate = denom > 0 ? double(bad) / double(denom) : 0.0;
  info.counts = c;
  info.field.version = MOTA_TRY(field_totals(db, info.model, info.version));
  info.field.same_devices = {};
  if (!info.previous_version.empty()) {
    info.field.same_devices =
        MOTA_TRY(field_compare(db, info.model, info.version, info.previous_version));
  }
  return {};
}

std::string ms_text(double ms) {
  char buf[32];
  std::snprintf(buf, sizeof buf, ms < 10 ? "%.2f ms" : "%.1f ms", ms);
  return buf;
}

// Why the field halts the rollout (RolloutSpec's field gates), or nullopt.
std::optional<std::string> field_halt(const RolloutInfo& info) {
  const auto min = std::uint64_t(std::max<std::int64_t>(info.min_inferences, 1));
  const FieldTotals& v = info.field.version;
  if (info.max_error_bp && v.runs() >= min && v.error_rate() > *info.max_error_bp / 10000.0) {
    return "field error rate " + pct(v.error_rate()) + " (" + std::to_string(v.errors) +
           " failed of " + std::to_string(v.runs()) + " inferences on " +
           plural(v.devices, "device") + ") is above " + bp_text(*info.max_error_bp);
  }
  const FieldComparison& c = info.field.same_devices;
  if (info.max_latency_regression_pct && c.version.inferences >= min &&
      c.baseline.inferences >= min) {
    const double now = c.version.latency.quantile(0.99);
    const double before = c.baseline.latency.quantile(0.99);
    if (before > 0 && now > before * (1.0 + *info.max_latency_regression_pct / 100.0)) {
      return "field p99 latency " + ms_text(now) + " is " +
             std::to_string(std::lround((now / before - 1.0) * 100.0)) + "% above " +
             info.previous_version + "'s " + ms_text(before) + " on the same " +
             plural(c.version.devices, "device") + " (limit +" +
             std::to_string(*info.max_latency_regression_pct) + "%)";
    }
  }
  return std::nullopt;
}

// Publishes channel/model at version to `share_bp` basis points of the sample, keeping the
// channel's min_version. A targeted rollout (`select`) publishes the version to that share of the
// devices it matches.
Result<Channel> publish(Repository& repo, const std::string& channel, const std::string& model,
                        const std::string& version, unsigned share_bp, bool allow_downgrade,
                        const std::string& select = "",
                        const std::vector<std::string>& install_window = {}) {
  ChannelRequest req;
  req.channel = channel;
  req.model = model;
  req.version = version;
  req.percent = share_bp / 100;
  req.bp = share_bp;
  req.allow_downgrade = allow_downgrade;
  req.select = select;
  req.salt = rollout_salt(channel, model, version);
  req.install_window = install_window;
  auto current = MOTA_TRY(repo.show_channels(channel));
  for (const auto& ch : current) {
    if (ch.model == model) req.min_version = ch.min_version;
  }
  return MOTA_TRY_CTX(repo.set_channel(req), "publish channel " + channel + " for " + model +
                                                 " at " + version + " (" + bp_text(share_bp) + ")");
}

Status record_channel(storage::Database& db, const Channel& ch, std::int64_t now) {
  auto st = MOTA_TRY(db.prepare(
      "INSERT INTO channels (channel, model, version, percent, salt, fallback, updated_at) VALUES "
      "(?, ?, ?, ?, ?, ?, ?) ON CONFLICT (channel, model) DO UPDATE SET version = "
      "excluded.version, percent = excluded.percent, salt = excluded.salt, fallback = "
      "excluded.fallback, updated_at = excluded.updated_at"));
  MOTA_TRY(st.bind_all(ch.channel, ch.model, ch.version, ch.rollout.percent, ch.rollout.salt,
                       ch.rollout.fallback_version, now));
  return st.run();
}

// The salt of the sample a rollout's steps grow in: the target's when the channel has one.
std::string sample_salt(const Channel& ch) {
  return ch.targeted ? ch.targeted->salt : ch.rollout.salt;
}

// Stores what a tick or an operator may change of `info` (schema 7: a scheduled rollout is stored
// as running and not begun).
Status store(storage::Database& db, RolloutInfo& info, std::int64_t now) {
  const bool scheduled = info.state == "scheduled";
  auto up = MOTA_TRY(db.prepare(
      "UPDATE rollouts SET state = ?, step = ?, salt = ?, step_started_at = ?, updated_at = ?, "
      "share_bp = ?, paced_at = ?, begun = ?, started_at = ?, previous_version = ?, "
      "previous_selector = ? WHERE id = ?"));
  MOTA_TRY(up.bind_all(scheduled ? std::string("running") : info.state, info.step, info.salt,
                       info.step_started_at, now, std::int64_t(info.share_bp), info.paced_at,
                       scheduled ? 0 : 1, info.started_at, info.previous_version,
                       info.previous_select, info.id));
  MOTA_TRY(up.run());
  info.updated_at = now;
  return {};
}

// Stores info (above) and a transition with `reason`.
Status record(storage::Database& db, RolloutInfo& info, const std::string& reason,
              std::int64_t now) {
  MOTA_TRY(store(db, info, now));
  auto tr = MOTA_TRY(db.prepare(
      "INSERT INTO rollout_transitions (rollout_id, at, state, step, percent, reason) VALUES (?, "
      "?, ?, ?, ?, ?)"));
  MOTA_TRY(tr.bind_all(info.id, now, info.state, info.step, info.percent(), reason));
  MOTA_TRY(tr.run());
  info.updated_at = now;
  log::info("rollout " + info.state, {{"CHANNEL", info.channel},
                                      {"MODEL", info.model},
                                      {"VERSION", info.version},
                                      {"REASON", reason}});
  return {};
}

// Re-publishes the previous version (or the version at 0%) and records `state` with `reason`.
Status stop_rollout(storage::Database& db, Repository& repo, RolloutInfo& info,
                    const std::string& state, std::string reason, std::int64_t now) {
  Channel ch;
  if (!info.previous_version.empty() && !info.previous_select.empty()) {
    ch = MOTA_TRY(publish(repo, info.channel, info.model, info.previous_version, 10000, true,
                          info.previous_select));
    reason += "; republished " + info.previous_version + " to the devices matching " +
              info.previous_select;
  } else if (!info.previous_version.empty()) {
    ch = MOTA_TRY(publish(repo, info.channel, info.model, info.previous_version, 10000, true));
    reason += "; republished " + info.previous_version + " to all devices";
  } else {
    ch = MOTA_TRY(publish(repo, info.channel, info.model, info.version, 0, false, info.select));
    reason += "; no previous version: " + info.version + " now offered to 0% of devices";
  }
  MOTA_TRY(record_channel(db, ch, now));
  info.state = state;
  return record(db, info, reason, now);
}

// The buckets (under `salt`) of the rollout's devices (see for_rollout_devices), sorted.
Result<std::vector<unsigned>> device_buckets(storage::Database& db, const std::string& model,
                                             const std::string& channel, const std::string& select,
                                             const std::string& salt) {
  std::optional<Selector> sel;
  if (!select.empty()) sel = MOTA_TRY_CTX(Selector::parse(select), "select");
  std::vector<unsigned> out;
  MOTA_TRY(for_rollout_devices(
      db, model, channel, sel ? &*sel : nullptr,
      [&](const std::string& device, const std::string&, const std::string&, std::int64_t,
          const std::string&) { out.push_back(rollout_bucket(salt, device)); }));
  std::sort(out.begin(), out.end());
  return out;
}

// The most devices one sample bucket holds (0 without devices).
std::int64_t fullest_bucket(const std::vector<unsigned>& sorted) {
  std::int64_t best = 0, run = 0;
  for (std::size_t i = 0; i < sorted.size(); ++i) {
    run = (i > 0 && sorted[i] == sorted[i - 1]) ? run + 1 : 1;
    best = std::max(best, run);
  }
  return best;
}

// How far a paced share may grow from `from` toward `cap` (basis points) giving at most `budget`
// more devices (of `sorted` buckets) the version: just below the first device it must not reach
// yet, or `cap` when every remaining one fits. A first bucket holding more than `budget` devices
// is taken alone (`oversized`).
struct Pace {
  unsigned share_bp = 0;
  std::int64_t added = 0;
  bool oversized = false;
};
Pace next_share(const std::vector<unsigned>& sorted, unsigned from, unsigned cap,
                std::int64_t budget) {
  auto first = std::lower_bound(sorted.begin(), sorted.end(), from);
  auto last = cap >= 10000 ? sorted.end() : std::lower_bound(first, sorted.end(), cap);
  Pace p;
  if (last - first <= budget) {
    p.share_bp = cap;
    p.added = last - first;
    return p;
  }
  unsigned stop = *(first + budget);  // the first device beyond the budget
  if (stop == *first) {
    stop = *first + 1;
    p.oversized = true;
  }
  p.share_bp = stop;
  p.added = std::lower_bound(first, last, stop) - first;
  return p;
}

// Grows a paced rollout's share toward its step's percentage, at most once a minute (above).
Status pace(storage::Database& db, Repository& repo, RolloutInfo& info, std::int64_t now) {
  const unsigned cap = info.percent() * 100;
  if (info.share_bp >= cap || now - info.paced_at < 60) return {};
  const auto buckets =
      MOTA_TRY(device_buckets(db, info.model, info.channel, info.select, info.salt));
  const Pace p = next_share(buckets, info.share_bp, cap, info.rate_per_min);
  auto ch = MOTA_TRY(publish(repo, info.channel, info.model, info.version, p.share_bp, false,
                             info.select, info.install_window));
  MOTA_TRY(record_channel(db, ch, now));
  info.share_bp = p.share_bp;
  info.paced_at = now;
  log::info("rollout paced", {{"CHANNEL", info.channel},
                              {"MODEL", info.model},
                              {"VERSION", info.version},
                              {"SHARE", bp_text(p.share_bp)},
                              {"ADDED", std::to_string(p.added)}});
  if (p.oversized) {
    return record(db, info,
                  "paced: one sample bucket holds " + plural(p.added, "device") + ", more than " +
                      std::to_string(info.rate_per_min) +
                      "/min; given the version together (the share is now " + bp_text(p.share_bp) +
                      ")",
                  now);
  }
  if (p.share_bp >= cap) {
    return record(db, info,
                  "paced: step " + std::to_string(info.step + 1) + " reached " +
                      std::to_string(info.percent()) + "% at " + std::to_string(info.rate_per_min) +
                      " devices/min",
                  now);
  }
  return store(db, info, now);
}

// What a rollout of `info` (channel, model, version, select) starts from: the version (and its
// target) the devices run now, and the salt the sample will have. Errc::invalid_argument when the
// channel cannot take the rollout (the reason says what to do).
struct Begin {
  std::string previous, previous_select, salt;
};
Result<Begin> begin_from(Repository& repo, const RolloutInfo& info) {
  Begin b;
  b.salt = rollout_salt(info.channel, info.model, info.version);
  const std::string& select = info.select;
  for (const auto& ch : MOTA_TRY(repo.show_channels(info.channel))) {
    if (ch.model != info.model) continue;
    if (ch.targeted) {
      // One target per channel file: another would leave the first target's devices on a
      // version the channel no longer names, and a halt could not give back what each ran.
      if (select != ch.targeted->select || ch.targeted->percent != 100) {
        return fail(Errc::invalid_argument,
                    "channel " + info.channel + " gives " + info.model + " " +
                        ch.targeted->version + " to " + bp_text(ch.targeted->share_bp()) +
                        " of the devices matching " + ch.targeted->select +
                        ": roll out to the same target once that is at 100% (--select '" +
                        ch.targeted->select +
                        "'), or give the channel one version first (mota "
                        "channel set " +
                        info.channel + " " + info.model + " VERSION)");
      }
      if (ch.targeted->version == info.version) {
        return fail(Errc::invalid_argument, "channel " + info.channel + " already gives " +
                                                info.model + " " + info.version +
                                                " to the devices matching " + select);
      }
      b.previous = ch.targeted->version;
      b.previous_select = select;
      continue;
    }
    if (ch.version == info.version && ch.rollout.percent == 100) {
      return fail(Errc::invalid_argument, "channel " + info.channel + " already gives " +
                                              info.model + " " + info.version + " to everyone");
    }
    // The repository keeps the sample of a version it already gives to a share (set_channel).
    if (select.empty() && ch.version == info.version) b.salt = ch.rollout.salt;
    b.previous = ch.rollout.percent == 100 ? ch.version : ch.rollout.fallback_version;
  }
  return b;
}

// Begins `info` now: publishes its first share (paced: at most rate devices) and records it.
// `info` has an id (the row exists).
Status begin_rollout(storage::Database& db, Repository& repo, RolloutInfo& info, std::int64_t now,
                     const std::string& what) {
  const Begin b = MOTA_TRY(begin_from(repo, info));
  unsigned first = info.percent() * 100;
  std::int64_t given = -1;
  if (info.rate_per_min > 0) {
    const auto buckets =
        MOTA_TRY(device_buckets(db, info.model, info.channel, info.select, b.salt));
    const Pace p = next_share(buckets, 0, first, info.rate_per_min);
    first = p.share_bp;
    given = p.added;
  }
  auto ch = MOTA_TRY(publish(repo, info.channel, info.model, info.version, first, false,
                             info.select, info.install_window));
  info.previous_version = b.previous;
  info.previous_select = b.previous_select;
  info.salt = sample_salt(ch);
  info.share_bp = first;
  info.state = "running";
  info.started_at = info.step_started_at = info.paced_at = now;
  auto rel = MOTA_TRY(
      db.prepare("INSERT OR IGNORE INTO releases (model, version, first_used) VALUES (?, ?, ?)"));
  MOTA_TRY(rel.bind_all(info.model, info.version, now));
  MOTA_TRY(rel.run());
  MOTA_TRY(record_channel(db, ch, now));
  std::string reason = what + ": " + std::to_string(info.percent()) + "% of devices" +
                       (info.select.empty() ? "" : " matching " + info.select) + " get " +
                       info.version + (b.previous.empty() ? "" : ", the others keep " + b.previous);
  if (!info.install_window.empty()) {
    std::string w;
    for (const auto& t : info.install_window) w += (w.empty() ? "" : ", ") + t;
    reason += "; devices switch inside " + w + " (their local time)";
  }
  if (given >= 0) {
    reason += "; paced at " + std::to_string(info.rate_per_min) +
              " devices/min: " + plural(given, "device") + " first (share " + bp_text(first) + ")";
  }
  return record(db, info, reason, now);
}

Result<RolloutInfo> tick_locked(storage::Database& db, Repository& repo, RolloutInfo info,
                                std::int64_t now) {
  if (info.state == "scheduled") {
    if (now < info.start_at) return info;
    auto begun = begin_rollout(db, repo, info, now, "began as scheduled");
    if (!begun) {
      if (begun.error().code() != Errc::invalid_argument) return fail(std::move(begun).error());
      info.state = "aborted";
      MOTA_TRY(record(db, info, "could not begin as scheduled: " + begun.error().message(), now));
    }
    MOTA_TRY(compute_counts(db, info));
    return info;
  }
  if (info.state != "running") return info;
  MOTA_TRY(compute_counts(db, info));
  const auto& c = info.counts;
  const double limit = info.max_failure_bp / 10000.0;
  const std::int64_t bad = c.failed + c.rolled_back;
  const std::string counts_text =
      std::to_string(c.updated) + " updated, " + std::to_string(c.failed) + " failed, " +
      std::to_string(c.rolled_back) + " rolled back, " + std::to_string(c.pending) +
      " pending of " + std::to_string(c.targeted) + " targeted";
  if (bad > 0 && c.failure_rate > limit) {
    MOTA_TRY(stop_rollout(db, repo, info, "halted",
                          "halted at " + bp_text(info.share_bp) + ": failure rate " +
                              pct(c.failure_rate) + " is above " + bp_text(info.max_failure_bp) +
                              " (" + counts_text + ")",
                          now));
    return info;
  }
  if (auto why = field_halt(info)) {
    MOTA_TRY(stop_rollout(db, repo, info, "halted",
                          "halted at " + bp_text(info.share_bp) + ": " + *why, now));
    return info;
  }
  if (info.share_bp < info.percent() * 100) {
    // Paced and not yet at the step's percentage: the step's gate waits for it.
    MOTA_TRY(pace(db, repo, info, now));
    MOTA_TRY(compute_counts(db, info));
    return info;
  }
  const std::int64_t needed = std::min(info.min_devices, c.targeted);
  if (now - info.step_started_at < info.step_after || c.updated + bad < needed) return info;
  // A field gate judges runs: without enough of them the step waits (status shows the count).
  if (info.field_gated() &&
      info.field.version.runs() < std::uint64_t(std::max<std::int64_t>(info.min_inferences, 0))) {
    return info;
  }
  const std::string healthy = "step " + std::to_string(info.step + 1) + " (" +
                              std::to_string(info.percent()) + "%) healthy: " + counts_text +
                              ", failure rate " + pct(c.failure_rate);
  if (std::size_t(info.step) + 1 >= info.percents.size()) {
    info.state = "completed";
    MOTA_TRY(record(db, info, healthy + "; rollout complete", now));
    return info;
  }
  const unsigned next = info.percents[std::size_t(info.step) + 1];
  info.step += 1;
  info.step_started_at = now;
  if (info.rate_per_min > 0) {
    MOTA_TRY(record(db, info,
                    healthy + "; advancing to " + std::to_string(next) + "% at " +
                        std::to_string(info.rate_per_min) + " devices/min",
                    now));
    MOTA_TRY(pace(db, repo, info, now));
  } else {
    auto ch = MOTA_TRY(publish(repo, info.channel, info.model, info.version, next * 100, false,
                               info.select, info.install_window));
    MOTA_TRY(record_channel(db, ch, now));
    info.salt = sample_salt(ch);
    info.share_bp = next * 100;
    MOTA_TRY(record(db, info, healthy + "; advanced to " + std::to_string(next) + "%", now));
  }
  MOTA_TRY(compute_counts(db, info));
  return info;
}

}  // namespace

Result<std::vector<unsigned>> parse_percents(const std::string& text) {
  std::vector<unsigned> out;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    auto comma = text.find(',', pos);
    std::string part =
        text.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!part.empty() && part.back() == '%') part.pop_back();
    unsigned v = 0;
    bool ok = !part.empty() && part.size() <= 3 &&
              std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    if (ok) v = unsigned(std::stoul(part));
    if (!ok || v < 1 || v > 100) {
      return fail(Errc::invalid_argument,
                  "'" + text + "': '" + part + "' is not a percentage in 1..100");
    }
    if (!out.empty() && v <= out.back()) {
      return fail(Errc::invalid_argument, "'" + text + "': steps must increase");
    }
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty() || out.back() != 100) {
    return fail(Errc::invalid_argument, "'" + text + "': the last step must be 100");
  }
  return out;
}

Result<unsigned> parse_regression(const std::string& text) {
  std::string t = text;
  if (!t.empty() && t.back() == '%') t.pop_back();
  const bool digits = !t.empty() && t.size() <= 6 &&
                      std::all_of(t.begin(), t.end(), [](char c) { return c >= '0' && c <= '9'; });
  if (!digits || text.back() != '%' || std::stoul(t) > kMaxLatencyRegressionPct) {
    return fail(Errc::invalid_argument, "'" + text + "' is not a whole percentage in 0%.." +
                                            std::to_string(kMaxLatencyRegressionPct) +
                                            "% (such as 20%)");
  }
  return unsigned(std::stoul(t));
}

Result<unsigned> parse_failure_rate(const std::string& text) {
  if (text.empty() || text.back() != '%') {
    return fail(Errc::invalid_argument,
                "'" + text +
                    "' has no unit: write the rate as a percentage, e.g. 5% or 0.5% (a bare "
                    "number is ambiguous: 0.05 could mean 5% or 0.05%)");
  }
  const std::string t = text.substr(0, text.size() - 1);
  double v = -1;
  const bool digits = !t.empty() && std::all_of(t.begin(), t.end(), [](char c) {
    return (c >= '0' && c <= '9') || c == '.';
  });
  if (digits) {
    try {
      std::size_t used = 0;
      v = std::stod(t, &used);
      if (used != t.size()) v = -1;
    } catch (const std::exception&) {
      v = -1;
    }
  }
  if (!(v >= 0 && v <= 100)) {
    return fail(Errc::invalid_argument,
                "'" + text + "' is not a percentage in 0%..100% (such as 5%)");
  }
  return unsigned(std::lround(v * 100));
}

Result<unsigned> parse_rate(const std::string& text) {
  const auto slash = text.find('/');
  const std::string n = text.substr(0, slash);
  const std::string unit = slash == std::string::npos ? "" : text.substr(slash + 1);
  const bool digits = !n.empty() && n.size() <= 9 &&
                      std::all_of(n.begin(), n.end(), [](char c) { return c >= '0' && c <= '9'; });
  const std::uint64_t v = digits ? std::stoull(n) : 0;
  std::uint64_t per_min = 0;
  if (unit == "min" || unit == "m") {
    per_min = v;
  } else if (unit == "h" && v % 60 == 0) {
    per_min = v / 60;
  } else if (unit == "h") {
    return fail(Errc::invalid_argument,
                "'" + text + "': a rate per hour must be a whole number per minute (60/h, 120/h)");
  } else {
    return fail(Errc::invalid_argument,
                "'" + text + "' is not a rate: write devices per minute, e.g. 10/min (or 600/h)");
  }
  if (!digits || per_min < 1 || per_min > kMaxRatePerMin) {
    return fail(Errc::invalid_argument, "'" + text + "': the rate must be 1.." +
                                            std::to_string(kMaxRatePerMin) + " devices/min");
  }
  return unsigned(per_min);
}

Result<RolloutInfo> start_rollout(storage::Database& db, Repository& repo, const RolloutSpec& spec,
                                  TimePoint now_tp) {
  const std::int64_t now = unix_seconds(now_tp);
  if (!valid_channel_name(spec.channel)) {
    return fail(Errc::invalid_argument, "channel '" + spec.channel + "' is not a valid name");
  }
  MOTA_TRY_CTX(SemVer::parse(spec.version), "rollout version");
  if (spec.percents.empty() || spec.percents.back() != 100) {
    return fail(Errc::invalid_argument, "rollout steps must end at 100%");
  }
  if (spec.max_failure_bp > 10000 || spec.min_devices < 0 || spec.step_after.count() < 0 ||
      spec.rate_per_min > kMaxRatePerMin || spec.start_at < 0 ||
      (spec.max_error_bp && *spec.max_error_bp > 10000) ||
      (spec.max_latency_regression_pct &&
       *spec.max_latency_regression_pct > kMaxLatencyRegressionPct) ||
      spec.min_inferences < 0) {
    return fail(Errc::invalid_argument,
                "rollout: bad failure rate, min devices, step time, rate, start time or field "
                "gate");
  }
  RolloutInfo info;
  info.channel = spec.channel;
  info.model = spec.model;
  info.version = spec.version;
  info.percents = spec.percents;
  info.max_failure_bp = spec.max_failure_bp;
  info.min_devices = spec.min_devices;
  info.step_after = spec.step_after.count();
  info.rate_per_min = spec.rate_per_min;
  info.max_error_bp = spec.max_error_bp;
  info.max_latency_regression_pct = spec.max_latency_regression_pct;
  info.min_inferences = spec.min_inferences;
  if (!spec.install_window.empty()) {
    const auto windows = MOTA_TRY_CTX(WindowSet::parse(spec.install_window), "install window");
    for (const auto& w : windows.windows()) info.install_window.push_back(w.text());
  }
  if (!spec.select.empty()) {
    info.select = MOTA_TRY_CTX(Selector::parse(spec.select), "select").text();
  }
  const bool scheduled = spec.start_at > now;
  info.state = scheduled ? "scheduled" : "running";
  info.start_at = scheduled ? spec.start_at : now;
  info.started_at = info.step_started_at = now;
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  if (auto active = MOTA_TRY(load_one(db, spec.channel, spec.model, true))) {
    return fail(Errc::already_exists, "a rollout of " + spec.model + " " + active->version +
                                          " on channel " + spec.channel + " is " + active->state +
                                          " (abort it first)");
  }
  // Checked now even when scheduled, so that a rollout that cannot begin is refused at once.
  const Begin b = MOTA_TRY(begin_from(repo, info));
  if (info.rate_per_min > 0) {
    const auto buckets =
        MOTA_TRY(device_buckets(db, info.model, info.channel, info.select, b.salt));
    if (const auto full = fullest_bucket(buckets); full > std::int64_t(info.rate_per_min)) {
      return fail(Errc::invalid_argument,
                  "--rate " + std::to_string(info.rate_per_min) +
                      "/min is finer than the sample: one of its 10000 buckets holds " +
                      plural(full, "device") + " of the " + std::to_string(buckets.size()) +
                      " this rollout reaches; use at least " + std::to_string(full) + "/min");
    }
  }
  auto ins = MOTA_TRY(db.prepare(
      "INSERT INTO rollouts (channel, model, version, previous_version, percents, step, "
      "max_failure_bp, min_devices, step_after, salt, state, started_at, step_started_at, "
      "updated_at, selector, previous_selector, rate_per_min, share_bp, paced_at, start_at, "
      "begun, install_window, max_error_bp, max_latency_regression, min_inferences) VALUES (?, "
      "?, ?, ?, ?, 0, ?, ?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, ?, ?, ?, ?)"));
  MOTA_TRY(ins.bind_all(info.channel, info.model, info.version, b.previous,
                        join_percents(info.percents), info.max_failure_bp, info.min_devices,
                        info.step_after, b.salt, now, now, now, info.select, b.previous_select,
                        std::int64_t(info.rate_per_min), info.start_at, scheduled ? 0 : 1,
                        Json(info.install_window).dump(), optional_int(info.max_error_bp),
                        optional_int(info.max_latency_regression_pct), info.min_inferences));
  MOTA_TRY(ins.run());
  info.id = db.last_insert_rowid();
  info.previous_version = b.previous;
  info.previous_select = b.previous_select;
  info.salt = b.salt;
  if (scheduled) {
    MOTA_TRY(record(db, info,
                    "scheduled to begin at " +
                        format_time(TimePoint(std::chrono::seconds(info.start_at))) +
                        (b.previous.empty() ? "" : " (the devices run " + b.previous + " now)"),
                    now));
  } else {
    MOTA_TRY(begin_rollout(db, repo, info, now, "started"));
  }
  MOTA_TRY(tx.commit());
  MOTA_TRY(compute_counts(db, info));
  MOTA_TRY(load_transitions(db, info));
  return info;
}

std::string rollout_salt(const std::string& channel, const std::string& model,
                         const std::string& version) {
  return crypto::sha256_hex("mota-rollout-v1\n" + channel + "\n" + model + "\n" + version)
      .substr(0, 16);
}

Result<std::vector<RolloutPlanStep>> plan_rollout(storage::Database& db, const RolloutSpec& spec) {
  std::optional<Selector> select;
  if (!spec.select.empty()) select = MOTA_TRY_CTX(Selector::parse(spec.select), "select");
  const std::string salt = rollout_salt(spec.channel, spec.model, spec.version);
  std::vector<std::pair<unsigned, std::string>> devices;  // (bucket, id)
  MOTA_TRY(for_rollout_devices(
      db, spec.model, spec.channel, select ? &*select : nullptr,
      [&](const std::string& device, const std::string&, const std::string&, std::int64_t,
          const std::string&) { devices.emplace_back(rollout_bucket(salt, device), device); }));
  std::vector<RolloutPlanStep> out;
  std::size_t before = 0;
  for (unsigned percent : spec.percents) {
    RolloutPlanStep step;
    step.percent = percent;
    for (const auto& [bucket, id] : devices) {
      if (percent >= 100 || bucket < percent * 100) step.devices.push_back(id);
    }
    std::sort(step.devices.begin(), step.devices.end());
    if (spec.rate_per_min > 0) {
      const std::size_t added = step.devices.size() - before;
      step.pace_minutes = std::int64_t((added + spec.rate_per_min - 1) / spec.rate_per_min);
    }
    before = step.devices.size();
    out.push_back(std::move(step));
  }
  return out;
}

Result<RolloutInfo> tick_rollout(storage::Database& db, Repository& repo,
                                 const std::string& channel, const std::string& model,
                                 TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto info = MOTA_TRY(load_active(db, channel, model));
  info = MOTA_TRY(tick_locked(db, repo, std::move(info), unix_seconds(now)));
  MOTA_TRY(tx.commit());
  if (info.counts.targeted == 0 && info.state != "running") MOTA_TRY(compute_counts(db, info));
  MOTA_TRY(load_transitions(db, info));
  return info;
}

Result<std::vector<RolloutInfo>> tick_all_rollouts(storage::Database& db, Repository& repo,
                                                   TimePoint now) {
  std::vector<std::pair<std::string, std::string>> running;
  {
    auto st = MOTA_TRY(db.prepare("SELECT channel, model FROM rollouts WHERE state = 'running'"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      running.emplace_back(st.column_text(0), st.column_text(1));
    }
  }
  std::vector<RolloutInfo> changed;
  for (const auto& [channel, model] : running) {
    auto before = MOTA_TRY(load_one(db, channel, model, true));
    auto after = tick_rollout(db, repo, channel, model, now);
    if (!after) {
      if (after.error().code() == Errc::not_found) continue;  // finished by someone else
      return fail(std::move(after).error());
    }
    if (!before || before->state != after->state || before->step != after->step) {
      changed.push_back(std::move(*after));
    }
  }
  return changed;
}

Result<RolloutInfo> pause_rollout(storage::Database& db, const std::string& channel,
                                  const std::string& model, TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto info = MOTA_TRY(load_active(db, channel, model));
  if (info.state == "paused") {
    return fail(Errc::invalid_argument,
                "the rollout of " + model + " on " + channel + " is already paused");
  }
  if (info.state == "scheduled") {
    return fail(Errc::invalid_argument, "the rollout of " + model + " on " + channel +
                                            " has not begun (abort it to cancel it)");
  }
  info.state = "paused";
  MOTA_TRY(record(db, info, "paused by the operator", unix_seconds(now)));
  MOTA_TRY(tx.commit());
  MOTA_TRY(compute_counts(db, info));
  MOTA_TRY(load_transitions(db, info));
  return info;
}

Result<RolloutInfo> resume_rollout(storage::Database& db, const std::string& channel,
                                   const std::string& model, TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto info = MOTA_TRY(load_active(db, channel, model));
  if (info.state != "paused") {
    return fail(Errc::invalid_argument,
                "the rollout of " + model + " on " + channel + " is not paused");
  }
  info.state = "running";
  MOTA_TRY(record(db, info, "resumed by the operator", unix_seconds(now)));
  MOTA_TRY(tx.commit());
  MOTA_TRY(compute_counts(db, info));
  MOTA_TRY(load_transitions(db, info));
  return info;
}

Result<RolloutInfo> abort_rollout(storage::Database& db, Repository& repo,
                                  const std::string& channel, const std::string& model,
                                  TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto info = MOTA_TRY(load_active(db, channel, model));
  if (info.state == "scheduled") {
    // It published nothing: there is nothing to give back.
    info.state = "aborted";
    MOTA_TRY(record(db, info, "aborted by the operator before it began", unix_seconds(now)));
  } else {
    MOTA_TRY(compute_counts(db, info));
    MOTA_TRY(stop_rollout(db, repo, info, "aborted", "aborted by the operator", unix_seconds(now)));
  }
  MOTA_TRY(tx.commit());
  MOTA_TRY(load_transitions(db, info));
  return info;
}

Result<std::optional<RolloutInfo>> rollout_status(storage::Database& db, const std::string& channel,
                                                  const std::string& model) {
  auto info = MOTA_TRY(load_one(db, channel, model, false));
  if (!info) return info;
  MOTA_TRY(compute_counts(db, *info));
  MOTA_TRY(load_transitions(db, *info));
  return info;
}

Result<std::vector<RolloutInfo>> list_rollouts(storage::Database& db, std::int64_t limit) {
  std::vector<RolloutInfo> out;
  auto st = MOTA_TRY(db.prepare(std::string(kRolloutColumns) + " ORDER BY id DESC" +
                                (limit > 0 ? " LIMIT " + std::to_string(limit) : "")));
  while (MOTA_TRY(st.step()) == storage::Step::row) out.push_back(MOTA_TRY(read_rollout(st)));
  for (auto& r : out) MOTA_TRY(compute_counts(db, r));
  return out;
}

Result<std::vector<RolloutInfo>> active_rollouts(storage::Database& db) {
  std::vector<RolloutInfo> out;
  auto st = MOTA_TRY(db.prepare(std::string(kRolloutColumns) +
                                " WHERE state IN ('running', 'paused') ORDER BY id"));
  while (MOTA_TRY(st.step()) == storage::Step::row) out.push_back(MOTA_TRY(read_rollout(st)));
  for (auto& r : out) MOTA_TRY(compute_counts(db, r));
  return out;
}

static Json field_json(const RolloutInfo& r) {
  Json j = {{"version", to_json(r.field.version)}};
  if (!r.previous_version.empty()) {
    j["same_devices"] = {{"version", to_json(r.field.same_devices.version)},
                         {"previous", to_json(r.field.same_devices.baseline)}};
  }
  return j;
}

Json to_json(const RolloutInfo& r) {
  Json transitions = Json::array();
  for (const auto& t : r.transitions) {
    transitions.push_back(Json{{"at", json_time(t.at)},
                               {"state", t.state},
                               {"step", t.step + 1},
                               {"percent", t.percent},
                               {"reason", t.reason}});
  }
  return Json{{"id", r.id},
              {"channel", r.channel},
              {"model", r.model},
              {"version", r.version},
              {"previous_version", json_text(r.previous_version)},
              {"select", json_text(r.select)},
              {"previous_select", json_text(r.previous_select)},
              {"percents", r.percents},
              {"step", r.step + 1},
              {"percent", r.percent()},
              {"share", r.share_bp / 100.0},
              {"rate_per_min", r.rate_per_min > 0 ? Json(r.rate_per_min) : Json()},
              {"start_at", json_time(r.start_at)},
              {"install_window", r.install_window},
              {"state", r.state},
              {"max_failure_rate", r.max_failure_bp / 100.0},
              {"min_devices", r.min_devices},
              {"step_after_seconds", r.step_after},
              {"started", json_time(r.started_at)},
              {"step_started", json_time(r.step_started_at)},
              {"targeted", r.counts.targeted},
              {"updated", r.counts.updated},
              {"failed", r.counts.failed},
              {"rolled_back", r.counts.rolled_back},
              {"pending", r.counts.pending},
              {"failure_rate", r.counts.failure_rate},
              {"max_error_rate", r.max_error_bp ? Json(*r.max_error_bp / 100.0) : Json()},
              {"max_latency_regression",
               r.max_latency_regression_pct ? Json(*r.max_latency_regression_pct) : Json()},
              {"min_inferences", r.min_inferences},
              {"field", field_json(r)},
              {"transitions", transitions}};
}

}  // namespace mota::manager
