#include "agent/agent.hpp"

#include <random>
#include <system_error>
#include <thread>

#include "agent/download.hpp"
#include "common/fs.hpp"
#include "common/http.hpp"
#include "common/log.hpp"
#include "common/semver.hpp"
#include "common/time.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/channel.hpp"
#include "manifest/tuf/client.hpp"
#include "storage/package.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;

bool CheckReport::ok() const {
  for (const auto& m : models) {
    if (m.outcome == ModelOutcome::failed) return false;
  }
  return true;
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
  auto state = MOTA_TRY(StateStore::open(config.state_dir));
  return Agent(std::move(config), std::move(state), std::move(install_options));
}

void Agent::event(const std::string& model, const std::string& from, const std::string& to,
                  const std::string& st, const std::string& error, std::uint64_t bytes) {
  Json body = {{"device", config_.device_id},
               {"time", format_time(now_seconds())},
               {"model", model},
               {"from", from},
               {"to", to},
               {"state", st},
               {"error", error},
               {"bytes", bytes},
               {"kind", "full"}};
  auto r = state_.enqueue(OutboxKind::event, body.dump());
  if (!r) log::error("cannot queue event: " + r.error().message());
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

Result<CheckReport> Agent::check_once() {
  http::ClientConfig hc;
  hc.ca_file = config_.ca_file.string();
  hc.max_bytes_per_sec = config_.bandwidth_limit;
  hc.cancel = cancel_;
  auto http = http::make_http_client(hc);
  tuf::ClientConfig tc;
  tc.metadata_dir = config_.state_dir / "metadata";
  tc.metadata_base_url = config_.metadata_url();
  tuf::Client client(tc, *http);
  MOTA_TRY_CTX(client.refresh(), "TUF refresh from " + config_.metadata_url());
  if (const auto* ts = client.timestamp()) (void)state_.set_tuf_version("timestamp", ts->version);

  CheckReport report;
  for (const auto& sub : config_.models) {
    ModelReport mr;
    mr.model = sub.name;
    std::string from;
    std::string to;
    std::uint64_t bytes = 0;
    auto st = [&]() -> Status {
      auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, sub.name));
      from = MOTA_TRY(installed_version(sub.name));
      mr.version = from;
      auto journal = MOTA_TRY(state_.install(sub.name));

      const std::string ch_path = channel_target_path(sub.channel, sub.name);
      auto ch_info = MOTA_TRY_CTX(client.get_target(ch_path), ch_path);
      // Cached: download_target fetches nothing when the file already matches (idle polls).
      auto ch_file = config_.state_dir / "channels" / sub.channel / (sub.name + ".json");
      MOTA_TRY(fs::make_dirs(ch_file.parent_path()));
      MOTA_TRY_CTX(client.download_target(config_.targets_url(), ch_path, ch_info, ch_file),
                   ch_path);
      auto ch_text = MOTA_TRY_CTX(fs::read_file(ch_file, 1 << 20), ch_path);
      auto channel = MOTA_TRY_CTX(Channel::parse(ch_text), ch_path);
      if (channel.model != sub.name || channel.channel != sub.channel) {
        return fail(Errc::verification,
                    ch_path + ": names model " + channel.model + " on channel " + channel.channel);
      }
      to = wanted_version(channel, config_.device_id);
      if (to.empty() || (to == from && !journal)) return {};
      auto want = MOTA_TRY_CTX(SemVer::parse(to), ch_path);
      if (!channel.min_version.empty()) {
        auto min = MOTA_TRY_CTX(SemVer::parse(channel.min_version), ch_path);
        if (want < min) {
          return fail(Errc::verification, ch_path + ": wanted version " + to +
                                              " is below min_version " + channel.min_version);
        }
      }
      if (!from.empty() && !channel.allow_downgrade) {
        auto have = MOTA_TRY(SemVer::parse(from));
        if (want < have) {
          log::warn("refusing downgrade of " + sub.name + " from " + from + " to " + to +
                    ": channel " + sub.channel + " does not allow_downgrade");
          to.clear();
          return {};
        }
      }
      if (MOTA_TRY(state_.is_blocked(sub.name, to))) {
        log::warn(sub.name + " " + to + " is blocklisted on this device; not installing");
        to.clear();
        return {};
      }
      const std::string pkg_path =
          "models/" + sub.name + "/" + to + "/" + sub.name + "-" + to + ".mota";
      auto info = MOTA_TRY_CTX(client.get_target(pkg_path), pkg_path);
      std::string digest =
          info.custom.is_object() ? info.custom.value("tree_digest", std::string()) : "";
      auto sha = info.hashes.find("sha256");
      if (digest.empty() || sha == info.hashes.end()) {
        return fail(Errc::verification, pkg_path + ": target has no tree_digest or sha256");
      }
      // The package and its unpacked tree; the tree is at least as big as the package.
      MOTA_TRY_CTX(check_space(config_.state_dir, 2 * info.length), pkg_path);

      InstallPlan plan;
      plan.model = sub.name;
      plan.from_version = from;
      plan.to_version = to;
      plan.tree_digest = digest;
      plan.package = config_.state_dir / "downloads" / (sha->second + ".part");
      plan.delete_package = true;
      plan.fetch = [&]() -> Result<std::uint64_t> {
        DownloadSpec spec;
        spec.url = client.target_url(config_.targets_url(), pkg_path, info);
        spec.length = info.length;
        spec.sha256 = sha->second;
        spec.partial = plan.package;
        auto r =
            MOTA_TRY_CTX(download(*http, spec, config_.retry, cancel_), "download " + pkg_path);
        return r.bytes_fetched;
      };
      auto out = MOTA_TRY(run_install(state_, slots, plan, install_options_));
      bytes = out.bytes;
      mr.outcome = ModelOutcome::installed;
      mr.version = to;
      return {};
    }();
    if (!st && st.error().code() == Errc::cancelled) {
      // Stopping is not a failure to report: the journal resumes at the next start.
      mr.outcome = ModelOutcome::failed;
      mr.error = sub.name + ": " + st.error().message();
      report.models.push_back(std::move(mr));
      break;
    }
    if (!st) {
      mr.outcome = ModelOutcome::failed;
      mr.error = sub.name + ": " + st.error().message();
      log::error(mr.error);
      event(sub.name, from, to, "failed", st.error().message(), bytes);
      set_last_error(sub.name, st.error().message());
    } else if (mr.outcome == ModelOutcome::installed) {
      log::info("installed " + sub.name + " " + to);
      event(sub.name, from, to, "installed", "", bytes);
      set_last_error(sub.name, "");
    }
    report.models.push_back(std::move(mr));
  }
  return report;
}

Status Agent::install_file(const stdfs::path& package, const std::string& tree_digest) {
  auto manifest = MOTA_TRY_CTX(storage::read_manifest(package), package.string());
  const std::string& model = manifest.name;
  auto slots = MOTA_TRY(SlotSet::open(config_.state_dir, model));
  auto from = MOTA_TRY(installed_version(model));
  InstallPlan plan;
  plan.model = model;
  plan.from_version = from;
  plan.to_version = manifest.version;
  plan.package = package;
  plan.tree_digest = tree_digest;  // empty: the tree only has to match its own model.json
  auto r = run_install(state_, slots, plan, install_options_);
  if (!r) {
    event(model, from, manifest.version, "failed", r.error().message(), 0);
    set_last_error(model, r.error().message());
    return fail(std::move(r).error());
  }
  event(model, from, manifest.version, "installed", "", 0);
  set_last_error(model, "");
  return {};
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
    if (s.last_error.empty()) {
      auto path = config_.state_dir / "status" / (sub.name + ".error");
      std::error_code ec;
      if (stdfs::exists(path, ec)) {
        auto text = fs::read_file(path, 1 << 20);
        if (text) s.last_error = *text;
      }
    }
    out.push_back(std::move(s));
  }
  return out;
}

Status Agent::run(const std::atomic<bool>& stop) {
  cancel_ = &stop;
  std::mt19937_64 rng{std::random_device{}()};
  while (!stop.load()) {
    auto r = check_once();
    if (!r) {
      log::error("poll failed: " + r.error().message());
    }
    const auto jitter_ms = config_.poll_jitter.count();
    std::uniform_int_distribution<std::int64_t> dist(0, jitter_ms > 0 ? jitter_ms : 0);
    auto wait =
        std::chrono::milliseconds(config_.poll_interval) + std::chrono::milliseconds(dist(rng));
    auto until = std::chrono::steady_clock::now() + wait;
    while (!stop.load() && std::chrono::steady_clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  cancel_ = nullptr;
  return {};
}

}  // namespace mota::agent
