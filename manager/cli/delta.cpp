// `mota delta ...`: file and package deltas by hand (diff/apply/create/inspect). The engine is
// delta/delta.hpp and delta/package/package_delta.hpp; this file only parses flags and prints.
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>

#include "common/fs.hpp"
#include "delta/package/package_delta.hpp"
#include "manager/cli/commands.hpp"
#include "manifest/crypto.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

struct DeltaFlags {
  std::string old_path, new_path, delta_path, out_path, from, to;
  int level = 19;
  int threads = 0;
  std::uint64_t chunk_mib = 4;
  bool raw = false;
  bool verify_base = false;
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string pct(std::uint64_t part, std::uint64_t whole) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", whole ? 100.0 * double(part) / double(whole) : 0.0);
  return b;
}

Result<delta::DiffOptions> diff_options(const DeltaFlags& f) {
  delta::DiffOptions o;
  o.level = f.level;
  o.threads = f.threads;
  o.chunk_size = f.chunk_mib << 20;
  o.parse_formats = !f.raw;
  return o;
}

bool is_dir(const std::string& p) {
  struct stat st {};
  return ::stat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

// A model tree for --from/--to: a directory as is, or a .mota package unpacked below `scratch`.
Result<stdfs::path> model_tree(const std::string& arg, const stdfs::path& scratch,
                               const char* name) {
  if (is_dir(arg)) return stdfs::path(arg);
  stdfs::path dest = scratch / name;
  MOTA_TRY_CTX(storage::unpack_file(arg, dest), arg);
  return dest;
}

nlohmann::json methods_json(const delta::FileDeltaInfo& fi) {
  nlohmann::json m = nlohmann::json::object();
  for (int i = 0; i < delta::kMethodCount; ++i) {
    const auto& s = fi.methods[static_cast<std::size_t>(i)];
    if (s.chunks == 0) continue;
    m[delta::method_name(static_cast<delta::Method>(i))] = {
        {"chunks", s.chunks}, {"raw_bytes", s.raw_bytes}, {"encoded_bytes", s.encoded_bytes}};
  }
  return m;
}

nlohmann::json file_json(const delta::FileDeltaInfo& fi) {
  return {{"old_size", fi.old_size},     {"old_sha256", fi.old_sha256}, {"new_size", fi.new_size},
          {"new_sha256", fi.new_sha256}, {"chunks", fi.chunks},         {"layout", fi.layout},
          {"delta_size", fi.delta_size}, {"methods", methods_json(fi)}};
}

void print_methods(const delta::FileDeltaInfo& fi, const char* indent) {
  for (int i = 0; i < delta::kMethodCount; ++i) {
    const auto& s = fi.methods[static_cast<std::size_t>(i)];
    if (s.chunks == 0) continue;
    std::printf("%s%-7s %6llu chunks %14llu bytes -> %12llu (%s)\n", indent,
                delta::method_name(static_cast<delta::Method>(i)),
                static_cast<unsigned long long>(s.chunks),
                static_cast<unsigned long long>(s.raw_bytes),
                static_cast<unsigned long long>(s.encoded_bytes),
                pct(s.encoded_bytes, s.raw_bytes).c_str());
  }
}

void print_file(const delta::FileDeltaInfo& fi) {
  std::printf(
      "file delta: %llu -> %llu bytes, layout %s, %llu chunks, delta %llu bytes (%s)\n",
      static_cast<unsigned long long>(fi.old_size), static_cast<unsigned long long>(fi.new_size),
      fi.layout.c_str(), static_cast<unsigned long long>(fi.chunks),
      static_cast<unsigned long long>(fi.delta_size), pct(fi.delta_size, fi.new_size).c_str());
  std::printf("  base sha256   %s\n  result sha256 %s\n", fi.old_sha256.c_str(),
              fi.new_sha256.c_str());
  print_methods(fi, "  ");
}

void print_package(const delta::PackageDeltaInfo& p) {
  std::printf("package delta: %s %s -> %s %s, %llu bytes for %llu bytes of files (%s)\n",
              p.from.name.c_str(), p.from.version.c_str(), p.to.name.c_str(), p.to.version.c_str(),
              static_cast<unsigned long long>(p.delta_size),
              static_cast<unsigned long long>(p.new_total_size),
              pct(p.delta_size, p.new_total_size).c_str());
  std::printf("  from tree %s\n  to tree   %s\n", p.from.tree_digest.c_str(),
              p.to.tree_digest.c_str());
  for (const auto& f : p.files) {
    if (!f.delta) {
      std::printf("  %-5s %s (from %s, %llu bytes)\n", f.kind.c_str(), f.path.c_str(),
                  f.base.c_str(), static_cast<unsigned long long>(f.size));
      continue;
    }
    std::printf("  %-5s %s%s%s: %llu bytes -> %llu (%s)\n", f.kind.c_str(), f.path.c_str(),
                f.base.empty() ? "" : " against ", f.base.c_str(),
                static_cast<unsigned long long>(f.size),
                static_cast<unsigned long long>(f.delta->delta_size),
                pct(f.delta->delta_size, f.size).c_str());
    print_methods(*f.delta, "        ");
  }
}

nlohmann::json package_json(const delta::PackageDeltaInfo& p) {
  auto side = [](const delta::PackageSide& s) {
    return nlohmann::json{{"name", s.name}, {"version", s.version}, {"tree_digest", s.tree_digest}};
  };
  nlohmann::json files = nlohmann::json::array();
  for (const auto& f : p.files) {
    nlohmann::json e{{"path", f.path}, {"kind", f.kind}, {"size", f.size}};
    if (!f.base.empty()) e["base"] = f.base;
    if (f.delta) e["delta"] = file_json(*f.delta);
    files.push_back(std::move(e));
  }
  return {{"kind", "package"},
          {"from", side(p.from)},
          {"to", side(p.to)},
          {"delta_size", p.delta_size},
          {"new_total_size", p.new_total_size},
          {"files", files}};
}

}  // namespace

void add_delta_commands(CLI::App& app, CliAction& action, std::string&) {
  auto f = std::make_shared<DeltaFlags>();
  auto* group = app.add_subcommand("delta", "delta updates between model files or versions");
  group->require_subcommand(1);
  auto add_encode_flags = [f](CLI::App* cmd) {
    cmd->add_option("--level", f->level, "zstd level of the final encoding 1..22")
        ->capture_default_str();
    cmd->add_option("--chunk-mib", f->chunk_mib, "chunk size in MiB (1..32)")
        ->capture_default_str();
    cmd->add_option("--threads", f->threads, "encoding threads (0: all cores)")
        ->capture_default_str();
    cmd->add_flag("--raw", f->raw, "ignore tensor layouts (safetensors/ONNX/GGUF)");
  };

  auto* diff = group->add_subcommand("diff", "delta between two files");
  diff->add_option("OLD", f->old_path, "old (base) file")->required();
  diff->add_option("NEW", f->new_path, "new file")->required();
  diff->add_option("OUT", f->out_path, "delta to write")->required();
  add_encode_flags(diff);
  diff->callback([&action, f] {
    action = [f]() -> Status {
      const auto t0 = std::chrono::steady_clock::now();
      auto opt = MOTA_TRY(diff_options(*f));
      auto info =
          MOTA_TRY_CTX(delta::diff_files(f->old_path, f->new_path, f->out_path, opt), "delta diff");
      std::printf("wrote %s: %llu bytes for %llu (%s) in %.2f s\n", f->out_path.c_str(),
                  static_cast<unsigned long long>(info.delta_size),
                  static_cast<unsigned long long>(info.new_size),
                  pct(info.delta_size, info.new_size).c_str(), seconds_since(t0));
      print_methods(info, "  ");
      return {};
    };
  });

  auto* apply = group->add_subcommand(
      "apply", "apply a delta: file delta onto a file, or package delta onto a model directory");
  apply->add_option("OLD", f->old_path, "base file, or base model directory")->required();
  apply->add_option("DELTA", f->delta_path, "the delta")->required();
  apply->add_option("OUT", f->out_path, "file (or, for a package delta, directory) to create")
      ->required();
  apply->add_option("--threads", f->threads, "decoding threads (0: 2)")->capture_default_str();
  apply->add_flag("--verify-base", f->verify_base, "hash the whole base against the delta first");
  apply->callback([&action, f] {
    action = [f]() -> Status {
      const auto t0 = std::chrono::steady_clock::now();
      if (is_dir(f->old_path)) {
        delta::PackageApplyOptions o;
        o.file.threads = f->threads > 0 ? f->threads : 2;
        if (f->verify_base) MOTA_TRY_CTX(storage::verify_tree(f->old_path), "base version");
        auto r = MOTA_TRY_CTX(delta::apply_package_file(f->old_path, f->delta_path, f->out_path, o),
                              "delta apply");
        std::printf("wrote %s: %s %s, %llu bytes, tree %s in %.2f s\n", f->out_path.c_str(),
                    r.manifest.name.c_str(), r.manifest.version.c_str(),
                    static_cast<unsigned long long>(r.bytes_written), r.tree_digest.c_str(),
                    seconds_since(t0));
        return {};
      }
      delta::ApplyOptions o;
      o.threads = f->threads > 0 ? f->threads : 2;
      o.verify_base = f->verify_base;
      auto r = MOTA_TRY_CTX(delta::apply_file(f->old_path, f->delta_path, f->out_path, o),
                            "delta apply");
      std::printf("wrote %s: %llu bytes, sha256 %s in %.2f s\n", f->out_path.c_str(),
                  static_cast<unsigned long long>(r.new_size), r.new_sha256.c_str(),
                  seconds_since(t0));
      return {};
    };
  });

  auto* create = group->add_subcommand("create", "package delta between two model versions");
  create->add_option("--from", f->from, "old version: model directory or .mota package")
      ->required();
  create->add_option("--to", f->to, "new version: model directory or .mota package")->required();
  create->add_option("OUT", f->out_path, "delta to write (.mdelta)")->required();
  add_encode_flags(create);
  create->callback([&action, f] {
    action = [f]() -> Status {
      const auto t0 = std::chrono::steady_clock::now();
      auto opt = MOTA_TRY(diff_options(*f));
      // Packages are unpacked beside OUT (same filesystem, removed afterwards).
      const stdfs::path out = stdfs::absolute(f->out_path);
      const stdfs::path scratch = out.parent_path() / ("." + out.filename().string() +
                                                       ".tmp-trees-" + std::to_string(::getpid()));
      MOTA_TRY(fs::remove_all(scratch));
      MOTA_TRY(fs::make_dirs(scratch, 0700));
      struct Cleanup {
        stdfs::path p;
        ~Cleanup() { (void)fs::remove_all(p); }
      } cleanup{scratch};
      auto from = MOTA_TRY(model_tree(f->from, scratch, "from"));
      auto to = MOTA_TRY(model_tree(f->to, scratch, "to"));
      auto info = MOTA_TRY_CTX(delta::diff_package_dirs(from, to, out, opt), "delta create");
      std::printf("wrote %s in %.2f s\n", f->out_path.c_str(), seconds_since(t0));
      print_package(info);
      return {};
    };
  });

  auto* inspect = group->add_subcommand("inspect", "what a delta holds, per file and method");
  inspect->add_option("DELTA", f->delta_path, "the delta")->required();
  inspect->add_flag("--json", f->json, "machine-readable output");
  inspect->callback([&action, f] {
    action = [f]() -> Status {
      auto info = MOTA_TRY_CTX(delta::inspect_file(f->delta_path), "delta inspect");
      if (f->json) {
        nlohmann::json j = info.is_package
                               ? package_json(*info.package)
                               : nlohmann::json{{"kind", "file"}, {"file", file_json(*info.file)}};
        std::printf("%s\n", j.dump(2).c_str());
      } else if (info.is_package) {
        print_package(*info.package);
      } else {
        print_file(*info.file);
      }
      return {};
    };
  });
}

}  // namespace mota::manager
