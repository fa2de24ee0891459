// `mota release add|list|deltas`: publishing models and listing what is published
// (manager/release/release.hpp).
#include "manager/release/release.hpp"

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "manager/cli/commands.hpp"

namespace mota::manager {
namespace {

// A one-line progress indicator, only when a person is watching.
storage::Progress make_progress() {
  if (!::isatty(STDOUT_FILENO)) return {};
  return [last = -1](std::uint64_t done, std::uint64_t total) mutable {
    const int pct = total ? int(done * 100 / total) : 100;
    if (pct == last) return;
    last = pct;
    std::printf("\rpacking %3d%% (%s of %s)", pct, human_size(done).c_str(),
                human_size(total).c_str());
    if (done >= total) std::printf("\n");
    std::fflush(stdout);
  };
}

Json release_json(const Release& r) {
  return Json{{"name", r.name},          {"version", r.version}, {"target", r.target_path},
              {"length", r.length},      {"sha256", r.sha256},   {"tree_digest", r.tree_digest},
              {"framework", r.framework}};
}

Json delta_json(const DeltaTarget& d) {
  return Json{{"name", d.name},
              {"from", d.from},
              {"to", d.to},
              {"target", d.target_path},
              {"length", d.length},
              {"sha256", d.sha256},
              {"from_tree_digest", d.from_tree_digest},
              {"tree_digest", d.tree_digest},
              {"full_target", d.full_target},
              {"full_length", d.full_length},
              {"full_sha256", d.full_sha256}};
}

Json delta_outcome_json(const DeltaOutcome& d) {
  Json j{{"from", d.from}, {"published", d.published}, {"size", d.size}, {"ratio", d.ratio}};
  if (d.published) j["target"] = delta_json(d.target);
  if (!d.reason.empty()) j["reason"] = d.reason;
  return j;
}

struct ReleaseFlags {
  std::string model_dir, version, name;
  int release_deltas = -1;
  bool add_json = false, no_load_check = false;
  std::string health_input, runtime_path;
  std::optional<double> health_tolerance, health_latency_ms, health_soak_s;
  bool list_json = false;
  std::string deltas_name;
  bool deltas_json = false;
};

}  // namespace

void add_release_commands(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto f = std::make_shared<ReleaseFlags>();
  auto* release = app.add_subcommand("release", "model releases and their deltas");
  release->require_subcommand(1);
  auto* radd = release->add_subcommand("add", "pack a model directory and publish it");
  radd->add_option("MODEL_DIR", f->model_dir, "directory with model.json")->required();
  radd->add_option("--version", f->version, "semantic version of this release")->required();
  radd->add_option("--name", f->name, "model name (default: model.json's name)");
  radd->add_option("--deltas", f->release_deltas,
                   "build deltas from up to N lower released versions (default: mota.toml "
                   "delta_versions; 0: none)")
      ->check(CLI::Range(0, 100));
  radd->add_option("--health-input", f->health_input,
                   "raw input tensors: run the model once with mota-runtime and record them and "
                   "the output as the package's health check");
  radd->add_flag("--no-load-check", f->no_load_check,
                 "do not load and run the model with mota-runtime before publishing (the graph, "
                 "model.json and the backend's known limits are still checked)");
  radd->add_option("--runtime", f->runtime_path,
                   "mota-runtime binary for the load check and --health-input (default: beside "
                   "mota, then $PATH)");
  radd->add_option("--health-tolerance", f->health_tolerance,
                   "max absolute difference per output element (default 1e-3, or model.json's)");
  radd->add_option("--health-latency-budget-ms", f->health_latency_ms,
                   "health latency budget in ms (default: model.json's, else 1000)");
  radd->add_option("--health-soak-s", f->health_soak_s,
                   "seconds the agent watches the new model after the switch (default: "
                   "model.json's, else 0)");
  radd->add_flag("--json", f->add_json, "machine-readable output");
  add_repo_option(radd, repo_flag);
  radd->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      if (f->health_input.empty() &&
          (f->health_tolerance || f->health_latency_ms || f->health_soak_s)) {
        return fail(Errc::invalid_argument, "--health-* options need --health-input FILE");
      }
      if (f->no_load_check && f->health_input.empty() && !f->runtime_path.empty()) {
        return fail(Errc::invalid_argument,
                    "--runtime has nothing to run with --no-load-check and no --health-input");
      }
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      ReleaseOptions opts;
      opts.name = f->name;
      if (f->release_deltas >= 0) opts.deltas = static_cast<unsigned>(f->release_deltas);
      if (!f->add_json) opts.progress = make_progress();
      opts.checks.load = !f->no_load_check;
      opts.checks.runtime = f->runtime_path;
      if (!f->health_input.empty()) {
        HealthRecording h;
        h.input = f->health_input;
        h.runtime = f->runtime_path;
        h.tolerance = f->health_tolerance;
        h.latency_budget_ms = f->health_latency_ms;
        h.soak_s = f->health_soak_s;
        opts.health = h;
      }
      const ReleaseResult res =
          MOTA_TRY_CTX(repo.add_release(f->model_dir, f->version, opts), "release add");
      const Release& r = res.release;
      if (f->add_json) {
        Json out = release_json(r);
        Json deltas = Json::array();
        for (const auto& d : res.deltas) deltas.push_back(delta_outcome_json(d));
        out["deltas"] = deltas;
        out["health_recorded"] = !f->health_input.empty();
        out["checks"] = res.checks.to_json();
        std::printf("%s\n", out.dump(2).c_str());
        return {};
      }
      std::printf("published %s %s: %s (%s, sha256 %s)\n", r.name.c_str(), r.version.c_str(),
                  r.target_path.c_str(), human_size(r.length).c_str(), r.sha256.c_str());
      for (const auto& line : res.checks.lines()) std::printf("  %s\n", line.c_str());
      if (!f->health_input.empty()) {
        std::printf("  health check recorded: health/input.bin, health/expected.bin\n");
      }
      for (const auto& d : res.deltas) {
        if (d.published) {
          std::printf("  delta from %s: %s (%s, %.1f%% of the package)\n", d.from.c_str(),
                      d.target.target_path.c_str(), human_size(d.size).c_str(), 100.0 * d.ratio);
        } else if (d.size > 0) {
          std::printf("  delta from %s: skipped, %s is %.1f%% of the package (limit %.1f%%)\n",
                      d.from.c_str(), human_size(d.size).c_str(), 100.0 * d.ratio,
                      100.0 * repo.settings().delta_max_ratio);
        } else {
          std::printf("  delta from %s: skipped (warning): %s\n", d.from.c_str(), d.reason.c_str());
        }
      }
      return {};
    };
  });
  auto* rlist = release->add_subcommand("list", "list published releases");
  rlist->add_flag("--json", f->list_json, "machine-readable output");
  add_repo_option(rlist, repo_flag);
  rlist->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto releases = MOTA_TRY(repo.list_releases());
      if (f->list_json) {
        Json arr = Json::array();
        for (const auto& r : releases) arr.push_back(release_json(r));
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (releases.empty()) {
        std::printf("no releases\n");
        return {};
      }
      std::printf("%-24s %-12s %-10s %-10s %s\n", "NAME", "VERSION", "FRAMEWORK", "SIZE", "SHA256");
      for (const auto& r : releases) {
        std::printf("%-24s %-12s %-10s %-10s %s\n", r.name.c_str(), r.version.c_str(),
                    r.framework.c_str(), human_size(r.length).c_str(),
                    r.sha256.substr(0, 16).c_str());
      }
      return {};
    };
  });

  auto* rdeltas = release->add_subcommand("deltas", "list published package deltas");
  rdeltas->add_option("NAME", f->deltas_name, "only this model");
  rdeltas->add_flag("--json", f->deltas_json, "machine-readable output");
  add_repo_option(rdeltas, repo_flag);
  rdeltas->callback([&action, &repo_flag, f] {
    action = [&repo_flag, f]() -> Status {
      auto repo = MOTA_TRY(Repository::open(repo_dir(repo_flag)));
      const auto deltas = MOTA_TRY(repo.list_deltas(f->deltas_name));
      if (f->deltas_json) {
        Json arr = Json::array();
        for (const auto& d : deltas) arr.push_back(delta_json(d));
        std::printf("%s\n", arr.dump(2).c_str());
        return {};
      }
      if (deltas.empty()) {
        std::printf("no deltas\n");
        return {};
      }
      std::printf("%-24s %-12s %-12s %-10s %-7s %s\n", "NAME", "FROM", "TO", "SIZE", "RATIO",
                  "SHA256");
      for (const auto& d : deltas) {
        char ratio[16];
        std::snprintf(ratio, sizeof ratio, "%.1f%%",
                      d.full_length ? 100.0 * double(d.length) / double(d.full_length) : 0.0);
        std::printf("%-24s %-12s %-12s %-10s %-7s %s\n", d.name.c_str(), d.from.c_str(),
                    d.to.c_str(), human_size(d.length).c_str(), ratio,
                    d.sha256.substr(0, 16).c_str());
      }
      return {};
    };
  });
}

}  // namespace mota::manager
