#include "manager/release/staging.hpp"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <vector>

#include "common/process.hpp"
#include "manifest/crypto.hpp"

namespace mota::manager {

namespace stdfs = std::filesystem;

Result<stdfs::path> find_runtime_binary() {
  auto usable = [](const stdfs::path& f) {
    std::error_code ec;
    return stdfs::is_regular_file(f, ec) && ::access(f.c_str(), X_OK) == 0;
  };
  std::vector<std::string> looked;
  std::error_code ec;
  const stdfs::path self = stdfs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const stdfs::path d = self.parent_path();
    for (const stdfs::path& c : {d / "mota-runtime", (d / ".." / "runtime" / "mota-runtime")}) {
      const stdfs::path n = c.lexically_normal();
      if (usable(n)) return n;
      looked.push_back(n.string());
    }
  }
  const char* path_env = std::getenv("PATH");
  std::string path = path_env ? path_env : "";
  std::size_t pos = 0;
  while (pos <= path.size()) {
    std::size_t colon = path.find(':', pos);
    if (colon == std::string::npos) colon = path.size();
    const std::string dir = path.substr(pos, colon - pos);
    pos = colon + 1;
    if (dir.empty()) continue;
    const stdfs::path c = stdfs::path(dir) / "mota-runtime";
    if (usable(c)) return c;
  }
  std::string where;
  for (const auto& l : looked) where += l + ", ";
  return fail(Errc::not_found, "mota-runtime not found (looked at " + where + "and $PATH=" + path +
                                   "); pass --runtime PATH");
}

namespace detail {
namespace {

constexpr const char* kHealthInput = "health/input.bin";
constexpr const char* kHealthExpected = "health/expected.bin";

// Mirrors `src` into `dest` (which must not exist) with hard links, copying where linking is not
// possible (another filesystem). model.json and the two health files are left out: the caller
// writes its own. Nothing in `src` is ever opened for writing.
Status link_tree(const stdfs::path& src, const stdfs::path& dest) {
  MOTA_TRY(fs::make_dirs(dest, 0755));
  std::error_code ec;
  stdfs::recursive_directory_iterator it(src, ec), end;
  if (ec) return fail(Errc::io, "read " + src.string() + ": " + ec.message());
  for (; it != end; it.increment(ec)) {
    if (ec) return fail(Errc::io, "read " + src.string() + ": " + ec.message());
    const stdfs::path rel = it->path().lexically_relative(src);
    const std::string r = rel.generic_string();
    if (r == kManifestName || r == kHealthInput || r == kHealthExpected) continue;
    const auto st = it->symlink_status(ec);
    if (stdfs::is_symlink(st)) {
      return fail(Errc::invalid_argument,
                  it->path().string() + " is a symlink (packages hold regular files only)");
    }
    if (stdfs::is_directory(st)) {
      MOTA_TRY(fs::make_dirs(dest / rel, 0755));
    } else if (stdfs::is_regular_file(st)) {
      const stdfs::path out = dest / rel;
      if (::link(it->path().c_str(), out.c_str()) != 0) {
        stdfs::copy_file(it->path(), out, ec);
        if (ec) {
          return fail(Errc::io,
                      "copy " + it->path().string() + " to " + out.string() + ": " + ec.message());
        }
      }
    } else {
      return fail(Errc::invalid_argument,
                  it->path().string() + " is not a regular file or directory");
    }
  }
  return {};
}

// model.json text of a staged source: without a "files" key when it lists none (an empty list
// would be read as "this package has no files" and the packer fills it in anyway).
std::string source_manifest_text(const ModelManifest& m) {
  Json j = m.to_json();
  if (m.files.empty()) j.erase("files");
  return j.dump(2) + "\n";
}

// The last line of a child's stderr, without mota-runtime's "error:" prefix: its reason.
std::string child_reason(const ChildResult& r) {
  std::string err = r.err;
  while (!err.empty() && (err.back() == '\n' || err.back() == ' ')) err.pop_back();
  const auto nl = err.rfind('\n');
  if (nl != std::string::npos) err = err.substr(nl + 1);
  for (const char* prefix : {"mota-runtime: error: ", "mota-runtime: "}) {
    if (err.rfind(prefix, 0) == 0) {
      err = err.substr(std::string_view(prefix).size());
      break;
    }
  }
  if (err.empty()) {
    err = r.signal ? "killed by signal " + std::to_string(r.signal)
                   : "exit status " + std::to_string(r.exit_code) + ", no message";
  }
  return err;
}

// Builds `dest`: a staged copy of `model_dir` with name/version set, the health input, the

// Builds `dest`: a staged copy of `model_dir` for the load check, its model.json with name and
// version set and without a health section (the probe then runs the model once on zeros).
Status stage_for_load_check(const stdfs::path& model_dir, const stdfs::path& dest,
                            const ModelManifest& source, const std::string& name,
                            const std::string& version) {
  ModelManifest m = source;
  m.name = name;
  m.version = version;
  m.health.reset();
  m.files.clear();
  MOTA_TRY(link_tree(model_dir, dest));
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, source_manifest_text(m), 0644));
  return {};
}

}  // namespace

Status stage_with_health(const stdfs::path& model_dir, const stdfs::path& dest,
                         const std::string& name, const std::string& version,
                         const HealthRecording& h) {
  if ((h.tolerance && !(*h.tolerance >= 0)) ||
      (h.latency_budget_ms && !(*h.latency_budget_ms > 0)) || (h.soak_s && !(*h.soak_s >= 0))) {
    return fail(Errc::invalid_argument,
                "health: tolerance and soak must be >= 0 and the latency budget > 0");
  }
  const stdfs::path runtime = h.runtime.empty() ? MOTA_TRY(find_runtime_binary()) : h.runtime;
  if (!h.runtime.empty() && ::access(runtime.c_str(), X_OK) != 0) {
    return fail(errno_error("--runtime", runtime.string(), errno));
  }
  std::error_code ec;
  if (!stdfs::is_regular_file(h.input, ec)) {
    return fail(Errc::not_found, "health input " + h.input.string() + " is not a file");
  }
  const auto mj = model_dir / kManifestName;
  const std::string text = MOTA_TRY(fs::read_file(mj, kMaxManifestBytes));
  ModelManifest m = MOTA_TRY_CTX(ModelManifest::parse(text, /*require_files=*/false), mj.string());
  m.name = name;
  m.version = version;

  MOTA_TRY(link_tree(model_dir, dest));
  MOTA_TRY(fs::make_dirs(dest / "health", 0755));
  stdfs::copy_file(h.input, dest / kHealthInput, ec);
  if (ec) return fail(Errc::io, "copy health input " + h.input.string() + ": " + ec.message());
  // The runtime reads model.json (name, version, framework, entry, inputs); the health section
  // is written once the expected output exists.
  ModelManifest for_run = m;
  for_run.health.reset();
  for_run.files.clear();
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, source_manifest_text(for_run), 0644));

  const stdfs::path expected = dest / kHealthExpected;
  const auto run =
      MOTA_TRY_CTX(run_child({runtime.string(), "run", dest.string(), "--input",
                              (dest / kHealthInput).string(), "--output", expected.string()},
                             {}, std::chrono::duration_cast<std::chrono::milliseconds>(h.timeout)),
                   "health input: " + runtime.string());
  if (run.timed_out) {
    return fail(Errc::verification, "health input: mota-runtime run gave no output within " +
                                        std::to_string(h.timeout.count()) + " s");
  }
  if (run.exit_code != 0 || !stdfs::is_regular_file(expected, ec)) {
    // Name the publisher's directory, not the scratch copy that is about to disappear.
    std::string reason = child_reason(run);
    for (auto pos = reason.find(dest.string()); pos != std::string::npos;
         pos = reason.find(dest.string(), pos + model_dir.string().size())) {
      reason.replace(pos, dest.string().size(), model_dir.string());
    }
    return fail(Errc::verification, "health input: the model does not run: " + reason);
  }

  HealthSpec spec = m.health.value_or(HealthSpec{});
  spec.input = kHealthInput;
  spec.expected_output = kHealthExpected;
  if (h.tolerance) spec.tolerance = *h.tolerance;
  if (h.latency_budget_ms) spec.latency_budget_ms = *h.latency_budget_ms;
  if (h.soak_s) spec.soak_s = *h.soak_s;
  m.health = spec;
  if (!m.files.empty()) {
    // A source that lists its files must list the health files as they now are.
    std::erase_if(m.files, [](const FileEntry& f) {
      return f.path == kHealthInput || f.path == kHealthExpected;
    });
    for (const char* rel : {kHealthInput, kHealthExpected}) {
      const std::string sha = MOTA_TRY(crypto::file_sha256_hex((dest / rel).string()));
      m.files.push_back(FileEntry{rel, stdfs::file_size(dest / rel), sha});
    }
    std::sort(m.files.begin(), m.files.end(),
              [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  }
  const std::string final_text = source_manifest_text(m);
  MOTA_TRY_CTX(ModelManifest::parse(final_text, /*require_files=*/false),
               "internal check of the staged model.json");
  MOTA_TRY(fs::write_file_atomic(dest / kManifestName, final_text, 0644));
  return {};
}

Status check_model(const stdfs::path& model_dir, const ModelManifest& m, const std::string& name,
                   const std::string& version, const ReleaseChecks& checks,
                   const stdfs::path& scratch, CheckReport& report) {
  MOTA_TRY(check_model_static(model_dir, m, report));
  if (!report.onnx) return {};
  if (!checks.load) {
    report.load = CheckReport::Load::skipped_by_flag;
    return {};
  }
  stdfs::path runtime = checks.runtime;
  if (runtime.empty()) {
    auto found = find_runtime_binary();
    if (!found) {
      // A publish host need not have OpenCV: the static checks stand, the release goes on, and
      // the output says what was not done.
      report.load = CheckReport::Load::skipped_no_runtime;
      report.warnings.push_back("load check skipped: " + found.error().message() +
                                "; the model was not loaded (--no-load-check silences this)");
      return {};
    }
    runtime = *found;
  } else if (::access(runtime.c_str(), X_OK) != 0) {
    return fail(errno_error("--runtime", runtime.string(), errno));
  }
  const stdfs::path slot = scratch / "load-check";
  MOTA_TRY(stage_for_load_check(model_dir, slot, m, name, version));
  MOTA_TRY(check_model_load(runtime, slot, model_dir, m, checks.timeout, report));
  MOTA_TRY(fs::remove_all(slot));
  return {};
}

}  // namespace detail
}  // namespace mota::manager
