#pragma once
// The agent's poll: TUF refresh, then for each subscribed model the channel target, the wanted
// version, the package target, and an install (agent/install.hpp). Every failure is a clear error
// plus an event in the outbox (agent/state.hpp); the active model is never touched by a failure.
//
// Event body (JSON, queued in the outbox and sent by agent/report.hpp):
//   {"device", "time", "model", "channel", "slot", "from", "to", "state", "step", "error",
//    "bytes", "kind", "saved_bytes", "duration_ms", "install_id", ["delta_error"], ["source"]}
// channel: the model's channel in agent.toml; slot: the slot the model is served from after the
// event ("a", "b", or "" when none). state, per model:
//   "installed"    `to` is committed and serves (step "commit");
//   "failed"       an attempt failed; `from` still serves (step: "channel", "policy", an install
//                  step of agent/install.hpp, or "boot" — see "Serving" below);
//   "rolled_back"  an automatic rollback: the new model failed its trial after the switch (step
//                  "trial"; blocked, or tried again after a backoff when the failure may pass on
//                  retry: agent/install.hpp, "Failure classes"), or at start the committed
//                  version no longer verified or loaded and the previous good one serves again
//                  (step "boot"). `from` serves, `to` failed;
//   "refused"      the version policy refused `to` (step "policy"), or the device does not meet
//                  its signed requirements (step "requirements": arch, RAM, accelerators, disk;
//                  agent/requirements.hpp; error "requirements not met: <each one, with the
//                  device's value>"). Nothing is downloaded and nothing blocked;
//   "deferred"     `to` is staged and probed; the switch waits for an install window or the
//                  update lock (step "ready", error: which, and until when; see "Install windows
//                  and update locks" below). Not a failure; `from` serves;
//   "ok"           the model is healthy again after a failure or refusal: a poll found it
//                  installed at the version its channel wants for this device (from = to = that
//                  version, step "poll"); sent once per recovery.
// and per device (model ""): "metadata_error" (step "refresh": the TUF refresh failed —
// unreachable, expired, bad signature — error says why) and "metadata_ok" (the first good
// refresh after one). A metadata problem is not a failure of any model version.
// kind: "full" or "delta" (what was downloaded; bytes: how many in this run; saved_bytes: full
// package length minus delta length); delta_error: why a delta was not used (present only then);
// source: "bundle" for an offline install from a signed bundle (install_file(); absent for a
// poll). A bundle's events use the same states and steps as a poll's, plus step "refresh" when
// the bundle's metadata does not verify against this device's (foreign keys, rollback, expiry:
// "failed", the error says why; not a metadata_error, which is about the server). A file that
// is not a bundle, or a bundle of a model agent.toml does not list, is refused without an event.
// A failure that may pass on retry says so in its error: "... (failure N of at most M that may
// pass on retry; next try after T)", or "... (failed N times ...: version blocked)".
// A failure or refusal repeating the last error word for word (per model, or the device's
// metadata error) is logged but not queued again, so a device stuck on e.g. expired metadata does
// not fill its outbox with one event per poll.
//
// Serving (reconciliation, as a Kubernetes controller): the agent owns what mota-runtime serves.
// At start (run(), check_once(), install_file()), after every poll and every
// [health] watch_interval in between, for each model with a committed slot it makes sure that
//   - `current` points at the committed slot (unless an install between its switch and commit
//     steps owns it);
//   - at start (verify_at_start), the slot still hashes to its committed tree digest;
//   - the runtime serves exactly that slot (GET /v1/health): a restarted, crashed or emptied
//     runtime, or one serving another slot, is told to load it (one load, no request dropped);
// and rewrites <state_dir>/serving.json (manifest/serving.hpp), from which the runtime loads the
// committed slots at its own start, so either may start first. A committed slot that no longer
// verifies, or that the runtime refuses to load (not merely unreachable), is replaced by the
// previous good slot if that verifies and loads ("rolled_back", step "boot"; nothing blocklisted:
// the next poll reinstalls the wanted version through the health gate, which blocks it if the
// model itself is at fault). With nothing to fall back to, a damaged slot is dropped so the next
// poll installs the model afresh ("failed", step "boot"). A runtime that cannot be reached is
// logged once and looked at again at the next check.
//
// Version policy (online polls and offline installs alike):
//   - below the channel's min_version: refused;
//   - older than the installed version: refused unless the channel has allow_downgrade and
//     targets exactly that version for this device (an operator's explicit rollback);
//   - on this device's block list (agent/install.hpp: a failure that will not pass, or more than
//     [health] max_retries that might): skipped until a newer one appears or `mota-agent
//     unblock` lifts it;
//   - failed before in a way that may pass on retry: not tried again before its backoff ends
//     (ModelOutcome::deferred, no event);
//   - requirements the device does not meet: refused (above), checked before any download.
//
// Deltas (config `delta`): with "prefer" or "only", an update from an installed version looks for
// the signed target deltas/<model>/<from>/<to>.mdelta. It is used only when its custom data names
// this update (kind "delta", name, from, to, and the same tree digest as the full package) and the
// active slot verifies from disk to the delta's from_tree_digest (a slot modified on disk is never
// used as a base). A delta that then fails to apply (corrupt, truncated, another base) aborts that
// attempt without blocklisting the version and, with "prefer", the full package is installed at
// once; with "only" the update fails with the reason and nothing else is downloaded (a first
// install, having no base, always uses the full package). "never": full packages only.
// Offline installs (install_file) come from signed bundles only (storage/bundle.hpp,
// docs/bundles.md). The bundle is an http::Client for the same TUF client as a poll, run on this
// device's trusted metadata directory: root rotation, signatures and thresholds, rollback of
// every role and expiry are checked as online, and the trusted metadata moves forward exactly as a
// poll would move it (an older bundle is refused by rollback protection). The version is the one
// the bundle names (an operator's explicit choice), installed only if it is a signed target; the
// version policy uses the model's channel file as the verified metadata lists it (the bundle
// carries the model's channel files; none listed: only the installed-version rule applies, so a
// USB stick cannot downgrade a device either); a blocklisted version is refused. Then the same
// download step (from the bundle, length and sha256 checked while streaming), delta use (when
// the bundle carries a delta from the installed version), install state machine and health gate
// as a poll.
//
// Install windows and update locks (docs/agent.md): a poll's install stages and probes the new
// version at any time, then asks the switch gate (agent/install.hpp, step "ready"). The install
// windows that apply (agent.toml's install_window, the model's, and the channel file's, a
// rollout's) must all allow the device's local time, unless `mota-agent install-now MODEL` let
// this install through; then the update lock (config update_lock, agent/update_lock.hpp) must be
// free: the agent takes it for the switch, the trial and the commit. Otherwise the switch is
// deferred: the journal stays at "ready", the outcome is ModelOutcome::deferred and the event
// state "deferred" (step "ready", error: the reason: "outside this device's install window
// (Mon-Fri 01:00-05:00); it opens Tue 01:00 local time ..." or "the update lock ... is held ...").
// The daemon asks again when the window opens, or every kLockRecheck while the lock is held,
// when that is sooner than its next poll. A lock held longer than update_lock_max_defer (counted
// from the first deferral of this install, kept in <state_dir>/lock-wait/, so restarts do not reset
// it) no longer defers: the agent switches without it and logs a warning. A lock file that cannot
// be opened does not defer either (warning): a misconfigured path must not stop updates for ever.
// Offline installs (bundles) are an operator's explicit action on the device: neither windows nor
// the lock hold them, nor a first install (nothing runs that a switch could interrupt).
//
// Space (honest accounting): before an install writes anything, what it will write must fit on
// the state directory's filesystem (agent/download.hpp SpaceNeed): the bytes still to download
// (the package's or the delta's signed length minus a partial already on disk, which counts as
// downloaded) plus the new slot's expanded size (the target's signed custom "tree_size", the
// files its model.json lists; a target published before tree_size counts the package's length)
// plus a margin, less the slot being replaced (prepare() empties it before anything is written).
// A delta therefore needs its own length and the new slot, never the full package twice. An
// offline install needs its tree. A refusal says every term ("need 9.3 MiB in /var/lib/mota
// (16 MiB to unpack + 12 KiB to download + 1.3 MiB margin - 8.0 MiB of slot a, removed first),
// 5.0 MiB free"). Partials live in <state_dir>/downloads/<model>.<sha256>.part; each poll removes
// those no install needs: of models no longer configured, of a model that is up to date,
// refused or blocked, and of versions other than the one being installed. A partial is kept
// across failures (a full disk included), so a retry once space is freed resumes it.
// The reserve: while the disk has room the agent keeps <state_dir>/reserve (kDiskFullBytes,
// allocated). When the disk is full and agent.db cannot be opened (or a heartbeat cannot be
// queued) the reserve is deleted, so the agent still starts and sends a heartbeat saying
// "disk_full": true (agent/report.hpp) at once, whatever heartbeat_interval says; the next one
// after the disk has room again says false. The reserve is taken back when 4 MiB are free. With
// no reserve left the start fails with a message saying the disk is full.
//
// Thread-safety: none; one Agent per state directory and process.

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "agent/config.hpp"
#include "agent/health.hpp"
#include "agent/install.hpp"
#include "agent/report.hpp"
#include "agent/state.hpp"
#include "agent/update_lock.hpp"
#include "common/http.hpp"
#include "common/result.hpp"
#include "manifest/channel.hpp"
#include "manifest/serving.hpp"
#include "manifest/tuf/metadata.hpp"
#include "protocol/identity.hpp"

namespace mota::storage {
class BundleReader;
}

namespace mota::tuf {
class Client;
}

namespace mota::agent {

// The version policy above: "" if `to` may be installed over `from` ("" = nothing installed),
// else the reason it is refused. `channel` may be null (no channel known: offline install on a
// device that never polled). Errc::parse for a malformed version.
// `labels` are the device's (device_labels): a targeted channel's explicit rollback is to the
// version the channel wants for this device.
Result<std::string> version_refusal(const Channel* channel, std::string_view device_id,
                                    const Labels& labels, const std::string& from,
                                    const std::string& to);

// The "step" of an event (see above) outside the install's own steps (InstallStep,
// agent/install.hpp), with step_name() giving the wire names events carry.
enum class PollStep : std::uint8_t { refresh, channel, policy, requirements, boot, poll };
constexpr std::string_view step_name(PollStep s) {
  switch (s) {
    case PollStep::refresh:
      return "refresh";
    case PollStep::channel:
      return "channel";
    case PollStep::policy:
      return "policy";
    case PollStep::requirements:
      return "requirements";
    case PollStep::boot:
      return "boot";
    case PollStep::poll:
      return "poll";
  }
  return "?";
}
inline std::string_view step_name(InstallStep s) {
  return install_step_name(s);
}

// deferred: a version that failed in a way that may pass on retry waits for its backoff.
enum class ModelOutcome { up_to_date, installed, refused, failed, deferred };

struct ModelReport {
  std::string model;
  ModelOutcome outcome = ModelOutcome::up_to_date;
  std::string version;  // installed version after the poll ("" if none)
  std::string error;    // for failed, refused and deferred
};

struct CheckReport {
  std::vector<ModelReport> models;
  std::string report_error;  // "" when the outbox was delivered (or nothing to send)
  bool ok() const;           // no model failed (a refusal is the policy working, not a failure)
};

struct ModelStatus {
  std::string model;
  std::string channel;
  std::string version;  // "" when nothing installed
  std::optional<Slot> slot;
  bool committed = false;
  std::string install_step;  // "" when no install in progress
  std::string install_to;
  int install_attempts = 0;
  std::string last_error;
  std::vector<BlockEntry> blocked;  // versions this device will not install, oldest first
  std::vector<RetryEntry> retries;  // versions waiting to be tried again
};

// How long the daemon waits before the next poll: poll_interval + uniform(0, poll_jitter) after a
// good poll; after `failures` failed polls in a row, poll_interval * 2^failures (capped at
// kMaxBackoff, or poll_interval if longer) with equal jitter: uniform in [wait/2, wait].
inline constexpr std::chrono::milliseconds kMaxBackoff{3600 * 1000};
inline constexpr std::chrono::seconds kLockRecheck{30};
std::chrono::milliseconds poll_delay(const Config& config, unsigned failures, std::mt19937_64& rng);

class Agent {
 public:
  // Creates state_dir (and its metadata dir, seeded from config.trusted_root on first start)
  // and opens the state database.
  static Result<Agent> open(Config config, InstallOptions install_options = {});

  // One poll, then report(): queues a heartbeat and flushes the outbox. Errors only for what
  // stops the whole poll (TUF refresh, database), after queuing a "failed" event per model and
  // reporting; per-model failures are in the CheckReport (and in the outbox). A report that
  // cannot be delivered is not an error of the poll: see CheckReport::report_error.
  Result<CheckReport> check_once();

  // Installs the model version a signed bundle (a .motab from `mota bundle create`) names, as
  // described under "Offline installs" above. Errors: a file that is not a bundle (a bare .mota
  // package: Errc::unsupported saying how to make a bundle), a bundle of a model agent.toml does
  // not list, metadata that does not verify, a target whose length or hashes differ, an install
  // that fails (each with its event, "source": "bundle"); a refusal by the version policy is
  // Errc::rollback "refused: ..." with a "refused" event. Installing the version that is already
  // installed changes nothing but the trusted metadata (outcome up_to_date). Serves what is
  // committed and reports afterwards (best effort: a device without a server keeps the events).
  struct OfflineInstall {
    ModelReport model;  // outcome installed or up_to_date; version installed
    std::string from;   // the version installed before
    std::string kind;   // "full" or "delta" when installed
  };
  Result<OfflineInstall> install_file(const std::filesystem::path& bundle);

  // Queues a heartbeat (if `heartbeat`) and sends the outbox to <report_url>/v1/devices/<id>/
  // events (agent/report.hpp). Errors: the Reporter's; everything stays queued for next time.
  Status report(bool heartbeat);

  // Every model of the config, then any other model this device has blocked versions of.
  Result<std::vector<ModelStatus>> status();

  // Lifts the block of `model` `version` ("" = all its versions) and forgets their retries; the
  // next poll may install them, and the next heartbeat (due at once) no longer lists them.
  // Errc::not_found, changing nothing, when nothing matching is blocked.
  Result<std::vector<BlockEntry>> unblock(const std::string& model, const std::string& version);
  // `mota-agent install-now MODEL`: lets the switch of the install of `model` under way through
  // the install windows once (with `ignore_lock`, the update lock too). Errc::not_found when no
  // install of the model is under way (nothing to let through). Returns the version.
  Result<std::string> install_now(const std::string& model, bool ignore_lock);
  // The device-level metadata condition: "" when the last TUF refresh succeeded, else its error.
  std::string metadata_error();

  // Serving (see above). `start`: also verifies each committed slot (verify_at_start). Errors only
  // for the state database or the serving manifest; per-model problems are logged and reported.
  enum class ServeCheck { start, watch };
  Status reconcile(ServeCheck when);

  // The daemon loop: check_once(), then wait poll_delay() (backing off after failures), until
  // `stop` becomes true, which is noticed within about 100 ms (also in the middle of a download:
  // the partial file is kept for the next start). A failed poll is logged and retried after
  // an exponential backoff (poll_delay). `poll_now` (may be null; SIGUSR1 in mota-agent run)
  // ends a wait early: it is reset and the next poll starts at once. Returns success when
  // stopped.
  // Under systemd (Type=notify, common/notify.hpp): READY=1 once the state is open and each
  // model's slots check out, STATUS= lines saying what it is doing ("downloading detector 2.1.0:
  // 45%"), WATCHDOG=1 from the loop, download progress and install steps (so a hung poll stops
  // the keep-alives), STOPPING=1 when stopping.
  Status run(const std::atomic<bool>& stop, std::atomic<bool>* poll_now = nullptr);

  StateStore& state() { return state_; }
  const Config& config() const { return config_; }

 private:
  struct Event {
    std::string model, from, to, state, error, install_id;
    std::string_view step;      // step_name() of a PollStep or an InstallStep
    std::string slot;           // set by event() from the state database when empty
    std::string kind = "full";  // "delta" when a delta was downloaded
    std::string delta_error;    // why a delta was not used
    std::string source;         // "bundle" for an offline install
    std::uint64_t bytes = 0;
    std::uint64_t saved_bytes = 0;
    std::int64_t duration_ms = 0;
  };
  Agent(Config config, StateStore state, protocol::DeviceIdentity identity, InstallOptions opts)
      : config_(std::move(config)),
        state_(std::move(state)),
        identity_(std::move(identity)),
        install_options_(std::move(opts)) {}
  // A usable delta for an update (see "Deltas" above).
  struct DeltaTarget {
    std::string path;  // deltas/<model>/<from>/<to>.mdelta
    tuf::TargetFile info;
    std::filesystem::path base;  // the active slot's directory
  };
  // The delta target for from -> to, checked against the update (tree_digest: the full
  // package's) and the active slot verified against its base. Errc::not_found when none is
  // published; Errc::verification with the reason when it cannot be used.
  Result<DeltaTarget> choose_delta(tuf::Client& client, const SlotSet& slots,
                                   const std::string& model, const std::string& from,
                                   const std::string& to, const std::string& tree_digest);
  // Where an install's target comes from: the poll's server, or a bundle (offline install).
  struct TargetSource {
    tuf::Client& client;  // refreshed: its targets are trusted
    http::Client& http;   // what serves the target files
    std::string targets_base;
    const storage::BundleReader* bundle = nullptr;  // set for an offline install
    std::string where;                              // the bundle's file name, for messages
  };
  // One model's part of a poll: what happened (status: the failure, if any; the report's
  // outcome otherwise), the event to send, and whether the model is at the version its channel
  // wants (or it wants none).
  struct ModelPoll {
    ModelReport report;
    Event ev;
    bool converged = false;
    Status status;
  };
  // The poll's phases (check_once): the TUF refresh with the device's metadata events; then per
  // model check_model (update_model timed, stale partials swept) and conclude_model (its event).
  Status refresh_metadata(tuf::Client& client);
  ModelPoll check_model(const TargetSource& src, const ModelSubscription& sub,
                        const std::optional<HealthGate>& gate);
  // The channel, the unfinished install it no longer wants, the version policy, the install.
  Status update_model(const TargetSource& src, const ModelSubscription& sub,
                      const std::optional<HealthGate>& gate, ModelPoll& p);
  // The signed channel file of `sub` (downloaded only when it changed), checked to name `sub`.
  Result<Channel> fetch_channel(const TargetSource& src, const ModelSubscription& sub);
  // Whether ev.to may be installed now: false with mr's outcome (refused, deferred) or ev.to
  // cleared (blocked) when not.
  Result<bool> may_install(const Channel& channel, const ModelSubscription& sub, Event& ev,
                           ModelReport& mr);
  // The event and log line of a model's poll (failed, refused, installed, or "ok" once healthy
  // again after a failure).
  void conclude_model(ModelPoll& p);
  // install_file's phases: the bundle's TUF refresh, channel and version policy, then
  // install_version (as a poll's, from the bundle); then the event and log line of the outcome.
  Status offline_update(const storage::BundleReader& bundle, const ModelSubscription& sub,
                        const std::string& where, Event& ev, ModelReport& mr);
  // The model's channel file as the bundle's verified metadata lists it (none listed: nullopt).
  Result<std::optional<Channel>> bundle_channel(const TargetSource& src,
                                                const ModelSubscription& sub);
  void conclude_offline(const Status& st, const std::string& where, Event& ev,
                        const ModelReport& mr);
  // What a poll and an offline install share once the version policy allowed ev.to over
  // ev.from: the package target, requirements (a refusal, nothing downloaded), the delta choice
  // (from a bundle only when it carries that delta), stale partials, the space check, the
  // download into download_path() and the install state machine with the health gate. Sets
  // mr.outcome (installed or refused) and mr.version, ev's step, kind, bytes and install id; a
  // failure is returned with its reason (ev.step says where).
  Status install_version(const TargetSource& src, const ModelSubscription& sub,
                         const SlotSet& slots, const std::optional<HealthGate>& gate, Event& ev,
                         ModelReport& mr);
  // The package target of `model` `to`, checked to carry its tree digest and sha256; tree: the
  // size it unpacks to.
  struct PackageTarget {
    std::string path;
    tuf::TargetFile info;
    std::string digest;
    std::uint64_t tree = 0;
  };
  Result<PackageTarget> package_target(const TargetSource& src, const std::string& model,
                                       const std::string& to);
  // The delta to install ev.to from (config `delta`; a bundle's only when it carries it): none
  // for a full install, with ev.delta_error saying why when one was published but unusable.
  // Errors: delta = only and no usable delta.
  Result<std::optional<DeltaTarget>> pick_delta(const TargetSource& src,
                                                const ModelSubscription& sub, const SlotSet& slots,
                                                const PackageTarget& pkg, Event& ev);
  // The space check and run_install of the delta, then (none, or it proved unusable and delta
  // is not "only": `delta` reset) of the full package. `failure` as run_install's.
  Result<InstallOutcome> install_plans(const TargetSource& src, const ModelSubscription& sub,
                                       const SlotSet& slots, const std::optional<HealthGate>& gate,
                                       const PackageTarget& pkg, std::optional<DeltaTarget>& delta,
                                       Event& ev, InstallFailure& failure);
  // The plan that fetches signed `target` (the package, or a delta) from `src` into
  // download_path() with the downloader (length, hash, min rate and deadline) and installs from
  // it. `src` must outlive the plan.
  InstallPlan fetch_plan(const TargetSource& src, const std::string& model, const std::string& from,
                         const std::string& to, const std::string& tree_digest,
                         const std::string& target, const tuf::TargetFile& info, bool is_delta);
  // Where the download of a target of `model` is kept while partial (by its signed sha256).
  std::filesystem::path download_path(const std::string& model,
                                      const tuf::TargetFile& target) const;
  // Removes partial downloads no install needs (see "Space"): with `model` empty, those of
  // models not configured (and names the agent does not make); else that model's, except `keep`.
  void sweep_downloads(const std::string& model, const std::set<std::filesystem::path>& keep);
  // Errc::no_space unless installing `to` (downloading `target`, or `download` more bytes, and
  // unpacking a tree of `tree` bytes) fits, see "Space". Nothing to check past the stage step.
  Status check_install_space(const SlotSet& slots, const std::string& model, const std::string& to,
                             const tuf::TargetFile& target, std::uint64_t tree);
  Status check_install_space(const SlotSet& slots, const std::string& model, const std::string& to,
                             std::uint64_t download, std::uint64_t tree);
  // The reserve (see "Space"): whether the state directory's disk has less than kDiskFullBytes
  // free; allocate the reserve when there is room; delete it (true if there was one).
  static bool disk_full(const std::filesystem::path& state_dir);
  static void keep_reserve(const std::filesystem::path& state_dir);
  static bool release_reserve(const std::filesystem::path& state_dir);
  // The daemon loop's phases (run): recover (each model's state checked, interrupted installs
  // named; returns the "model version, ..." summary), poll (check_once with its status lines;
  // false when it failed or failed a model), and the wait before the next poll (watching what
  // the runtime serves every watch_interval; ended early by `stop` or `poll_now`).
  Result<std::string> recover();
  bool poll();
  void wait_for_next_poll(std::chrono::milliseconds wait, unsigned failures,
                          const std::atomic<bool>& stop, std::atomic<bool>* poll_now);
  // Queues `e`, except a failure/refusal equal to the model's last error; records last error.
  void event(const Event& e);
  // The device-level metadata events ("metadata_error" / "metadata_ok", deduplicated).
  void metadata_event(const std::string& error);
  // Per-model part of reconcile(); adds the model's entry to `serving`.
  struct RuntimeView;
  Status reconcile_model(const ModelSubscription& sub, ServeCheck when, RuntimeView& rt,
                         ServingManifest& serving);
  Result<std::string> installed_version(const std::string& model);
  std::string last_error(const std::string& model);
  void set_last_error(const std::string& model, const std::string& error);
  // The block list changed: the next report() queues a heartbeat (it carries the list).
  void heartbeat_due();
  std::unique_ptr<http::Client> http_client();
  // The health gate for this poll (none when [health] enabled = false).
  std::optional<HealthGate> health_gate() const;
  // With `sub` (a poll's install, not an offline one): the switch gate below; with `model` (any
  // install of it): its own health gate (HealthGate::for_model) and hand-over (activate).
  InstallOptions install_options(const std::optional<HealthGate>& gate,
                                 const ModelSubscription* sub = nullptr,
                                 const ModelSubscription* model = nullptr);
  // The switch gate (InstallOptions::may_switch) of a poll's install of `sub` (see "Install
  // windows and update locks" above): "" when the install windows that apply allow now (or
  // install-now let this install through) and the update lock was taken (kept in update_lock_
  // until the install ends), else why the switch waits.
  std::string switch_gate(const ModelSubscription& sub);
  // The hand-over's activation of `sub` (InstallOptions::activate; reconcile's rollbacks): runs
  // sub.activate with MOTA_EVENT, MOTA_MODEL, MOTA_VERSION, MOTA_SLOT, MOTA_CURRENT,
  // MOTA_PREVIOUS_VERSION, MOTA_PREVIOUS_SLOT within [health] hook_timeout. Errc::verification
  // when it exits non-zero (`why`: permanent) or times out (transient).
  Status activate(const ModelSubscription& sub, const Activation& a, FailureClass* why);
  // The gate of the model being installed (HealthGate::for_model), kept for the install.
  std::optional<HealthGate> model_gate_;
  std::filesystem::path channel_file(const ModelSubscription& sub) const;
  // The channel file of the last successful poll, checked to name `sub`.
  Result<Channel> load_channel(const ModelSubscription& sub);

  Config config_;
  StateStore state_;
  protocol::DeviceIdentity identity_;
  std::map<std::string, std::string> enrollment_headers_;  // agent.toml enrollment_key
  // This device's labels (agent.toml's and its facts), gathered at the start of each model's
  // update: a targeted channel's choice (manifest/channel.hpp) depends on them.
  Labels labels_;
  Status refresh_labels();
  // The report session outlives each poll's Reporter (one handshake an hour, not one a poll).
  ReportSessionState report_sessions_;
  InstallOptions install_options_;
  // Held from a poll's switch until its install ends (switch_gate).
  std::optional<UpdateLock> update_lock_;
  // The install window of the channel file a poll installs from (a rollout's); empty: none.
  WindowSet rollout_window_;
  // When a deferred switch should be asked again (the window opens; a held lock is looked at
  // every kLockRecheck): run() polls then if that is sooner than its poll_interval.
  std::optional<std::chrono::steady_clock::time_point> recheck_at_;
  void recheck_in(std::chrono::seconds wait);
  const std::atomic<bool>* cancel_ = nullptr;  // set during run()
  http::Client* poll_http_ = nullptr;          // the client of the poll in progress, if any
  bool runtime_down_ = false;  // the last reconcile() could not reach the runtime (logged once)
  // Field health (Config::field_interval): the served models' counters as the last reconcile()
  // read them, and per model the load and run count the last heartbeat carried, so that a poll
  // queues a heartbeat for them only when they moved.
  std::vector<FieldSample> field_view_;
  std::map<std::string, std::pair<std::string, std::uint64_t>> field_sent_;
  bool field_sent_loaded_ = false;  // field_sent_ read from status/field
  // A committed model the runtime refused to load (with no fallback): not tried again before this
  // time, so a model too big for the device is not reloaded every watch_interval.
  std::map<std::string, std::chrono::steady_clock::time_point> load_retry_at_;
};

}  // namespace mota::agent
