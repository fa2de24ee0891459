// `mota bundle create|inspect`: signed offline bundles (manager/release/bundle.hpp,
// docs/bundles.md). This file only parses flags and prints.
#include "manager/release/bundle.hpp"

#include <cstdio>

#include "common/fs.hpp"
#include "manager/cli/commands.hpp"
#include "manifest/canonical_json.hpp"

namespace mota::manager {
namespace {

namespace stdfs = std::filesystem;

struct BundleFlags {
  std::string model, version, output, valid_for, file, root;
  std::vector<std::string> delta_from;
  bool json = false;
};

Json info_json(const BundleInfo& b) {
  Json roles = Json::array();
  for (const auto& r : b.roles) {
    roles.push_back(
        {{"role", r.role}, {"version", r.version}, {"expires", format_time(r.expires)}});
  }
  Json targets = Json::array();
  for (const auto& t : b.targets) {
    Json j = {{"kind", t.kind},
              {"path", t.path},
              {"entry", t.entry},
              {"length", t.length},
              {"sha256", t.sha256}};
    if (!t.from.empty()) j["from"] = t.from;
    targets.push_back(std::move(j));
  }
  Json entries = Json::array();
  for (const auto& e : b.entries) entries.push_back({{"name", e.name}, {"size", e.size}});
  return {{"path", b.path.string()},
          {"size", b.size},
          {"model", b.index.model},
          {"version", b.index.version},
          {"created", b.index.created},
          {"expires", format_time(b.expires)},
          {"expires_first", b.expires_first},
          {"roles", roles},
          {"targets", targets},
          {"entries", entries},
          {"verified", !b.checked.empty()},
          {"verified_against", b.checked.empty() ? Json(nullptr) : Json(b.verified_against)},
          {"checked", b.checked}};
}

void print_info(const BundleInfo& b, bool entries) {
  std::printf("  %s %s", b.index.model.c_str(), b.index.version.c_str());
  std::string deltas;
  for (const auto& t : b.targets) {
    if (t.kind == "package")
      std::printf(": package %s (%s)", t.path.c_str(), human_size(t.length).c_str());
    if (t.kind == "delta")
      deltas += (deltas.empty() ? "" : ", ") + t.from + " (" + human_size(t.length) + ")";
  }
  std::printf("\n");
  if (!deltas.empty()) std::printf("  deltas from %s\n", deltas.c_str());
  for (const auto& t : b.targets) {
    if (t.kind == "channel") std::printf("  channel file %s\n", t.path.c_str());
  }
  for (const auto& r : b.roles) {
    std::printf("  %-9s version %-4llu expires %s\n", r.role.c_str(),
                static_cast<unsigned long long>(r.version), format_time(r.expires).c_str());
  }
  const bool expired = b.expires <= now_seconds();
  std::printf("  %s %s (%s expires first)%s\n", expired ? "EXPIRED at" : "installable until",
              format_time(b.expires).c_str(), b.expires_first.c_str(),
              expired ? ": devices refuse it; make a new one (--valid-for keeps one longer)" : "");
  if (entries) {
    std::printf("  entries:\n");
    for (const auto& e : b.entries) {
      std::printf("    %12llu  %s\n", static_cast<unsigned long long>(e.size), e.name.c_str());
    }
  }
}

}  // namespace

void add_bundle_commands(CLI::App& app, CliAction& action, std::string& repo_flag) {
  auto flags = std::make_shared<BundleFlags>();
  auto* bundle = app.add_subcommand(
      "bundle", "signed offline bundles: one file a device verifies and installs without a server");
  bundle->require_subcommand(1);

  auto* create = bundle->add_subcommand(
      "create", "write MODEL-VERSION.motab: the metadata a device needs, the package, deltas");
  create->add_option("MODEL", flags->model, "model name")->required();
  create->add_option("VERSION", flags->version, "a released version")->required();
  create->add_option("--delta-from", flags->delta_from,
                     "also carry the published delta from this installed version (repeatable)");
  create->add_option("-o,--output", flags->output, "bundle file (default: MODEL-VERSION.motab)");
  create->add_option("--valid-for", flags->valid_for,
                     "first re-sign the repository's timestamp/snapshot (and targets) to expire no "
                     "sooner than this, e.g. 30d (a normal publish; needs their keys)");
  create->add_flag("--json", flags->json, "machine-readable output");
  create->add_option("--repo", repo_flag, "repository directory (default: $MOTA_REPO or .)");
  create->callback([&action, &repo_flag, flags] {
    action = [&repo_flag, flags]() -> Status {
      BundleRequest req;
      req.model = flags->model;
      req.version = flags->version;
      req.delta_from = flags->delta_from;
      req.output = flags->output;
      if (!flags->valid_for.empty()) {
        auto d = parse_duration(flags->valid_for);
        if (!d || d->count() <= 0) {
          return fail(Errc::invalid_argument,
                      "--valid-for '" + flags->valid_for + "': want a duration such as 30d or 12h");
        }
        req.valid_for = *d;
      }
      const BundleInfo b = MOTA_TRY_CTX(create_bundle(repo_dir(repo_flag), req), "bundle create");
      if (flags->json) {
        std::printf("%s\n", info_json(b).dump(2).c_str());
        return {};
      }
      std::printf("wrote %s (%s, %zu entries)\n", b.path.c_str(), human_size(b.size).c_str(),
                  b.entries.size());
      print_info(b, false);
      std::printf(
          "  verified as a device holding only repo/metadata/1.root.json would verify it\n");
      std::printf("  install on a device: mota-agent install %s\n", b.path.filename().c_str());
      return {};
    };
  });

  auto* inspect = bundle->add_subcommand(
      "inspect", "what a bundle holds; with --root, verify it as a device with that root would");
  inspect->add_option("FILE", flags->file, "the .motab file")->required();
  inspect->add_option("--root", flags->root,
                      "a trusted root.json (the devices' /etc/mota/root.json): verify signatures, "
                      "root rotation, versions, expiry (now), lengths and hashes");
  inspect->add_flag("--json", flags->json, "machine-readable output");
  inspect->callback([&action, flags] {
    action = [flags]() -> Status {
      std::optional<std::string> root;
      if (!flags->root.empty()) {
        root = MOTA_TRY_CTX(fs::read_file(flags->root, 512 * 1024), "--root " + flags->root);
      }
      const BundleInfo b = MOTA_TRY_CTX(inspect_bundle(flags->file, root), "bundle inspect");
      if (flags->json) {
        std::printf("%s\n", info_json(b).dump(2).c_str());
        return {};
      }
      std::printf("bundle %s (%s, %zu entries)\n", b.path.c_str(), human_size(b.size).c_str(),
                  b.entries.size());
      print_info(b, true);
      if (b.checked.empty()) {
        std::printf(
            "not verified (nothing in it is trusted until checked): give --root ROOT.json, the "
            "root the devices trust, to verify it as they would\n");
      } else {
        for (const auto& c : b.checked) std::printf("ok: %s\n", c.c_str());
        std::printf("verified against %s (%s)\n", flags->root.c_str(), b.verified_against.c_str());
      }
      return {};
    };
  });
}

}  // namespace mota::manager
