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

// The failure edges of the table: what a failed step does with the journal, the slot, `current`
// and the block list, by failure class ("Failure classes" in install.hpp). Returns the error to
// report.
Error judge(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
            const InstallOptions& options, const InstallStep& row, Slot target, FailureClass cls,
            Error e, InstallFailure& failure) {
  const std::string ctx = "install " + plan.model + " " + plan.to_version;
  failure.failure_class = cls;
  auto block = [&](Error why) -> Error {
    failure.blocked = true;
    if (row.switched) {
      return roll_back(state, slots, plan, target, options, why, AfterRollback::block);
    }
    // Leave no unverified tree behind.
    if (auto cur = slots.current(); cur && *cur != target) (void)slots.prepare(target);
    if (auto a = state.abort_install(plan.model, why.message()); !a) {
      return std::move(a).error().context(ctx);
    }
    return why;
  };
  auto again = [&](Error why) -> Error {
    if (row.switched) {
      return roll_back(state, slots, plan, target, options, why, AfterRollback::rewind,
                       row.retry_at);
    }
    if (auto r = state.rewind_install(plan.model, std::string(row.retry_at), why.message()); !r) {
      log::warn(r.error().message(), {{"MODEL", plan.model}});
    }
    return why;
  };
  switch (cls) {
    case FailureClass::permanent:
      return block(std::move(e));
    case FailureClass::local:
      return again(std::move(e));
    case FailureClass::transient:
      break;
  }
  auto counted = state.count_failure(plan.model, plan.to_version, std::string(row.name),
                                     e.message(), [&](int n) { return retry_delay(options, n); });
  if (!counted) return std::move(counted).error().context(ctx + ": after: " + e.message());
  failure.failures = counted->failures;
  failure.retry_at = counted->next_at;
  const std::string n = std::to_string(counted->failures);
  const std::string max = std::to_string(options.max_retries);
  if (counted->failures > options.max_retries) {
    return block(Error(e.code(), e.message() + " (failed " + n +
                                     " times in a way that may pass on retry, more than " +
                                     "max_retries = " + max + ": version blocked)"));
  }
  return again(Error(e.code(), e.message() + " (failure " + n + " of at most " + max +
                                   " that may pass on retry; next try after " +
                                   format_time(counted->next_at) + ")"));
}

}  // namespace

bool known_install_step(std::string_view step) {
  return install_step(step) != nullptr;
}

const InstallStep* install_step(std::string_view step) {
  for (const auto& s : kInstallSteps) {
    if (s.name == step) return &s;
  }
  return nullptr;
}

FailureClass classify_failure(std::string_view step, const Error& error, bool unpack_failed) {
  const Errc c = error.code();
  // The signed package does not unpack to the signed tree: it never will.
  const bool bad_package =
      c == Errc::verification || c == Errc::parse || c == Errc::unsupported || c == Errc::too_large;
  if (step == "stage" || step == "verify" || (step == "download" && unpack_failed)) {
    return bad_package ? FailureClass::permanent : FailureClass::local;
  }
  if (step == "download" && (c == Errc::verification || c == Errc::too_large)) {
    // Bytes that do not match the signed length or sha256: a broken cache or mirror on the way
    // may serve the right ones later; a repository that serves a wrong file for good gets the
    // version blocked after max_retries.
    return FailureClass::transient;
  }
  return FailureClass::local;  // network, HTTP, disk, I/O, stopping: not the version's fault
}

Result<InstallOutcome> run_install(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                                   const InstallOptions& options, InstallFailure* failure) {
  InstallFailure ignored;
  if (!failure) failure = &ignored;
  *failure = {};
  const bool is_delta = !plan.delta_base.empty();
  const std::string ctx = "install " + plan.model + " " + plan.to_version +
                          (is_delta ? " (delta from " + plan.from_version + ")" : "");
  auto rec = MOTA_TRY_CTX(state.install(plan.model), ctx);
  if (rec && (rec->to_version != plan.to_version || !known_install_step(rec->step))) {
    // The channel moved on (or the journal is from an unknown build): abandon without blocking.
    MOTA_TRY_CTX(state.abort_install(plan.model, ""), ctx);
    rec.reset();
  }
  InstallOutcome out;
  std::string step;
  if (!rec) {
    out.slot = MOTA_TRY_CTX(slots.inactive(), ctx);
    InstallRecord r;
    r.install_id = new_install_id();
    out.install_id = r.install_id;
    r.model = plan.model;
    r.from_version = plan.from_version;
    r.to_version = plan.to_version;
    r.target_slot = out.slot;
    r.step = std::string(kInstallSteps[0].name);
    // Where the download stands at its first entry, for the loop guard's progress check.
    r.bytes_downloaded = file_size_or_zero(plan.package);
    MOTA_TRY_CTX(state.begin_install(r), ctx);
    step = r.step;
    // begin_install counted the first entry of the first step.
    if (options.before_step) options.before_step(step);
  } else {
    out.slot = rec->target_slot;
    out.install_id = rec->install_id;
    step = rec->step;
  }
  failure->install_id = out.install_id;
  bool first = !rec;
  // The result of unpacking in this run (download or stage step); empty after a restart.
  std::optional<storage::UnpackResult> staged;
  bool unpack_failed = false;  // the download was good, unpacking it was not
  while (!step.empty()) {
    failure->step = step;
    const InstallStep& row = *install_step(step);
    bool unpack_alongside = true;  // the download step: unpack while downloading
    if (!first) {
      std::optional<std::uint64_t> progress;
      if (row.crashes == CrashCount::progress) progress = file_size_or_zero(plan.package);
      int attempts = MOTA_TRY_CTX(state.enter_step(plan.model, step, progress), ctx);
      if (row.crashes == CrashCount::progress && attempts > 1) {
        // The previous entry died without progress: whatever killed it, the version's bytes are
        // not fed to the unpacker here; if they crash it, that repeats in stage, which counts.
        unpack_alongside = false;
        log::info(
            "the last download attempt ended without progress; unpacking after it instead of "
            "alongside",
            {{"MODEL", plan.model}, {"VERSION", plan.to_version}});
      }
      if (row.crashes == CrashCount::always && attempts > options.max_attempts) {
        std::string why = "step " + step + " entered " + std::to_string(attempts) +
                          " times (limit " + std::to_string(options.max_attempts) +
                          "), the agent dying in it each time";
        return fail(judge(state, slots, plan, options, row, out.slot, FailureClass::permanent,
                          Error(Errc::internal, ctx + ": " + why +
                                                    "; install aborted, version "
                                                    "blocked"),
                          *failure));
      }
      if (options.before_step) options.before_step(step);
    }
    first = false;
    notify::watchdog_tick();
    if (step != "download")
      notify::status("installing " + plan.model + " " + plan.to_version + ": " + step);

    Status st;
    FailureClass health_class = FailureClass::local;  // the gate's verdict on a failed check
    if (step == "download") {
      if (plan.fetch) {
        st = unpack_alongside ? download_and_stage(state, slots, plan, out, staged, unpack_failed)
                              : download_only(plan, out);
      } else {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(plan.package, ec)) {
          st = fail(Errc::not_found, "package " + plan.package.string() + " does not exist");
        }
      }
    } else if (step == "stage") {
      std::error_code ec;
      if (!staged && plan.fetch && !std::filesystem::is_regular_file(plan.package, ec)) {
        // Resumed at stage with another file than the one downloaded before the restart (the
        // caller chose the full package instead of a delta, or the other way round).
        st = download_and_stage(state, slots, plan, out, staged, unpack_failed);
      }
      if (st && !staged) {
        st = prepare_slot(state, slots, plan, out.slot);
        if (st) {
          auto r = is_delta ? delta::apply_package_file(plan.delta_base, plan.package,
                                                        slots.path(out.slot))
                            : storage::unpack_file(plan.package, slots.path(out.slot));
          if (r) {
            staged = std::move(*r);
          } else {
            st = fail(std::move(r).error().context((is_delta ? "apply delta " : "unpack ") +
                                                   plan.package.string()));
          }
        }
      }
    } else if (step == "verify") {
      // Unpacked by this run: every file was checked against model.json while written and
      // fsynced. After a restart nothing is taken on trust: the slot is read back.
      Result<storage::UnpackResult> r = staged ? std::move(*staged) : slots.verify(out.slot);
      staged.reset();
      if (!r) {
        st = fail(std::move(r).error().context("verify slot " + slot_name(out.slot)));
      } else if (!plan.tree_digest.empty() && r->tree_digest != plan.tree_digest) {
        st =
            fail(Errc::verification, "slot " + slot_name(out.slot) + ": tree digest " +
                                         r->tree_digest + " is not the signed " + plan.tree_digest);
      } else if (r->manifest.name != plan.model || r->manifest.version != plan.to_version) {
        st = fail(Errc::verification, "slot " + slot_name(out.slot) + ": model.json says " +
                                          r->manifest.name + " " + r->manifest.version +
                                          ", expected " + plan.model + " " + plan.to_version);
      }
    } else if (step == "probe") {
      if (options.health) {
        st = options.health->probe(plan.model, slots.path(out.slot), &health_class);
      }
    } else if (step == "switch") {
      st = slots.switch_to(out.slot);
    } else if (step == "trial") {
      // Also after a restart in the middle of a trial: tried again (the loop guard above stops
      // a version that keeps taking the device down with it).
      if (options.health) {
        st = options.health->trial(plan.model, slots.path(out.slot), &health_class);
      }
    } else if (step == "commit") {
      st = state.complete_install(plan.model);
      if (st && plan.delete_package) {
        std::error_code ec;
        std::filesystem::remove(plan.package, ec);  // best effort: only disk space is at stake
      }
    }
    if (!st) {
      Error e = std::move(st).error().context(ctx + ": " + step);
      const bool bad_package = e.code() == Errc::verification || e.code() == Errc::parse ||
                               e.code() == Errc::unsupported || e.code() == Errc::too_large;
      const bool writing = step == "stage" || step == "verify" || unpack_failed;
      if (is_delta && (writing || step == "download") &&
          (bad_package || e.code() == Errc::not_found)) {
        // The delta (or the base it needs) is unusable: a download that does not match its
        // signed hash, a delta that does not apply, or a base that is not what it references.
        // The full package may be fine, so the version is not blocked.
        if (auto cur = slots.current(); cur && *cur != out.slot) (void)slots.prepare(out.slot);
        MOTA_TRY_CTX(state.abort_install(plan.model, ""), ctx);
        std::error_code ec;
        std::filesystem::remove(plan.package, ec);
        failure->delta_unusable = true;
        return fail(std::move(e));
      }
      const FailureClass cls = step == "probe" || step == "trial"
                                   ? health_class
                                   : classify_failure(step, e, unpack_failed);
      return fail(judge(state, slots, plan, options, row, out.slot, cls, std::move(e), *failure));
    }
    step = std::string(row.next);
  }
  return out;
}

}  // namespace mota::agent
