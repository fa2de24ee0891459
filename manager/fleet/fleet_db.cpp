#include "manager/fleet/fleet_db.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <map>

#include "common/text.hpp"
#include "manifest/crypto.hpp"

namespace mota::manager {

namespace stdfs = std::filesystem;

stdfs::path fleet_db_path(const std::string& repo_dir, const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("MOTA_FLEET_DB");
  if (env && *env) return env;
  return stdfs::path(repo_dir) / kFleetDbFile;
}

Result<storage::Database> open_fleet_db(const stdfs::path& path, bool create) {
  storage::DatabaseOptions options;
  options.create = create;
  // Generous: the server's writer holds the lock only for one batch commit at a time.
  options.busy_timeout = std::chrono::milliseconds(10000);
  auto db = MOTA_TRY_CTX(storage::Database::open(path, options), "fleet database");
  MOTA_TRY_CTX(storage::migrate(db, fleet_migrations()), "fleet database " + path.string());
  return db;
}

std::string format_unix(std::int64_t t) {
  if (t <= 0) return "";
  return format_time(Clock::time_point(std::chrono::seconds(t)));
}

Json json_time(std::int64_t t) {
  return t <= 0 ? Json(nullptr) : Json(format_unix(t));
}

Json json_text(const std::string& s) {
  return s.empty() ? Json(nullptr) : Json(s);
}

namespace {

Json labels_object(const Labels& labels) {
  Json o = Json::object();
  for (const auto& [k, v] : labels) o[k] = v;
  return o;
}

}  // namespace

std::string selector_prefilter(const Selector& select, const std::string& labels,
                               const std::string& operator_labels,
                               std::vector<std::string>& params) {
  std::string out;
  for (const auto& r : select.requirements()) {
    if (r.op != Requirement::Op::equals && r.op != Requirement::Op::in &&
        r.op != Requirement::Op::exists) {
      continue;
    }
    // Keys are [A-Za-z0-9._/-]: quoted as one JSON path member, never an injection.
    const std::string path = "$.\"" + r.key + "\"";
    std::string value = "json_extract(" + labels + ", ?)";
    if (operator_labels.empty()) {
      params.push_back(path);
    } else {
      value = "coalesce(json_extract(" + operator_labels + ", ?), " + value + ")";
      params.push_back(path);
      params.push_back(path);
    }
    std::string cond;
    if (r.op == Requirement::Op::exists) {
      cond = value + " IS NOT NULL";
    } else {
      cond = value + " IN (";
      for (std::size_t i = 0; i < r.values.size(); ++i) {
        cond += i ? ", ?" : "?";
        params.push_back(r.values[i]);
      }
      cond += ")";
    }
    out += (out.empty() ? "" : " AND ") + cond;
  }
  return out.empty() ? out : "(" + out + ")";
}

std::string labels_json(const Labels& labels) {
  return labels_object(labels).dump(-1, ' ', false, Json::error_handler_t::replace);
}

Labels parse_labels_json(std::string_view text) {
  Labels out;
  if (text.size() <= 2) return out;  // "{}" (most devices): no parse per row of a big listing
  auto doc = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return out;
  for (const auto& [k, v] : doc.items()) {
    if (v.is_string()) out.emplace(k, v.get<std::string>());
  }
  return out;
}

namespace {

std::int64_t unix_seconds(TimePoint t) {
  return std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
}

// Conditions that leave out devices not admitted (migration 0005): the set of those comes from
// the small devices_unadmitted partial index, so a count over a million admitted rows pays a hash
// probe per row, not a look-up in devices.
constexpr const char* kAdmittedInstalled =
    "device NOT IN (SELECT id FROM devices WHERE admission <> 'admitted')";
constexpr const char* kAdmittedDevice =
    "id NOT IN (SELECT u.id FROM devices u WHERE u.admission <> 'admitted')";

constexpr const char* kDeviceColumns =
    "SELECT d.id, i.model, i.version, i.slot, i.committed, i.state, i.target, i.last_error, "
    "i.rolled_back_from, i.channel, d.last_seen, i.updated_at, i.failed_version, i.failed_at, "
    "d.metadata_error, d.metadata_error_since, d.admission, d.labels, d.operator_labels FROM "
    "devices d LEFT JOIN installed i ON i.device = d.id";

DeviceModelRow read_row(const storage::Statement& st) {
  DeviceModelRow r;
  r.device = st.column_text(0);
  r.model = st.column_text(1);
  r.version = st.column_text(2);
  r.slot = st.column_text(3);
  r.committed = st.column_int64(4) != 0;
  r.state = st.column_text(5);
  r.target = st.column_text(6);
  r.last_error = st.column_text(7);
  r.rolled_back_from = st.column_text(8);
  r.channel = st.column_text(9);
  r.last_seen = st.column_int64(10);
  r.updated_at = st.column_int64(11);
  r.failed_version = st.column_text(12);
  r.failed_at = st.column_int64(13);
  r.metadata_error = st.column_text(14);
  r.metadata_error_since = st.column_int64(15);
  r.admission = st.column_text(16);
  r.labels =
      merge_labels(parse_labels_json(st.column_text(17)), parse_labels_json(st.column_text(18)));
  return r;
}

}  // namespace

Status for_each_device_row(storage::Database& db, const DeviceFilter& filter, TimePoint now,
                           const std::function<void(DeviceModelRow&&)>& each) {
  std::string sql = kDeviceColumns;
  std::vector<std::string> where;
  std::vector<std::string> params;
  if (!filter.model.empty()) {
    where.push_back("i.model = ?");
    params.push_back(filter.model);
  }
  if (!filter.channel.empty()) {
    where.push_back("(i.channel = ? OR i.channel = '')");
    params.push_back(filter.channel);
  }
  if (!filter.version.empty()) {
    where.push_back("i.version = ?");
    params.push_back(filter.version);
  }
  if (!filter.state.empty()) {
    where.push_back("i.state = ?");
    params.push_back(filter.state);
  }
  // Spelled as devices_metadata_error's WHERE, so SQLite can start from that partial index.
  if (filter.condition == "metadata") where.push_back("d.metadata_error <> ''");
  if (filter.condition == "ok") where.push_back("d.metadata_error = ''");
  if (!filter.admission.empty()) {
    where.push_back("d.admission = ?");
    params.push_back(filter.admission);
  }
  if (filter.select) {
    if (auto pre = selector_prefilter(*filter.select, "d.labels", "d.operator_labels", params);
        !pre.empty()) {
      where.push_back(pre);
    }
  }
  // Last: its parameter is bound as a number below.
  if (filter.stale) {
    where.push_back("(d.last_seen IS NULL OR d.last_seen < ?)");
    params.push_back(std::to_string(unix_seconds(now) - filter.stale->count()));
  }
  for (std::size_t i = 0; i < where.size(); ++i) sql += (i == 0 ? " WHERE " : " AND ") + where[i];
  sql += " ORDER BY d.id, i.model";
  auto st = MOTA_TRY(db.prepare(sql));
  for (std::size_t i = 0; i < params.size(); ++i) {
    // The stale bound is compared as a number: bind it as one.
    if (filter.stale && i + 1 == params.size()) {
      MOTA_TRY(st.bind(int(i + 1), std::int64_t{std::stoll(params[i])}));
    } else {
      MOTA_TRY(st.bind(int(i + 1), params[i]));
    }
  }
  std::string last_device;
  bool last_matched = true;
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    // A selector is evaluated here rather than in SQL (which only narrows, above): the device
    // evaluates the same selector in C++ (a targeted rollout's channel file), and one
    // implementation cannot disagree with itself. Once per device: rows come sorted by device.
    if (filter.select) {
      std::string device = st.column_text(0);
      if (device != last_device) {
        last_matched = filter.select->matches(merge_labels(parse_labels_json(st.column_text(17)),
                                                           parse_labels_json(st.column_text(18))));
        last_device = std::move(device);
      }
      if (!last_matched) continue;
    }
    each(read_row(st));
  }
  return {};
}

Result<std::vector<DeviceModelRow>> list_devices(storage::Database& db, const DeviceFilter& filter,
                                                 TimePoint now) {
  std::vector<DeviceModelRow> out;
  MOTA_TRY(for_each_device_row(db, filter, now,
                               [&](DeviceModelRow&& r) { out.push_back(std::move(r)); }));
  return out;
}

Result<std::optional<DeviceInfo>> show_device(storage::Database& db, const std::string& id) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT id, key, enrolled, first_seen, last_seen, agent_version, arch, tags, "
      "metadata_error, metadata_error_since, blocked, admission, admitted_by, admitted_at, "
      "first_remote, labels, operator_labels FROM devices WHERE id = ?"));
  MOTA_TRY(st.bind(1, id));
  if (MOTA_TRY(st.step()) != storage::Step::row) return std::optional<DeviceInfo>();
  DeviceInfo info;
  info.id = st.column_text(0);
  info.key = st.column_text(1);
  info.enrolled = st.column_int64(2) != 0;
  info.first_seen = st.column_int64(3);
  info.last_seen = st.column_int64(4);
  info.agent_version = st.column_text(5);
  info.arch = st.column_text(6);
  info.tags = st.column_text(7);
  info.metadata_error = st.column_text(8);
  info.metadata_error_since = st.column_int64(9);
  info.admission = st.column_text(11);
  info.admitted_by = st.column_text(12);
  info.admitted_at = st.column_int64(13);
  info.first_remote = st.column_text(14);
  info.reported_labels = parse_labels_json(st.column_text(15));
  info.operator_labels = parse_labels_json(st.column_text(16));
  if (const std::string blocked = st.column_text(10); !blocked.empty()) {
    // Written by the ingest from a validated heartbeat (fleet_ingest.cpp, blocked_json).
    auto doc = Json::parse(blocked, nullptr, /*allow_exceptions=*/false);
    info.blocked.emplace();
    if (doc.is_array()) {
      for (const auto& e : doc) {
        if (!e.is_object()) continue;
        auto text = [&](const char* name) {
          auto it = e.find(name);
          return it != e.end() && it->is_string() ? it->get<std::string>() : std::string();
        };
        info.blocked->push_back({text("model"), text("version"), text("reason"), text("since")});
      }
    }
  }

  auto rows = MOTA_TRY(db.prepare(std::string(kDeviceColumns) +
                                  " WHERE d.id = ? AND i.model IS NOT NULL ORDER BY i.model"));
  MOTA_TRY(rows.bind(1, id));
  while (MOTA_TRY(rows.step()) == storage::Step::row) info.models.push_back(read_row(rows));

  auto ev = MOTA_TRY(
      db.prepare("SELECT seq, kind, created_at, received_at, model, from_version, to_version, "
                 "state, step, error, body FROM events WHERE device = ? ORDER BY seq"));
  MOTA_TRY(ev.bind(1, id));
  while (MOTA_TRY(ev.step()) == storage::Step::row) {
    EventRow e;
    e.seq = ev.column_int64(0);
    e.kind = ev.column_text(1);
    e.created_at = ev.column_text(2);
    e.received_at = ev.column_int64(3);
    e.model = ev.column_text(4);
    e.from = ev.column_text(5);
    e.to = ev.column_text(6);
    e.state = ev.column_text(7);
    e.step = ev.column_text(8);
    e.error = ev.column_text(9);
    if (e.kind == "event") {
      // slot and channel are read from the body the device sent (only this view needs them, so
      // the ingest's hot path does not store them twice).
      // nlohmann's DOM, not parse_json(): a member given twice counts as its last value, as the
      // report parser read it when the event was stored.
      auto doc = Json::parse(ev.column_text(10), nullptr, /*allow_exceptions=*/false);
      if (doc.is_object()) {
        const Json* body = &doc;
        auto text = [&](const char* name) -> std::optional<std::string> {
          auto it = body->find(name);
          if (it == body->end() || !it->is_string()) return std::nullopt;
          return it->get<std::string>();
        };
        e.slot = text("slot");
        e.channel = text("channel");
      }
    }
    info.events.push_back(std::move(e));
  }
  return std::optional<DeviceInfo>(std::move(info));
}

namespace {

// Per-version percentages, versions by device count, models by name.
void finish_summary(FleetSummary& out, std::map<std::string, ModelSummary>& models,
                    std::map<std::pair<std::string, std::string>, VersionStats>& versions) {
  for (auto& [key, v] : versions) {
    auto& m = models[key.first];
    v.percent = m.devices ? 100.0 * double(v.devices) / double(m.devices) : 0.0;
    m.versions.push_back(v);
  }
  for (auto& [name, m] : models) {
    m.model = name;
    std::stable_sort(
        m.versions.begin(), m.versions.end(),
        [](const VersionStats& a, const VersionStats& b) { return a.devices > b.devices; });
    out.models.push_back(std::move(m));
  }
}

}  // namespace

Result<FleetSummary> fleet_summary(storage::Database& db, std::chrono::seconds stale_after,
                                   TimePoint now) {
  FleetSummary out;
  out.stale_after = stale_after;
  const std::int64_t cutoff = unix_seconds(now) - stale_after.count();
  {
    auto st = MOTA_TRY(db.prepare("SELECT COUNT(*) FROM devices"));
    if (MOTA_TRY(st.step()) == storage::Step::row) out.devices = st.column_int64(0);
  }
  {
    // The devices_unadmitted partial index (migration 0005).
    auto st = MOTA_TRY(db.prepare(
        "SELECT admission, COUNT(*) FROM devices WHERE admission <> 'admitted' GROUP BY 1"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      (st.column_text(0) == "pending" ? out.pending : out.rejected) = st.column_int64(1);
    }
    out.devices -= out.pending + out.rejected;
  }
  {
    auto st = MOTA_TRY(db.prepare(std::string("SELECT COUNT(*) FROM devices WHERE (last_seen IS "
                                              "NULL OR last_seen < ?) AND ") +
                                  kAdmittedDevice));
    MOTA_TRY(st.bind(1, cutoff));
    if (MOTA_TRY(st.step()) == storage::Step::row) out.stale = st.column_int64(0);
  }
  std::map<std::string, ModelSummary> models;
  std::map<std::pair<std::string, std::string>, VersionStats> versions;
  {
    auto st = MOTA_TRY(
        db.prepare("SELECT model, version, devices FROM installed_counts WHERE devices > 0"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      auto& v = versions[{st.column_text(0), st.column_text(1)}];
      v.version = st.column_text(1);
      v.devices = st.column_int64(2);
      models[st.column_text(0)].devices += v.devices;
    }
  }
  {
    // Read from the installed_failed_version partial index alone.
    auto st = MOTA_TRY(db.prepare(
        std::string("SELECT model, failed_version, COUNT(*) FROM installed WHERE failed_version "
                    "<> '' AND ") +
        kAdmittedInstalled + " GROUP BY model, failed_version"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      auto& v = versions[{st.column_text(0), st.column_text(1)}];
      v.version = st.column_text(1);
      v.failures = st.column_int64(2);
      (void)models[st.column_text(0)];
    }
  }
  {
    auto st = MOTA_TRY(
        db.prepare(std::string("SELECT model, rolled_back_from, COUNT(*) FROM installed WHERE "
                               "rolled_back_from <> '' AND ") +
                   kAdmittedInstalled + " GROUP BY model, rolled_back_from"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      auto& v = versions[{st.column_text(0), st.column_text(1)}];
      v.version = st.column_text(1);
      v.rollbacks = st.column_int64(2);
      (void)models[st.column_text(0)];
    }
  }
  {
    // The installed_failed partial index (model, target, state) covers it.
    auto st = MOTA_TRY(db.prepare(
        std::string("SELECT model, COUNT(*) FROM installed WHERE state = 'failed' AND ") +
        kAdmittedInstalled + " GROUP BY model"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      models[st.column_text(0)].failed = st.column_int64(1);
    }
  }
  {
    // The installed_refused partial index (migration 0004) covers it.
    auto st = MOTA_TRY(db.prepare(
        std::string("SELECT model, COUNT(*) FROM installed WHERE state = 'refused' AND ") +
        kAdmittedInstalled + " GROUP BY model"));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      models[st.column_text(0)].refused = st.column_int64(1);
    }
  }
  {
    // Fleet-wide only, from the devices_metadata_error partial index. A count per model would
    // look up every such device's models: when the timestamp expired fleet-wide, that is every
    // device, and `mota fleet` would take seconds exactly when it is needed (the condition is the
    // device's, the same for all its models; `mota devices --condition metadata --model M`).
    auto st = MOTA_TRY(
        db.prepare(std::string("SELECT COUNT(*) FROM devices WHERE metadata_error <> '' AND ") +
                   kAdmittedDevice));
    if (MOTA_TRY(st.step()) == storage::Step::row) out.metadata_errors = st.column_int64(0);
  }
  if (out.stale > 0) {
    // Driven by the (last_seen, id) index: cheap while few devices are stale, which is the normal
    // case. CROSS JOIN keeps SQLite from scanning every installed row instead.
    auto st = MOTA_TRY(db.prepare(
        "SELECT i.model, COUNT(*) FROM devices d CROSS JOIN installed i ON i.device = d.id "
        "WHERE (d.last_seen IS NULL OR d.last_seen < ?) AND d.admission = 'admitted' GROUP BY "
        "i.model"));
    MOTA_TRY(st.bind(1, cutoff));
    while (MOTA_TRY(st.step()) == storage::Step::row) {
      models[st.column_text(0)].stale = st.column_int64(1);
    }
  }
  finish_summary(out, models, versions);
  return out;
}

Result<FleetSummary> fleet_summary(storage::Database& db, std::chrono::seconds stale_after,
                                   TimePoint now, const Selector& select) {
  DeviceFilter filter;
  filter.select = select;
  FleetSummary out;
  out.stale_after = stale_after;
  const std::int64_t cutoff = unix_seconds(now) - stale_after.count();
  std::map<std::string, ModelSummary> models;
  std::map<std::pair<std::string, std::string>, VersionStats> versions;
  auto version = [&](const std::string& model, const std::string& v) -> VersionStats& {
    auto& out = versions[{model, v}];
    out.version = v;
    (void)models[model];
    return out;
  };
  std::string last_device;
  MOTA_TRY(for_each_device_row(db, filter, now, [&](DeviceModelRow&& r) {
    const bool stale = r.last_seen == 0 || r.last_seen < cutoff;
    if (r.device != last_device) {  // rows come sorted by device
      last_device = r.device;
      if (r.admission == "pending") ++out.pending;
      if (r.admission == "rejected") ++out.rejected;
      if (r.admission == "admitted") {
        ++out.devices;
        if (stale) ++out.stale;
        if (!r.metadata_error.empty()) ++out.metadata_errors;
      }
    }
    if (r.admission != "admitted" || r.model.empty()) return;
    auto& m = models[r.model];
    ++m.devices;
    ++version(r.model, r.version).devices;
    if (!r.failed_version.empty()) ++version(r.model, r.failed_version).failures;
    if (!r.rolled_back_from.empty()) ++version(r.model, r.rolled_back_from).rollbacks;
    if (r.state == "failed") ++m.failed;
    if (r.state == "refused") ++m.refused;
    if (stale) ++m.stale;
  }));
  finish_summary(out, models, versions);
  return out;
}

Result<std::int64_t> label_devices(storage::Database& db, const std::vector<std::string>& ids,
                                   const Labels& set, const std::vector<std::string>& remove) {
  for (const auto& [k, v] : set) {
    MOTA_TRY(check_label(k, v));
    if (k.starts_with(kFactPrefix)) {
      return fail(
          Errc::invalid_argument,
          "label " + k + ": the prefix " + std::string(kFactPrefix) + " is the device's own facts");
    }
  }
  for (const auto& k : remove) {
    if (!valid_label_key(k))
      return fail(Errc::invalid_argument, "--remove " + printable(k) + ": not a label key");
  }
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto get = MOTA_TRY(db.prepare("SELECT operator_labels FROM devices WHERE id = ?"));
  auto put = MOTA_TRY(db.prepare("UPDATE devices SET operator_labels = ? WHERE id = ?"));
  std::int64_t changed = 0;
  for (const auto& id : ids) {
    MOTA_TRY(get.reset());
    MOTA_TRY(get.bind(1, id));
    if (MOTA_TRY(get.step()) != storage::Step::row) {
      return fail(Errc::not_found,
                  "device '" + printable(id) + "' is not on record (nothing changed)");
    }
    const Labels before = parse_labels_json(get.column_text(0));
    Labels after = merge_labels(before, set);
    for (const auto& k : remove) after.erase(k);
    if (after == before) continue;
    if (after.size() > kMaxLabels) {
      return fail(Errc::invalid_argument, "device '" + printable(id) + "' would have " +
                                              std::to_string(after.size()) +
                                              " operator labels, over the limit of " +
                                              std::to_string(kMaxLabels) + " (nothing changed)");
    }
    MOTA_TRY(put.reset());
    MOTA_TRY(put.bind_all(labels_json(after), id));
    MOTA_TRY(put.run());
    ++changed;
  }
  MOTA_TRY(tx.commit());
  return changed;
}

Result<std::string> device_key_hex(const std::string& file_text) {
  std::string text = file_text;
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  std::size_t start = 0;
  while (start < text.size() && std::isspace(static_cast<unsigned char>(text[start]))) ++start;
  text = text.substr(start);
  const bool hex = text.size() == 64 && std::all_of(text.begin(), text.end(), [](char c) {
                     return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
                   });
  if (hex) return text;
  if (text.find("-----BEGIN PRIVATE KEY-----") != std::string::npos) {
    auto key = MOTA_TRY_CTX(crypto::PrivateKey::from_pem(text), "device key");
    if (key.type() != crypto::KeyType::ed25519) {
      return fail(Errc::parse, "device key: not an Ed25519 key");
    }
    return key.public_key().public_value;
  }
  return fail(Errc::parse,
              "device key: expected 64 lower-case hex characters (the X-Mota-Key value) or the "
              "device's device.key PEM");
}

Status enroll_device(storage::Database& db, const std::string& id, const std::string& key_hex,
                     TimePoint now) {
  if (id.empty() || id.size() > 128) {
    return fail(Errc::invalid_argument, "device id must be 1..128 characters");
  }
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto st = MOTA_TRY(db.prepare("SELECT key, admission FROM devices WHERE id = ?"));
  MOTA_TRY(st.bind(1, id));
  if (MOTA_TRY(st.step()) == storage::Step::row) {
    if (st.column_text(0) != key_hex) {
      return fail(Errc::already_exists, "device " + id + " is on record with another key (" +
                                            st.column_text(0) + "); remove it first to re-key it");
    }
    // Enrolling a pending device admits it; a rejected one stays rejected (accept it).
    auto up = MOTA_TRY(
        db.prepare("UPDATE devices SET enrolled = 1, admitted_by = CASE admission WHEN 'pending' "
                   "THEN 'enrolled' ELSE admitted_by END, admitted_at = CASE admission WHEN "
                   "'pending' THEN ? ELSE admitted_at END, admission = CASE admission WHEN "
                   "'pending' THEN 'admitted' ELSE admission END WHERE id = ?"));
    MOTA_TRY(up.bind_all(unix_seconds(now), id));
    MOTA_TRY(up.run());
  } else {
    auto ins = MOTA_TRY(
        db.prepare("INSERT INTO devices (id, key, enrolled, first_seen, admission, admitted_by, "
                   "admitted_at) VALUES (?, ?, 1, NULL, 'admitted', 'enrolled', ?)"));
    MOTA_TRY(ins.bind_all(id, key_hex, unix_seconds(now)));
    MOTA_TRY(ins.run());
  }
  return tx.commit();
}

std::string_view admission_name(Admission a) {
  switch (a) {
    case Admission::admitted:
      return "admitted";
    case Admission::pending:
      return "pending";
    case Admission::rejected:
      return "rejected";
  }
  return "?";
}

Result<std::int64_t> set_admission(storage::Database& db, const std::vector<std::string>& ids,
                                   Admission to, TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  // admitted_by/at record the decision that let the device count; a rejection keeps no admitter.
  auto up = MOTA_TRY(
      db.prepare("UPDATE devices SET admission = ?1, admitted_by = CASE ?1 WHEN 'admitted' THEN "
                 "'operator' ELSE '' END, admitted_at = CASE ?1 WHEN 'admitted' THEN ?2 ELSE 0 "
                 "END WHERE id = ?3 AND admission <> ?1"));
  auto exists = MOTA_TRY(db.prepare("SELECT 1 FROM devices WHERE id = ?"));
  std::int64_t changed = 0;
  for (const auto& id : ids) {
    MOTA_TRY(exists.reset());
    MOTA_TRY(exists.bind(1, id));
    if (MOTA_TRY(exists.step()) != storage::Step::row) {
      return fail(Errc::not_found, "device '" + id + "' is not on record (nothing changed)");
    }
    MOTA_TRY(up.reset());
    MOTA_TRY(up.bind_all(std::string(admission_name(to)), unix_seconds(now), id));
    MOTA_TRY(up.run());
    changed += db.changes();
  }
  MOTA_TRY(tx.commit());
  return changed;
}

Status add_enrollment_key(storage::Database& db, const std::string& name,
                          const std::string& key_hex, TimePoint now) {
  auto tx = MOTA_TRY(storage::Transaction::begin(db));
  auto st = MOTA_TRY(db.prepare("SELECT name FROM enrollment_keys WHERE name = ? OR key = ?"));
  MOTA_TRY(st.bind_all(name, key_hex));
  if (MOTA_TRY(st.step()) == storage::Step::row) {
    return fail(Errc::already_exists,
                "enrollment key '" + st.column_text(0) + "' is on record with this name or key");
  }
  auto ins =
      MOTA_TRY(db.prepare("INSERT INTO enrollment_keys (name, key, created_at) VALUES (?, ?, ?)"));
  MOTA_TRY(ins.bind_all(name, key_hex, unix_seconds(now)));
  MOTA_TRY(ins.run());
  return tx.commit();
}

Result<std::vector<EnrollmentKey>> list_enrollment_keys(storage::Database& db) {
  auto st = MOTA_TRY(db.prepare(
      "SELECT k.name, k.key, k.created_at, k.revoked_at, (SELECT COUNT(*) FROM devices d WHERE "
      "d.admitted_by = 'enrollment:' || k.name) FROM enrollment_keys k ORDER BY k.name"));
  std::vector<EnrollmentKey> out;
  while (MOTA_TRY(st.step()) == storage::Step::row) {
    out.push_back({st.column_text(0), st.column_text(1), st.column_int64(2), st.column_int64(3),
                   st.column_int64(4)});
  }
  return out;
}

Status revoke_enrollment_key(storage::Database& db, const std::string& name, TimePoint now) {
  auto up = MOTA_TRY(db.prepare(
      "UPDATE enrollment_keys SET revoked_at = CASE revoked_at WHEN 0 THEN ? ELSE revoked_at END "
      "WHERE name = ?"));
  MOTA_TRY(up.bind_all(unix_seconds(now), name));
  MOTA_TRY(up.run());
  if (db.changes() == 0) {
    return fail(Errc::not_found, "enrollment key '" + name + "' is not on record");
  }
  return {};
}

Json to_json(const EnrollmentKey& k) {
  return Json{{"name", k.name},
              {"key", k.key},
              {"created_at", json_time(k.created_at)},
              {"revoked_at", json_time(k.revoked_at)},
              {"admitted", k.admitted}};
}

Json to_json(const DeviceModelRow& r) {
  return Json{{"device", r.device},
              {"model", json_text(r.model)},
              {"version", json_text(r.version)},
              {"slot", json_text(r.slot)},
              {"committed", r.committed},
              {"state", json_text(r.state)},
              {"target", json_text(r.target)},
              {"last_error", json_text(r.last_error)},
              {"failed_version", json_text(r.failed_version)},
              {"failed_at", json_time(r.failed_at)},
              {"rolled_back_from", json_text(r.rolled_back_from)},
              {"channel", json_text(r.channel)},
              {"last_seen", json_time(r.last_seen)},
              {"updated", json_time(r.updated_at)},
              {"metadata_error", json_text(r.metadata_error)},
              {"metadata_error_since", json_time(r.metadata_error_since)},
              {"admission", r.admission},
              {"labels", labels_object(r.labels)}};
}

Json to_json(const DeviceInfo& info) {
  Json models = Json::array();
  for (const auto& m : info.models) models.push_back(to_json(m));
  Json events = Json::array();
  auto opt = [](const std::optional<std::string>& s) { return s ? Json(*s) : Json(nullptr); };
  for (const auto& e : info.events) {
    events.push_back(Json{{"seq", e.seq},
                          {"kind", e.kind},
                          {"created_at", json_text(e.created_at)},
                          {"received_at", json_time(e.received_at)},
                          {"model", json_text(e.model)},
                          {"from", json_text(e.from)},
                          {"to", json_text(e.to)},
                          {"state", json_text(e.state)},
                          {"step", json_text(e.step)},
                          {"error", json_text(e.error)},
                          {"slot", opt(e.slot)},
                          {"channel", opt(e.channel)}});
  }
  Json blocked = nullptr;
  if (info.blocked) {
    blocked = Json::array();
    for (const auto& b : *info.blocked) {
      blocked.push_back(Json{{"model", b.model},
                             {"version", json_text(b.version)},
                             {"reason", json_text(b.reason)},
                             {"since", json_text(b.since)}});
    }
  }
  return Json{{"device", info.id},
              {"key", info.key},
              {"enrolled", info.enrolled},
              {"first_seen", json_time(info.first_seen)},
              {"last_seen", json_time(info.last_seen)},
              {"agent_version", json_text(info.agent_version)},
              {"arch", json_text(info.arch)},
              {"tags", json_text(info.tags)},
              {"metadata_error", json_text(info.metadata_error)},
              {"metadata_error_since", json_time(info.metadata_error_since)},
              {"admission", info.admission},
              {"admitted_by", json_text(info.admitted_by)},
              {"admitted_at", json_time(info.admitted_at)},
              {"first_remote", json_text(info.first_remote)},
              {"labels", labels_object(info.labels())},
              {"reported_labels", labels_object(info.reported_labels)},
              {"operator_labels", labels_object(info.operator_labels)},
              {"blocked", blocked},
              {"models", models},
              {"events", events}};
}

Json to_json(const FleetSummary& s) {
  Json models = Json::array();
  for (const auto& m : s.models) {
    Json versions = Json::array();
    for (const auto& v : m.versions) {
      versions.push_back(Json{{"version", json_text(v.version)},
                              {"devices", v.devices},
                              {"percent", v.percent},
                              {"failures", v.failures},
                              {"rollbacks", v.rollbacks}});
    }
    models.push_back(Json{{"model", m.model},
                          {"devices", m.devices},
                          {"versions", versions},
                          {"updating", m.updating},
                          {"failed", m.failed},
                          {"refused", m.refused},
                          {"stale", m.stale}});
  }
  return Json{{"devices", s.devices},
              {"pending", s.pending},
              {"rejected", s.rejected},
              {"stale", s.stale},
              {"stale_after_seconds", s.stale_after.count()},
              {"metadata_errors", s.metadata_errors},
              {"models", models}};
}

}  // namespace mota::manager
