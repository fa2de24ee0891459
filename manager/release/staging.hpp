#pragma once
// Staging a model for `mota release add` (manager/release/): the checks of the model
// (manager/release/release_check.hpp) and the health recording, each on a copy below DIR/tmp made
// of hard links, so the publisher's model directory is never written. Internal to
// manager/release/.

#include <filesystem>
#include <string>
#include <utility>

#include "common/fs.hpp"
#include "common/result.hpp"
#include "manager/release/release.hpp"
#include "manager/release/release_check.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::manager::detail {

namespace stdfs = std::filesystem;

// A scratch directory below DIR/tmp, removed with its contents on every path out.
class ScratchDir {
 public:
  static Result<ScratchDir> create(const stdfs::path& path) {
    MOTA_TRY(fs::remove_all(path));  // a leftover of a crashed run with the same pid
    MOTA_TRY(fs::make_dirs(path, 0700));
    ScratchDir d;
    d.path_ = path;
    return d;
  }
  ScratchDir() = default;
  ScratchDir(ScratchDir&& o) noexcept : path_(std::exchange(o.path_, {})) {}
  ScratchDir& operator=(ScratchDir&&) = delete;
  ~ScratchDir() {
    if (!path_.empty()) (void)fs::remove_all(path_);
  }
  const stdfs::path& path() const { return path_; }

 private:
  stdfs::path path_;
};

// Builds `dest`: a staged copy of `model_dir` with name/version set, the health input, the
// expected output recorded by running the model once through mota-runtime, and the health
// section. Errc::verification with mota-runtime's reason when the model does not run.
Status stage_with_health(const stdfs::path& model_dir, const stdfs::path& dest,
                         const std::string& name, const std::string& version,
                         const HealthRecording& h);

// The model's checks (manager/release/release_check.hpp), in `scratch`: the static ones, then,
// for ONNX unless checks.load is off, a load and run through mota-runtime on a staged copy
// (skipped with a warning in `report` when no mota-runtime is found and none was named).
Status check_model(const stdfs::path& model_dir, const ModelManifest& m, const std::string& name,
                   const std::string& version, const ReleaseChecks& checks,
                   const stdfs::path& scratch, CheckReport& report);

}  // namespace mota::manager::detail
