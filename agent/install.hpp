#pragma once
// The install state machine of one model version into the inactive A/B slot. The whole
// transition table is kInstallSteps below:
//   download -> stage -> verify -> probe -> switch -> trial -> commit.
//
// Each step is persisted in the install journal (StateStore::enter_step) BEFORE it acts, so after
// a crash or SIGKILL run_install() resumes from the journal:
//   download  resumes the partial file (agent/download.hpp keeps it). With a fetch function the
//             inactive slot is prepared and the package unpacked (or the delta applied) into it
//             WHILE it downloads (one pass, agent/growing_file.hpp); the stage step then has
//             nothing left to do. If that pass fails (the server restarted the body, or the
//             process died), stage unpacks the complete file as usual;
//   stage     prepares the inactive slot afresh and unpacks again, unless this same run already
//             staged it while downloading;
//   verify    after a stage in this same run: checks the unpack's result against the signed tree
//             digest (the stage step checked every file's size and sha256 against model.json
//             while writing it; a one-pass download+unpack checked sizes, and every byte through
//             the signed package sha256, which covers model.json and so the tree);
//             after a restart: re-verifies the whole slot from disk;
//   probe     the health probe of the staged slot (agent/health.hpp), before anything switches;
//   switch    switch_to() is idempotent: `current` already pointing at the target is fine;
//   trial     the new model on trial in the live runtime. Found in the journal at start (the
//             agent died during the trial, e.g. a power cut): counts as failed, and is rolled
//             back at once, as bootloaders do with boot counters;
//   commit    complete_install() is one transaction.
// Loop guard: a step entered more than InstallOptions::max_attempts times in a row without an
// outcome (the agent died inside it each time) aborts the install and blocklists the version. A
// step that fails with an error is not a crash: it is retried at the next poll, for ever (a
// network outage or a full disk must not block a good version). The active slot is never written:
// SlotSet refuses to prepare it.
//
// Thread-safety: none; one agent process owns the state directory.

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>

#include "agent/download.hpp"
#include "agent/slots.hpp"
#include "agent/state.hpp"
#include "common/result.hpp"

namespace mota::agent {

// One row of the transition table: a step and the step after it ("" after the last).
struct InstallStep {
  std::string_view name;
  std::string_view next;
};
inline constexpr InstallStep kInstallSteps[] = {
    {"download", "stage"}, {"stage", "verify"}, {"verify", "probe"}, {"probe", "switch"},
    {"switch", "trial"},   {"trial", "commit"}, {"commit", ""},
};
// Whether `step` is a name of kInstallSteps.
bool known_install_step(std::string_view step);

struct InstallPlan {
  std::string model;
  std::string from_version;  // "" for a first install
  std::string to_version;
  // The signed tree digest (target custom "tree_digest") the unpacked slot must have. Empty (a
  // local install without target metadata): the tree only has to verify against its model.json.
  std::string tree_digest;
  // Where the verified package is (after `fetch`). Deleted after a successful commit when
  // delete_package is set.
  std::filesystem::path package;
  // Non-empty: `package` is a package delta (delta/delta.hpp) to apply on top of this model tree
  // (the active slot, which the caller verified against the delta's base) instead of a full
  // package. The slot is then written by delta::apply_package, which checks the base, every
  // region it copies, and every written file; the verify step checks the signed tree digest as
  // for a full package, so the slot is byte-identical to a full install or nothing is switched.
  std::filesystem::path delta_base;
  bool delete_package = false;
  // The download step: makes `package` complete and verified, calling `progress` as bytes land
  // in it (the DownloadProgress contract of agent/download.hpp); returns the bytes fetched.
  // Empty: the package is already local.
  std::function<Result<std::uint64_t>(const DownloadProgress& progress)> fetch;
};

class HealthGate;

struct InstallOptions {
  int max_attempts = 3;  // loop guard per step
  // The probe and trial steps; null: both pass (no runtime on this device).
  const HealthGate* health = nullptr;
  // Test hook: called after a step is persisted and before it acts. May be empty.
  std::function<void(std::string_view step)> before_step;
};

// Why run_install failed, for the caller's report and its choice of what to try next.
struct InstallFailure {
  std::string step;        // the install step that failed ("" before the journal existed)
  std::string install_id;  // of the journal row (kept, or aborted by this failure)
  // A delta plan failed because of the delta itself (corrupt, truncated, made for another base,
  // or a base file that does not match what the delta references): the install was aborted
  // WITHOUT blocklisting the version, and the partial delta was deleted, so the caller may fetch
  // the full package at once.
  bool delta_unusable = false;
};

struct InstallOutcome {
  std::string install_id;  // of the journal row
  Slot slot = Slot::a;
  std::uint64_t bytes = 0;  // downloaded in this run
  bool streamed = false;    // unpacked while downloading (one pass)
};

// Runs (or resumes) the install of plan.to_version for plan.model. A journal row for another
// to_version is abandoned first (no blocklisting: the channel moved on). Errors:
//  - the step's error, with the journal kept (and its last_error set) so the next call resumes;
//  - Errc::verification/parse/unsupported/too_large at stage/verify or while unpacking during
//    the download (the signed package does not unpack to the signed tree): the install is
//    aborted and the version blocklisted at once. For a delta plan the same errors abort the
//    install without blocklisting (failure->delta_unusable): the full package may still be good;
//  - a step over the loop guard: aborted and blocklisted, "install of X: step S entered N times".
//  - Errc::verification at probe: the model fails its health probe; aborted and blocklisted,
//    nothing was switched.
//  - Errc::rollback at trial: `current` was switched back to the previous slot (or removed on a
//    first install), the runtime asked to serve it again, the install aborted; the version is
//    blocklisted unless the failure was not the model's (runtime unreachable, agent stopping).
// `current` is only ever changed by the switch step.
// `failure`, when given, is filled in on error.
Result<InstallOutcome> run_install(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                                   const InstallOptions& options = {},
                                   InstallFailure* failure = nullptr);

}  // namespace mota::agent
