#include "agent/install.hpp"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <random>
#include <system_error>
#include <thread>

#include "agent/growing_file.hpp"
#include "agent/health.hpp"
#include "common/log.hpp"
#include "common/notify.hpp"
#include "common/time.hpp"
#include "delta/package/package_delta.hpp"
#include "storage/package.hpp"

namespace mota::agent {

namespace {

std::string new_install_id() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

// Marks the target slot invalid and empties it (the install order: invalid first, then write).
Status prepare_slot(StateStore& state, const SlotSet& slots, const InstallPlan& plan, Slot slot) {
  MOTA_TRY(slots.prepare(slot));
  SlotState s;
  s.model = plan.model;
  s.slot = slot;
  s.version = plan.to_version;
  s.tree_digest = plan.tree_digest;
  s.status = SlotStatus::writing;
  return state.put_slot(s);
}

// Writes the slot at `dest` from the download's stream of plan.package: unpacks a full package,
// or applies a delta on top of plan.delta_base. The download checks every byte against the
// signed sha256 before the tree is used, so hashing each file of a full package again while
// writing it would only repeat that check; a delta's output is always hashed (its base is local).
Result<storage::UnpackResult> write_streamed(const InstallPlan& plan, const storage::ReadFn& in,
                                             const std::filesystem::path& dest) {
  if (!plan.delta_base.empty()) return delta::apply_package(plan.delta_base, in, dest);
  storage::UnpackLimits limits;
  limits.check_file_hashes = false;
  return storage::unpack(in, dest, limits);
}

// The download step without unpacking alongside: the stage step unpacks the complete file.
Status download_only(const InstallPlan& plan, InstallOutcome& out) {
  auto got = [&]() -> Result<std::uint64_t> {
    try {
      return plan.fetch([](std::uint64_t, std::uint64_t) {});
    } catch (const std::exception& e) {
      return fail(Errc::internal, std::string("download: ") + e.what());
    }
  }();
  if (!got) return fail(std::move(got).error());
  out.bytes = *got;
  return {};
}

// The download step with a fetch function: downloads and, in a second thread, unpacks the bytes
// into the slot as they land in the partial file. `staged` is set when both succeeded. A failed
// download is the step's error (the unpack stops with it); a failed unpack of a good download is
// the stage's error, except a restarted download, which leaves the unpack to the stage step.
Status download_and_stage(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                          InstallOutcome& out, std::optional<storage::UnpackResult>& staged,
                          bool& unpack_failed) {
  MOTA_TRY(prepare_slot(state, slots, plan, out.slot));
  GrowingFile growing(plan.package);
  std::optional<Result<storage::UnpackResult>> unpacked;
  std::thread unpacker(
      [&] { unpacked.emplace(write_streamed(plan, growing.reader(), slots.path(out.slot))); });
  auto got = [&]() -> Result<std::uint64_t> {
    try {
      return plan.fetch([&](std::uint64_t done, std::uint64_t) { growing.advance(done); });
    } catch (const std::exception& e) {
      return fail(Errc::internal, std::string("download: ") + e.what());
    }
  }();
  growing.finish(got.has_value());
  unpacker.join();
  if (!got) return fail(std::move(got).error());
  out.bytes = *got;
  auto& r = *unpacked;
  if (r) {
    out.streamed = true;
    staged = std::move(*r);
    return {};
  }
  if (growing.restarted()) {
    log::info("the download restarted; unpacking the complete package instead",
              {{"MODEL", plan.model}, {"VERSION", plan.to_version}});
    return {};
  }
  unpack_failed = true;
  return fail(std::move(r).error().context(
      plan.delta_base.empty() ? "unpack while downloading" : "apply delta while downloading"));
}

// What roll_back() does with the journal once `current` and the runtime are back.
enum class AfterRollback { block, rewind };

// Undoes a switch: `current` back to the committed slot (the database's `active` is only moved by
// commit), the runtime back to it; then the journal is closed blocking the version (`block`), or
// rewound to `rewind_to` for another try (`rewind`).
Error roll_back(StateStore& state, const SlotSet& slots, const InstallPlan& plan, Slot target,
                const InstallOptions& options, const Error& why, AfterRollback after,
                std::string_view rewind_to = "") {
  const std::string ctx = "install " + plan.model + " " + plan.to_version;
  std::string back_to = "nothing (first install)";
  Status st;
  auto active = state.active(plan.model);
  if (!active) return std::move(active).error().context(ctx + ": roll back");
  if (*active && (*active)->slot != target) {
    const Slot old = (*active)->slot;
    st = slots.switch_to(old);
    back_to = (plan.from_version.empty() ? "slot " + slot_name(old) : plan.from_version) +
              " (slot " + slot_name(old) + ")";
    if (st && options.health) {
      if (auto r = options.health->restore(plan.model, slots.path(old)); !r) {
        log::warn(r.error().message(), {{"MODEL", plan.model}});
      }
    }
    if (st && options.activate) {
      const Activation back{"rollback", old, plan.from_version, target, plan.to_version};
      if (auto r = options.activate(back, nullptr); !r) {
        log::warn("rollback: " + r.error().message(), {{"MODEL", plan.model}});
      }
    }
  } else {
    st = slots.clear_current();
  }
  if (!st) return std::move(st).error().context(ctx + ": roll back after: " + why.message());
  Status closed = after == AfterRollback::block
                      ? state.abort_install(plan.model, why.message())
                      : state.rewind_install(plan.model, std::string(rewind_to), why.message());
  if (!closed) return std::move(closed).error().context(ctx + ": roll back");
  log::warn(
      "rolled back " + plan.model + " " + plan.to_version + " to " + back_to + ": " + why.message(),
      {{"MODEL", plan.model}, {"VERSION", plan.to_version}});
  return Error(Errc::rollback, ctx + ": rolled back to " + back_to + ": " + why.message());
}

// The backoff before try n + 1 after n transient failures: retry_backoff * 2^(n-1), at most a day.
std::chrono::seconds retry_delay(const InstallOptions& options, int failures) {
  constexpr std::chrono::seconds kMax{24 * 3600};
  if (options.retry_backoff.count() <= 0) return std::chrono::seconds(0);
  std::chrono::seconds d = options.retry_backoff;
  for (int i = 1; i < failures && d < kMax; ++i) d *= 2;
  return std::min(d, kMax);
}

std::uint64_t file_size_or_zero(const std::filesystem::path& p) {
  std::error_code ec;
  const auto n = std::filesystem::file_size(p, ec);
  return ec ? 0 : n;
}

// One run_install() call: the plan, where it stands, and what this run learnt.
struct Run {
  StateStore& state;
  const SlotSet& slots;
  const InstallPlan& plan;
  const InstallOptions& options;
  InstallFailure& failure;
  bool is_delta = false;
  std::string ctx;  // "install <model> <version>[ (delta from X)]"
  InstallOutcome out;
  // The result of unpacking in this run (download or stage step); empty after a restart.
  std::optional<storage::UnpackResult> staged;
  bool unpack_failed = false;                     // the download was good, unpacking it was not
  bool unpack_alongside = true;                   // the download step: unpack while downloading
  bool probed = false;                            // the probe step ran in this run
  FailureClass gate_class = FailureClass::local;  // the gate's verdict on a failed check

  const InstallStepRow& row(InstallStep step) const { return install_row(step, options.steps); }
};

// Leaves no unverified tree behind (the slot is not the one `current` names).
void empty_target(const Run& run) {
  if (auto cur = run.slots.current(); cur && *cur != run.out.slot) {
    (void)run.slots.prepare(run.out.slot);
  }
}

// The failure edges of the table: what a failed step does with the journal, the slot, `current`
// and the block list, as its row says for the failure's class ("Failure classes" in
// install.hpp). Returns the error to report.
Error judge(Run& run, const InstallStepRow& row, FailureClass cls, Error e) {
  StateStore& state = run.state;
  const InstallPlan& plan = run.plan;
  InstallFailure& failure = run.failure;
  failure.failure_class = cls;
  const std::string retry_at(run.row(row.retry_at).name);
  auto block = [&](Error why) -> Error {
    failure.blocked = true;
    if (row.rolls_back) {
      return roll_back(state, run.slots, plan, run.out.slot, run.options, why,
                       AfterRollback::block);
    }
    empty_target(run);
    if (auto a = state.abort_install(plan.model, why.message()); !a) {
      return std::move(a).error().context(run.ctx);
    }
    return why;
  };
  auto again = [&](Error why) -> Error {
    if (row.rolls_back) {
      return roll_back(state, run.slots, plan, run.out.slot, run.options, why,
                       AfterRollback::rewind, retry_at);
    }
    if (auto r = state.rewind_install(plan.model, retry_at, why.message()); !r) {
      log::warn(r.error().message(), {{"MODEL", plan.model}});
    }
    return why;
  };
  switch (row.on(cls)) {
    case OnFailure::block:
      return block(std::move(e));
    case OnFailure::resume:
      return again(std::move(e));
    case OnFailure::abort: {
      // The full package may be fine, so the version is not blocked; the unusable delta goes.
      empty_target(run);
      if (auto a = state.abort_install(plan.model, ""); !a) {
        return std::move(a).error().context(run.ctx);
      }
      std::error_code ec;
      std::filesystem::remove(plan.package, ec);
      failure.delta_unusable = true;
      return e;
    }
    case OnFailure::retry:
      break;
  }
  auto counted =
      state.count_failure(plan.model, plan.to_version, std::string(row.name), e.message(),
                          [&](int n) { return retry_delay(run.options, n); });
  if (!counted) return std::move(counted).error().context(run.ctx + ": after: " + e.message());
  failure.failures = counted->failures;
  failure.retry_at = counted->next_at;
  const std::string n = std::to_string(counted->failures);
  const std::string max = std::to_string(run.options.max_retries);
  if (counted->failures > run.options.max_retries) {
    return block(Error(e.code(), e.message() + " (failed " + n +
                                     " times in a way that may pass on retry, more than " +
                                     "max_retries = " + max + ": version blocked)"));
  }
  return again(Error(e.code(), e.message() + " (failure " + n + " of at most " + max +
                                   " that may pass on retry; next try after " +
                                   format_time(counted->next_at) + ")"));
}

// The journal: resumes the plan's install where it stands, or begins one (the first entry of
// the first step is counted by begin_install). Returns the step to run next and whether it was
// entered already.
Result<std::pair<InstallStep, bool>> open_journal(Run& run) {
  const InstallPlan& plan = run.plan;
  auto rec = MOTA_TRY_CTX(run.state.install(plan.model), run.ctx);
  std::optional<InstallStep> at = rec ? parse_install_step(rec->step) : std::nullopt;
  if (rec && (rec->to_version != plan.to_version || !at)) {
    // The channel moved on (or the journal is from an unknown build): abandon without blocking.
    MOTA_TRY_CTX(run.state.abort_install(plan.model, ""), run.ctx);
    rec.reset();
  }
  if (rec) {
    run.out.slot = rec->target_slot;
    run.out.install_id = rec->install_id;
    return std::pair{*at, false};
  }
  run.out.slot = MOTA_TRY_CTX(run.slots.inactive(), run.ctx);
  InstallRecord r;
  r.install_id = new_install_id();
  run.out.install_id = r.install_id;
  r.model = plan.model;
  r.from_version = plan.from_version;
  r.to_version = plan.to_version;
  r.target_slot = run.out.slot;
  r.step = std::string(run.options.steps[0].name);
  // Where the download stands at its first entry, for the loop guard's progress check.
  r.bytes_downloaded = file_size_or_zero(plan.package);
  MOTA_TRY_CTX(run.state.begin_install(r), run.ctx);
  return std::pair{run.options.steps[0].step, true};
}

// Persists the entry of `row` (persist, then act) and applies the loop guard: an error when the
// step was entered too often without an outcome (judged permanent: aborted and blocked).
Status enter_step(Run& run, const InstallStepRow& row) {
  const InstallPlan& plan = run.plan;
  std::optional<std::uint64_t> progress;
  if (row.crashes == CrashCount::progress) progress = file_size_or_zero(plan.package);
  const int attempts =
      MOTA_TRY_CTX(run.state.enter_step(plan.model, std::string(row.name), progress), run.ctx);
  if (row.crashes == CrashCount::progress && attempts > 1) {
    // The previous entry died without progress: whatever killed it, the version's bytes are
    // not fed to the unpacker here; if they crash it, that repeats in stage, which counts.
    run.unpack_alongside = false;
    log::info(
        "the last download attempt ended without progress; unpacking after it instead of "
        "alongside",
        {{"MODEL", plan.model}, {"VERSION", plan.to_version}});
  }
  if (row.crashes == CrashCount::always && attempts > run.options.max_attempts) {
    const std::string why = "step " + std::string(row.name) + " entered " +
                            std::to_string(attempts) + " times (limit " +
                            std::to_string(run.options.max_attempts) +
                            "), the agent dying in it each time";
    return fail(
        judge(run, row, FailureClass::permanent,
              Error(Errc::internal, run.ctx + ": " + why + "; install aborted, version blocked")));
  }
  return {};
}

Status step_download(Run& run) {
  const InstallPlan& plan = run.plan;
  if (plan.fetch) {
    return run.unpack_alongside ? download_and_stage(run.state, run.slots, plan, run.out,
                                                     run.staged, run.unpack_failed)
                                : download_only(plan, run.out);
  }
  std::error_code ec;
  if (!std::filesystem::is_regular_file(plan.package, ec)) {
    return fail(Errc::not_found, "package " + plan.package.string() + " does not exist");
  }
  return {};
}

Status step_stage(Run& run) {
  const InstallPlan& plan = run.plan;
  std::error_code ec;
  if (!run.staged && plan.fetch && !std::filesystem::is_regular_file(plan.package, ec)) {
    // Resumed at stage with another file than the one downloaded before the restart (the
    // caller chose the full package instead of a delta, or the other way round).
    MOTA_TRY(
        download_and_stage(run.state, run.slots, plan, run.out, run.staged, run.unpack_failed));
  }
  if (run.staged) return {};
  MOTA_TRY(prepare_slot(run.state, run.slots, plan, run.out.slot));
  const auto dest = run.slots.path(run.out.slot);
  auto r = run.is_delta ? delta::apply_package_file(plan.delta_base, plan.package, dest)
                        : storage::unpack_file(plan.package, dest);
  if (!r) {
    return fail(std::move(r).error().context((run.is_delta ? "apply delta " : "unpack ") +
                                             plan.package.string()));
  }
  run.staged = std::move(*r);
  return {};
}

Status step_verify(Run& run) {
  const InstallPlan& plan = run.plan;
  const std::string slot = "slot " + slot_name(run.out.slot);
  // Unpacked by this run: every file was checked against model.json while written and
  // fsynced. After a restart nothing is taken on trust: the slot is read back.
  Result<storage::UnpackResult> r =
      run.staged ? std::move(*run.staged) : run.slots.verify(run.out.slot);
  run.staged.reset();
  if (!r) return fail(std::move(r).error().context("verify " + slot));
  if (!plan.tree_digest.empty() && r->tree_digest != plan.tree_digest) {
    return fail(Errc::verification, slot + ": tree digest " + r->tree_digest +
                                        " is not the signed " + plan.tree_digest);
  }
  if (r->manifest.name != plan.model || r->manifest.version != plan.to_version) {
    return fail(Errc::verification, slot + ": model.json says " + r->manifest.name + " " +
                                        r->manifest.version + ", expected " + plan.model + " " +
                                        plan.to_version);
  }
  return {};
}

Status step_ready(Run& run) {
  if (run.options.may_switch) {
    if (std::string why = run.options.may_switch(); !why.empty()) {
      run.failure.deferred = true;
      run.failure.deferred_why = why;
      // Local (the journal stays at ready): judge() rewinds to this step.
      return fail(Errc::deferred, why);
    }
  }
  // Probed in an earlier run: the slot has waited on disk since; read it back first.
  return run.probed ? Status{} : step_verify(run);
}

// The hand-over's activation after the switch: `current` names the new slot; before it, the
// committed one (none on a first install).
Status step_activate(Run& run) {
  Activation a{"activate", run.out.slot, run.plan.to_version, std::nullopt, run.plan.from_version};
  auto active = MOTA_TRY(run.state.active(run.plan.model));
  if (active && active->slot != run.out.slot) a.previous = active->slot;
  run.gate_class = FailureClass::permanent;
  return run.options.activate(a, &run.gate_class);
}

Status step_commit(Run& run) {
  MOTA_TRY(run.state.complete_install(run.plan.model));
  if (run.plan.delete_package) {
    std::error_code ec;
    std::filesystem::remove(run.plan.package, ec);  // best effort: only disk space is at stake
  }
  return {};
}

// Runs one step (the table's `step` column names what it does).
Status run_step(Run& run, InstallStep step) {
  const HealthGate* gate = run.options.health;
  const auto slot = run.slots.path(run.out.slot);
  run.gate_class = FailureClass::local;
  switch (step) {
    case InstallStep::download:
      return step_download(run);
    case InstallStep::stage:
      return step_stage(run);
    case InstallStep::verify:
      return step_verify(run);
    case InstallStep::probe:
      run.probed = true;
      return gate ? gate->probe(run.plan.model, slot, &run.gate_class) : Status{};
    case InstallStep::ready:
      return step_ready(run);
    case InstallStep::switch_slot:
      return run.slots.switch_to(run.out.slot);
    case InstallStep::trial:
      // Also after a restart in the middle of a trial: tried again (the loop guard stops a
      // version that keeps taking the device down with it).
      if (run.options.activate) {
        MOTA_TRY(step_activate(run));
      }
      return gate ? gate->trial(run.plan.model, slot, &run.gate_class) : Status{};
    case InstallStep::commit:
      return step_commit(run);
  }
  return fail(Errc::internal, "unknown install step");
}

bool wrong_bytes(const InstallStepRow& row, Errc c) {
  switch (row.bytes) {
    case BytesCheck::none:
      return false;
    case BytesCheck::downloaded:
      return c == Errc::verification || c == Errc::too_large;
    case BytesCheck::written:
      return c == Errc::verification || c == Errc::parse || c == Errc::unsupported ||
             c == Errc::too_large;
  }
  return false;
}

}  // namespace

const InstallStepRow& install_row(InstallStep step, std::span<const InstallStepRow> table) {
  for (const auto& r : table) {
    if (r.step == step) return r;
  }
  return kInstallSteps[0];  // unreachable for a checked table (see install.hpp)
}

std::string_view install_step_name(InstallStep step) {
  return install_row(step).name;
}

std::optional<InstallStep> parse_install_step(std::string_view name) {
  if (const auto* r = install_step(name)) return r->step;
  return std::nullopt;
}

bool known_install_step(std::string_view step) {
  return install_step(step) != nullptr;
}

const InstallStepRow* install_step(std::string_view step) {
  for (const auto& s : kInstallSteps) {
    if (s.name == step) return &s;
  }
  return nullptr;
}

FailureClass classify_failure(const InstallStepRow& row, const Error& error, bool unpack_failed,
                              bool is_delta, FailureClass gate,
                              std::span<const InstallStepRow> table) {
  if (row.gate_judges) return gate;
  // Unpacking a good download alongside it is the stage's work, and judged as the stage.
  const InstallStepRow& as = unpack_failed && row.bytes == BytesCheck::downloaded
                                 ? install_row(InstallStep::stage, table)
                                 : row;
  if (as.bytes == BytesCheck::none) return FailureClass::local;
  const Errc c = error.code();
  // A delta whose bytes, or whose base, are not what it references: the full package may be
  // fine. (A delta is checked against every written code, downloaded or not.)
  if (is_delta &&
      (wrong_bytes(install_row(InstallStep::stage, table), c) || c == Errc::not_found)) {
    return FailureClass::bad_delta;
  }
  if (wrong_bytes(as, c)) {
    return as.bytes == BytesCheck::downloaded ? FailureClass::transient : FailureClass::permanent;
  }
  return FailureClass::local;  // network, HTTP, disk, I/O, stopping: not the version's fault
}

FailureClass classify_failure(std::string_view step, const Error& error, bool unpack_failed) {
  const auto* row = install_step(step);
  return row ? classify_failure(*row, error, unpack_failed) : FailureClass::local;
}

Result<InstallOutcome> run_install(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                                   const InstallOptions& options, InstallFailure* failure) {
  InstallFailure ignored;
  if (!failure) failure = &ignored;
  *failure = {};
  const bool is_delta = !plan.delta_base.empty();
  Run run{.state = state,
          .slots = slots,
          .plan = plan,
          .options = options,
          .failure = *failure,
          .is_delta = is_delta,
          .ctx = "install " + plan.model + " " + plan.to_version +
                 (is_delta ? " (delta from " + plan.from_version + ")" : ""),
          .out = {},
          .staged = {}};
  for (InstallStep s : kAllInstallSteps) {
    if (std::none_of(options.steps.begin(), options.steps.end(),
                     [&](const InstallStepRow& r) { return r.step == s; })) {
      return fail(Errc::internal, run.ctx + ": the install table has no row for a step");
    }
  }
  auto [step, entered] = MOTA_TRY(open_journal(run));
  failure->install_id = run.out.install_id;
  for (std::optional<InstallStep> at = step; at; at = run.row(*at).next) {
    const InstallStepRow& row = run.row(*at);
    failure->step = row.step;
    if (!entered) MOTA_TRY(enter_step(run, row));
    entered = false;
    if (options.before_step) options.before_step(row.name);
    notify::watchdog_tick();
    if (*at != InstallStep::download) {
      notify::status("installing " + plan.model + " " + plan.to_version + ": " +
                     std::string(row.name));
    }
    if (auto st = run_step(run, *at); !st) {
      Error e = std::move(st).error().context(run.ctx + ": " + std::string(row.name));
      const FailureClass cls =
          classify_failure(row, e, run.unpack_failed, run.is_delta, run.gate_class, options.steps);
      return fail(judge(run, row, cls, std::move(e)));
    }
  }
  return run.out;
}

}  // namespace mota::agent
