#pragma once
// Guarded staged rollouts: publish a channel at increasing percentages, advance when the current
// step's devices are healthy, halt by itself when too many of them fail.
//
// A step's devices are the devices of the model (in the channel, or that never said their
// channel) whose rollout bucket (manifest/channel.hpp, with the published salt) is inside the
// step's percentage. Among them:
//   updated      report the rollout's version
//   failed       their last install attempt was the version and failed before the switch, and
//                the server received that failure after the rollout started (installed.
//                failed_version / failed_at, manager/fleet/fleet_db.hpp)
//   rolled back  rolled back from the version automatically (installed.rolled_back_from)
//   pending      none of these yet
// A targeted rollout (RolloutSpec::select) counts only the devices whose reported labels (the
// device's own: agent.toml and its facts, which is what the device decides by, from a static
// mirror too) match the selector; the channel file carries the selector (manifest/channel.hpp
// "targeted") and the others keep their version.
// Only admitted devices are counted (manager/fleet/fleet_db.hpp, Admission): a device nobody
// vouched for (pending, rejected) can neither advance nor halt a rollout, and targeted and the
// step's minimum are of admitted devices.
// A device that failed keeps counting until it installs something: the agent blocks the version
// after a failure, and its "ok" event (healthy again) only comes once it runs what the channel
// wants, e.g. the previous version re-published by a halt; neither changes the counts. Failures
// without a version (the channel file could not be fetched) and metadata errors never count.
// failure rate = (failed + rolled back) / max(updated + failed + rolled back, min(min_devices,
// targeted)): a single failure among few reports does not halt a big step, while a small fleet
// that all fails does.
//
// A channel that gives a version to a target only accepts, until a rollout to everyone is
// published with `mota channel set`, rollouts to that same target (a halt then gives the target's
// previous version back to the target alone).
// tick(): running rollout and rate > max_failure_rate -> halted: the channel is re-published at
// the previous version for everyone (for the target only, see above) (allow_downgrade, so devices
// that took the version go back; with no previous version the version stays at 0%). Else, when
// step_after has passed since the step began and at least min(min_devices, targeted) devices
// decided: the next percentage, or completed after the last. Every transition is recorded with its
// reason.
//
// Pacing (RolloutSpec::rate_per_min, AWS IoT Jobs' maximumPerMinute): a step's share does not
// jump to its percentage; it grows from the previous step's, at most once a minute, by at most
// `rate` more of the rollout's devices (those the server knows: admitted, of the model on the
// channel, matching the selector; their buckets are computed, so the published share, in basis
// points, "bp" in manifest/channel.hpp, stops just below the next device it must not reach yet).
// So in any 60 seconds at most `rate` devices are newly given the version: each then starts at
// its next poll. Devices unknown to the server (never reported) are not counted; a sample bucket
// (1/10000 of the devices) holding more than `rate` known devices is refused at the start and, if
// the fleet grew into it later, taken alone in its minute (the transition says so). The step's
// gate (step_after, min_devices) applies once its share has reached its percentage; a halt applies
// at any time.
// Schedule (RolloutSpec::start_at): a rollout that starts later is "scheduled": it publishes
// nothing until the first tick at or after start_at, which begins it as start_rollout would have
// (the previous version is the channel's then); one that can no longer begin (the channel gives
// the version to everyone meanwhile) is aborted with the reason.
//
// Field gates (docs/fleet.md, "Field health"): what mota-runtime counted on the devices running
// the version (manager/fleet/field_health.hpp), judged at every tick once the version ran
// min_inferences times (inferences and failed ones, summed over its devices):
//   max_error_bp                the version's failed inferences / runs above this -> halted;
//   max_latency_regression_pct  its p99 latency more than this percent above previous_version's
//                               on the same devices (those that reported both; needs
//                               min_inferences runs of each there) -> halted.
// With either gate set, a step also waits for min_inferences runs of the version before it
// advances (a rollout whose devices run nothing does not reach 100% unjudged).
//
// Publishing signs the channel with the repository's targets key (DIR/keys/targets.pem): the
// process that ticks (`mota serve` or a `mota rollout tick` timer) needs it; see docs/fleet.md.
// Concurrency: each operation runs in one IMMEDIATE transaction of the fleet database, so a
// server tick and a CLI command never act on the same rollout at once; the repository's own lock
// serialises publishing.

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "common/time.hpp"
#include "manager/fleet/field_health.hpp"
#include "manager/repo/repository.hpp"
#include "manifest/canonical_json.hpp"
#include "storage/sqlite.hpp"

namespace mota::manager {

struct RolloutSpec {
  std::string channel;
  std::string model;
  std::string version;
  std::vector<unsigned> percents{5, 25, 100};  // strictly increasing, 1..100, last = 100
  unsigned max_failure_bp = 500;               // basis points: 500 = 5%
  std::int64_t min_devices = 20;
  std::chrono::seconds step_after{3600};
  std::string select;         // label selector (common/labels.hpp); empty: every device
  unsigned rate_per_min = 0;  // 1..kMaxRatePerMin; 0: each step's share at once
  std::int64_t start_at = 0;  // Unix seconds; 0 or not after now: begin at once
  // When devices may switch to VERSION (common/window.hpp texts, their local time); empty: any
  // time. Carried by each channel file the rollout publishes (not by a halt's: going back is
  // not held).
  std::vector<std::string> install_window;
  std::optional<unsigned> max_error_bp;                // field error rate, basis points
  std::optional<unsigned> max_latency_regression_pct;  // p99 vs the previous version, percent
  std::int64_t min_inferences = 1000;
};

constexpr unsigned kMaxRatePerMin = 100000;
constexpr unsigned kMaxLatencyRegressionPct = 100000;

struct RolloutCounts {
  std::int64_t targeted = 0, updated = 0, failed = 0, rolled_back = 0, pending = 0;
  double failure_rate = 0;  // 0..1, see above
};

// What the field says of a rollout's version (all devices that reported it) and of it against
// previous_version on the devices that reported both.
struct RolloutField {
  FieldTotals version;
  FieldComparison same_devices;
};

struct RolloutTransition {
  std::int64_t at = 0;
  std::string state;
  int step = 0;
  unsigned percent = 0;
  std::string reason;
};

struct RolloutInfo {
  std::int64_t id = 0;
  std::string channel, model, version, previous_version;
  std::vector<unsigned> percents;
  int step = 0;
  unsigned max_failure_bp = 0;
  std::int64_t min_devices = 0;
  std::int64_t step_after = 0;
  std::string salt;
  std::string select;  // canonical selector text; empty: every device
  // The selector previous_version was given to (a rollout after an earlier one to the same
  // target); empty: every device ran it.
  std::string previous_select;
  std::string state;  // scheduled, running, paused, halted, aborted, completed
  std::int64_t started_at = 0, step_started_at = 0, updated_at = 0;
  unsigned rate_per_min = 0;  // 0: not paced
  unsigned share_bp = 0;      // the share published now, basis points (0 while scheduled)
  std::int64_t paced_at = 0;  // when the share last grew (paced rollouts)
  std::int64_t start_at = 0;  // when it began or begins
  std::vector<std::string> install_window;  // canonical texts; empty: any time
  std::optional<unsigned> max_error_bp;
  std::optional<unsigned> max_latency_regression_pct;
  std::int64_t min_inferences = 0;
  bool field_gated() const { return max_error_bp || max_latency_regression_pct; }
  RolloutCounts counts;  // for the current share
  RolloutField field;
  std::vector<RolloutTransition> transitions;
  unsigned percent() const { return percents.empty() ? 0 : percents[std::size_t(step)]; }
  bool active() const { return state == "running" || state == "paused" || state == "scheduled"; }
};

// "5,25,100" -> {5, 25, 100}. Errc::invalid_argument names the bad entry (messages start with the
// quoted text; callers name the flag).
Result<std::vector<unsigned>> parse_percents(const std::string& text);
// "10/min", "10/m", "600/h" -> devices per minute (1..kMaxRatePerMin; a rate per hour must be a
// whole number per minute). Errc::invalid_argument otherwise.
Result<unsigned> parse_rate(const std::string& text);
// "5%", "0.5%" -> basis points. Errc::invalid_argument for a bare number ("0.05" reads as 5% to
// some and as 0.05% to others, so the unit is required) and outside 0..100%.
Result<unsigned> parse_failure_rate(const std::string& text);
// "20%" -> 20 (0..kMaxLatencyRegressionPct; whole percent). Errc::invalid_argument otherwise.
Result<unsigned> parse_regression(const std::string& text);

// Publishes the first step (the first share of it when paced) and records the rollout; with
// start_at after now, records it as scheduled and publishes nothing. Errc::already_exists if a
// rollout of this channel and model is scheduled, running or paused, Errc::invalid_argument for a
// bad spec, a channel that already points at the version, or a rate finer than the sample (above);
// publishing errors (unreleased version, missing key) as is.
Result<RolloutInfo> start_rollout(storage::Database& db, Repository& repo, const RolloutSpec& spec,
                                  TimePoint now);

// The salt of a rollout's sample: derived from channel, model and version, so that a dry run
// shows the very devices each step will reach (the salt is public in the channel file anyway).
std::string rollout_salt(const std::string& channel, const std::string& model,
                         const std::string& version);

// What `mota rollout start --dry-run` shows: per step, the admitted devices of the model on the
// channel (matching the selector) that the step would reach, sorted. Publishes nothing.
struct RolloutPlanStep {
  unsigned percent = 0;
  std::vector<std::string> devices;
  std::int64_t pace_minutes = 0;  // paced: minutes to give the step's new devices the version
};
Result<std::vector<RolloutPlanStep>> plan_rollout(storage::Database& db, const RolloutSpec& spec);

// Evaluates the active rollout of channel/model (see above). Errc::not_found without one.
Result<RolloutInfo> tick_rollout(storage::Database& db, Repository& repo,
                                 const std::string& channel, const std::string& model,
                                 TimePoint now);
// Ticks every running rollout; returns those that changed state or step.
Result<std::vector<RolloutInfo>> tick_all_rollouts(storage::Database& db, Repository& repo,
                                                   TimePoint now);

// Operator actions on the active rollout (Errc::not_found without one; Errc::invalid_argument
// for pause of a paused or scheduled one, resume of a running one). abort re-publishes the
// previous version like a halt (a scheduled one published nothing: it is only marked aborted).
Result<RolloutInfo> pause_rollout(storage::Database& db, const std::string& channel,
                                  const std::string& model, TimePoint now);
Result<RolloutInfo> resume_rollout(storage::Database& db, const std::string& channel,
                                   const std::string& model, TimePoint now);
Result<RolloutInfo> abort_rollout(storage::Database& db, Repository& repo,
                                  const std::string& channel, const std::string& model,
                                  TimePoint now);

// The latest rollout of channel/model with its counts and transitions (std::nullopt if none).
Result<std::optional<RolloutInfo>> rollout_status(storage::Database& db, const std::string& channel,
                                                  const std::string& model);
// Every rollout, newest first, with the counts of its current step (`limit` > 0: at most that
// many).
Result<std::vector<RolloutInfo>> list_rollouts(storage::Database& db, std::int64_t limit = 0);
// Active (scheduled, running or paused) rollouts, with counts.
Result<std::vector<RolloutInfo>> active_rollouts(storage::Database& db);

Json to_json(const RolloutInfo& info);

}  // namespace mota::manager
