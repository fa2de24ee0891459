#pragma once
// Releases (`mota release add`): a model directory checked (manager/release/release_check.hpp),
// optionally run once to record its health files, packed, and published with package deltas
// from earlier versions, in one publish of the repository (manager/repo/repository.hpp).
// Repository::add_release, list_releases and list_deltas are this unit's (mota_manager_release);
// the types they take and return are here.
//
// Errors are values: nothing is published and no file is left behind when a release fails.
// Thread-safety: as Repository (one thread per object; the lock file serialises processes).

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"
#include "manager/release/release_check.hpp"
#include "manager/repo/repository.hpp"
#include "storage/package.hpp"

namespace mota::manager {

// What happened to one candidate delta of a release.
struct DeltaOutcome {
  std::string from;        // base version
  bool published = false;  // else skipped (the release is published without it)
  std::uint64_t size = 0;  // delta bytes; 0 when building failed before a delta existed
  double ratio = 0;        // size / full package length
  std::string reason;      // why skipped; empty when published
  DeltaTarget target;      // when published
};

// Optional health recording: run the model once on `input` with the bundled backend
// (`mota-runtime run`) and record health/input.bin, health/expected.bin and model.json "health".
struct HealthRecording {
  std::filesystem::path input;    // raw little-endian input tensors (runtime/probe.hpp)
  std::filesystem::path runtime;  // mota-runtime binary; empty: find_runtime_binary()
  // Unset: keep the source model.json's health value, else the HealthSpec default.
  std::optional<double> tolerance, latency_budget_ms, soak_s;
  std::chrono::seconds timeout{600};  // for the one inference, load included
};

struct ReleaseOptions {
  std::string name;                // empty: model.json's name
  std::optional<unsigned> deltas;  // unset: settings().delta_versions
  std::optional<HealthRecording> health;
  ReleaseChecks checks;        // the model's checks (manager/release/release_check.hpp)
  storage::Progress progress;  // packing progress; may be empty
};

struct ReleaseResult {
  Release release;
  std::vector<DeltaOutcome> deltas;  // one per candidate base version, newest first
  CheckReport checks;                // what was checked about the model
};

// Where `mota release add` (load check, --health-input) finds mota-runtime without --runtime:
// beside the running executable (/proc/self/exe's directory), then ../runtime/ from there (the
// build tree), then $PATH. Errc::not_found naming every place looked at.
Result<std::filesystem::path> find_runtime_binary();

}  // namespace mota::manager
