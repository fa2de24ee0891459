// `mota timestamp refresh` and `mota key rotate`: keeping the signed metadata fresh and replacing
// signing keys (manager/repo/repository.hpp).
#include <cstdio>
#include <string>

#include "manager/cli/commands.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {
namespace {

void print_refresh(const RefreshResult& r) {
  // Timestamp first: it is what devices fetch at every poll.
  for (const char* role : {"timestamp", "snapshot", "targets"}) {
    for (const auto& e : r.roles) {
      if (e.role != role) continue;
      const bool resigned = (e.role == "timestamp" && r.resigned_timestamp) ||
                            (e.role == "snapshot" && r.resigned_snapshot) ||
                            (e.role == "targets" && r.resigned_targets);
      std::printf(
          "%s version %llu: %s, expires %s\n", role, static_cast<unsigned long long>(e.version),
          resigned ? "re-signed" : (e.due ? "DUE" : "fresh"), format_time(e.expires).c_str());
    }
  }
  if (!r.changed()) std::printf("nothing was due: no file changed\n");
  for (const auto& w : r.warnings) std::fprintf(stderr, "mota: warning: %s\n", w.c_str());
}

struct MetadataFlags {
  bool refresh_force = false;
  std::string role;
};

}  // namespace

void add_metadata_commands(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto f = std::make_shared<MetadataFlags>();
  auto* timestamp = app.add_subcommand("timestamp", "timestamp metadata");
  timestamp->require_subcommand(1);
  auto* trefresh = timestamp->add_subcommand(
      "refresh",
      "re-sign timestamp, snapshot and targets when they expire within their refresh window "
      "(nothing when none does); run it from a timer");
  trefresh->add_flag("--force", f->refresh_force,
                     "re-sign the timestamp (version + 1) even when it is not due");
  add_repo_option(trefresh, repo_flag);
  trefresh->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const RefreshResult r = MOTA_TRY_CTX(repo.refresh(RefreshOptions{.force = f->refresh_force}),
                                           "timestamp refresh");
      print_refresh(r);
      if (!r.missing_keys.empty()) {
        std::string what;
        for (const auto& m : r.missing_keys) what += (what.empty() ? "" : "; ") + m;
        return fail(Errc::not_found,
                    "timestamp refresh: cannot re-sign what is due, no key here: " + what);
      }
      return {};
    };
  });

  auto* key = app.add_subcommand("key", "signing keys");
  key->require_subcommand(1);
  auto* krotate = key->add_subcommand("rotate", "replace a role's key (publishes a new root)");
  krotate->add_option("ROLE", f->role, "root, targets, snapshot or timestamp")
      ->required()
      ->check(CLI::IsMember({"root", "targets", "snapshot", "timestamp"}));
  add_repo_option(krotate, repo_flag);
  krotate->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const std::uint64_t v = MOTA_TRY_CTX(repo.rotate_key(f->role), "key rotate");
      std::printf("rotated the %s key; root version %llu\n", f->role.c_str(),
                  static_cast<unsigned long long>(v));
      return {};
    };
  });
}

}  // namespace mota::manager
