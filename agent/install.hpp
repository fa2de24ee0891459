#pragma once
// The install state machine of one model version into the inactive A/B slot. The whole
// transition table, failure edges included, is kInstallSteps below:
//   download -> stage -> verify -> probe -> ready -> switch -> trial -> commit.
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
//   ready     probed and waiting for the switch gate (InstallOptions::may_switch: install
//             windows, update locks). A gate that says "not now" defers: the journal stays here
//             (InstallFailure::deferred, nothing counted, no retry) and the next poll asks again,
//             without downloading or probing again. When the gate lets it through in a later run
//             than the probe's, the slot is first re-verified from disk (days may have passed);
//             a slot that no longer verifies is judged as at verify;
//   switch    switch_to() is idempotent: `current` already pointing at the target is fine;
//   trial     the new model on trial in the live runtime. Found in the journal at start (the
//             agent died during the trial, e.g. a power cut): tried again, as a bootloader
//             boots a new slot again until its boot counter runs out; the loop guard (below)
//             is that counter;
//   commit    complete_install() is one transaction.
//
// Loop guard (crashes): an entry of a step that ended without an outcome (the agent died inside
// it) counts only where the new version can be the cause (InstallStepRow::crashes): a step entered
// more than InstallOptions::max_attempts times in a row that way aborts the install, switches
// back if it had switched, and blocks the version ("step S entered N times"). Power cuts during a
// download never count: the only part of the download step the version's bytes can crash is the
// unpack that runs alongside it, so an entry that finds the partial file no bigger than the
// previous entry left it (that entry died without progress) downloads WITHOUT unpacking at the
// same time; a crash the version causes in the unpacker then repeats in the stage step, which
// counts every entry. The commit (one transaction) never counts.
//
// Failure classes (errors, i.e. a step that ended with an outcome; agent/health.hpp for the
// health checks'):
//   local      nothing learnt about the version (network down, HTTP errors, disk full, I/O,
//              stopping): the journal is kept and the step resumes at the next poll, for ever;
//   transient  may pass on retry (the probe's latency budget missed or no verdict in time, the
//              runtime unavailable, the soak's p99 or error rate, a hook that timed out, a
//              download whose bytes do not match the signed length or sha256): counted per
//              version in agent.db (StateStore::count_failure); the next try waits for a
//              backoff (retry_backoff * 2^(n-1), at most a day) and resumes at the step's
//              InstallStepRow::retry_at; once failures exceed InstallOptions::max_retries the
//              version is blocked;
//   permanent  will not pass (a package that does not unpack to its signed tree, a probe or
//              canary with a wrong output, NaN/Inf, a load error, an engine crash, a failing
//              operator hook): blocked at once.
//   bad_delta  a delta plan's delta (or its base) is unusable at a step that reads the delta's
//              bytes: the install is aborted without blocking (the caller falls back to the full
//              package; InstallFailure::delta_unusable).
// Which class an error is, and what each class does at each step (resume, retry, block, abort),
// is read from the table (InstallStepRow: bytes, gate_judges, on_*); a row with rolls_back set
// puts `current` and the runtime back on the committed slot before any of these.
//
// The active slot is never written: SlotSet refuses to prepare it.
//
// Thread-safety: none; one agent process owns the state directory.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "agent/download.hpp"
#include "agent/health.hpp"
#include "agent/slots.hpp"
#include "agent/state.hpp"
#include "common/result.hpp"
#include "common/time.hpp"

namespace mota::agent {

// The install steps, in order. Their names (install_step_name) are the wire and storage form:
// agent.db's journal and retries rows, and the "step" of events, keep these strings.
enum class InstallStep : std::uint8_t {
  download,
  stage,
  verify,
  probe,
  ready,
  switch_slot,
  trial,
  commit
};

// How the loop guard counts an entry of a step that ended without an outcome (a crash).
enum class CrashCount : std::uint8_t {
  always,  // the new version may be the cause (unpacking it, probing, switching, trial)
  never,   // it cannot be the version's fault (one database transaction)
  // Not counted (a power cut during a download is not the version's fault), but an entry after
  // one that died without progress does not unpack while downloading (see "Loop guard").
  progress,
};

// What bytes that are not what was signed mean at a step (the failure class of an error saying
// so: Errc::verification, too_large, and, where the tree is written, parse and unsupported).
enum class BytesCheck : std::uint8_t {
  none,        // the step does not read the package: such an error is local
  downloaded,  // length and sha256 against the signed target: transient (a broken cache or
               // mirror may serve the right bytes later; blocked after max_retries)
  written,     // unpacked to the slot and checked against the signed tree: permanent
};

// The failure edges: what an error of a step does, by its FailureClass.
enum class OnFailure : std::uint8_t {
  resume,  // the journal is kept (rewound to the row's retry_at); the next poll resumes, forever
  retry,   // counted per version in agent.db; the next try waits for a backoff and resumes at
           // retry_at; past InstallOptions::max_retries: as block
  block,   // the install is aborted, its slot emptied and the version blocked
  abort,   // the install is aborted and its slot emptied WITHOUT blocking (an unusable delta:
           // the caller may install the full package at once)
};

// One row of the transition table: a step, its wire name, the step after it (none after the
// last), how crashes in it count, where a retry resumes, whether a failure first rolls back
// (puts `current` and the runtime back on the committed slot: the step may have switched), how
// the step's errors are classified, and the policy for each failure class.
struct InstallStepRow {
  InstallStep step;
  std::string_view name;
  std::optional<InstallStep> next;
  CrashCount crashes;
  InstallStep retry_at;
  bool rolls_back;
  BytesCheck bytes;
  bool gate_judges;  // the health gate classifies the step's failures (agent/health.hpp)
  // bad_delta arises only where the step reads the package (bytes != none).
  OnFailure on_local, on_transient, on_permanent, on_bad_delta;

  constexpr OnFailure on(FailureClass c) const {
    switch (c) {
      case FailureClass::local:
        return on_local;
      case FailureClass::transient:
        return on_transient;
      case FailureClass::permanent:
        return on_permanent;
      case FailureClass::bad_delta:
        return on_bad_delta;
    }
    return on_permanent;
  }
};

namespace install_table {
using enum InstallStep;
using enum CrashCount;
using enum BytesCheck;
using enum OnFailure;
inline constexpr std::optional<InstallStep> kLast = std::nullopt;
// clang-format off
inline constexpr InstallStepRow kRows[] = {
  // step        name        next         crashes   retry_at     rolls  bytes       gate
  //   on: local  transient  permanent  bad_delta
  {download,    "download", stage,       progress, download,    false, downloaded, false,
       resume,    retry,     block,     abort},
  {stage,       "stage",    verify,      always,   stage,       false, written,    false,
       resume,    retry,     block,     abort},
  {verify,      "verify",   probe,       always,   verify,      false, written,    false,
       resume,    retry,     block,     abort},
  {probe,       "probe",    ready,       always,   probe,       false, none,       true,
       resume,    retry,     block,     block},
  // Waiting cannot crash; a deferral is local (resumed here at the next poll). Re-verifying the
  // slot after a later run's gate reads what was written: judged as at verify.
  {ready,       "ready",    switch_slot, never,    ready,       false, written,    false,
       resume,    retry,     block,     abort},
  {switch_slot, "switch",   trial,       always,   switch_slot, true,  none,       false,
       resume,    retry,     block,     block},
  // A trial that may pass on retry starts again from the slot on disk (verify, probe, switch).
  {trial,       "trial",    commit,      always,   verify,      true,  none,       true,
       resume,    retry,     block,     block},
  {commit,      "commit",   kLast,       never,    commit,      false, none,       false,
       resume,    retry,     block,     block},
};
// clang-format on
}  // namespace install_table
inline constexpr const auto& kInstallSteps = install_table::kRows;

inline constexpr InstallStep kAllInstallSteps[] = {
    InstallStep::download, InstallStep::stage,       InstallStep::verify, InstallStep::probe,
    InstallStep::ready,    InstallStep::switch_slot, InstallStep::trial,  InstallStep::commit};
// The row of `step` in `table`, which must have one (kInstallSteps has a row for every step:
// tests/agent/install_steps_test.cpp walks it; run_install checks a table given in its options).
const InstallStepRow& install_row(InstallStep step,
                                  std::span<const InstallStepRow> table = kInstallSteps);
// The wire name of `step`.
std::string_view install_step_name(InstallStep step);
// The step named `name`; nullopt for a name this build does not know (a journal from another).
std::optional<InstallStep> parse_install_step(std::string_view name);
// Whether `step` is a name of kInstallSteps.
bool known_install_step(std::string_view step);
// The row of the step named `step`; nullptr when unknown.
const InstallStepRow* install_step(std::string_view step);

// The class of a failure at `row` (see "Failure classes") as the table says: the health gate's
// verdict (`gate`) at the steps it judges; else by the row's BytesCheck, where `unpack_failed`
// (the download was good, unpacking it alongside was not) makes the download a written step,
// and an error of a delta plan's bytes or base (`is_delta`) is bad_delta.
FailureClass classify_failure(const InstallStepRow& row, const Error& error, bool unpack_failed,
                              bool is_delta = false, FailureClass gate = FailureClass::local,
                              std::span<const InstallStepRow> table = kInstallSteps);
// The same for a step by name, outside the gate (tests and diagnostics); local when unknown.
FailureClass classify_failure(std::string_view step, const Error& error, bool unpack_failed);

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
  // Non-empty: `package` is a package delta (delta/package/package_delta.hpp) to apply on top of
  // this model tree (the active slot, which the caller verified against the delta's base) instead
  // of a full package. The slot is then written by delta::apply_package, which checks the base,
  // every region it copies, and every written file; the verify step checks the signed tree digest
  // as for a full package, so the slot is byte-identical to a full install or nothing is switched.
  std::filesystem::path delta_base;
  bool delete_package = false;
  // The download step: makes `package` complete and verified, calling `progress` as bytes land
  // in it (the DownloadProgress contract of agent/download.hpp); returns the bytes fetched.
  // Empty: the package is already local.
  std::function<Result<std::uint64_t>(const DownloadProgress& progress)> fetch;
};

// A hand-over's activation (InstallOptions::activate): what `current` points at now, and what
// it pointed at before.
struct Activation {
  std::string_view event;  // "activate" (after the switch) or "rollback" (after switching back)
  Slot slot = Slot::a;
  std::string version;
  std::optional<Slot> previous;  // none: nothing was served before (a first install)
  std::string previous_version;
};

struct InstallOptions {
  int max_attempts = 3;  // loop guard per step
  // Transient failures of a version retried before it is blocked ([health] max_retries), and the
  // first backoff before a retry ([health] retry_backoff; doubled after each failure, at most a
  // day).
  int max_retries = 3;
  std::chrono::seconds retry_backoff{600};
  // The probe and trial steps; null: both pass (no runtime on this device).
  const HealthGate* health = nullptr;
  // The transition table. Only tests give another (a modified copy of kInstallSteps, to show
  // that a decision comes from it); it must have a row for every InstallStep.
  std::span<const InstallStepRow> steps = kInstallSteps;
  // The switch gate, asked at the ready step: "" lets the switch happen now; anything else
  // defers it with that reason (agent/agent.hpp: install windows, the update lock). May be empty
  // (always now). It may take a lock that must outlive the install: the caller holds it.
  std::function<std::string()> may_switch;
  // The hand-over (agent/config.hpp ModelSubscription::activate): called at the start of the
  // trial step, right after the switch ("activate"; its failure fails the trial, classed in
  // `why`: rolled back), and after a rollback switched `current` back ("rollback"; a failure is
  // logged). May be empty (mota-runtime serves the model).
  std::function<Status(const Activation&, FailureClass* why)> activate;
  // Test hook: called after a step is persisted and before it acts. May be empty.
  std::function<void(std::string_view step)> before_step;
};

// Why run_install failed, for the caller's report and its choice of what to try next.
struct InstallFailure {
  std::optional<InstallStep> step;  // the install step that failed (none before the journal)
  std::string install_id;           // of the journal row (kept, or aborted by this failure)
  FailureClass failure_class = FailureClass::local;
  bool blocked = false;  // the version is on the block list now
  // The switch gate said "not now": staged and probed, the journal at ready; nothing counted. Not
  // a failure of the version. `deferred_why` is the gate's reason as it gave it.
  bool deferred = false;
  std::string deferred_why;
  // Transient failures: the count (this one included) and when the next try may start.
  int failures = 0;
  TimePoint retry_at{};
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
// to_version is abandoned first (no blocklisting: the channel moved on). Errors, as the table
// and the failure classes above say:
//  - local: the step's error, with the journal kept (and its last_error set) so the next call
//    resumes;
//  - transient: the step's error with " (failure N of M that may pass on retry; next try after
//    T)" appended, the journal kept at the step's retry_at; past max_retries: "...; version
//    blocked" and the install aborted;
//  - permanent: the install aborted and the version blocked; a package that does not unpack to
//    its signed tree leaves no tree behind. For a delta plan, a bad delta aborts without
//    blocking (failure->delta_unusable): the full package may still be good;
//  - a step over the loop guard: aborted and blocked, "install of X: step S entered N times".
//  - Errc::rollback for a failure of a switched step (trial): `current` was switched back to the
//    previous slot (or removed on a first install) and the runtime asked to serve it again.
// `current` is only ever changed by the switch step and by such a rollback.
// `failure`, when given, is filled in on error.
Result<InstallOutcome> run_install(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                                   const InstallOptions& options = {},
                                   InstallFailure* failure = nullptr);

}  // namespace mota::agent
