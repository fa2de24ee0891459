// `mota devices`, `mota device show`, `mota fleet`, `mota rollout ...`, and the fleet flags of
// `mota serve`. Thin: parsing and printing only; the work is in fleet_db / rollout.
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>

#include "common/fs.hpp"
#include "common/text.hpp"
#include "common/time.hpp"
#include "manager/cli/commands.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_service.hpp"
#include "manager/fleet/rollout.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {

namespace {

namespace stdfs = std::filesystem;

struct FleetFlags {
  std::string db;
  bool json = false;
  DeviceFilter filter;
  std::string stale;
  std::string id, key_file;
  std::vector<std::string> ids;
  bool all_pending = false;
  bool dry_run = false;
  std::string select;               // --select, checked by selector_check()
  std::int64_t limit = 0;           // mota rollout list --limit
  bool show_labels = false;         // mota devices --labels
  std::vector<std::string> args;    // mota devices label: ids and KEY=VALUE
  std::vector<std::string> remove;  // mota devices label --remove KEY
  std::string name, out_file;
  std::string channel, model, version;
  std::string percents = "5,25,100";
  std::string max_failure_rate = "5%";
  std::int64_t min_devices = 20;
  std::string step_after = "1h";
  std::string rate;                         // --rate, checked by rate_check()
  std::string start_at;                     // --start-at TIME or +DURATION
  std::vector<std::string> install_window;  // --install-window, repeatable
  std::string max_error_rate;               // --max-error-rate (field)
  std::string max_latency_regression;       // --max-latency-regression (field)
  std::int64_t min_inferences = 1000;
};

std::string ago(std::int64_t t, std::int64_t now) {
  if (t <= 0) return "never";
  std::int64_t d = now - t;
  if (d < 0) d = 0;
  if (d < 120) return std::to_string(d) + "s ago";
  if (d < 7200) return std::to_string(d / 60) + "m ago";
  if (d < 172800) return std::to_string(d / 3600) + "h ago";
  return std::to_string(d / 86400) + "d ago";
}

std::int64_t now_unix() {
  return std::chrono::duration_cast<std::chrono::seconds>(now_seconds().time_since_epoch()).count();
}

void print_json(const Json& j) {
  // Control characters are escaped by JSON itself; invalid UTF-8 (never stored by the ingest, but
  // possible in an old database) is replaced rather than thrown.
  std::printf("%s\n", j.dump(2, ' ', false, Json::error_handler_t::replace).c_str());
}

std::string cut(const std::string& s, std::size_t n) {
  return s.size() <= n ? s : s.substr(0, n - 3) + "...";
}

const char* or_dash(const std::string& s) {
  return s.empty() ? "-" : s.c_str();
}

// CLI11 checks, so that a bad value is a usage error (exit 2, CLI11 names the flag) before any
// file is touched.
CLI::Validator duration_check(bool allow_ms = false) {
  return CLI::Validator(
      [allow_ms](std::string& v) -> std::string {
        auto d = parse_duration_value(v, allow_ms);
        return d ? std::string() : d.error().message();
      },
      "DURATION");
}
CLI::Validator failure_rate_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto r = parse_failure_rate(v);
        return r ? std::string() : r.error().message();
      },
      "PERCENT");
}
CLI::Validator regression_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto r = parse_regression(v);
        return r ? std::string() : r.error().message();
      },
      "PERCENT");
}
CLI::Validator selector_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto s = Selector::parse(v);
        return s ? std::string() : s.error().message();
      },
      "SELECTOR");
}
// --select into the filter (checked already by selector_check()).
Status apply_select(FleetFlags& f) {
  if (!f.select.empty()) f.filter.select = MOTA_TRY_CTX(Selector::parse(f.select), "--select");
  return {};
}
std::string labels_text(const Labels& labels) {
  std::string out;
  for (const auto& [k, v] : labels) out += (out.empty() ? "" : ",") + k + "=" + v;
  return out;
}
CLI::Validator rate_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto r = parse_rate(v);
        return r ? std::string() : r.error().message();
      },
      "N/min");
}
// "2026-12-08T02:00:00Z" or "+30m" (from now) -> Unix seconds.
Result<std::int64_t> parse_start_at(const std::string& text, TimePoint now) {
  if (!text.empty() && text[0] == '+') {
    auto d = MOTA_TRY_CTX(parse_duration(text.substr(1)), "'" + text + "'");
    return std::chrono::duration_cast<std::chrono::seconds>((now + d).time_since_epoch()).count();
  }
  auto t = parse_time(text);
  if (!t) {
    return fail(Errc::invalid_argument,
                "'" + text +
                    "' is not a time: write YYYY-MM-DDTHH:MM:SSZ (UTC) or +DURATION "
                    "(+30m, +2h)");
  }
  return std::chrono::duration_cast<std::chrono::seconds>(t->time_since_epoch()).count();
}
CLI::Validator window_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto w = InstallWindow::parse(v);
        return w ? std::string() : w.error().message();
      },
      "'DAYS HH:MM-HH:MM'");
}
CLI::Validator percents_check() {
  return CLI::Validator(
      [](std::string& v) -> std::string {
        auto r = parse_percents(v);
        return r ? std::string() : r.error().message();
      },
      "P1,P2,...,100");
}

// Who may create the fleet database: `mota serve` and the commands that write something of their
// own into it (enroll, rollout start). Everything else reads an existing one.
enum class DbUse { existing, create };

// The fleet database of `repo` (or --db / $MOTA_FLEET_DB). Without an explicit database the
// directory must be a repository, so that a command run in the wrong directory fails instead of
// showing an empty fleet from a fresh fleet.db it just left there.
Result<storage::Database> open_db(const std::string& repo, const FleetFlags& f, DbUse use) {
  const char* env = std::getenv("MOTA_FLEET_DB");
  const bool explicit_db = !f.db.empty() || (env && *env);
  std::error_code ec;
  if (!explicit_db && !stdfs::exists(stdfs::path(repo) / "mota.toml", ec)) {
    return fail(Errc::not_found,
                repo + " is not a mota repository (no mota.toml); use --repo DIR or --db FILE");
  }
  const stdfs::path path = fleet_db_path(repo, f.db);
  if (use == DbUse::existing && !stdfs::exists(path, ec)) {
    return fail(Errc::not_found,
                "no fleet database at " + path.string() +
                    (explicit_db ? "" : " (`mota serve` creates it when it starts)"));
  }
  return open_fleet_db(path, use == DbUse::create);
}

Status list_devices_cmd(const std::string& repo, FleetFlags& f) {
  if (!f.stale.empty()) {
    f.filter.stale = std::chrono::duration_cast<std::chrono::seconds>(
        MOTA_TRY_CTX(parse_duration_value(f.stale), "--stale"));
  }
  MOTA_TRY(apply_select(f));
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  auto rows = MOTA_TRY(list_devices(db, f.filter, now_seconds()));
  if (f.json) {
    Json arr = Json::array();
    for (const auto& r : rows) arr.push_back(to_json(r));
    print_json(arr);
    return {};
  }
  const auto now = now_unix();
  // Every string but the admission and the times came from a device: printable() (a device id is
  // checked at ingest, the rest is escaped here).
  std::printf("%-24s %-9s %-16s %-12s %-4s %-8s %-9s %-10s %s\n", "DEVICE", "ADMISSION", "MODEL",
              "VERSION", "SLOT", "STATE", "CONDITION", "LAST SEEN",
              f.show_labels ? "LABELS" : "LAST ERROR");
  for (const auto& r : rows) {
    // The model's own error first; a device whose metadata refresh fails says why otherwise.
    const std::string error = !r.last_error.empty()       ? r.last_error
                              : !r.metadata_error.empty() ? "metadata: " + r.metadata_error
                                                          : "";
    std::printf(
        "%-24s %-9s %-16s %-12s %-4s %-8s %-9s %-10s %s\n", cut(printable(r.device), 24).c_str(),
        r.admission.c_str(), r.model.empty() ? "-" : cut(printable(r.model), 16).c_str(),
        or_dash(printable(r.version)), or_dash(printable(r.slot)), or_dash(printable(r.state)),
        r.metadata_error.empty() ? "-" : "metadata", ago(r.last_seen, now).c_str(),
        f.show_labels ? printable(labels_text(r.labels)).c_str()
                      : cut(printable(error), 60).c_str());
  }
  return {};
}

// mota devices label ID... KEY=VALUE... [--remove KEY]... | --select SELECTOR KEY=VALUE...
Status label_cmd(const std::string& repo, FleetFlags& f) {
  std::vector<std::string> ids;
  Labels set;
  for (const auto& a : f.args) {
    const auto eq = a.find('=');
    if (eq == std::string::npos) {
      ids.push_back(a);
      continue;
    }
    const std::string key = a.substr(0, eq), value = a.substr(eq + 1);
    MOTA_TRY(check_label(key, value));
    set[key] = value;
  }
  if (set.empty() && f.remove.empty()) {
    return fail(Errc::invalid_argument, "devices label: give KEY=VALUE labels or --remove KEY");
  }
  if (ids.empty() == f.select.empty()) {
    return fail(Errc::invalid_argument, "devices label: give device ids or --select, not both");
  }
  MOTA_TRY(apply_select(f));
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  if (f.filter.select) {
    MOTA_TRY(for_each_device_row(db, f.filter, now_seconds(), [&](DeviceModelRow&& r) {
      if (ids.empty() || ids.back() != r.device) ids.push_back(std::move(r.device));
    }));
  }
  if (f.dry_run) {
    for (const auto& id : ids) std::printf("%s\n", printable(id).c_str());
    std::printf("would label %zu device%s\n", ids.size(), ids.size() == 1 ? "" : "s");
    return {};
  }
  const auto changed = MOTA_TRY(label_devices(db, ids, set, f.remove));
  std::printf("labelled %lld device%s (%zu matched)\n", static_cast<long long>(changed),
              changed == 1 ? "" : "s", ids.size());
  return {};
}

Status enroll_cmd(const std::string& repo, const FleetFlags& f) {
  auto text = MOTA_TRY_CTX(fs::read_file(f.key_file, 1 << 16), "--key " + f.key_file);
  auto key = MOTA_TRY_CTX(device_key_hex(text), f.key_file);
  auto db = MOTA_TRY(open_db(repo, f, DbUse::create));
  MOTA_TRY(enroll_device(db, f.id, key, now_seconds()));
  std::printf("enrolled %s (key %s)\n", f.id.c_str(), key.c_str());
  return {};
}

// mota devices accept|reject ID... | --all-pending
Status admission_cmd(const std::string& repo, FleetFlags& f, Admission to) {
  const char* verb = to == Admission::admitted ? "accept" : "reject";
  if (f.ids.empty() == !f.all_pending) {
    return fail(Errc::invalid_argument,
                std::string("devices ") + verb + ": give device ids or --all-pending, not both");
  }
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  std::vector<std::string> ids = f.ids;
  if (f.all_pending) {
    // Every pending device, narrowed by the listing's filters (a selector until device labels).
    DeviceFilter pending = f.filter;
    if (!f.select.empty()) pending.select = MOTA_TRY_CTX(Selector::parse(f.select), "--select");
    pending.admission = "pending";
    if (!f.stale.empty()) {
      pending.stale = std::chrono::duration_cast<std::chrono::seconds>(
          MOTA_TRY_CTX(parse_duration_value(f.stale), "--stale"));
    }
    MOTA_TRY(for_each_device_row(db, pending, now_seconds(), [&](DeviceModelRow&& r) {
      if (ids.empty() || ids.back() != r.device) ids.push_back(std::move(r.device));
    }));
  } else if (!f.filter.model.empty() || !f.filter.channel.empty() || !f.filter.version.empty() ||
             !f.stale.empty() || !f.select.empty()) {
    return fail(Errc::invalid_argument, std::string("devices ") + verb +
                                            ": --model, --channel, --version, --stale and "
                                            "--select narrow --all-pending; with ids, name them");
  }
  if (f.dry_run) {
    for (const auto& id : ids) std::printf("%s\n", printable(id).c_str());
    std::printf("would %s %zu device%s\n", verb, ids.size(), ids.size() == 1 ? "" : "s");
    return {};
  }
  const auto changed = MOTA_TRY(set_admission(db, ids, to, now_seconds()));
  const char* done = to == Admission::admitted ? "accepted" : "rejected";
  std::printf("%s %lld device%s", done, static_cast<long long>(changed), changed == 1 ? "" : "s");
  if (std::size_t(changed) < ids.size()) {
    std::printf(" (%lld of the %zu named were %s already)",
                static_cast<long long>(ids.size() - std::size_t(changed)), ids.size(),
                to == Admission::admitted ? "admitted" : "rejected");
  }
  std::printf("\n");
  return {};
}

// mota enrollment create NAME --out FILE | list | revoke NAME
Status enrollment_cmd(const std::string& repo, const FleetFlags& f, const std::string& what) {
  const auto now = now_seconds();
  if (what == "create") {
    auto key = MOTA_TRY(crypto::PrivateKey::generate(crypto::KeyType::ed25519));
    auto pem = MOTA_TRY(key.to_pem());
    // The private half goes into device images: written 0600, never over an existing file.
    auto db = MOTA_TRY(open_db(repo, f, DbUse::create));
    std::error_code ec;
    if (stdfs::exists(f.out_file, ec)) {
      return fail(Errc::already_exists, "--out " + f.out_file + " exists; not overwritten");
    }
    MOTA_TRY_CTX(fs::write_file_atomic(f.out_file, pem, 0600), "--out " + f.out_file);
    if (auto st = add_enrollment_key(db, f.name, key.public_key().public_value, now); !st) {
      stdfs::remove(f.out_file, ec);
      return st;
    }
    std::printf(
        "enrollment key %s: private key written to %s (put it in device images as agent.toml "
        "enrollment_key); public key %s\n",
        f.name.c_str(), f.out_file.c_str(), key.public_key().public_value.c_str());
    return {};
  }
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  if (what == "revoke") {
    MOTA_TRY(revoke_enrollment_key(db, f.name, now));
    std::printf("enrollment key %s revoked: it admits no new device (those it admitted stay)\n",
                f.name.c_str());
    return {};
  }
  auto keys = MOTA_TRY(list_enrollment_keys(db));
  if (f.json) {
    Json arr = Json::array();
    for (const auto& k : keys) arr.push_back(to_json(k));
    print_json(arr);
    return {};
  }
  std::printf("%-20s %-20s %-20s %8s  %s\n", "NAME", "CREATED", "REVOKED", "ADMITTED", "KEY");
  for (const auto& k : keys) {
    std::printf("%-20s %-20s %-20s %8lld  %s\n", k.name.c_str(), format_unix(k.created_at).c_str(),
                or_dash(format_unix(k.revoked_at)), static_cast<long long>(k.admitted),
                k.key.c_str());
  }
  return {};
}

Status show_device_cmd(const std::string& repo, const FleetFlags& f) {
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  auto info = MOTA_TRY(show_device(db, f.id));
  if (!info) return fail(Errc::not_found, "device " + f.id + " is not known to the fleet");
  const auto field = MOTA_TRY(device_field(db, f.id));
  if (f.json) {
    Json j = to_json(*info);
    Json fj = Json::array();
    for (const auto& d : field) {
      Json e = to_json(d.totals);
      e["model"] = d.model;
      e["version"] = d.version;
      e["updated"] = format_unix(d.updated_at);
      fj.push_back(std::move(e));
    }
    j["field"] = std::move(fj);
    print_json(j);
    return {};
  }
  const auto now = now_unix();
  std::printf("device     %s\nkey        %s (%s)\nfirst seen %s%s%s\nlast seen  %s (%s)\n",
              printable(info->id).c_str(), info->key.c_str(),
              info->enrolled ? "enrolled" : "recorded at first contact",
              or_dash(format_unix(info->first_seen)), info->first_remote.empty() ? "" : " from ",
              printable(info->first_remote).c_str(), or_dash(format_unix(info->last_seen)),
              ago(info->last_seen, now).c_str());
  if (info->admission == "admitted") {
    std::printf("admission  admitted%s%s%s%s\n", info->admitted_by.empty() ? "" : " by ",
                info->admitted_by.c_str(), info->admitted_at ? " at " : "",
                format_unix(info->admitted_at).c_str());
  } else {
    std::printf("admission  %s: its reports %s (mota devices %s %s)\n", info->admission.c_str(),
                info->admission == "pending" ? "are kept but count for nothing" : "are refused",
                info->admission == "pending" ? "accept|reject" : "accept",
                printable(info->id).c_str());
  }
  if (!info->agent_version.empty() || !info->arch.empty()) {
    std::printf("agent      %s on %s\n", or_dash(printable(info->agent_version)),
                or_dash(printable(info->arch)));
  }
  // The device's own labels and the operator's (which win on a shared key), apart.
  std::printf("labels     %s\n", or_dash(printable(labels_text(info->reported_labels))));
  if (!info->operator_labels.empty()) {
    std::printf("operator   %s (mota devices label)\n",
                printable(labels_text(info->operator_labels)).c_str());
  }
  if (info->metadata_error.empty()) {
    std::printf("metadata   ok\n");
  } else {
    std::printf(
        "metadata   failing since %s (%s): %s\n", or_dash(format_unix(info->metadata_error_since)),
        ago(info->metadata_error_since, now).c_str(), printable(info->metadata_error).c_str());
  }
  if (info->blocked) {
    if (info->blocked->empty()) std::printf("blocked    nothing\n");
    for (const auto& b : *info->blocked) {
      std::printf("blocked    %s %s since %s: %s\n", printable(b.model).c_str(),
                  or_dash(printable(b.version)), or_dash(printable(b.since)),
                  printable(b.reason).c_str());
    }
  }
  for (const auto& m : info->models) {
    std::string notes;
    if (!m.failed_version.empty()) notes += ", failed to install " + printable(m.failed_version);
    if (!m.rolled_back_from.empty()) notes += ", rolled back from " + printable(m.rolled_back_from);
    if (!m.last_error.empty()) notes += ", last error: " + printable(m.last_error);
    std::printf("model      %s %s (slot %s%s%s) state %s%s\n", printable(m.model).c_str(),
                or_dash(printable(m.version)), or_dash(printable(m.slot)),
                m.committed ? ", committed" : "",
                m.channel.empty() ? "" : (", channel " + printable(m.channel)).c_str(),
                printable(m.state).c_str(), notes.c_str());
  }
  // What mota-runtime counted on this device, per version it served.
  for (const auto& d : field) {
    std::printf("field      %s %s: %llu inferences, %llu failed, p50 %.2f ms, p99 %.2f ms (%s)\n",
                printable(d.model).c_str(), or_dash(printable(d.version)),
                static_cast<unsigned long long>(d.totals.inferences),
                static_cast<unsigned long long>(d.totals.errors), d.totals.latency.quantile(0.5),
                d.totals.latency.quantile(0.99), ago(d.updated_at, now).c_str());
  }
  std::printf("events (%zu):\n", info->events.size());
  for (const auto& e : info->events) {
    if (e.kind == "heartbeat") {
      std::printf("  %6lld %s heartbeat\n", static_cast<long long>(e.seq),
                  printable(e.created_at).c_str());
      continue;
    }
    std::string where = "step " + std::string(or_dash(printable(e.step)));
    if (e.slot) where += ", slot " + std::string(or_dash(printable(*e.slot)));
    if (e.channel) where += ", channel " + std::string(or_dash(printable(*e.channel)));
    if (e.model.empty()) {  // a condition of the device (metadata_error, metadata_ok)
      std::printf("  %6lld %s device %s (%s)%s%s\n", static_cast<long long>(e.seq),
                  printable(e.created_at).c_str(), printable(e.state).c_str(), where.c_str(),
                  e.error.empty() ? "" : ": ", printable(e.error).c_str());
      continue;
    }
    std::printf("  %6lld %s %s %s %s -> %s (%s)%s%s\n", static_cast<long long>(e.seq),
                printable(e.created_at).c_str(), printable(e.model).c_str(),
                printable(e.state).c_str(), or_dash(printable(e.from)), or_dash(printable(e.to)),
                where.c_str(), e.error.empty() ? "" : ": ", printable(e.error).c_str());
  }
  return {};
}

Status fleet_cmd(const std::string& repo, FleetFlags& f) {
  const std::string stale_text = f.stale.empty() ? "1h" : f.stale;
  const auto stale = std::chrono::duration_cast<std::chrono::seconds>(
      MOTA_TRY_CTX(parse_duration_value(stale_text), "--stale"));
  auto db = MOTA_TRY(open_db(repo, f, DbUse::existing));
  FleetSummary summary;
  if (f.select.empty()) {
    summary = MOTA_TRY(fleet_summary(db, stale, now_seconds()));
    for (const auto& r : MOTA_TRY(active_rollouts(db))) {
      for (auto& m : summary.models) {
        if (m.model == r.model) m.updating += r.counts.pending;
      }
    }
  } else {
    // Rollouts' pending counts are of their own targets, not of this selection: left out.
    summary = MOTA_TRY(fleet_summary(db, stale, now_seconds(),
                                     MOTA_TRY_CTX(Selector::parse(f.select), "--select")));
  }
  // Field health per version (what the runtime counted on every device that ran it; not
  // narrowed by --select).
  std::map<std::string, std::vector<VersionField>> field;
  for (const auto& m : summary.models) field[m.model] = MOTA_TRY(field_by_version(db, m.model));
  auto field_of = [&](const std::string& model, const std::string& version) -> const FieldTotals* {
    for (const auto& v : field[model]) {
      if (v.version == version) return &v.totals;
    }
    return nullptr;
  };
  if (f.json) {
    Json j = to_json(summary);
    for (auto& m : j["models"]) {
      const std::string model = m["model"].get<std::string>();
      for (auto& v : m["versions"]) {
        const FieldTotals* t =
            v["version"].is_string() ? field_of(model, v["version"].get<std::string>()) : nullptr;
        if (!t) continue;
        v["field"] = to_json(*t);
      }
    }
    print_json(j);
    return {};
  }
  if (!f.select.empty()) std::printf("devices matching %s\n", f.select.c_str());
  std::printf("%lld devices, %lld not seen for %s, %lld failing to refresh metadata\n",
              static_cast<long long>(summary.devices), static_cast<long long>(summary.stale),
              stale_text.c_str(), static_cast<long long>(summary.metadata_errors));
  if (summary.pending + summary.rejected > 0) {
    // Not admitted: not in any count below, nor in rollout decisions (mota devices accept).
    std::printf(
        "%lld pending and %lld rejected devices are not counted (mota devices "
        "--admission pending)\n",
        static_cast<long long>(summary.pending), static_cast<long long>(summary.rejected));
  }
  for (const auto& m : summary.models) {
    std::printf("\n%s: %lld devices, %lld updating, %lld failed, %lld refused, %lld stale\n",
                printable(m.model).c_str(), static_cast<long long>(m.devices),
                static_cast<long long>(m.updating), static_cast<long long>(m.failed),
                static_cast<long long>(m.refused), static_cast<long long>(m.stale));
    std::printf("  %-14s %9s %7s %9s %9s %11s %7s %9s\n", "VERSION", "DEVICES", "%", "FAILURES",
                "ROLLBACKS", "INFERENCES", "ERRORS", "P99 MS");
    for (const auto& v : m.versions) {
      std::printf("  %-14s %9lld %6.1f%% %9lld %9lld", or_dash(printable(v.version)),
                  static_cast<long long>(v.devices), v.percent, static_cast<long long>(v.failures),
                  static_cast<long long>(v.rollbacks));
      if (const FieldTotals* t = field_of(m.model, v.version); t && t->runs() > 0) {
        std::printf(" %11llu %6.2f%% %9.2f\n", static_cast<unsigned long long>(t->runs()),
                    t->error_rate() * 100, t->latency.quantile(0.99));
      } else {
        std::printf(" %11s %7s %9s\n", "-", "-", "-");
      }
    }
  }
  return {};
}

// The field health lines of `mota rollout status` (manager/fleet/rollout.hpp, field gates).
void print_rollout_field(const RolloutInfo& r) {
  const FieldTotals& v = r.field.version;
  std::string gates;
  if (r.max_error_bp) {
    char b[64];
    std::snprintf(b, sizeof b, "halt above %g%% errors", *r.max_error_bp / 100.0);
    gates += b;
  }
  if (r.max_latency_regression_pct) {
    gates += std::string(gates.empty() ? "" : ", ") + "halt at p99 +" +
             std::to_string(*r.max_latency_regression_pct) + "%";
  }
  if (!gates.empty()) {
    gates += " after " + std::to_string(r.min_inferences) + " runs";
  }
  if (v.runs() == 0 && gates.empty()) return;
  std::printf(
      "  field: %llu inferences on %lld device%s, %.2f%% failed, p50 %.2f ms, p99 %.2f ms%s\n",
      static_cast<unsigned long long>(v.runs()), static_cast<long long>(v.devices),
      v.devices == 1 ? "" : "s", v.error_rate() * 100, v.latency.quantile(0.5),
      v.latency.quantile(0.99), gates.empty() ? "" : ("; " + gates).c_str());
  const FieldComparison& c = r.field.same_devices;
  if (!r.previous_version.empty() && c.version.devices > 0) {
    std::printf(
        "  field vs %s on the same %lld device%s: p99 %.2f ms -> %.2f ms (%llu and %llu "
        "runs)\n",
        r.previous_version.c_str(), static_cast<long long>(c.version.devices),
        c.version.devices == 1 ? "" : "s", c.baseline.latency.quantile(0.99),
        c.version.latency.quantile(0.99), static_cast<unsigned long long>(c.baseline.runs()),
        static_cast<unsigned long long>(c.version.runs()));
  }
}

void print_rollout(const RolloutInfo& r, bool json) {
  if (json) {
    print_json(to_json(r));
    return;
  }
  std::string steps;
  for (std::size_t i = 0; i < r.percents.size(); ++i) {
    steps += (i ? " " : "") + std::string(int(i) == r.step ? "[" : "") +
             std::to_string(r.percents[i]) + "%" + (int(i) == r.step ? "]" : "");
  }
  std::printf("rollout %lld: %s %s on %s (previous %s): %s at step %d/%zu, %s\n",
              static_cast<long long>(r.id), r.model.c_str(), r.version.c_str(), r.channel.c_str(),
              r.previous_version.empty() ? "none" : r.previous_version.c_str(), r.state.c_str(),
              r.step + 1, r.percents.size(), steps.c_str());
  if (!r.select.empty()) std::printf("  devices matching %s\n", r.select.c_str());
  if (r.state == "scheduled") {
    std::printf("  begins at %s\n", format_unix(r.start_at).c_str());
  } else if (r.rate_per_min > 0) {
    std::printf("  paced at %u devices/min: share %g%% of %u%%\n", r.rate_per_min,
                r.share_bp / 100.0, r.percent());
  }
  std::printf(
      "  targeted %lld, updated %lld, failed %lld, rolled back %lld, pending %lld; "
      "failure rate %.1f%% (halt above %g%%)\n",
      static_cast<long long>(r.counts.targeted), static_cast<long long>(r.counts.updated),
      static_cast<long long>(r.counts.failed), static_cast<long long>(r.counts.rolled_back),
      static_cast<long long>(r.counts.pending), r.counts.failure_rate * 100,
      r.max_failure_bp / 100.0);
  print_rollout_field(r);
  for (const auto& t : r.transitions) {
    std::printf("  %s %-9s %3u%%  %s\n", format_unix(t.at).c_str(), t.state.c_str(), t.percent,
                t.reason.c_str());
  }
}

Status rollout_list_cmd(const std::string& repo_path, const FleetFlags& f) {
  auto db = MOTA_TRY(open_db(repo_path, f, DbUse::existing));
  const auto all = MOTA_TRY(list_rollouts(db, f.limit));
  if (f.json) {
    Json arr = Json::array();
    for (const auto& r : all) arr.push_back(to_json(r));
    print_json(arr);
    return {};
  }
  if (all.empty()) {
    std::printf("no rollouts\n");
    return {};
  }
  std::printf("%-5s %-12s %-20s %-12s %-10s %-8s %9s %8s %7s  %-20s %s\n", "ID", "CHANNEL", "MODEL",
              "VERSION", "STATE", "STEP", "TARGETED", "UPDATED", "FAILED", "UPDATED AT", "SELECT");
  for (const auto& r : all) {
    std::string step = std::to_string(r.step + 1) + "/" + std::to_string(r.percents.size()) + " " +
                       std::to_string(r.percent()) + "%";
    if (r.share_bp < r.percent() * 100 && r.state != "scheduled") {
      char share[32];
      std::snprintf(share, sizeof share, " (%g%%)", r.share_bp / 100.0);
      step += share;
    }
    std::printf("%-5lld %-12s %-20s %-12s %-10s %-8s %9lld %8lld %7lld  %-20s %s\n",
                static_cast<long long>(r.id), r.channel.c_str(), r.model.c_str(), r.version.c_str(),
                r.state.c_str(), step.c_str(), static_cast<long long>(r.counts.targeted),
                static_cast<long long>(r.counts.updated),
                static_cast<long long>(r.counts.failed + r.counts.rolled_back),
                format_unix(r.updated_at).c_str(), or_dash(r.select));
  }
  return {};
}

Status rollout_cmd(const std::string& repo_path, const FleetFlags& f, const std::string& what) {
  const auto now = now_seconds();
  if (what == "list") return rollout_list_cmd(repo_path, f);
  if (what == "status" || what == "pause" || what == "resume") {
    auto db = MOTA_TRY(open_db(repo_path, f, DbUse::existing));
    if (what == "status") {
      auto r = MOTA_TRY(rollout_status(db, f.channel, f.model));
      if (!r) {
        return fail(Errc::not_found, "no rollout of " + f.model + " on channel " + f.channel);
      }
      print_rollout(*r, f.json);
    } else if (what == "pause") {
      print_rollout(MOTA_TRY(pause_rollout(db, f.channel, f.model, now)), f.json);
    } else {
      print_rollout(MOTA_TRY(resume_rollout(db, f.channel, f.model, now)), f.json);
    }
    return {};
  }
  if (what == "tick" && !f.channel.empty() && f.model.empty()) {
    return fail(Errc::invalid_argument, "rollout tick: give CHANNEL and MODEL, or neither");
  }
  // The rest publishes channels: the repository first, so that nothing is created beside a
  // directory that is not one.
  auto repo = MOTA_TRY(Repository::open(repo_path));
  if (what == "start") {
    RolloutSpec spec;
    spec.channel = f.channel;
    spec.model = f.model;
    spec.version = f.version;
    spec.percents = MOTA_TRY_CTX(parse_percents(f.percents), "--percent");
    spec.max_failure_bp =
        MOTA_TRY_CTX(parse_failure_rate(f.max_failure_rate), "--max-failure-rate");
    if (f.min_devices < 0) return fail(Errc::invalid_argument, "--min-devices must be >= 0");
    spec.min_devices = f.min_devices;
    spec.step_after = std::chrono::duration_cast<std::chrono::seconds>(
        MOTA_TRY_CTX(parse_duration_value(f.step_after), "--step-after"));
    spec.select = f.select;
    if (!f.rate.empty()) spec.rate_per_min = MOTA_TRY_CTX(parse_rate(f.rate), "--rate");
    if (!f.start_at.empty()) {
      spec.start_at = MOTA_TRY_CTX(parse_start_at(f.start_at, now), "--start-at");
    }
    spec.install_window = f.install_window;
    if (!f.max_error_rate.empty()) {
      spec.max_error_bp = MOTA_TRY_CTX(parse_failure_rate(f.max_error_rate), "--max-error-rate");
    }
    if (!f.max_latency_regression.empty()) {
      spec.max_latency_regression_pct =
          MOTA_TRY_CTX(parse_regression(f.max_latency_regression), "--max-latency-regression");
    }
    if (f.min_inferences < 0) return fail(Errc::invalid_argument, "--min-inferences must be >= 0");
    spec.min_inferences = f.min_inferences;
    if (f.dry_run) {
      auto db = MOTA_TRY(open_db(repo_path, f, DbUse::existing));
      const auto plan = MOTA_TRY(plan_rollout(db, spec));
      if (f.json) {
        Json arr = Json::array();
        for (const auto& step : plan) {
          Json s{
              {"percent", step.percent}, {"count", step.devices.size()}, {"devices", step.devices}};
          if (spec.rate_per_min > 0) s["pace_minutes"] = step.pace_minutes;
          arr.push_back(std::move(s));
        }
        print_json(arr);
        return {};
      }
      for (std::size_t i = 0; i < plan.size(); ++i) {
        std::printf("step %zu: %3u%% -> %zu device%s", i + 1, plan[i].percent,
                    plan[i].devices.size(), plan[i].devices.size() == 1 ? "" : "s");
        if (spec.rate_per_min > 0) {
          std::printf(" (~%lld min at %u/min)", static_cast<long long>(plan[i].pace_minutes),
                      spec.rate_per_min);
        }
        std::printf("\n");
      }
      std::printf("(admitted devices of %s on %s%s, as they report now; nothing published)\n",
                  spec.model.c_str(), spec.channel.c_str(),
                  spec.select.empty() ? "" : (" matching " + spec.select).c_str());
      return {};
    }
    auto db = MOTA_TRY(open_db(repo_path, f, DbUse::create));
    print_rollout(MOTA_TRY(start_rollout(db, repo, spec, now)), f.json);
    return {};
  }
  auto db = MOTA_TRY(open_db(repo_path, f, DbUse::existing));
  if (what == "abort") {
    print_rollout(MOTA_TRY(abort_rollout(db, repo, f.channel, f.model, now)), f.json);
    return {};
  }
  // tick: one rollout, or every running one.
  if (!f.channel.empty()) {
    print_rollout(MOTA_TRY(tick_rollout(db, repo, f.channel, f.model, now)), f.json);
    return {};
  }
  auto changed = MOTA_TRY(tick_all_rollouts(db, repo, now));
  if (f.json) {
    Json arr = Json::array();
    for (const auto& r : changed) arr.push_back(to_json(r));
    print_json(arr);
  } else {
    for (const auto& r : changed) print_rollout(r, false);
    if (changed.empty()) std::printf("no rollout changed\n");
  }
  return {};
}

}  // namespace

void add_fleet_commands(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto f = std::make_shared<FleetFlags>();
  auto common = [&repo_flag, f](CLI::App* cmd, bool json = true) {
    cmd->add_option("--repo", repo_flag, "repository directory (default: $MOTA_REPO or .)");
    cmd->add_option("--db", f->db, "fleet database (default: $MOTA_FLEET_DB or REPO/fleet.db)");
    if (json) cmd->add_flag("--json", f->json, "machine-readable output");
  };

  // serve flags (the serve subcommand is added by cli/serve.cpp, whose group runs before this one)
  CLI::App* serve = nullptr;
  for (CLI::App* sub : app.get_subcommands([](CLI::App* a) { return a->get_name() == "serve"; })) {
    serve = sub;
  }
  if (serve) {
    auto& so = fleet_serve_options();
    serve->add_option("--db", so.db, "fleet database (default: $MOTA_FLEET_DB or REPO/fleet.db)");
    serve
        ->add_option("--admission", so.admission,
                     "devices not on record: pending (recorded, count for nothing until `mota "
                     "devices accept`), automatic (admitted on first contact) or enrolled "
                     "(refused unless enrolled); an enrollment key's signature admits in any mode")
        ->capture_default_str()
        ->check(CLI::IsMember({"pending", "automatic", "enrolled"}));
    serve->add_flag("--enrolled-only", so.enrolled_only, "the same as --admission enrolled");
    serve
        ->add_option("--new-devices-per-minute", so.new_devices_per_minute,
                     "pending devices registered per minute at most, from all addresses")
        ->capture_default_str();
    serve
        ->add_option("--new-devices-per-address", so.new_devices_per_address,
                     "pending devices registered per minute at most from one address")
        ->capture_default_str();
    serve
        ->add_option("--max-pending", so.max_pending,
                     "pending devices on record at most; beyond, new ones are told to retry")
        ->capture_default_str();
    serve
        ->add_option("--max-clock-skew", so.max_clock_skew,
                     "accepted difference between a report's timestamp and the server clock")
        ->capture_default_str()
        ->check(duration_check());
    serve
        ->add_option("--session-ttl", so.session_ttl,
                     "lifetime of a device's report session (one signed handshake, then an HMAC "
                     "per report); 0s: none, every report is signed")
        ->capture_default_str()
        ->check(duration_check());
    serve
        ->add_option("--max-sessions", so.max_sessions,
                     "live report sessions at most (about 250 bytes each); beyond, devices sign "
                     "each report")
        ->capture_default_str();
    serve
        ->add_option("--rollout-interval", so.rollout_interval,
                     "how often running rollouts are checked (0s: never; e.g. 30s, 500ms)")
        ->capture_default_str()
        ->check(duration_check(/*allow_ms=*/true));
  }

  auto* devices = app.add_subcommand("devices", "list devices: model, version, state, last seen");
  common(devices);
  devices->add_option("--model", f->filter.model, "only this model");
  devices->add_option("--channel", f->filter.channel, "only this channel");
  devices->add_option("--version", f->filter.version, "only devices running this version");
  devices->add_option("--state", f->filter.state, "the model's state: ok, failed or refused")
      ->check(CLI::IsMember({"ok", "failed", "refused"}));
  devices
      ->add_option("--condition", f->filter.condition,
                   "the device's condition: metadata (its TUF metadata refresh fails) or ok")
      ->check(CLI::IsMember({"metadata", "ok"}));
  devices->add_option("--stale", f->stale, "only devices not seen for longer than this (1h)")
      ->check(duration_check());
  devices
      ->add_option("--admission", f->filter.admission,
                   "only devices admitted, pending (not counted until accepted) or rejected")
      ->check(CLI::IsMember({"admitted", "pending", "rejected"}));
  devices
      ->add_option("--select", f->select,
                   "only devices whose labels match (site=plant-3,hw in (orin,rpi5),!canary)")
      ->check(selector_check());
  devices->add_flag("--labels", f->show_labels, "show each device's labels");
  auto* label = devices->add_subcommand(
      "label", "set (KEY=VALUE) or --remove operator labels of devices (ids or --select)");
  label->add_option("ARGS", f->args, "device ids and KEY=VALUE labels");
  label->add_option("--remove", f->remove, "label key to remove (repeatable)");
  label->add_option("--select", f->select, "the devices whose labels match, instead of ids")
      ->check(selector_check());
  label->add_flag("--dry-run", f->dry_run, "list the devices, change nothing");
  label->add_option("--repo", repo_flag, "repository directory");
  label->add_option("--db", f->db, "fleet database");
  label->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f] { return label_cmd(repo_dir(repo_flag), *f); };
  });
  auto* enroll = devices->add_subcommand("enroll", "register a device key before it reports");
  enroll->add_option("ID", f->id, "device id")->required();
  enroll->add_option("--key", f->key_file, "file with the key (hex or device.key)")->required();
  enroll->add_option("--repo", repo_flag, "repository directory");
  enroll->add_option("--db", f->db, "fleet database");
  enroll->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f] { return enroll_cmd(repo_dir(repo_flag), *f); };
  });
  std::vector<CLI::App*> admission_cmds;
  for (Admission to : {Admission::admitted, Admission::rejected}) {
    const bool accept = to == Admission::admitted;
    auto* cmd = devices->add_subcommand(
        accept ? "accept" : "reject",
        accept ? "admit devices: their reports count (fleet statistics, rollout decisions)"
               : "refuse devices' reports from now on (their key stays on record)");
    cmd->add_option("ID", f->ids, "device ids");
    cmd->add_flag("--all-pending", f->all_pending,
                  "every pending device (narrowed by --model, --channel, --version, --stale)");
    cmd->add_option("--model", f->filter.model, "with --all-pending: reporting this model");
    cmd->add_option("--channel", f->filter.channel, "with --all-pending: on this channel");
    cmd->add_option("--version", f->filter.version, "with --all-pending: running this version");
    cmd->add_option("--stale", f->stale, "with --all-pending: not seen for longer than this")
        ->check(duration_check());
    cmd->add_option("--select", f->select, "with --all-pending: whose labels match")
        ->check(selector_check());
    cmd->add_flag("--dry-run", f->dry_run, "list the devices, change nothing");
    cmd->add_option("--repo", repo_flag, "repository directory");
    cmd->add_option("--db", f->db, "fleet database");
    cmd->callback([&action, &repo_flag, f, to] {
      action = [&repo_flag, f, to] { return admission_cmd(repo_dir(repo_flag), *f, to); };
    });
    admission_cmds.push_back(cmd);
  }
  devices->callback([&action, &repo_flag, f, enroll, label, admission_cmds] {
    if (enroll->parsed() || label->parsed()) return;
    for (auto* cmd : admission_cmds) {
      if (cmd->parsed()) return;
    }
    action = [&repo_flag, f] { return list_devices_cmd(repo_dir(repo_flag), *f); };
  });

  auto* enrollment = app.add_subcommand(
      "enrollment", "fleet enrollment keys: devices whose image carries one are admitted");
  enrollment->require_subcommand(1);
  for (const char* what : {"create", "list", "revoke"}) {
    const std::string name = what;
    auto* cmd = enrollment->add_subcommand(
        name, name == "create" ? "new key: the private half for device images, recorded here"
              : name == "list" ? "keys, when revoked, how many devices each admitted"
                               : "admit no new device with this key");
    common(cmd, name == "list");
    if (name != "list") cmd->add_option("NAME", f->name, "key name")->required();
    if (name == "create") {
      cmd->add_option("--out", f->out_file, "where to write the private key (PEM, 0600)")
          ->required();
    }
    cmd->callback([&action, &repo_flag, f, name] {
      action = [&repo_flag, f, name] { return enrollment_cmd(repo_dir(repo_flag), *f, name); };
    });
  }

  auto* device = app.add_subcommand("device", "one device");
  device->require_subcommand(1);
  auto* show = device->add_subcommand("show", "inventory and full event history");
  common(show);
  show->add_option("ID", f->id, "device id")->required();
  show->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f] { return show_device_cmd(repo_dir(repo_flag), *f); };
  });

  auto* fleet = app.add_subcommand("fleet", "per model: versions, failures, rollbacks, stale");
  common(fleet);
  fleet->add_option("--stale", f->stale, "not seen for longer than this counts as stale (1h)")
      ->check(duration_check());
  fleet->add_option("--select", f->select, "only devices whose labels match")
      ->check(selector_check());
  fleet->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f] { return fleet_cmd(repo_dir(repo_flag), *f); };
  });

  auto* rollout = app.add_subcommand("rollout", "guarded staged rollouts");
  rollout->require_subcommand(1);
  for (const char* what : {"list", "status", "start", "tick", "pause", "resume", "abort"}) {
    const std::string name = what;
    const char* help = name == "list"     ? "every rollout, newest first, with its state"
                       : name == "status" ? "progress and transitions of the latest rollout"
                       : name == "start"  ? "publish the first step of a staged rollout"
                       : name == "tick"   ? "advance or halt rollouts now (for a timer)"
                       : name == "pause"  ? "stop advancing (halts still apply when resumed)"
                       : name == "resume" ? "continue a paused rollout"
                                          : "stop and re-publish the previous version";
    auto* cmd = rollout->add_subcommand(name, help);
    common(cmd);
    if (name == "list") {
      cmd->add_option("--limit", f->limit, "the newest N only");
      cmd->callback([&action, &repo_flag, f] {
        action = [&repo_flag, f] { return rollout_cmd(repo_dir(repo_flag), *f, "list"); };
      });
      continue;
    }
    auto* ch = cmd->add_option("CHANNEL", f->channel, "channel");
    auto* md = cmd->add_option("MODEL", f->model, "model");
    if (name != "tick") {
      ch->required();
      md->required();
    } else {
      md->needs(ch);
    }
    if (name == "start") {
      cmd->add_option("VERSION", f->version, "version to roll out")->required();
      cmd->add_option("--percent", f->percents, "steps, ending at 100")
          ->capture_default_str()
          ->check(percents_check());
      cmd->add_option("--max-failure-rate", f->max_failure_rate,
                      "halt when failures+rollbacks among a step's devices pass this percentage "
                      "(with its %: 5%, 0.5%)")
          ->capture_default_str()
          ->check(failure_rate_check());
      cmd->add_option("--min-devices", f->min_devices,
                      "devices that must report before a step advances")
          ->capture_default_str();
      cmd->add_option("--step-after", f->step_after, "minimum time per step")
          ->capture_default_str()
          ->check(duration_check());
      cmd->add_option("--select", f->select,
                      "only devices whose labels match take VERSION (site=plant-3,!canary); the "
                      "others keep theirs")
          ->check(selector_check());
      cmd->add_flag("--dry-run", f->dry_run,
                    "how many devices (which, with --json) each step would reach; publish nothing");
      cmd->add_option("--rate", f->rate,
                      "pace: at most N more devices get VERSION per minute (10/min, 600/h); each "
                      "step's share grows to its percentage")
          ->check(rate_check());
      cmd->add_option("--start-at", f->start_at,
                      "begin later: YYYY-MM-DDTHH:MM:SSZ (UTC) or +DURATION (+2h); publish nothing "
                      "until then");
      cmd->add_option("--install-window", f->install_window,
                      "devices switch to VERSION only inside this window of their local time "
                      "('Sat,Sun 02:00-04:00'; repeat for several); they download and stage "
                      "before")
          ->check(window_check());
      cmd->add_option("--max-error-rate", f->max_error_rate,
                      "field health: halt when VERSION's failed inferences on the devices pass "
                      "this percentage of its runs (1%, 0.1%)")
          ->check(failure_rate_check());
      cmd->add_option("--max-latency-regression", f->max_latency_regression,
                      "field health: halt when VERSION's p99 inference latency is more than this "
                      "much above the previous version's on the same devices (20%)")
          ->check(regression_check());
      cmd->add_option("--min-inferences", f->min_inferences,
                      "field health: runs of VERSION (and of the previous version, for latency) "
                      "before the field gates judge; a gated step waits for them")
          ->capture_default_str();
    }
    cmd->callback([&action, &repo_flag, f, name] {
      action = [&repo_flag, f, name] { return rollout_cmd(repo_dir(repo_flag), *f, name); };
    });
  }
}

}  // namespace mota::manager
