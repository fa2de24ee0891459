#include "agent/agent.hpp"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <ctime>
#include <random>
#include <set>
#include <sstream>
#include <system_error>
#include <thread>

#include "agent/download.hpp"
#include "agent/report.hpp"
#include "agent/requirements.hpp"
#include "agent/slots.hpp"
#include "common/fs.hpp"
#include "common/http.hpp"
#include "common/log.hpp"
#include "common/notify.hpp"
#include "common/process.hpp"
#include "common/semver.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/channel.hpp"
#include "manifest/tuf/client.hpp"
#include "storage/bundle.hpp"
#include "storage/package.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;

namespace {

// The agent's reserve (see "Space" in agent.hpp).
constexpr const char* kReserveFile = "reserve";

// An error as reported: the server refuses errors over 8 KiB (manager/fleet/report_parser.hpp),
// so longer ones (a chain of contexts around a library's message) are cut on a UTF-8 boundary.
std::string reported_error(const std::string& error) {
  constexpr std::size_t kMax = 4096;
  if (error.size() <= kMax) return error;
  std::size_t cut = kMax;
  while (cut > 0 && (static_cast<unsigned char>(error[cut]) & 0xc0) == 0x80) --cut;
  return error.substr(0, cut) + "... (" + std::to_string(error.size()) + " bytes)";
}

// Event bodies may quote what a library or a file said: invalid UTF-8 is replaced, never thrown.
std::string dump_body(const Json& body) {
  return body.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace

bool CheckReport::ok() const {
  for (const auto& m : models) {
    if (m.outcome == ModelOutcome::failed) return false;
  }
  return true;
}

Result<std::string> version_refusal(const Channel* channel, std::string_view device_id,
                                    const Labels& labels, const std::string& from,
                                    const std::string& to) {
  auto want = MOTA_TRY_CTX(SemVer::parse(to), "version");
  if (channel && !channel->min_version.empty()) {
    auto min = MOTA_TRY_CTX(SemVer::parse(channel->min_version), "min_version");
    if (want < min) {
      return "version " + to + " is below channel " + channel->channel + "'s min_version " +
             channel->min_version;
    }
  }
  if (!from.empty()) {
    auto have = MOTA_TRY_CTX(SemVer::parse(from), "installed version");
    if (want < have) {
      bool explicit_rollback =
          channel && channel->allow_downgrade && wanted_version(*channel, device_id, labels) == to;
      if (!explicit_rollback) {
        return "version " + to + " is older than the installed " + from + " and channel " +
               (channel ? channel->channel : std::string("(none known)")) +
               " does not explicitly roll back to it (allow_downgrade)";
      }
    }
  }
  return std::string();
}

Result<Agent> Agent::open(Config config, InstallOptions install_options) {
  MOTA_TRY_CTX(fs::make_dirs(config.state_dir), "state_dir");
  auto meta = config.state_dir / "metadata";
  std::error_code ec;
  if (!stdfs::exists(meta / "root.json", ec)) {
    auto root = MOTA_TRY_CTX(fs::read_file(config.trusted_root, 512 * 1024), "trusted_root");
    MOTA_TRY_CTX(tuf::Client::init(meta, root),
                 "seed " + meta.string() + " from " + config.trusted_root.string());
  }
  auto state = StateStore::open(config.state_dir);
  if (!state && disk_full(config.state_dir)) {
    // On a full disk SQLite cannot even open agent.db (its WAL index needs a page): give back
    // the agent's reserve so that the device still reports, with a heartbeat saying disk_full,
    // instead of going silent.
    if (release_reserve(config.state_dir)) state = StateStore::open(config.state_dir);
    if (!state) {
      return fail(std::move(state).error().context(
          "the disk holding " + config.state_dir.string() + " is full (" +
          format_bytes(fs::free_space(config.state_dir).value_or(0)) +
          " free) and the agent has no reserve left to start with"));
    }
  }
  if (!state) return fail(std::move(state).error());
  // A short WAL that is reused after each checkpoint: the daemon's one connection would
  // otherwise let it grow to 4 MiB, which a nearly full disk (and the reserve) cannot give.
  if (auto r = state->database().exec("PRAGMA wal_autocheckpoint = 64"); !r) {
    log::warn(r.error().message());
  }
  auto identity =
      MOTA_TRY_CTX(protocol::DeviceIdentity::load_or_create(config.state_dir, config.device_id),
                   "device identity");
  keep_reserve(config.state_dir);
  std::map<std::string, std::string> enrollment;
  if (!config.enrollment_key.empty()) {
    // Checked at start, so an image with a broken key fails where its builder sees it.
    const std::string where = "enrollment_key " + config.enrollment_key.string();
    auto pem = MOTA_TRY_CTX(fs::read_file(config.enrollment_key, 64u << 10), where);
    auto key = MOTA_TRY_CTX(crypto::PrivateKey::from_pem(pem), where);
    if (key.type() != crypto::KeyType::ed25519) {
      return fail(Errc::parse, where + ": not an Ed25519 key (mota enrollment create makes one)");
    }
    enrollment = MOTA_TRY_CTX(protocol::enrollment_headers(key, identity), where);
  }
  Agent agent(std::move(config), std::move(*state), std::move(identity),
              std::move(install_options));
  agent.enrollment_headers_ = std::move(enrollment);
  return agent;
}

bool Agent::disk_full(const stdfs::path& state_dir) {
  auto free = fs::free_space(state_dir);
  return free && *free < kDiskFullBytes;
}

void Agent::keep_reserve(const stdfs::path& state_dir) {
  const auto path = state_dir / kReserveFile;
  if (disk_usage(path) >= kDiskFullBytes) return;
  // Taken only from a disk with room to spare: never the last free MiB.
  auto free = fs::free_space(state_dir);
  if (!free || *free < 4 * kDiskFullBytes) return;
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return;
  // Allocated blocks, not a sparse file: what it keeps must really be there to give back.
  const int rc = ::posix_fallocate(fd, 0, static_cast<off_t>(kDiskFullBytes));
  ::close(fd);
  std::error_code ec;
  if (rc != 0) stdfs::remove(path, ec);
}

bool Agent::release_reserve(const stdfs::path& state_dir) {
  const auto path = state_dir / kReserveFile;
  std::error_code ec;
  if (!stdfs::remove(path, ec)) return false;
  log::warn("the disk holding " + state_dir.string() +
            " is full: released the agent's reserve of " + format_bytes(kDiskFullBytes) +
            " to keep reporting");
  return true;
}

std::optional<HealthGate> Agent::health_gate() const {
  if (!config_.health.enabled) return std::nullopt;
  return HealthGate(config_.health, config_.runtime_socket, cancel_);
}

InstallOptions Agent::install_options(const std::optional<HealthGate>& gate,
                                      const ModelSubscription* sub,
                                      const ModelSubscription* model) {
  // The model's own gate and hand-over apply to offline installs too; only the switch gate
  // (windows, lock) is a poll's.
  if (!model) model = sub;
  InstallOptions o = install_options_;
  model_gate_.reset();
  if (gate && model) model_gate_ = gate->for_model(*model);
  o.health = model_gate_ ? &*model_gate_ : nullptr;
  if (model && model->handed_over()) {
    o.activate = [this, model](const Activation& a, FailureClass* why) {
      return activate(*model, a, why);
    };
  }
  o.max_retries = config_.health.max_retries;
  o.retry_backoff = config_.health.retry_backoff;
  if (sub && !o.may_switch) o.may_switch = [this, sub] { return switch_gate(*sub); };
  return o;
}

Status Agent::activate(const ModelSubscription& sub, const Activation& a, FailureClass* why) {
  auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, sub.name));
  const std::string name = sub.activate.filename().string();
  notify::status("activating " + sub.name + " " + a.version + " (" + std::string(a.event) + ")");
  auto r = MOTA_TRY_CTX(
      run_child({sub.activate.string()},
                {"MOTA_EVENT=" + std::string(a.event), "MOTA_MODEL=" + sub.name,
                 "MOTA_VERSION=" + a.version, "MOTA_SLOT=" + slots.path(a.slot).string(),
                 "MOTA_CURRENT=" + slots.current_link().string(),
                 "MOTA_PREVIOUS_VERSION=" + a.previous_version,
                 "MOTA_PREVIOUS_SLOT=" + (a.previous ? slots.path(*a.previous).string() : "")},
                std::chrono::duration_cast<std::chrono::milliseconds>(config_.health.hook_timeout)),
      "activate " + sub.activate.string());
  if (r.timed_out) {
    if (why) *why = FailureClass::transient;
    return fail(Errc::verification, "activate: " + name + " did not finish within " +
                                        std::to_string(config_.health.hook_timeout.count()) + "s");
  }
  if (r.exit_code != 0) {
    if (why) *why = FailureClass::permanent;  // the stack would not take this version
    const std::string how = r.signal ? "was killed by signal " + std::to_string(r.signal)
                                     : "exited with " + std::to_string(r.exit_code);
    return fail(Errc::verification,
                "activate: " + name + " " + how + (r.err.empty() ? "" : ": " + r.err));
  }
  log::info(
      "handed " + sub.name + " " + a.version + " over (" + std::string(a.event) + ", " + name + ")",
      {{"MODEL", sub.name}, {"VERSION", a.version}});
  return {};
}

namespace {

// <state_dir>/<dir>/<model>: "<install_id> <words...>" written by one side, read by the other.
std::vector<std::string> read_words(const stdfs::path& path) {
  std::vector<std::string> words;
  std::error_code ec;
  if (!stdfs::exists(path, ec)) return words;
  auto text = fs::read_file(path, 4096);
  if (!text) return words;
  std::string w;
  for (char c : *text + " ") {
    if (c == ' ' || c == '\n') {
      if (!w.empty()) words.push_back(std::move(w));
      w.clear();
    } else {
      w += c;
    }
  }
  return words;
}

}  // namespace

std::string Agent::switch_gate(const ModelSubscription& sub) {
  auto journal = state_.install(sub.name);
  const std::string install_id = journal && *journal ? (*journal)->install_id : "";
  // A first install interrupts nothing: neither windows nor the lock hold it.
  if (journal && *journal && (*journal)->from_version.empty()) return "";
  const auto now_override = read_words(config_.state_dir / "install-now" / sub.name);
  const bool let_through = !now_override.empty() && now_override[0] == install_id;
  const bool ignore_lock = let_through && std::find(now_override.begin(), now_override.end(),
                                                    "lock") != now_override.end();
  const std::time_t now = std::time(nullptr);
  if (!let_through) {
    const struct {
      const WindowSet& set;
      const char* what;
    } windows[] = {{config_.install_window, "this device's install window"},
                   {sub.install_window, "the model's install window"},
                   {rollout_window_, "the rollout's install window"}};
    for (const auto& w : windows) {
      if (w.set.allows(now)) continue;
      const auto next = w.set.next_open(now);
      if (next) recheck_in(std::chrono::seconds(*next - now + 1));
      return std::string("outside ") + w.what + " (" + w.set.text() + "); it opens " +
             (next ? format_local_minute(*next) : std::string("?")) +
             " local time (`mota-agent install-now " + sub.name + "` lets it through)";
    }
  }
  if (config_.update_lock.empty() || ignore_lock) return "";
  auto lock = UpdateLock::try_acquire(config_.update_lock);
  const auto wait_file = config_.state_dir / "lock-wait" / sub.name;
  std::error_code ec;
  if (!lock) {
    log::warn(lock.error().message() + "; switching without the update lock",
              {{"MODEL", sub.name}});
    return "";
  }
  if (*lock) {
    update_lock_ = std::move(**lock);
    stdfs::remove(wait_file, ec);
    return "";
  }
  // Held by an application: since when, for this install (kept across restarts).
  std::int64_t since = now;
  const auto wait = read_words(wait_file);
  if (wait.size() >= 2 && wait[0] == install_id) {
    since = std::strtoll(wait[1].c_str(), nullptr, 10);
  } else {
    auto st = fs::make_dirs(wait_file.parent_path());
    if (st) st = fs::write_file_atomic(wait_file, install_id + " " + std::to_string(now) + "\n");
    if (!st) log::warn("cannot record the update lock wait: " + st.error().message());
  }
  const std::int64_t until = since + config_.update_lock_max_defer.count();
  if (now >= until) {
    log::warn("the update lock " + config_.update_lock.string() + " has been held since " +
                  format_time(TimePoint(std::chrono::seconds(since))) +
                  ", longer than update_lock_max_defer: switching without it",
              {{"MODEL", sub.name}});
    return "";
  }
  recheck_in(std::min<std::chrono::seconds>(kLockRecheck, std::chrono::seconds(until - now)));
  return "the update lock " + config_.update_lock.string() +
         " is held by an application; switching when it is released, at the latest after " +
         format_time(TimePoint(std::chrono::seconds(until))) + " (update_lock_max_defer)";
}

void Agent::recheck_in(std::chrono::seconds wait) {
  const auto at = std::chrono::steady_clock::now() + wait;
  if (!recheck_at_ || at < *recheck_at_) recheck_at_ = at;
}

Result<std::string> Agent::install_now(const std::string& model, bool ignore_lock) {
  auto journal = MOTA_TRY(state_.install(model));
  if (!journal) {
    return fail(Errc::not_found, "no install of " + model +
                                     " is under way: nothing to let through (`mota-agent "
                                     "status` shows what is installed)");
  }
  const auto path = config_.state_dir / "install-now" / model;
  MOTA_TRY(fs::make_dirs(path.parent_path()));
  MOTA_TRY(fs::write_file_atomic(
      path, journal->install_id + (ignore_lock ? " window lock\n" : " window\n")));
  log::info("install-now: the switch of " + model + " " + journal->to_version +
                " may happen outside the install windows" +
                (ignore_lock ? " and without the update lock" : ""),
            {{"MODEL", model}, {"VERSION", journal->to_version}});
  return journal->to_version;
}

std::unique_ptr<http::Client> Agent::http_client() {
  http::ClientConfig hc;
  hc.ca_file = config_.ca_file.string();
  hc.max_bytes_per_sec = config_.bandwidth_limit;
  hc.min_rate = config_.download.min_rate;
  hc.min_rate_window = config_.download.min_rate_window;
  hc.cancel = cancel_;
  return http::make_http_client(hc);
}

void Agent::event(const Event& e) {
  // "installed" and "ok" end a failure; everything else is one, reported once per distinct error.
  if (e.state != "installed" && e.state != "ok") {
    if (last_error(e.model) == e.error) {
      log::info(e.model + ": same error as last time, not reported again");
      return;
    }
    set_last_error(e.model, e.error);
  } else {
    set_last_error(e.model, "");
  }
  std::string channel;
  for (const auto& sub : config_.models) {
    if (sub.name == e.model) channel = sub.channel;
  }
  std::string slot = e.slot;
  if (slot.empty()) {
    if (auto active = state_.active(e.model); active && *active) slot = slot_name((*active)->slot);
  }
  Json body = {{"device", config_.device_id},
               {"time", format_time(now_seconds())},
               {"model", e.model},
               {"channel", channel},
               {"slot", slot},
               {"from", e.from},
               {"to", e.to},
               {"state", e.state},
               {"step", std::string(e.step)},
               {"error", reported_error(e.error)},
               {"bytes", e.bytes},
               {"kind", e.kind},
               {"saved_bytes", e.saved_bytes},
               {"duration_ms", e.duration_ms},
               {"install_id", e.install_id}};
  if (!e.delta_error.empty()) body["delta_error"] = e.delta_error;
  if (!e.source.empty()) body["source"] = e.source;
  auto r = state_.enqueue(OutboxKind::event, dump_body(body));
  if (!r) log::error("cannot queue event: " + r.error().message());
}

void Agent::metadata_event(const std::string& error) {
  const auto path = config_.state_dir / "status" / "metadata.error";
  std::error_code ec;
  const std::string last = metadata_error();
  if (error == last) {
    if (!error.empty()) log::info("metadata: same error as last time, not reported again");
    return;
  }
  Status st = error.empty() ? Status{} : fs::make_dirs(path.parent_path());
  if (st) {
    if (error.empty()) {
      stdfs::remove(path, ec);
    } else {
      st = fs::write_file_atomic(path, error);
    }
  }
  if (!st) log::warn("cannot record the metadata condition: " + st.error().message());
  Json body = {{"device", config_.device_id},
               {"time", format_time(now_seconds())},
               {"model", ""},
               {"channel", ""},
               {"slot", ""},
               {"from", ""},
               {"to", ""},
               {"state", error.empty() ? "metadata_ok" : "metadata_error"},
               {"step", std::string(step_name(PollStep::refresh))},
               {"error", reported_error(error)}};
  if (error.empty()) log::info("metadata: the repository's metadata is fresh again");
  auto r = state_.enqueue(OutboxKind::event, dump_body(body));
  if (!r) log::error("cannot queue event: " + r.error().message());
}

std::string Agent::metadata_error() {
  auto path = config_.state_dir / "status" / "metadata.error";
  std::error_code ec;
  if (!stdfs::exists(path, ec)) return "";
  auto text = fs::read_file(path, 1 << 20);
  return text ? *text : "";
}

std::string Agent::last_error(const std::string& model) {
  auto path = config_.state_dir / "status" / (model + ".error");
  std::error_code ec;
  if (!stdfs::exists(path, ec)) return "";
  auto text = fs::read_file(path, 1 << 20);
  return text ? *text : "";
}

void Agent::heartbeat_due() {
  // report() queues a heartbeat when its stamp is missing or old (the heartbeat carries the
  // block list, which the server shows in `mota device show`).
  std::error_code ec;
  stdfs::remove(config_.state_dir / "status" / "heartbeat", ec);
}

void Agent::set_last_error(const std::string& model, const std::string& error) {
  auto path = config_.state_dir / "status" / (model + ".error");
  if (error.empty()) {
    std::error_code ec;
    stdfs::remove(path, ec);
    return;
  }
  auto st = fs::make_dirs(path.parent_path());
  if (st) st = fs::write_file_atomic(path, error);
  if (!st) log::warn("cannot record last error: " + st.error().message());
}

Result<std::string> Agent::installed_version(const std::string& model) {
  auto active = MOTA_TRY(state_.active(model));
  if (!active) return std::string();
  auto slot = MOTA_TRY(state_.slot(model, active->slot));
  return slot ? slot->version : std::string();
}

Status Agent::report(bool heartbeat) {
  // A poll's requests share one client (one connection); report() alone makes its own.
  std::unique_ptr<http::Client> own;
  http::Client* http = poll_http_;
  if (!http) {
    own = http_client();
    http = own.get();
  }
  ReporterOptions options;
  for (const auto& sub : config_.models) options.channels[sub.name] = sub.channel;
  options.extra_headers = enrollment_headers_;
  if (heartbeat) {
    // Facts are cheap to gather (uname, sysinfo, a statvfs) and only heartbeats carry them.
    auto facts = MOTA_TRY_CTX(device_facts(config_, nullptr), "heartbeat: device facts");
    options.labels = device_labels(config_, facts);
    if (config_.field_interval.count() > 0) options.field = field_view_;
  }
  Reporter reporter(state_, *http, identity_, config_.report_url, options, &report_sessions_);
  // The time of the last heartbeat queued is kept on disk: check-once runs as a fresh process.
  // So is whether it said disk_full: a change is reported at once, not an interval later.
  const auto stamp = config_.state_dir / "status" / "heartbeat";
  const auto full_mark = config_.state_dir / "status" / "disk_full";
  if (heartbeat) {
    std::error_code ec, ec_mark;
    auto last = stdfs::last_write_time(stamp, ec);
    const bool full = disk_full(config_.state_dir);
    const bool was_full = stdfs::exists(full_mark, ec_mark);
    // Field health rides on heartbeats: one is due sooner when the served models ran since the
    // last one (config field_interval).
    // What the last heartbeat carried is kept on disk too (status/field: "model load runs" per
    // line), so that check-once from a timer does not send a heartbeat for counts that stood.
    const auto field_mark = config_.state_dir / "status" / "field";
    if (!field_sent_loaded_) {
      field_sent_loaded_ = true;
      std::error_code ec_field;
      if (stdfs::exists(field_mark, ec_field)) {
        auto text = fs::read_file(field_mark, 1 << 20);
        std::istringstream lines(text ? *text : std::string());
        std::string model, load;
        std::uint64_t runs = 0;
        while (lines >> model >> load >> runs) field_sent_[model] = {load, runs};
      }
    }
    bool field_moved = false;
    for (const auto& f : options.field) {
      auto sent = field_sent_.find(f.model);
      field_moved |=
          sent == field_sent_.end() || sent->second != std::pair{f.load, f.inferences + f.errors};
    }
    const auto age = stdfs::file_time_type::clock::now() - last;
    if (ec || full != was_full || age >= config_.heartbeat_interval ||
        (field_moved && age >= config_.field_interval)) {
      Status queued = reporter.enqueue_heartbeat();
      if (!queued && full && release_reserve(config_.state_dir)) {
        queued = reporter.enqueue_heartbeat();  // the disk filled up while the agent ran
      }
      MOTA_TRY_CTX(std::move(queued), "heartbeat");
      std::string field_text;
      for (const auto& f : options.field) {
        field_sent_[f.model] = {f.load, f.inferences + f.errors};
        field_text += f.model + " " + (f.load.empty() ? "-" : f.load) + " " +
                      std::to_string(f.inferences + f.errors) + "\n";
      }
      // Best effort: on a full disk the heartbeat must still go out.
      Status st = fs::make_dirs(stamp.parent_path());
      if (st && !options.field.empty()) st = fs::write_file_atomic(field_mark, field_text);
      if (st) st = fs::write_file_atomic(stamp, format_time(now_seconds()));
      if (st) st = full ? fs::write_file_atomic(full_mark, "") : fs::remove_all(full_mark);
      if (!st) log::warn("cannot record the heartbeat: " + st.error().message());
    }
  }
  auto r = MOTA_TRY_CTX(reporter.flush(), "report to " + reporter.events_url());
  if (r.acked > 0) log::debug("reported " + std::to_string(r.acked) + " items");
  if (r.remaining > 0) log::info(std::to_string(r.remaining) + " reports still queued");
  return {};
}

Result<CheckReport> Agent::check_once() {
  auto http = http_client();
  // Every request of this poll, its report included, goes through `http`: one connection.
  struct PollClient {
    http::Client*& slot;
    ~PollClient() { slot = nullptr; }
  } poll_client{poll_http_ = http.get()};
  keep_reserve(config_.state_dir);
  sweep_downloads("", {});
  tuf::ClientConfig tc;
  tc.metadata_dir = config_.state_dir / "metadata";
  tc.metadata_base_url = config_.metadata_url();
  tc.fetch_timeout = config_.download.metadata_timeout;
  tc.fetch_min_rate = config_.download.min_rate;
  tuf::Client client(tc, *http);
  MOTA_TRY(refresh_metadata(client));

  auto gate = health_gate();
  const TargetSource src{client, *http, config_.targets_url(), nullptr, ""};
  CheckReport report;
  for (const auto& sub : config_.models) {
    ModelPoll poll = check_model(src, sub, gate);
    if (!poll.status && poll.status.error().code() == Errc::cancelled) {
      // Stopping is not a failure to report: the journal resumes at the next start.
      poll.report.outcome = ModelOutcome::failed;
      poll.report.error = sub.name + ": " + poll.status.error().message();
      report.models.push_back(std::move(poll.report));
      break;
    }
    conclude_model(poll);
    report.models.push_back(std::move(poll.report));
  }
  if (cancel_ && cancel_->load()) return report;  // stopping: report at the next start
  // Whatever this poll changed (or a runtime restarted meanwhile), serve what is committed.
  if (auto r = reconcile(ServeCheck::watch); !r) log::warn(r.error().message());
  if (auto r = this->report(true); !r) {
    report.report_error = r.error().message();
    log::warn(report.report_error);
  }
  return report;
}

Status Agent::refresh_metadata(tuf::Client& client) {
  if (auto st = client.refresh(); !st) {
    Error e = std::move(st).error().context("TUF refresh from " + config_.metadata_url());
    if (e.code() != Errc::cancelled) {
      // A device condition, not a failure of the installed versions (which keep serving).
      metadata_event(e.message());
      if (auto r = report(true); !r) log::warn(r.error().message());
    }
    return fail(std::move(e));
  }
  metadata_event("");
  if (const auto* ts = client.timestamp()) (void)state_.set_tuf_version("timestamp", ts->version);
  return {};
}

Agent::ModelPoll Agent::check_model(const TargetSource& src, const ModelSubscription& sub,
                                    const std::optional<HealthGate>& gate) {
  ModelPoll p;
  p.report.model = sub.name;
  p.ev.model = sub.name;
  p.ev.step = step_name(PollStep::channel);
  const auto started = std::chrono::steady_clock::now();
  p.status = update_model(src, sub, gate, p);
  p.ev.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                         std::chrono::steady_clock::now() - started)
                         .count();
  // A model that wants nothing downloaded now (up to date, refused, blocked, installed) keeps
  // no partial; after a failure the partial stays for the resume.
  if (p.status && p.report.outcome != ModelOutcome::failed) sweep_downloads(sub.name, {});
  return p;
}

Status Agent::update_model(const TargetSource& src, const ModelSubscription& sub,
                           const std::optional<HealthGate>& gate, ModelPoll& p) {
  Event& ev = p.ev;
  auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, sub.name));
  ev.from = MOTA_TRY(installed_version(sub.name));
  p.report.version = ev.from;
  auto journal = MOTA_TRY(state_.install(sub.name));
  auto channel = MOTA_TRY(fetch_channel(src, sub));
  MOTA_TRY(refresh_labels());
  ev.to = wanted_version(channel, config_.device_id, labels_);
  // Parsed when the channel was (manifest/channel.hpp): cannot fail here.
  rollout_window_ = WindowSet::parse(channel.install_window).value_or(WindowSet{});
  if (journal && (ev.to.empty() || ev.to == ev.from) && journal->to_version != ev.from) {
    // The channel moved back to what runs (e.g. a halted rollout) while an install of
    // another version was unfinished: that install is abandoned (not blocked), not resumed.
    log::info("abandoning the unfinished install of " + sub.name + " " + journal->to_version +
                  ": the channel wants the installed version",
              {{"MODEL", sub.name}, {"VERSION", journal->to_version}});
    MOTA_TRY(state_.abort_install(sub.name, ""));
    journal.reset();
  }
  if (ev.to.empty() || (ev.to == ev.from && !journal)) {
    p.converged = true;
    return {};
  }
  ev.step = step_name(PollStep::policy);
  if (!MOTA_TRY(may_install(channel, sub, ev, p.report))) return {};
  return install_version(src, sub, slots, gate, ev, p.report);
}

Status Agent::refresh_labels() {
  auto facts = MOTA_TRY_CTX(device_facts(config_, nullptr), "device facts");
  labels_ = device_labels(config_, facts);
  return {};
}

Result<Channel> Agent::fetch_channel(const TargetSource& src, const ModelSubscription& sub) {
  const std::string ch_path = channel_target_path(sub.channel, sub.name);
  auto ch_info = MOTA_TRY_CTX(src.client.get_target(ch_path), ch_path);
  // Cached: download_target fetches nothing when the file already matches (idle polls).
  auto ch_file = channel_file(sub);
  MOTA_TRY(fs::make_dirs(ch_file.parent_path()));
  MOTA_TRY_CTX(src.client.download_target(src.targets_base, ch_path, ch_info, ch_file), ch_path);
  return load_channel(sub);
}

Result<bool> Agent::may_install(const Channel& channel, const ModelSubscription& sub, Event& ev,
                                ModelReport& mr) {
  const std::string ch_path = channel_target_path(sub.channel, sub.name);
  auto why =
      MOTA_TRY_CTX(version_refusal(&channel, config_.device_id, labels_, ev.from, ev.to), ch_path);
  if (!why.empty()) {
    mr.outcome = ModelOutcome::refused;
    mr.error = why;
    return false;
  }
  if (MOTA_TRY(state_.is_blocked(sub.name, ev.to))) {
    log::warn(sub.name + " " + ev.to +
                  " is blocklisted on this device; not installing (`mota-agent status` "
                  "says why, `mota-agent unblock` lifts it)",
              {{"MODEL", sub.name}, {"VERSION", ev.to}});
    ev.to.clear();
    return false;
  }
  // A version that failed in a way that may pass on retry waits for its backoff.
  if (auto retry = MOTA_TRY(state_.retry(sub.name, ev.to));
      retry && retry->next_at > now_seconds()) {
    mr.outcome = ModelOutcome::deferred;
    mr.error = "waiting to retry " + ev.to + ": failed " + std::to_string(retry->failures) +
               " time(s) in a way that may pass on retry; next try after " +
               format_time(retry->next_at) + " (" + retry->last_error + ")";
    log::info(sub.name + ": " + mr.error, {{"MODEL", sub.name}, {"VERSION", ev.to}});
    return false;
  }
  return true;
}

void Agent::conclude_model(ModelPoll& p) {
  Event& ev = p.ev;
  ModelReport& mr = p.report;
  const std::string& model = mr.model;
  if (!p.status) {
    mr.outcome = ModelOutcome::failed;
    mr.error = model + ": " + p.status.error().message();
    log::error(mr.error, {{"MODEL", model}, {"VERSION", ev.to}, {"STEP", std::string(ev.step)}});
    ev.state = p.status.error().code() == Errc::rollback ? "rolled_back" : "failed";
    ev.error = p.status.error().message();
    event(ev);
    if (!ev.to.empty()) {
      if (auto b = state_.is_blocked(model, ev.to); b && *b) heartbeat_due();
    }
  } else if (mr.outcome == ModelOutcome::deferred && ev.state == "deferred") {
    log::info(model + ": " + mr.error, {{"MODEL", model}, {"VERSION", ev.to}});
    event(ev);
  } else if (mr.outcome == ModelOutcome::refused) {
    log::warn(model + ": refused " + ev.to + ": " + mr.error,
              {{"MODEL", model}, {"VERSION", ev.to}});
    ev.state = "refused";
    ev.error = mr.error;
    event(ev);
  } else if (mr.outcome == ModelOutcome::installed) {
    log::info("installed " + model + " " + ev.to + " (" + ev.kind + ", " +
                  std::to_string(ev.bytes) + " bytes downloaded)",
              {{"MODEL", model}, {"VERSION", ev.to}, {"KIND", ev.kind}});
    ev.state = "installed";
    ev.step = step_name(InstallStep::commit);
    event(ev);
  } else if (p.converged && !last_error(model).empty()) {
    log::info(model + ": healthy again at " + (ev.from.empty() ? std::string("(none)") : ev.from),
              {{"MODEL", model}, {"VERSION", ev.from}});
    Event ok;
    ok.model = model;
    ok.from = ok.to = ev.from;
    ok.state = "ok";
    ok.step = step_name(PollStep::poll);
    event(ok);
  }
}

stdfs::path Agent::download_path(const std::string& model, const tuf::TargetFile& target) const {
  auto sha = target.hashes.find("sha256");
  return config_.state_dir / "downloads" /
         (model + "." + (sha == target.hashes.end() ? std::string("unknown") : sha->second) +
          ".part");
}

void Agent::sweep_downloads(const std::string& model, const std::set<stdfs::path>& keep) {
  std::set<std::string> models;
  for (const auto& sub : config_.models) models.insert(sub.name);
  std::error_code ec;
  for (const auto& e : stdfs::directory_iterator(config_.state_dir / "downloads", ec)) {
    // <model>.<64 hex digits>.part; anything else is not the agent's (any more).
    const std::string name = e.path().filename().string();
    constexpr std::size_t kTail = 1 + 64 + 5;  // ".<sha256>.part"
    const std::string owner = name.size() > kTail && name.ends_with(".part")
                                  ? name.substr(0, name.size() - kTail)
                                  : std::string();
    const bool stale =
        model.empty() ? !models.count(owner) : owner == model && !keep.count(e.path());
    if (!stale) continue;
    std::error_code rm;
    const auto size = disk_usage(e.path());
    if (stdfs::remove(e.path(), rm)) {
      log::info("removed a download no install needs (" + format_bytes(size) + ")",
                {{"PATH", e.path().string()}});
    }
  }
}

Status Agent::check_install_space(const SlotSet& slots, const std::string& model,
                                  const std::string& to, const tuf::TargetFile& target,
                                  std::uint64_t tree) {
  std::error_code ec;
  const auto partial = download_path(model, target);
  std::uint64_t have = stdfs::is_regular_file(partial, ec) ? stdfs::file_size(partial, ec) : 0;
  if (ec || have > target.length) have = 0;
  return check_install_space(slots, model, to, target.length - have, tree);
}

Status Agent::check_install_space(const SlotSet& slots, const std::string& model,
                                  const std::string& to, std::uint64_t download,
                                  std::uint64_t tree) {
  Slot slot = MOTA_TRY(slots.inactive());
  if (auto journal = MOTA_TRY(state_.install(model)); journal && journal->to_version == to) {
    // Past the stage step the slot is written: what is left reads it, it writes nothing big.
    const auto at = parse_install_step(journal->step);
    if (at != InstallStep::download && at != InstallStep::stage) return {};
    slot = journal->target_slot;
  }
  SpaceNeed need;
  need.download = download;
  need.tree = tree;
  // The slot the install writes is emptied before anything is written to it (prepare()).
  if (auto cur = MOTA_TRY(slots.current()); !cur || *cur != slot) {
    need.freed = disk_usage(slots.path(slot));
    need.freed_what = "slot " + slot_name(slot);
  }
  return check_space(config_.state_dir, need);
}

Result<Agent::DeltaTarget> Agent::choose_delta(tuf::Client& client, const SlotSet& slots,
                                               const std::string& model, const std::string& from,
                                               const std::string& to,
                                               const std::string& tree_digest) {
  DeltaTarget d;
  d.path = "deltas/" + model + "/" + from + "/" + to + ".mdelta";
  auto info = client.get_target(d.path);
  if (!info) {
    if (info.error().code() == Errc::not_found) {
      return fail(Errc::not_found, "no delta from " + from + " to " + to + " is published");
    }
    return fail(std::move(info).error().context(d.path));
  }
  d.info = std::move(*info);
  // The signed custom data must describe exactly this update; anything else is a publishing
  // error that must not be applied to a slot.
  const Json& custom = d.info.custom;
  const std::string bad = d.path + ": unusable delta target: ";
  if (custom_string(custom, "kind") != "delta")
    return fail(Errc::verification, bad + "custom.kind is not \"delta\"");
  if (custom_string(custom, "name") != model || custom_string(custom, "from") != from ||
      custom_string(custom, "to") != to) {
    return fail(Errc::verification, bad + "custom names " + custom_string(custom, "name") + " " +
                                        custom_string(custom, "from") + " -> " +
                                        custom_string(custom, "to") + ", not " + model + " " +
                                        from + " -> " + to);
  }
  if (custom_string(custom, "tree_digest") != tree_digest) {
    return fail(Errc::verification,
                bad + "custom.tree_digest differs from the full package's " + tree_digest);
  }
  const std::string base_digest = custom_string(custom, "from_tree_digest");
  if (base_digest.empty()) return fail(Errc::verification, bad + "no custom.from_tree_digest");
  if (d.info.hashes.find("sha256") == d.info.hashes.end()) {
    return fail(Errc::verification, bad + "no sha256 hash");
  }
  // The base must be intact: a slot modified on disk would make the delta produce garbage
  // (caught later, but only after the download).
  auto active = MOTA_TRY(state_.active(model));
  if (!active) return fail(Errc::not_found, model + ": no committed slot to apply a delta to");
  notify::status("verifying " + model + " " + from + " (the delta's base)");
  auto tree = slots.verify(active->slot);
  if (!tree) {
    return fail(Errc::verification,
                "the active slot " + slot_name(active->slot) + " (" + from +
                    ") does not verify, so it cannot be a delta's base: " + tree.error().message());
  }
  if (tree->tree_digest != base_digest) {
    return fail(Errc::verification, "the active slot " + slot_name(active->slot) +
                                        " has tree digest " + tree->tree_digest +
                                        ", the delta's base is " + base_digest);
  }
  d.base = slots.path(active->slot);
  return d;
}

stdfs::path Agent::channel_file(const ModelSubscription& sub) const {
  return config_.state_dir / "channels" / sub.channel / (sub.name + ".json");
}

Result<Channel> Agent::load_channel(const ModelSubscription& sub) {
  const std::string ch_path = channel_target_path(sub.channel, sub.name);
  auto ch_text = MOTA_TRY_CTX(fs::read_file(channel_file(sub), 1 << 20), ch_path);
  auto channel = MOTA_TRY_CTX(Channel::parse(ch_text), ch_path);
  if (channel.model != sub.name || channel.channel != sub.channel) {
    return fail(Errc::verification,
                ch_path + ": names model " + channel.model + " on channel " + channel.channel);
  }
  return channel;
}

InstallPlan Agent::fetch_plan(const TargetSource& src, const std::string& model,
                              const std::string& from, const std::string& to,
                              const std::string& tree_digest, const std::string& target,
                              const tuf::TargetFile& info, bool is_delta) {
  InstallPlan plan;
  plan.model = model;
  plan.from_version = from;
  plan.to_version = to;
  plan.tree_digest = tree_digest;
  plan.package = download_path(model, info);
  plan.delete_package = true;
  plan.fetch = [this, &src, target, info, is_delta, what = model + " " + to,
                package = plan.package](const DownloadProgress& progress) -> Result<std::uint64_t> {
    DownloadSpec spec;
    spec.url = src.client.target_url(src.targets_base, target, info);
    spec.length = info.length;
    // Checked by package_target() and choose_delta(); not thrown for if it ever is not.
    const auto sha = info.hashes.find("sha256");
    if (sha == info.hashes.end()) return fail(Errc::verification, target + ": no sha256 hash");
    spec.sha256 = sha->second;
    spec.partial = package;
    spec.deadline =
        download_deadline(info.length, config_.download.min_rate,
                          config_.download.deadline_allowance, config_.download.max_deadline);
    int last_pct = 0;
    const std::string verb = src.bundle ? "copying " : "downloading ";
    const std::string kind =
        std::string(src.bundle ? " from the bundle" : "") + (is_delta ? " (delta)" : "");
    notify::status(verb + what + kind + ": 0%");
    auto observed = [&](std::uint64_t done, std::uint64_t total) {
      progress(done, total);
      notify::watchdog_tick();
      int pct = total > 0 ? static_cast<int>(done * 100 / total) : 100;
      if (pct != last_pct) {
        last_pct = pct;
        notify::status(verb + what + kind + ": " + std::to_string(pct) + "%");
      }
    };
    auto r = MOTA_TRY_CTX(download(src.http, spec, config_.retry, cancel_, observed),
                          "download " + target);
    return r.bytes_fetched;
  };
  return plan;
}

Status Agent::install_version(const TargetSource& src, const ModelSubscription& sub,
                              const SlotSet& slots, const std::optional<HealthGate>& gate,
                              Event& ev, ModelReport& mr) {
  const std::string& to = ev.to;
  ev.step = step_name(InstallStep::download);
  const PackageTarget pkg = MOTA_TRY(package_target(src, sub.name, to));
  // Requirements, from the signed target, before anything is downloaded (a refusal, not a
  // failure: nothing is blocked, the next poll checks again).
  ev.step = step_name(PollStep::requirements);
  auto unmet = MOTA_TRY_CTX(requirements_refusal(config_, slots, pkg.info.custom, pkg.info.length),
                            pkg.path);
  if (!unmet.empty()) {
    mr.outcome = ModelOutcome::refused;
    mr.error = unmet;
    return {};
  }
  ev.step = step_name(InstallStep::download);
  std::optional<DeltaTarget> delta = MOTA_TRY(pick_delta(src, sub, slots, pkg, ev));
  // What is downloaded for another version (or was, for a blocked one) goes before the space
  // for this one is counted.
  sweep_downloads(sub.name, {download_path(sub.name, pkg.info),
                             delta ? download_path(sub.name, delta->info) : stdfs::path()});
  InstallFailure failure;
  auto out = install_plans(src, sub, slots, gate, pkg, delta, ev, failure);
  update_lock_.reset();  // taken by the switch gate for the switch, the trial and the commit
  if (failure.step) ev.step = step_name(*failure.step);
  ev.install_id = failure.install_id;
  if (!out && failure.deferred) {
    // Staged and probed; the switch waits (not a failure of the version).
    mr.outcome = ModelOutcome::deferred;
    mr.error = "staged " + to + "; switch deferred: " + failure.deferred_why;
    ev.state = "deferred";
    ev.error = failure.deferred_why;
    return {};
  }
  if (!out) return fail(std::move(out).error());
  std::error_code gone;
  stdfs::remove(config_.state_dir / "install-now" / sub.name, gone);
  stdfs::remove(config_.state_dir / "lock-wait" / sub.name, gone);
  ev.bytes = out->bytes;
  ev.install_id = out->install_id;
  if (delta && delta->info.length < pkg.info.length) {
    ev.saved_bytes = pkg.info.length - delta->info.length;
  }
  // Whichever of the two was not used may have a partial download from an earlier attempt.
  std::error_code ec;
  stdfs::remove(download_path(sub.name, pkg.info), ec);
  if (delta) stdfs::remove(download_path(sub.name, delta->info), ec);
  mr.outcome = ModelOutcome::installed;
  mr.version = to;
  return {};
}

Result<Agent::PackageTarget> Agent::package_target(const TargetSource& src,
                                                   const std::string& model,
                                                   const std::string& to) {
  PackageTarget pkg;
  pkg.path = "models/" + model + "/" + to + "/" + model + "-" + to + ".mota";
  auto info = src.client.get_target(pkg.path);
  if (!info && info.error().code() == Errc::not_found && src.bundle) {
    return fail(Errc::not_found, pkg.path + " is not a signed target of the repository: " +
                                     src.where + " names a version that is not released");
  }
  pkg.info = MOTA_TRY_CTX(std::move(info), pkg.path);
  pkg.digest = custom_string(pkg.info.custom, "tree_digest");
  if (pkg.digest.empty() || pkg.info.hashes.find("sha256") == pkg.info.hashes.end()) {
    return fail(Errc::verification, pkg.path + ": target has no tree_digest or sha256");
  }
  // Published before tree_size was signed: the tree is taken to be as big as the package.
  pkg.tree = unpacked_size(pkg.info.custom, pkg.info.length);
  return pkg;
}

Result<std::optional<Agent::DeltaTarget>> Agent::pick_delta(const TargetSource& src,
                                                            const ModelSubscription& sub,
                                                            const SlotSet& slots,
                                                            const PackageTarget& pkg, Event& ev) {
  using Picked = std::optional<DeltaTarget>;
  if (config_.delta == DeltaPolicy::never || ev.from.empty()) return Picked();
  auto d = choose_delta(src.client, slots, sub.name, ev.from, ev.to, pkg.digest);
  if (d && src.bundle &&
      !src.bundle->find(src.client.target_url(src.targets_base, d->path, d->info)
                            .substr(storage::kBundleScheme.size()))) {
    d = fail(Errc::not_found, src.where + " carries no delta from " + ev.from +
                                  " (make one with `mota bundle create ... --delta-from " +
                                  ev.from + "`)");
  }
  if (d) return Picked(std::move(*d));
  if (config_.delta == DeltaPolicy::only) {
    return fail(std::move(d).error().context("delta = only: not installing the full package (" +
                                             std::to_string(pkg.info.length) + " bytes)"));
  }
  if (d.error().code() == Errc::not_found) {
    log::info(d.error().message() + "; installing the full package",
              {{"MODEL", sub.name}, {"VERSION", ev.to}});
  } else {
    log::warn(d.error().message() + "; installing the full package instead",
              {{"MODEL", sub.name}, {"VERSION", ev.to}});
    ev.delta_error = d.error().message();
  }
  return Picked();
}

Result<InstallOutcome> Agent::install_plans(const TargetSource& src, const ModelSubscription& sub,
                                            const SlotSet& slots,
                                            const std::optional<HealthGate>& gate,
                                            const PackageTarget& pkg,
                                            std::optional<DeltaTarget>& delta, Event& ev,
                                            InstallFailure& failure) {
  const std::string& to = ev.to;
  if (delta) {
    auto plan = fetch_plan(src, sub.name, ev.from, to, pkg.digest, delta->path, delta->info, true);
    plan.delta_base = delta->base;
    ev.kind = "delta";
    MOTA_TRY_CTX(check_install_space(slots, sub.name, to, delta->info, pkg.tree), delta->path);
    auto out = run_install(state_, slots, plan,
                           install_options(gate, src.bundle ? nullptr : &sub, &sub), &failure);
    if (out || !failure.delta_unusable) return out;
    ev.delta_error = out.error().message();
    failure = {};  // the delta's install was aborted: its step is not what the event names
    if (config_.delta == DeltaPolicy::only) {
      return fail(
          std::move(out).error().context("delta = only: not falling back to the full package (" +
                                         std::to_string(pkg.info.length) + " bytes)"));
    }
    log::warn(out.error().message() + "; installing the full package instead",
              {{"MODEL", sub.name}, {"VERSION", to}});
    delta.reset();
    ev.kind = "full";
  }
  MOTA_TRY_CTX(check_install_space(slots, sub.name, to, pkg.info, pkg.tree), pkg.path);
  return run_install(state_, slots,
                     fetch_plan(src, sub.name, ev.from, to, pkg.digest, pkg.path, pkg.info, false),
                     install_options(gate, src.bundle ? nullptr : &sub, &sub), &failure);
}

Result<Agent::OfflineInstall> Agent::install_file(const stdfs::path& file) {
  // Nothing in the file is trusted yet: the index only says what to look up in the metadata.
  auto bundle = MOTA_TRY(storage::BundleReader::open(file));
  const storage::BundleIndex& idx = bundle.index();
  const ModelSubscription* sub = nullptr;
  for (const auto& s : config_.models) {
    if (s.name == idx.model) sub = &s;
  }
  if (!sub) {
    return fail(Errc::not_found, file.string() + " is a bundle of " + idx.model + " " +
                                     idx.version +
                                     ", a model agent.toml does not list ([[model]]): nothing "
                                     "installed");
  }
  OfflineInstall result;
  ModelReport& mr = result.model;
  mr.model = sub->name;
  Event ev;
  ev.model = sub->name;
  ev.source = "bundle";
  ev.to = idx.version;
  ev.step = step_name(PollStep::refresh);
  const std::string where = file.filename().string();
  const auto started = std::chrono::steady_clock::now();
  const Status st = offline_update(bundle, *sub, where, ev, mr);
  ev.duration_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::steady_clock::now() - started)
                       .count();
  conclude_offline(st, where, ev, mr);
  if (auto r = reconcile(ServeCheck::watch); !r) log::warn(r.error().message());
  // A device installing offline often has no server to report to: the events stay queued.
  if (auto r = report(true); !r) log::info("reports kept queued: " + r.error().message());
  if (!st) return fail(std::move(st).error().context(file.string()));
  if (mr.outcome == ModelOutcome::refused) return fail(Errc::rollback, "refused: " + mr.error);
  result.from = ev.from;
  result.kind = ev.kind;
  return result;
}

Status Agent::offline_update(const storage::BundleReader& bundle, const ModelSubscription& sub,
                             const std::string& where, Event& ev, ModelReport& mr) {
  auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, sub.name));
  ev.from = MOTA_TRY(installed_version(sub.name));
  mr.version = ev.from;
  auto journal = MOTA_TRY(state_.install(sub.name));

  // The poll's TUF workflow on this device's own trusted metadata, the bundle as the server.
  storage::BundleSource source(bundle);
  tuf::ClientConfig tc;
  tc.metadata_dir = config_.state_dir / "metadata";
  tc.metadata_base_url = storage::BundleSource::url("metadata");
  tuf::Client client(tc, source);
  MOTA_TRY_CTX(client.refresh(), "TUF refresh from the bundle");
  if (const auto* ts = client.timestamp()) (void)state_.set_tuf_version("timestamp", ts->version);
  const TargetSource src{client, source, storage::BundleSource::url("targets"), &bundle, where};

  ev.step = step_name(PollStep::channel);
  const std::optional<Channel> channel = MOTA_TRY(bundle_channel(src, sub));
  MOTA_TRY(refresh_labels());

  ev.step = step_name(PollStep::policy);
  // Installed already (an unfinished install of another version is left to the next poll).
  if (ev.to == ev.from && (!journal || journal->to_version != ev.to)) {
    mr.outcome = ModelOutcome::up_to_date;
    return {};
  }
  const std::string why = MOTA_TRY_CTX(
      version_refusal(channel ? &*channel : nullptr, config_.device_id, labels_, ev.from, ev.to),
      where);
  if (!why.empty()) {
    mr.outcome = ModelOutcome::refused;
    mr.error = why;
    return {};
  }
  if (MOTA_TRY(state_.is_blocked(sub.name, ev.to))) {
    mr.outcome = ModelOutcome::refused;
    mr.error = "version " + ev.to + " is blocklisted on this device (an install of it failed here)";
    return {};
  }
  // An explicit operator's install does not wait for a retry backoff.
  return install_version(src, sub, slots, health_gate(), ev, mr);
}

Result<std::optional<Channel>> Agent::bundle_channel(const TargetSource& src,
                                                     const ModelSubscription& sub) {
  const std::string ch_path = channel_target_path(sub.channel, sub.name);
  auto ch_info = src.client.get_target(ch_path);
  if (!ch_info) {
    if (ch_info.error().code() == Errc::not_found) return std::optional<Channel>();
    return fail(std::move(ch_info).error().context(ch_path));
  }
  // As a poll: the cached file is kept when it already matches, else taken from the bundle.
  auto ch_file = channel_file(sub);
  MOTA_TRY(fs::make_dirs(ch_file.parent_path()));
  MOTA_TRY_CTX(src.client.download_target(src.targets_base, ch_path, *ch_info, ch_file), ch_path);
  return std::optional<Channel>(MOTA_TRY(load_channel(sub)));
}

void Agent::conclude_offline(const Status& st, const std::string& where, Event& ev,
                             const ModelReport& mr) {
  const std::string& model = mr.model;
  if (!st) {
    log::error(model + ": offline install from " + where + " failed: " + st.error().message(),
               {{"MODEL", model}, {"VERSION", ev.to}, {"STEP", std::string(ev.step)}});
    // Errc::rollback at "refresh" is TUF's rollback protection, not a trial that rolled back.
    ev.state = st.error().code() == Errc::rollback && ev.step != step_name(PollStep::refresh)
                   ? "rolled_back"
                   : "failed";
    ev.error = "offline install of " + where + ": " + st.error().message();
    event(ev);
  } else if (mr.outcome == ModelOutcome::refused) {
    log::warn(model + ": refused " + ev.to + " from " + where + ": " + mr.error,
              {{"MODEL", model}, {"VERSION", ev.to}});
    ev.state = "refused";
    ev.error = "offline install of " + where + ": " + mr.error;
    event(ev);
  } else if (mr.outcome == ModelOutcome::installed) {
    log::info("installed " + model + " " + ev.to + " from " + where + " (" + ev.kind + ")",
              {{"MODEL", model}, {"VERSION", ev.to}, {"KIND", ev.kind}});
    ev.state = "installed";
    ev.step = step_name(InstallStep::commit);
    event(ev);
  }
}

Result<std::vector<ModelStatus>> Agent::status() {
  std::vector<ModelStatus> out;
  for (const auto& sub : config_.models) {
    ModelStatus s;
    s.model = sub.name;
    s.channel = sub.channel;
    auto active = MOTA_TRY(state_.active(sub.name));
    if (active) {
      s.slot = active->slot;
      s.committed = active->committed;
      auto slot = MOTA_TRY(state_.slot(sub.name, active->slot));
      if (slot) s.version = slot->version;
    }
    auto rec = MOTA_TRY(state_.install(sub.name));
    if (rec) {
      s.install_step = rec->step;
      s.install_to = rec->to_version;
      s.install_attempts = rec->attempts;
      s.last_error = rec->last_error;
    }
    if (s.last_error.empty()) s.last_error = last_error(sub.name);
    s.blocked = MOTA_TRY(state_.blocked(sub.name));
    s.retries = MOTA_TRY(state_.retries(sub.name));
    out.push_back(std::move(s));
  }
  // A model no longer in agent.toml may still have blocked versions: shown, so they can be lifted.
  for (auto& b : MOTA_TRY(state_.all_blocked())) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const ModelStatus& m) { return m.model == b.model; });
    if (it == out.end()) {
      ModelStatus s;
      s.model = b.model;
      out.push_back(std::move(s));
      it = out.end() - 1;
    } else if (std::any_of(config_.models.begin(), config_.models.end(),
                           [&](const ModelSubscription& m) { return m.name == b.model; })) {
      continue;  // listed above
    }
    it->blocked.push_back(std::move(b));
  }
  return out;
}

Result<std::vector<BlockEntry>> Agent::unblock(const std::string& model,
                                               const std::string& version) {
  auto lifted = MOTA_TRY(state_.unblock(model, version));
  if (lifted.empty()) {
    return fail(Errc::not_found, model + (version.empty() ? "" : " " + version) +
                                     " is not blocked on this device (`mota-agent status` lists "
                                     "what is)");
  }
  for (const auto& b : lifted) {
    log::info("unblocked " + b.model + " " + b.version + " (it was blocked: " + b.reason + ")",
              {{"MODEL", b.model}, {"VERSION", b.version}});
  }
  heartbeat_due();
  return lifted;
}

std::chrono::milliseconds poll_delay(const Config& config, unsigned failures,
                                     std::mt19937_64& rng) {
  using std::chrono::milliseconds;
  const auto interval = std::chrono::duration_cast<milliseconds>(config.poll_interval);
  if (failures == 0) {
    const auto jitter = std::max<std::int64_t>(config.poll_jitter.count(), 0);
    return interval + milliseconds(std::uniform_int_distribution<std::int64_t>(0, jitter)(rng));
  }
  // interval * 2^failures, capped at kMaxBackoff (or the interval itself if that is longer),
  // with "equal jitter": half fixed, half random.
  const auto cap = std::max<milliseconds>(interval, kMaxBackoff);
  milliseconds wait = interval;
  for (unsigned i = 0; i < failures && wait < cap; ++i) wait *= 2;
  wait = std::min(wait, cap);
  const auto half = wait.count() / 2;
  return milliseconds(half + std::uniform_int_distribution<std::int64_t>(0, half)(rng));
}

Status Agent::run(const std::atomic<bool>& stop, std::atomic<bool>* poll_now) {
  cancel_ = &stop;
  // One malloc arena for the daemon's two threads (the poll and an install's unpacker): a
  // second arena keeps the megabytes the unpacker touched resident for the daemon's lifetime
  // (measured: 10.4 MiB anonymous after two 64 MiB installs against 2.4 MiB with one arena and
  // malloc_trim below). The unpacker does I/O, not allocation, so there is nothing to contend.
  ::mallopt(M_ARENA_MAX, 1);
  std::mt19937_64 rng{std::random_device{}()};
  const std::string summary = MOTA_TRY(recover());
  // Serve what is committed before anything else: a restarted device serves at once.
  if (auto r = reconcile(ServeCheck::start); !r) log::error(r.error().message());
  log::info("mota-agent running: " + summary);
  notify::ready("running: " + summary);
  unsigned failures = 0;  // polls failed in a row
  while (!stop.load()) {
    recheck_at_.reset();
    failures = poll() ? 0 : failures + 1;
    auto wait = poll_delay(config_, failures, rng);
    if (recheck_at_) {
      // A deferred switch: ask again when its window opens or its lock may be free.
      const auto until = std::chrono::duration_cast<std::chrono::milliseconds>(
          *recheck_at_ - std::chrono::steady_clock::now());
      wait = std::min(wait, std::max(until, std::chrono::milliseconds(1000)));
    }
    wait_for_next_poll(wait, failures, stop, poll_now);
  }
  notify::stopping();
  cancel_ = nullptr;
  return {};
}

Result<std::string> Agent::recover() {
  // Recovered: the state database is open (migrated) and each model's `current` names a slot
  // the database knows; an interrupted install resumes at the first poll, from its journal.
  std::string summary;
  for (const auto& sub : config_.models) {
    auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, sub.name));
    auto version = MOTA_TRY(installed_version(sub.name));
    auto journal = MOTA_TRY(state_.install(sub.name));
    if (journal) {
      log::info("resuming the install of " + sub.name + " " + journal->to_version + " at step " +
                    journal->step,
                {{"MODEL", sub.name}, {"VERSION", journal->to_version}});
    }
    summary += (summary.empty() ? "" : ", ") + sub.name + " " +
               (version.empty() ? std::string("(none)") : version);
  }
  return summary;
}

bool Agent::poll() {
  notify::status("polling " + config_.server_url);
  auto r = check_once();
  notify::watchdog_tick();
  // What the poll allocated (TLS, JSON, buffers, the unpacker's arena) goes back to the system
  // now rather than staying resident until the next poll.
  ::malloc_trim(0);
  if (!r) {
    log::error("poll failed: " + r.error().message());
    notify::status("last poll failed: " + r.error().message());
  } else {
    std::string line;
    for (const auto& m : r->models) {
      line += (line.empty() ? "" : ", ") + m.model + " " +
              (m.version.empty() ? std::string("(none)") : m.version);
      if (m.outcome == ModelOutcome::failed) line += " (update failed)";
      if (m.outcome == ModelOutcome::refused) line += " (update refused)";
    }
    notify::status("idle: " + line);
  }
  // A poll that failed as a whole (server down, metadata rejected) or failed a model backs
  // off exponentially, so a fleet does not hammer a broken server in lockstep.
  return r && r->ok();
}

void Agent::wait_for_next_poll(std::chrono::milliseconds wait, unsigned failures,
                               const std::atomic<bool>& stop, std::atomic<bool>* poll_now) {
  if (failures > 0) {
    log::info("next poll in " + std::to_string(wait.count() / 1000) + " s (" +
              std::to_string(failures) + " failed in a row)");
  }
  const auto until = std::chrono::steady_clock::now() + wait;
  const auto watch = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
      config_.health.watch_interval);
  auto next_watch = std::chrono::steady_clock::now() + watch;
  while (!stop.load() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    notify::watchdog_tick();
    if (poll_now && poll_now->exchange(false)) {
      log::info("asked to poll now (SIGUSR1)");
      return;
    }
    if (watch.count() > 0 && std::chrono::steady_clock::now() >= next_watch) {
      if (auto w = reconcile(ServeCheck::watch); !w) log::warn(w.error().message());
      next_watch = std::chrono::steady_clock::now() + watch;
    }
  }
}

}  // namespace mota::agent
