// mota-tuf-client: the client-under-test CLI of theupdateframework/tuf-conformance
// (CLIENT-CLI.md), backed by manifest/tuf/client.hpp.
//
//   mota-tuf-client --metadata-dir DIR init TRUSTED_ROOT
//   mota-tuf-client --metadata-url URL --metadata-dir DIR refresh
//   mota-tuf-client --metadata-url URL --metadata-dir DIR --target-name P [--target-name P ...]
//                   --target-dir TDIR --target-base-url TURL download
//
// Exit status 0 on success, 1 on any failure (the error goes to stderr). Downloaded targets are
// stored as TDIR/<percent-encoded target path>.

#include <CLI/CLI.hpp>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "common/fs.hpp"
#include "common/http.hpp"
#include "manifest/tuf/client.hpp"

namespace {

using mota::Status;

struct Options {
  std::string metadata_dir;
  std::string metadata_url;
  std::vector<std::string> target_names;
  std::string target_dir;
  std::string target_base_url;
  std::string trusted_root;
};

Status require(const std::string& value, const char* flag, const char* command) {
  if (value.empty()) {
    return mota::fail(mota::Errc::invalid_argument, std::string(command) + " needs " + flag);
  }
  return {};
}

Status cmd_init(const Options& o) {
  MOTA_TRY(require(o.metadata_dir, "--metadata-dir", "init"));
  auto bytes = MOTA_TRY_CTX(mota::fs::read_file(o.trusted_root, 16u << 20), "read trusted root");
  return mota::tuf::Client::init(o.metadata_dir, bytes);
}

mota::tuf::ClientConfig client_config(const Options& o) {
  mota::tuf::ClientConfig c;
  c.metadata_dir = o.metadata_dir;
  c.metadata_base_url = o.metadata_url;
  return c;
}

Status cmd_refresh(const Options& o) {
  MOTA_TRY(require(o.metadata_dir, "--metadata-dir", "refresh"));
  MOTA_TRY(require(o.metadata_url, "--metadata-url", "refresh"));
  auto http = mota::http::make_http_client();
  mota::tuf::Client client(client_config(o), *http);
  return client.refresh();
}

Status cmd_download(const Options& o) {
  MOTA_TRY(require(o.metadata_dir, "--metadata-dir", "download"));
  MOTA_TRY(require(o.metadata_url, "--metadata-url", "download"));
  MOTA_TRY(require(o.target_dir, "--target-dir", "download"));
  MOTA_TRY(require(o.target_base_url, "--target-base-url", "download"));
  if (o.target_names.empty()) {
    return mota::fail(mota::Errc::invalid_argument, "download needs --target-name");
  }
  auto http = mota::http::make_http_client();
  mota::tuf::Client client(client_config(o), *http);
  MOTA_TRY(client.refresh());
  MOTA_TRY(mota::fs::make_dirs(o.target_dir));
  for (const auto& name : o.target_names) {
    auto info = MOTA_TRY(client.get_target(name));
    auto dest = std::filesystem::path(o.target_dir) / mota::http::percent_encode(name);
    MOTA_TRY(client.download_target(o.target_base_url, name, info, dest));
  }
  return {};
}

int run(int argc, char** argv) {
  Options o;
  CLI::App app{"mota TUF client for the tuf-conformance test suite"};
  app.require_subcommand(1);
  app.add_option("--metadata-dir", o.metadata_dir, "directory of trusted metadata");
  app.add_option("--metadata-url", o.metadata_url, "base URL of the repository metadata");
  app.add_option("--target-name", o.target_names, "TUF target path to download (repeatable)")
      ->take_all();
  app.add_option("--target-dir", o.target_dir, "directory for downloaded targets");
  app.add_option("--target-base-url", o.target_base_url, "base URL of the repository targets");
  auto* init = app.add_subcommand("init", "store the initial trusted root (no network access)");
  init->add_option("trusted_root", o.trusted_root, "initial root.json")->required();
  auto* refresh = app.add_subcommand("refresh", "update the trusted metadata");
  auto* download = app.add_subcommand("download", "refresh, then download and verify targets");
  for (auto* sub : {init, refresh, download}) sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e) == 0 ? 0 : 1;
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 1;
  }

  Status st;
  const char* what = "";
  if (init->parsed()) {
    what = "init";
    st = cmd_init(o);
  } else if (refresh->parsed()) {
    what = "refresh";
    st = cmd_refresh(o);
  } else {
    what = "download";
    st = cmd_download(o);
  }
  if (!st) {
    std::cerr << "mota-tuf-client " << what << ": " << st.error().message() << " ["
              << mota::errc_name(st.error().code()) << "]\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "mota-tuf-client: unexpected error: " << e.what() << "\n";
  } catch (...) {
    std::cerr << "mota-tuf-client: unexpected error\n";
  }
  return 1;
}
