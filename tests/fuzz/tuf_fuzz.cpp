// libFuzzer harness for TUF (manifest/tuf/): the metadata parsers of all four roles, and the
// client workflow (root rotation, timestamp, snapshot, targets, delegations, target download)
// against an in-memory http::Client that serves the fuzzed files, for a fixed trusted root.
// The input is a set of files, each "@@ <path>\n<bytes>" (path under the repository: e.g.
// "metadata/timestamp.json", "metadata/2.root.json", "targets/<sha256>.a.bin"); anything not
// given is a 404. Any crash, exception, sanitizer report, leak or hang is a bug; errors are fine.
// Invariants: a parsed role survives to_json and parsing again unchanged; a target the client
// downloads has the length and sha256 its trusted metadata lists. Built with -DMOTA_FUZZ=ON and
// clang; run with `FUZZ_TARGET=tuf scripts/fuzz`. Initialisation builds a real repository with
// TufRepo (fresh ed25519 keys, a root rotation, delegations, consistent snapshots) unless
// MOTA_FUZZ_TUF_ROOT names an existing file: its trusted root (1.root.json) is then the one of
// an earlier run, so that run's corpus still verifies. Otherwise the new repository's root is
// written there (scripts/fuzz keeps it next to the corpus) and, with MOTA_FUZZ_SEEDS=<dir> set,
// its files as one seed. To reproduce a crash, set MOTA_FUZZ_TUF_ROOT as scripts/fuzz does. The
// harness's clock is a day after the root was made, so an old root never expires.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>

#include "common/http.hpp"
#include "manifest/crypto.hpp"
#include "manifest/tuf/client.hpp"
#include "manifest/tuf/metadata.hpp"
#include "tests/support/tuf_repo.hpp"

namespace {

namespace stdfs = std::filesystem;
using namespace mota;

constexpr std::string_view kBase = "mem://repo/";
const char* const kTargets[] = {"models/det/1.0.0/det-1.0.0.mota", "channels/stable/det.json",
                                "team/x.bin"};

stdfs::path g_work;
std::string g_trusted_root;
TimePoint g_now;

[[noreturn]] void finding(const std::string& what) {
  std::fprintf(stderr, "tuf: %s\n", what.c_str());
  std::abort();
}

// Serves the input's files; every request is answered from memory.
class MemoryClient final : public http::Client {
 public:
  std::map<std::string, std::string_view> files;

  Result<http::ResponseInfo> get(const http::GetRequest& req, const http::Sink& sink) override {
    if (!req.url.starts_with(kBase)) return fail(Errc::network, "unexpected URL " + req.url);
    auto it = files.find(req.url.substr(kBase.size()));
    if (it == files.end()) return fail(Error(Errc::http, req.url + ": HTTP 404", 404));
    std::string_view body = it->second;
    if (req.range_start) body = body.substr(std::min<std::size_t>(*req.range_start, body.size()));
    http::ResponseInfo info;
    info.status = req.range_start ? 206 : 200;
    info.partial = req.range_start.has_value();
    info.content_length = body.size();
    if (req.on_headers && !body.empty()) MOTA_TRY(req.on_headers(info));
    // In pieces, as a network delivers them; the ceiling is checked as curl's client does.
    for (std::size_t off = 0; off < body.size(); off += 1000) {
      auto piece = body.substr(off, 1000);
      if (req.max_bytes && info.bytes_received + piece.size() > req.max_bytes) {
        return fail(Errc::too_large, req.url + ": more than " + std::to_string(req.max_bytes));
      }
      MOTA_TRY(sink(std::as_bytes(std::span(piece.data(), piece.size()))));
      info.bytes_received += piece.size();
    }
    return info;
  }
  Result<http::Response> post(const std::string& url, const std::string&,
                              const std::map<std::string, std::string>&, std::uint64_t) override {
    return fail(Errc::network, "unexpected POST " + url);
  }
};

std::map<std::string, std::string_view> split_files(std::string_view in) {
  std::map<std::string, std::string_view> files;
  if (!in.starts_with("@@ ")) return files;
  while (!in.empty()) {
    in.remove_prefix(3);
    const std::size_t nl = in.find('\n');
    if (nl == std::string_view::npos) break;
    std::string name(in.substr(0, nl));
    in.remove_prefix(nl + 1);
    const std::size_t next = in.find("\n@@ ");
    files[name] = in.substr(0, next);
    if (next == std::string_view::npos) break;
    in.remove_prefix(next + 1);
  }
  return files;
}

template <class T, class Parse>
void round_trip(std::string_view bytes, Parse parse) {
  auto m = parse(bytes);
  if (!m) return;
  const Json once = tuf::to_json(m->signed_);
  Json envelope = {{"signed", once}, {"signatures", Json::array()}};
  auto again = parse(envelope.dump());
  if (!again) finding("to_json output does not parse again: " + again.error().message());
  if (tuf::to_json(again->signed_) != once) finding("to_json and parse disagree:\n" + once.dump());
}

void build_repo(const stdfs::path& dir, const char* seeds) {
  test::TufRepo repo(dir / "repo");
  repo.add_target("targets", kTargets[0], std::string(3000, 'p'));
  repo.add_delegation(
      "targets",
      tuf::DelegatedRole{"channels", {}, 1, true, std::vector<std::string>{"channels/*/*"}, {}});
  repo.add_target("channels", kTargets[1], R"({"model": "det", "version": "1.0.0"})");
  repo.add_delegation("targets", tuf::DelegatedRole{"team",
                                                    {},
                                                    1,
                                                    false,
                                                    std::nullopt,
                                                    std::vector<std::string>{
                                                        "0", "1", "2", "3", "4", "5", "6", "7", "8",
                                                        "9", "a", "b", "c", "d", "e", "f"}});
  repo.add_target("team", kTargets[2], "x");
  // Root v2, signed by the old key and the new one.
  std::vector<crypto::PrivateKey> old_keys = std::move(repo.keys["root"]);
  repo.root.version = 2;
  repo.rotate_keys("root");
  std::vector<const crypto::PrivateKey*> old_signers;
  for (const auto& k : old_keys) old_signers.push_back(&k);
  repo.publish_root(old_signers);
  repo.bump_all();
  g_trusted_root = repo.root_bytes(1);
  if (const char* keep = std::getenv("MOTA_FUZZ_TUF_ROOT")) {
    std::ofstream(keep, std::ios::binary) << g_trusted_root;
  }
  if (!seeds) return;
  std::string seed;
  for (const auto& e : stdfs::recursive_directory_iterator(dir / "repo")) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    seed += "@@ " + e.path().lexically_relative(dir / "repo").generic_string() + "\n";
    seed.append(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    seed += "\n";
  }
  std::ofstream(stdfs::path(seeds) / "repo", std::ios::binary) << seed;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // On tmpfs where there is one: the client writes its trusted metadata atomically, fsynced.
  const stdfs::path base = stdfs::is_directory("/dev/shm") && ::access("/dev/shm", W_OK) == 0
                               ? stdfs::path("/dev/shm")
                               : stdfs::temp_directory_path();
  g_work = base / ("mota-fuzz-tuf-" + std::to_string(::getpid()));
  stdfs::remove_all(g_work);
  stdfs::create_directories(g_work);
  const char* keep = std::getenv("MOTA_FUZZ_TUF_ROOT");
  if (keep && stdfs::exists(keep)) {
    std::ifstream in(keep, std::ios::binary);
    g_trusted_root.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  } else {
    build_repo(g_work, std::getenv("MOTA_FUZZ_SEEDS"));
  }
  // The repository's clock: a day after it was built (its roles expire after 30 days), also
  // when its root comes from an earlier run.
  auto root = tuf::parse_root(g_trusted_root);
  if (!root) finding("the trusted root does not parse: " + root.error().message());
  g_now = root->signed_.expires - std::chrono::hours(24 * 29);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  MemoryClient http;
  http.files = split_files(input);
  for (const auto& [name, bytes] : http.files) {
    round_trip<tuf::Root>(bytes, tuf::parse_root);
    round_trip<tuf::Timestamp>(bytes, tuf::parse_timestamp);
    round_trip<tuf::Snapshot>(bytes, tuf::parse_snapshot);
    round_trip<tuf::Targets>(bytes, tuf::parse_targets);
  }
  const stdfs::path meta = g_work / "client";
  std::error_code ec;
  stdfs::remove_all(meta, ec);
  stdfs::create_directories(meta);
  if (!tuf::Client::init(meta, g_trusted_root)) finding("the trusted root does not initialise");
  tuf::ClientConfig config;
  config.metadata_dir = meta;
  config.metadata_base_url = std::string(kBase) + "metadata";
  config.now = [] { return g_now; };
  tuf::Client client(config, http);
  // MOTA_FUZZ_DEBUG=1: say how far an input got (to check that seeds reach the downloads).
  static const bool debug = std::getenv("MOTA_FUZZ_DEBUG") != nullptr;
  auto say = [&](const std::string& what, const Status& st) {
    if (debug)
      std::fprintf(stderr, "%s: %s\n", what.c_str(), st ? "ok" : st.error().message().c_str());
    return bool(st);
  };
  if (!say("refresh", client.refresh())) return 0;
  for (const char* path : kTargets) {
    auto info = client.get_target(path);
    if (!say(path, info ? Status{} : Status(fail(info.error())))) continue;
    const stdfs::path dest = g_work / "download";
    stdfs::remove(dest, ec);
    if (!say("download",
             client.download_target(std::string(kBase) + "targets", path, *info, dest))) {
      continue;
    }
    std::ifstream in(dest, std::ios::binary);
    const std::string got{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
    if (got.size() != info->length) finding("downloaded a target of another length");
    auto sha = info->hashes.find("sha256");
    if (sha != info->hashes.end() && crypto::sha256_hex(got) != sha->second) {
      finding("downloaded a target with another sha256");
    }
  }
  return 0;
}
