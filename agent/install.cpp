#include "agent/install.hpp"

#include <cstdio>
#include <random>
#include <system_error>

#include "storage/package.hpp"

namespace mota::agent {

namespace {

std::string_view next_step(std::string_view step) {
  for (const auto& s : kInstallSteps) {
    if (s.name == step) return s.next;
  }
  return "";
}

std::string new_install_id() {
  std::random_device rd;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%08x%08x", rd(), rd());
  return buf;
}

}  // namespace

bool known_install_step(std::string_view step) {
  for (const auto& s : kInstallSteps) {
    if (s.name == step) return true;
  }
  return false;
}

Result<InstallOutcome> run_install(StateStore& state, const SlotSet& slots, const InstallPlan& plan,
                                   const InstallOptions& options) {
  const std::string ctx = "install " + plan.model + " " + plan.to_version;
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
    MOTA_TRY_CTX(state.begin_install(r), ctx);
    step = r.step;
    // begin_install counted the first entry of the first step.
    if (options.before_step) options.before_step(step);
  } else {
    out.slot = rec->target_slot;
    out.install_id = rec->install_id;
    step = rec->step;
  }
  bool first = !rec;
  while (!step.empty()) {
    if (!first) {
      int attempts = MOTA_TRY_CTX(state.enter_step(plan.model, step), ctx);
      if (attempts > options.max_attempts) {
        std::string why = "step " + step + " entered " + std::to_string(attempts) +
                          " times (limit " + std::to_string(options.max_attempts) + ")";
        MOTA_TRY_CTX(state.abort_install(plan.model, why), ctx);
        return fail(Errc::internal, ctx + ": " + why + "; install aborted, version blocked");
      }
      if (options.before_step) options.before_step(step);
    }
    first = false;

    Status st;
    if (step == "download") {
      if (plan.fetch) {
        auto got = plan.fetch();
        if (got) {
          out.bytes = *got;
          (void)state.record_progress(plan.model, *got, false);
        } else {
          st = fail(std::move(got).error());
        }
      } else {
        std::error_code ec;
        if (!std::filesystem::is_regular_file(plan.package, ec)) {
          st = fail(Errc::not_found, "package " + plan.package.string() + " does not exist");
        }
      }
    } else if (step == "stage") {
      st = slots.prepare(out.slot);
      if (st) {
        SlotState s;
        s.model = plan.model;
        s.slot = out.slot;
        s.version = plan.to_version;
        s.tree_digest = plan.tree_digest;
        s.status = SlotStatus::writing;
        st = state.put_slot(s);
      }
      if (st) {
        auto r = storage::unpack_file(plan.package, slots.path(out.slot));
        if (!r) st = fail(std::move(r).error().context("unpack " + plan.package.string()));
      }
    } else if (step == "verify") {
      auto r = slots.verify(out.slot);
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
    } else if (step == "switch") {
      st = slots.switch_to(out.slot);
    } else if (step == "commit") {
      st = state.complete_install(plan.model);
      if (st && plan.delete_package) {
        std::error_code ec;
        std::filesystem::remove(plan.package, ec);  // best effort: only disk space is at stake
      }
    }
    if (!st) {
      Error e = std::move(st).error().context(ctx + ": " + step);
      if (e.code() == Errc::verification && (step == "stage" || step == "verify")) {
        // A signed package that does not unpack to its signed tree will never install.
        if (auto cur = slots.current(); cur && *cur != out.slot) {
          (void)slots.prepare(out.slot);  // leave no unverified tree behind
        }
        MOTA_TRY_CTX(state.abort_install(plan.model, e.message()), ctx);
        return fail(std::move(e));
      }
      (void)state.record_error(plan.model, e.message());
      return fail(std::move(e));
    }
    step = std::string(next_step(step));
  }
  return out;
}

}  // namespace mota::agent
