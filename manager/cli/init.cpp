// `mota init`: a new repository with fresh keys (manager/repo/repository.hpp).
#include <cstdio>
#include <string>

#include "manager/cli/commands.hpp"
#include "manager/fleet/metadata_refresher.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {
namespace {

// What `mota init` says about keeping the metadata fresh: devices refuse expired metadata, and
// nothing renews it unless something is scheduled.
void print_freshness_advice(const Settings& s) {
  const auto& e = s.expiry;
  std::printf("  lifetimes: timestamp %s, snapshot %s, targets %s, root %s\n",
              format_duration(e.timestamp).c_str(), format_duration(e.snapshot).c_str(),
              format_duration(e.targets).c_str(), format_duration(e.root).c_str());
  std::printf(
      "  timestamp.json expires every %s: keep `mota serve` running (it re-signs it) or schedule "
      "`mota timestamp refresh` (the mota-manager package ships mota-refresh.timer); both also "
      "renew snapshot and targets\n",
      format_duration(e.timestamp).c_str());
  std::printf(
      "  the timestamp is re-signed when less than %s is left, so the refresh must run "
      "at least that often (mota serve checks every %lld s; the hourly timer suffices for "
      "timestamp lifetimes of 3h and longer)\n",
      format_duration(s.refresh_window("timestamp")).c_str(),
      static_cast<long long>(check_interval(s).count()));
  std::printf(
      "  the root expires in %s: before then sign a new root version with `mota key rotate "
      "root` (needs keys/root.pem, which belongs offline)\n",
      format_duration(e.root).c_str());
}

struct InitFlags {
  std::string dir, key_type = "ed25519", expires;
  int zstd_level = 10;
};

}  // namespace

void add_init_command(CLI::App& app, CliAction& action, std::string&) {
  auto f = std::make_shared<InitFlags>();
  auto* init = app.add_subcommand("init", "create a repository with fresh keys");
  init->add_option("DIR", f->dir, "directory (created; must be empty)")->required();
  init->add_option("--key-type", f->key_type, "ed25519, ecdsa or rsa")->capture_default_str();
  init->add_option("--expires", f->expires,
                   "role lifetimes, e.g. root=1y,targets=3mo,snapshot=1w,timestamp=1d");
  init->add_option("--zstd-level", f->zstd_level, "package compression level 1..19")
      ->capture_default_str();
  init->callback([&action, f] {
    action = [f]() -> Status {
      Settings s;
      auto kt = crypto::key_type_from_name(f->key_type);
      if (!kt) return fail(Errc::invalid_argument, "--key-type: " + kt.error().message());
      s.key_type = *kt;
      s.expiry = MOTA_TRY_CTX(parse_expiry_spec(f->expires), "--expires");
      s.zstd_level = f->zstd_level;
      auto repo = MOTA_TRY(Repository::init(f->dir, s));
      std::printf("initialised repository %s (%s keys)\n", f->dir.c_str(),
                  std::string(crypto::keytype_name(s.key_type)).c_str());
      std::printf("  keys:  %s/keys (secret; keep an offline copy of root.pem)\n", f->dir.c_str());
      std::printf("  serve: %s/repo (clients bootstrap from repo/metadata/1.root.json)\n",
                  f->dir.c_str());
      print_freshness_advice(repo.settings());
      return {};
    };
  });
}

}  // namespace mota::manager
