#include "storage/package.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zstd.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>

#include "manifest/crypto.hpp"
#include "tests/support/test_support.hpp"

namespace mota::storage {
namespace {

namespace stdfs = std::filesystem;
using test::TempDir;

std::string pseudo_random(std::size_t n, std::uint64_t seed) {
  std::string s(n, '\0');
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& c : s) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

Json source_manifest() {
  return Json::parse(R"({
    "name": "demo", "version": "1.0.0", "framework": "onnx", "entry": "model.onnx",
    "description": "generated test model", "labels": "labels.txt",
    "inputs": [{"name": "x", "shape": [1, 3, -1, -1], "dtype": "float32"}],
    "outputs": [{"name": "y", "shape": [1, 10], "dtype": "float32"}],
    "metrics": {"accuracy": 0.5},
    "health": {"input": "health/input.bin", "latency_budget_ms": 100}
  })");
}

// A model directory with nested directories, a hidden file, an empty file and a file with a
// long run of zeros in the middle (exercises hole punching on unpack).
void make_model_dir(const stdfs::path& d, const Json& manifest = source_manifest()) {
  test::write_file(d / "model.json", manifest.dump(2));
  test::write_file(d / "model.onnx", pseudo_random(300000, 1));
  test::write_file(d / "labels.txt", "face\nbackground\n");
  test::write_file(d / "health/input.bin", pseudo_random(4096, 2));
  test::write_file(d / "deep/a/b/c/weights.bin",
                   pseudo_random(70000, 3) + std::string(3 << 20, '\0') + "tail");
  test::write_file(d / ".hidden", "h");
  test::write_file(d / "empty.bin", "");
}

// Every regular file under `dir`, by relative path.
std::map<std::string, std::string> read_tree(const stdfs::path& dir) {
  std::map<std::string, std::string> out;
  for (auto& e : stdfs::recursive_directory_iterator(dir)) {
    if (e.is_regular_file())
      out[e.path().lexically_relative(dir).string()] = test::read_file(e.path());
  }
  return out;
}

std::vector<std::string> dir_listing(const stdfs::path& dir) {
  std::vector<std::string> out;
  for (auto& e : stdfs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  return out;
}

// A ReadFn over bytes in memory, handing out odd-sized chunks so that nothing relies on how the
// stream is split.
ReadFn memory_source(const std::string& bytes, std::size_t chunk = 7001) {
  auto pos = std::make_shared<std::size_t>(0);
  return [&bytes, pos, chunk](std::span<std::byte> buf) -> Result<std::size_t> {
    std::size_t n = std::min({buf.size(), chunk, bytes.size() - *pos});
    std::memcpy(buf.data(), bytes.data() + *pos, n);
    *pos += n;
    return n;
  };
}

// ---- raw archives for the rejection tests, written with libarchive directly ----

struct RawEntry {
  std::string path;
  std::string data;
  unsigned type = AE_IFREG;
  std::string symlink;
  std::string hardlink;
};

RawEntry reg(std::string path, std::string data) {
  RawEntry e;
  e.path = std::move(path);
  e.data = std::move(data);
  return e;
}
RawEntry special(std::string path, unsigned type) {
  RawEntry e;
  e.path = std::move(path);
  e.type = type;
  return e;
}
RawEntry symlink_to(std::string path, std::string target) {
  RawEntry e = special(std::move(path), AE_IFLNK);
  e.symlink = std::move(target);
  return e;
}
RawEntry hardlink_to(std::string path, std::string target) {
  RawEntry e = special(std::move(path), AE_IFREG);
  e.hardlink = std::move(target);
  return e;
}

la_ssize_t append_cb(struct archive*, void* out, const void* buf, size_t n) {
  static_cast<std::string*>(out)->append(static_cast<const char*>(buf), n);
  return static_cast<la_ssize_t>(n);
}

std::string build_tar(const std::vector<RawEntry>& entries, bool zstd = true) {
  std::string out;
  struct archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (zstd) archive_write_add_filter_zstd(a);
  archive_write_set_bytes_in_last_block(a, 1);
  EXPECT_EQ(archive_write_open2(a, &out, nullptr, append_cb, nullptr, nullptr), ARCHIVE_OK);
  for (const auto& r : entries) {
    struct archive_entry* e = archive_entry_new();
    archive_entry_set_pathname(e, r.path.c_str());
    archive_entry_set_filetype(e, r.type);
    archive_entry_set_perm(e, 0644);
    if (!r.symlink.empty()) archive_entry_set_symlink(e, r.symlink.c_str());
    if (!r.hardlink.empty()) archive_entry_set_hardlink(e, r.hardlink.c_str());
    if (r.type == AE_IFREG && r.hardlink.empty()) {
      archive_entry_set_size(e, static_cast<la_int64_t>(r.data.size()));
    }
    EXPECT_EQ(archive_write_header(a, e), ARCHIVE_OK) << archive_error_string(a);
    if (!r.data.empty()) archive_write_data(a, r.data.data(), r.data.size());
    archive_entry_free(e);
  }
  archive_write_close(a);
  archive_write_free(a);
  return out;
}

std::string manifest_for(const std::vector<std::pair<std::string, std::string>>& files) {
  ModelManifest m;
  m.name = "evil";
  m.version = "1.0.0";
  m.framework = "other";
  m.entry = files.front().first;
  for (const auto& [p, data] : files) m.files.push_back({p, data.size(), crypto::sha256_hex(data)});
  std::sort(m.files.begin(), m.files.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  return m.serialize();
}

const std::vector<std::pair<std::string, std::string>> kFiles = {
    {"model.onnx", "weights-weights-weights"}, {"sub/labels.txt", "a\nb\n"}};

// The archive a well-behaved packer would produce for kFiles, with `mutate` applied.
std::string good_entries_then(const std::function<void(std::vector<RawEntry>&)>& mutate =
                                  [](auto&) {}) {
  std::vector<RawEntry> e = {reg("model.json", manifest_for(kFiles)),
                             reg("model.onnx", kFiles[0].second),
                             reg("sub/labels.txt", kFiles[1].second)};
  mutate(e);
  return build_tar(e);
}

// Unpacks `bytes` into a fresh directory and checks that it fails with a message containing
// `needle`, leaving nothing behind.
void expect_rejected(const std::string& bytes, const std::string& needle,
                     const UnpackLimits& limits = {}) {
  TempDir t;
  auto dest = t / "out";
  auto r = unpack(memory_source(bytes), dest, limits);
  ASSERT_FALSE(r) << "accepted; expected an error containing: " << needle;
  EXPECT_NE(r.error().message().find(needle), std::string::npos)
      << "message: " << r.error().message() << "\nexpected to contain: " << needle;
  EXPECT_FALSE(stdfs::exists(dest)) << r.error().message();
  EXPECT_TRUE(dir_listing(t.path()).empty());
}

// ---- pack / unpack round trips ----

TEST(Package, RoundTripGeneratedModel) {
  TempDir t;
  make_model_dir(t / "src");
  std::vector<std::pair<std::uint64_t, std::uint64_t>> calls;
  PackOptions opts;
  opts.progress = [&](std::uint64_t done, std::uint64_t total) { calls.emplace_back(done, total); };
  auto packed = pack(t / "src", t / "demo.mota", opts);
  ASSERT_TRUE(packed) << packed.error().message();

  // The manifest got its file list, sorted, with sizes and hashes; model.json is not in it.
  const auto& m = packed->manifest;
  std::vector<std::string> paths;
  for (const auto& f : m.files) paths.push_back(f.path);
  EXPECT_EQ(paths, (std::vector<std::string>{".hidden", "deep/a/b/c/weights.bin", "empty.bin",
                                             "health/input.bin", "labels.txt", "model.onnx"}));
  EXPECT_EQ(m.files[5].sha256, crypto::sha256_hex(pseudo_random(300000, 1)));
  EXPECT_EQ(m.files[2].size, 0u);
  EXPECT_EQ(packed->package_size, stdfs::file_size(t / "demo.mota"));
  EXPECT_EQ(packed->package_sha256, crypto::sha256_hex(test::read_file(t / "demo.mota")));

  // Progress: monotonic, ending at the total of all file bytes.
  ASSERT_FALSE(calls.empty());
  std::uint64_t total = 0;
  for (const auto& f : m.files) total += f.size;
  EXPECT_EQ(calls.back(), std::make_pair(total, total));
  for (std::size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);

  std::vector<std::uint64_t> unpack_progress;
  auto un = unpack_file(t / "demo.mota", t / "out", {}, [&](std::uint64_t done, std::uint64_t) {
    unpack_progress.push_back(done);
  });
  ASSERT_TRUE(un) << un.error().message();
  EXPECT_EQ(un->tree_digest, packed->tree_digest);
  EXPECT_EQ(un->bytes_written, total);
  EXPECT_EQ(un->manifest.serialize(), m.serialize());
  ASSERT_FALSE(unpack_progress.empty());
  EXPECT_EQ(unpack_progress.back(), total);

  // Same files; model.json is the packed (complete) manifest.
  auto src = read_tree(t / "src");
  auto out = read_tree(t / "out");
  src["model.json"] = m.serialize();
  EXPECT_EQ(out, src);
  EXPECT_EQ(stdfs::status(t / "out/model.onnx").permissions() & stdfs::perms::all,
            stdfs::perms(0644));
  EXPECT_EQ(stdfs::status(t / "out/deep/a").permissions() & stdfs::perms::all, stdfs::perms(0755));
  // The zero run became a hole (the file takes less disk than its size).
  struct stat st {};
  ASSERT_EQ(::stat((t / "out/deep/a/b/c/weights.bin").c_str(), &st), 0);
  EXPECT_LT(static_cast<std::uint64_t>(st.st_blocks) * 512, std::uint64_t(3) << 20);

  auto verified = verify_tree(t / "out");
  ASSERT_TRUE(verified) << verified.error().message();
  EXPECT_EQ(verified->tree_digest, packed->tree_digest);

  auto rm = read_manifest(t / "demo.mota");
  ASSERT_TRUE(rm) << rm.error().message();
  EXPECT_EQ(rm->serialize(), m.serialize());
}

TEST(Package, RoundTripUltraFace) {
  TempDir t;
  auto src = t / "ultraface";
  stdfs::create_directories(src);
  for (const char* f : {"LICENSE", "version-RFB-320.onnx", "version-slim-320.onnx"}) {
    stdfs::copy_file(test::shared_model(std::string("ultraface/") + f), src / f);
  }
  test::write_file(src / "model.json", R"({
    "name": "ultraface", "framework": "onnx", "entry": "version-slim-320.onnx",
    "inputs": [{"name": "input", "shape": [1, 3, 240, 320], "dtype": "float32"}],
    "outputs": [{"name": "scores", "shape": [1, 4420, 2], "dtype": "float32"},
                {"name": "boxes", "shape": [1, 4420, 4], "dtype": "float32"}]
  })");
  PackOptions opts;
  opts.version = "1.0.0";
  auto packed = pack(src, t / "uf.mota", opts);
  ASSERT_TRUE(packed) << packed.error().message();
  EXPECT_EQ(packed->manifest.version, "1.0.0");
  ASSERT_EQ(packed->manifest.files.size(), 3u);
  EXPECT_EQ(packed->manifest.files[1].sha256,
            "34cd7e60aeff28744c657de7a3dc64e872d506741de66987f3426f2b79f88017");
  EXPECT_EQ(packed->manifest.files[2].sha256,
            "e9adbd0f920ddcce9368434c4d34d72520dc0c19b526fd44b4ef49bde2c3b1a8");
  EXPECT_LT(packed->package_size, 2470000u);  // compressed at least a little

  auto un = unpack_file(t / "uf.mota", t / "out");
  ASSERT_TRUE(un) << un.error().message();
  EXPECT_EQ(un->tree_digest, packed->tree_digest);
  EXPECT_EQ(test::read_file(t / "out/version-slim-320.onnx"),
            test::read_file(test::shared_model("ultraface/version-slim-320.onnx")));
  EXPECT_EQ(test::read_file(t / "out/version-RFB-320.onnx"),
            test::read_file(test::shared_model("ultraface/version-RFB-320.onnx")));
}

TEST(Package, LongAndNonAsciiNamesRoundTrip) {
  TempDir t;
  std::string long_dir = std::string(120, 'd') + "/" + std::string(90, 'e');
  Json m = source_manifest();
  m.erase("health");
  m.erase("labels");
  test::write_file(t / "src/model.json", m.dump());
  test::write_file(t / "src/model.onnx", "w");
  test::write_file(t / "src" / long_dir / "f.bin", "long");
  test::write_file(t / "src/gr\xc3\xbc\xc3\x9f" / "\xe6\x97\xa5.bin", "utf8");
  auto packed = pack(t / "src", t / "p.mota");
  ASSERT_TRUE(packed) << packed.error().message();
  auto un = unpack_file(t / "p.mota", t / "out");
  ASSERT_TRUE(un) << un.error().message();
  EXPECT_EQ(test::read_file(t / "out" / long_dir / "f.bin"), "long");
  EXPECT_EQ(test::read_file(t / "out/gr\xc3\xbc\xc3\x9f/\xe6\x97\xa5.bin"), "utf8");
}

TEST(Package, PackIsDeterministic) {
  TempDir t;
  make_model_dir(t / "a");
  auto p1 = pack(t / "a", t / "1.mota");
  auto p2 = pack(t / "a", t / "2.mota");
  ASSERT_TRUE(p1) << p1.error().message();
  ASSERT_TRUE(p2) << p2.error().message();
  EXPECT_EQ(p1->package_sha256, p2->package_sha256);
  EXPECT_EQ(test::read_file(t / "1.mota"), test::read_file(t / "2.mota"));

  // A copy with other mtimes and modes, created in another order, packs to the same bytes.
  stdfs::create_directories(t / "b");
  std::vector<std::string> rels;
  for (auto& e : stdfs::recursive_directory_iterator(t / "a")) {
    if (e.is_regular_file()) rels.push_back(e.path().lexically_relative(t / "a").string());
  }
  std::reverse(rels.begin(), rels.end());
  for (const auto& rel : rels) {
    stdfs::create_directories((t / "b" / rel).parent_path());
    stdfs::copy_file(t / "a" / rel, t / "b" / rel);
    stdfs::permissions(t / "b" / rel, stdfs::perms(0600));
    stdfs::last_write_time(t / "b" / rel,
                           stdfs::file_time_type::clock::now() - std::chrono::hours(999));
  }
  stdfs::permissions(t / "b/deep", stdfs::perms(0700));
  auto p3 = pack(t / "b", t / "3.mota");
  ASSERT_TRUE(p3) << p3.error().message();
  EXPECT_EQ(p3->package_sha256, p1->package_sha256);
  EXPECT_EQ(p3->tree_digest, p1->tree_digest);

  // A different compression level changes the bytes but not the content digest.
  PackOptions fast;
  fast.compression_level = 1;
  auto p4 = pack(t / "a", t / "4.mota", fast);
  ASSERT_TRUE(p4) << p4.error().message();
  EXPECT_EQ(p4->tree_digest, p1->tree_digest);
}

TEST(Package, IsAStandardTarZst) {
  TempDir t;
  make_model_dir(t / "src");
  ASSERT_TRUE(pack(t / "src", t / "p.mota"));
  auto list = test::run({"tar", "-I", "zstd", "-tvf", (t / "p.mota").string()});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  std::istringstream lines(list.out);
  std::string first;
  std::getline(lines, first);
  EXPECT_TRUE(first.ends_with(" model.json")) << list.out;
  EXPECT_NE(first.find("-rw-r--r--"), std::string::npos) << first;
  EXPECT_NE(first.find(" 0/0 "), std::string::npos) << first;
  EXPECT_NE(first.find("1970-01-01"), std::string::npos) << first;
  std::string line;
  std::vector<std::string> names;
  while (std::getline(lines, line)) names.push_back(line.substr(line.rfind(' ') + 1));
  EXPECT_EQ(names, (std::vector<std::string>{".hidden", "deep/a/b/c/weights.bin", "empty.bin",
                                             "health/input.bin", "labels.txt", "model.onnx"}));

  // GNU tar extracts the same tree.
  stdfs::create_directories(t / "x");
  auto x =
      test::run({"tar", "-I", "zstd", "-xf", (t / "p.mota").string(), "-C", (t / "x").string()});
  ASSERT_EQ(x.exit_code, 0) << x.err;
  auto un = unpack_file(t / "p.mota", t / "out");
  ASSERT_TRUE(un);
  EXPECT_EQ(read_tree(t / "x"), read_tree(t / "out"));
}

TEST(Package, SourceFileListMustMatchDisk) {
  TempDir t;
  make_model_dir(t / "src");
  auto first = pack(t / "src", t / "p.mota");
  ASSERT_TRUE(first);
  // A source that lists exactly what is on disk packs to the same package.
  test::write_file(t / "src/model.json", first->manifest.serialize());
  auto again = pack(t / "src", t / "q.mota");
  ASSERT_TRUE(again) << again.error().message();
  EXPECT_EQ(again->package_sha256, first->package_sha256);
}

// ---- pack errors ----

struct PackCase {
  const char* what;
  std::function<void(const stdfs::path& src)> setup;
  PackOptions options;
  std::string needle;
};

TEST(Package, PackRejectsBadInput) {
  std::vector<PackCase> cases;
  cases.push_back({"missing model.json",
                   [](auto& d) { stdfs::remove(d / "model.json"); },
                   {},
                   "model.json: No such file or directory"});
  cases.push_back({"malformed model.json",
                   [](auto& d) { test::write_file(d / "model.json", "{"); },
                   {},
                   "model.json"});
  cases.push_back({"bad field",
                   [](auto& d) {
                     Json m = source_manifest();
                     m["framework"] = "caffe";
                     test::write_file(d / "model.json", m.dump());
                   },
                   {},
                   "framework: \"caffe\" is not one of"});
  cases.push_back({"entry missing on disk",
                   [](auto& d) { stdfs::remove(d / "model.onnx"); },
                   {},
                   "entry: \"model.onnx\" is not listed in files"});
  auto listed = [](const std::function<void(Json&)>& edit) {
    return [edit](const stdfs::path& d) {
      auto p = pack(d, d.parent_path() / "listed.mota");
      ASSERT_TRUE(p);
      stdfs::remove(d.parent_path() / "listed.mota");
      Json j = p->manifest.to_json();
      edit(j);
      test::write_file(d / "model.json", j.dump());
    };
  };
  cases.push_back(
      {"listed file missing",
       listed([](Json& j) {
         j["files"].push_back({{"path", "zzz.bin"}, {"size", 1}, {"sha256", std::string(64, '0')}});
       }),
       {},
       "\"zzz.bin\" is listed in model.json but missing"});
  cases.push_back({"listed hash wrong",
                   listed([](Json& j) { j["files"][5]["sha256"] = std::string(64, '0'); }),
                   {},
                   "\"model.onnx\": listed with sha256 0000"});
  cases.push_back({"listed size wrong",
                   listed([](Json& j) { j["files"][5]["size"] = 1; }),
                   {},
                   "\"model.onnx\": listed with size 1, file has 300000 bytes"});
  cases.push_back({"unlisted file",
                   [listed](auto& d) {
                     listed([](Json&) {})(d);
                     test::write_file(d / "extra.bin", "x");
                   },
                   {},
                   "\"extra.bin\" is in the directory but not listed in model.json"});
  cases.push_back({"symlink",
                   [](auto& d) { stdfs::create_symlink("/etc/passwd", d / "deep/link"); },
                   {},
                   "\"deep/link\" is a symlink"});
  cases.push_back({"symlinked model.json",
                   [](auto& d) {
                     stdfs::rename(d / "model.json", d.parent_path() / "m.json");
                     stdfs::create_symlink(d.parent_path() / "m.json", d / "model.json");
                   },
                   {},
                   "is a symlink"});
  cases.push_back({"fifo",
                   [](auto& d) { ASSERT_EQ(::mkfifo((d / "pipe").c_str(), 0644), 0); },
                   {},
                   "\"pipe\" is a special file"});
  cases.push_back({"temp file",
                   [](auto& d) { test::write_file(d / ".model.onnx.tmp-abc12345", ""); },
                   {},
                   "looks like an interrupted temporary file"});
  PackOptions bad_version;
  bad_version.version = "v2";
  cases.push_back({"version override", [](auto&) {}, bad_version,
                   "version override: 'v2' is not a semantic version"});
  PackOptions bad_name;
  bad_name.name = "Bad Name";
  cases.push_back({"name override", [](auto&) {}, bad_name, "name \"Bad Name\": must match"});
  PackOptions bad_level;
  bad_level.compression_level = 25;
  cases.push_back({"level", [](auto&) {}, bad_level, "compression level 25 is not in 1..19"});
  cases.push_back({"no version",
                   [](auto& d) {
                     Json m = source_manifest();
                     m.erase("version");
                     test::write_file(d / "model.json", m.dump());
                   },
                   {},
                   "has no \"version\" and none was given"});

  for (const auto& c : cases) {
    TempDir t;
    make_model_dir(t / "src");
    c.setup(t / "src");
    auto r = pack(t / "src", t / "out.mota", c.options);
    ASSERT_FALSE(r) << c.what;
    EXPECT_NE(r.error().message().find(c.needle), std::string::npos)
        << c.what << ": " << r.error().message();
    EXPECT_FALSE(stdfs::exists(t / "out.mota")) << c.what;
    // Nothing left beside the output either (no temporary file).
    for (const auto& name : dir_listing(t.path())) {
      EXPECT_TRUE(name == "src" || name == "m.json") << c.what << ": left " << name;
    }
  }
}

TEST(Package, PackRefusesOutputInsideModelDir) {
  TempDir t;
  make_model_dir(t / "src");
  auto r = pack(t / "src", t / "src/self.mota");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("inside the model directory"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(t / "src/self.mota"));
}

// ---- unpack rejections ----

TEST(Package, UnpacksHandBuiltArchive) {
  // The raw builder itself produces acceptable archives (so the rejections below are real).
  TempDir t;
  auto r = unpack(memory_source(good_entries_then()), t / "out");
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(test::read_file(t / "out/sub/labels.txt"), "a\nb\n");
  // Directory entries for directories of listed files are fine too.
  auto with_dir =
      good_entries_then([](auto& e) { e.insert(e.begin() + 2, special("sub/", AE_IFDIR)); });
  ASSERT_TRUE(unpack(memory_source(with_dir), t / "out2"));
}

// Files of several MiB are hashed on a worker thread: the same checks hold there.
TEST(Package, BigFileHashIsCheckedToo) {
  std::string big(6u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  const std::vector<std::pair<std::string, std::string>> files = {{"model.onnx", big}};
  TempDir t;
  auto ok = unpack(
      memory_source(build_tar({reg("model.json", manifest_for(files)), reg("model.onnx", big)})),
      t / "ok");
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(test::read_file(t / "ok/model.onnx"), big);
  std::string tampered = big;
  tampered[5u << 20] ^= 1;
  auto bad = unpack(memory_source(build_tar(
                        {reg("model.json", manifest_for(files)), reg("model.onnx", tampered)})),
                    t / "bad");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::verification);
  EXPECT_NE(
      bad.error().message().find("entry \"model.onnx\": sha256 " + crypto::sha256_hex(tampered) +
                                 ", model.json says " + crypto::sha256_hex(big)),
      std::string::npos)
      << bad.error().message();
  EXPECT_FALSE(std::filesystem::exists(t / "bad"));
}

TEST(Package, UnpackRejectsMaliciousArchives) {
  expect_rejected(good_entries_then([](auto& e) { e[1].path = "/etc/model.onnx"; }),
                  "entry \"/etc/model.onnx\": invalid path");
  expect_rejected(good_entries_then([](auto& e) { e[1].path = "../model.onnx"; }),
                  "entry \"../model.onnx\": invalid path");
  expect_rejected(good_entries_then([](auto& e) { e[2].path = "sub/../../labels.txt"; }),
                  "entry \"sub/../../labels.txt\": invalid path");
  expect_rejected(
      good_entries_then([](auto& e) { e[1] = symlink_to("model.onnx", "/etc/passwd"); }),
      "entry \"model.onnx\": symlink not allowed");
  expect_rejected(
      good_entries_then([](auto& e) { e[2] = hardlink_to("sub/labels.txt", "model.onnx"); }),
      "entry \"sub/labels.txt\": hardlink not allowed");
  expect_rejected(good_entries_then([](auto& e) { e[1] = special("model.onnx", AE_IFCHR); }),
                  "entry \"model.onnx\": character device not allowed");
  expect_rejected(good_entries_then([](auto& e) { e[1] = special("model.onnx", AE_IFBLK); }),
                  "entry \"model.onnx\": block device not allowed");
  expect_rejected(good_entries_then([](auto& e) { e[1] = special("model.onnx", AE_IFIFO); }),
                  "entry \"model.onnx\": fifo not allowed");
  expect_rejected(good_entries_then([](auto& e) { std::swap(e[0], e[1]); }),
                  "first entry \"model.onnx\" is not model.json");
  expect_rejected(good_entries_then([](auto& e) { e[0] = special("model.json", AE_IFDIR); }),
                  "first entry \"model.json/\" is not model.json");
  expect_rejected(good_entries_then([](auto& e) { e.push_back(reg("extra.bin", "x")); }),
                  "entry \"extra.bin\": not listed in model.json");
  expect_rejected(good_entries_then([](auto& e) { e.push_back(e[1]); }),
                  "entry \"model.onnx\": appears twice");
  expect_rejected(good_entries_then([](auto& e) { e.push_back(e[0]); }),
                  "entry \"model.json\": appears twice");
  expect_rejected(
      good_entries_then([](auto& e) { e.insert(e.begin() + 1, special("other/", AE_IFDIR)); }),
      "entry \"other/\": directory holds no file listed in model.json");
  // Header size differs from model.json (data consistent with the header).
  expect_rejected(good_entries_then([](auto& e) { e[1].data += "!"; }),
                  "entry \"model.onnx\": header size 24, model.json says 23");
  expect_rejected(good_entries_then([](auto& e) { e[1].data.pop_back(); }),
                  "entry \"model.onnx\": header size 22, model.json says 23");
  // Right size, wrong bytes.
  expect_rejected(good_entries_then([](auto& e) { e[1].data[0] = 'W'; }),
                  "entry \"model.onnx\": sha256 ");
  expect_rejected(good_entries_then([](auto& e) { e.pop_back(); }),
                  "file \"sub/labels.txt\" is listed in model.json but missing");
  expect_rejected(good_entries_then([](auto& e) { e.resize(1); }),
                  "file \"model.onnx\" is listed in model.json but missing");
  expect_rejected(good_entries_then([](auto& e) { e[0].data = "{\"name\": 1}"; }),
                  "model.json: name: must be a string");
  expect_rejected(good_entries_then(
                      [](auto& e) { e[0].data = "{" + std::string(kMaxManifestBytes, ' ') + "}"; }),
                  "model.json is 1048578 bytes, more than the limit of 1048576");
  expect_rejected(build_tar({}), "package is empty");
}

TEST(Package, UnpackRejectsCorruptStreams) {
  std::string good = good_entries_then();
  expect_rejected(pseudo_random(10000, 9), "open package");
  std::string garbage = pseudo_random(10000, 9);
  std::string zgarbage(ZSTD_compressBound(garbage.size()), '\0');
  zgarbage.resize(
      ZSTD_compress(zgarbage.data(), zgarbage.size(), garbage.data(), garbage.size(), 3));
  expect_rejected(zgarbage, "");
  expect_rejected("", "");
  // Uncompressed tar: not a package.
  std::vector<RawEntry> plain = {reg("model.json", manifest_for(kFiles)),
                                 reg("model.onnx", kFiles[0].second),
                                 reg("sub/labels.txt", kFiles[1].second)};
  expect_rejected(build_tar(plain, /*zstd=*/false), "not a zstd-compressed tar");

  // Truncated anywhere before the last file's data ends.
  TempDir t;
  make_model_dir(t / "src");
  ASSERT_TRUE(pack(t / "src", t / "p.mota"));
  std::string pkg = test::read_file(t / "p.mota");
  for (std::size_t cut : {std::size_t(0), std::size_t(10), pkg.size() / 3, pkg.size() / 2,
                          pkg.size() * 9 / 10, pkg.size() - 1}) {
    SCOPED_TRACE(cut);
    expect_rejected(pkg.substr(0, cut), "");
  }
  // A flipped byte in the compressed stream.
  std::string flipped = pkg;
  flipped[flipped.size() / 2] ^= 0x40;
  expect_rejected(flipped, "");
}

TEST(Package, UnpackEnforcesLimits) {
  UnpackLimits bytes;
  bytes.max_total_bytes = 25;
  expect_rejected(good_entries_then(), "more than the limit of 25 bytes", bytes);
  UnpackLimits files;
  files.max_files = 1;
  expect_rejected(good_entries_then(), "lists 2 files, more than the limit of 1", files);
  UnpackLimits exact;
  exact.max_files = 2;
  exact.max_total_bytes = kFiles[0].second.size() + kFiles[1].second.size();
  TempDir t;
  EXPECT_TRUE(unpack(memory_source(good_entries_then()), t / "out", exact));
}

TEST(Package, UnpackPropagatesSourceErrors) {
  TempDir t;
  make_model_dir(t / "src");
  ASSERT_TRUE(pack(t / "src", t / "p.mota"));
  std::string pkg = test::read_file(t / "p.mota");
  std::size_t pos = 0;
  ReadFn failing = [&](std::span<std::byte> buf) -> Result<std::size_t> {
    if (pos > pkg.size() / 2) return fail(Errc::network, "connection reset by peer");
    std::size_t n = std::min<std::size_t>({buf.size(), 4096, pkg.size() - pos});
    std::memcpy(buf.data(), pkg.data() + pos, n);
    pos += n;
    return n;
  };
  auto r = unpack(failing, t / "out");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::network);
  EXPECT_NE(r.error().message().find("connection reset by peer"), std::string::npos);
  EXPECT_FALSE(stdfs::exists(t / "out"));
}

TEST(Package, UnpackRefusesExistingDestination) {
  TempDir t;
  test::write_file(t / "out/keep.txt", "mine");
  auto r = unpack(memory_source(good_entries_then()), t / "out");
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::already_exists);
  EXPECT_EQ(test::read_file(t / "out/keep.txt"), "mine");
  EXPECT_EQ(dir_listing(t / "out"), std::vector<std::string>{"keep.txt"});
}

TEST(Package, ReadManifestReadsOnlyTheFirstEntry) {
  TempDir t;
  make_model_dir(t / "src");
  auto p = pack(t / "src", t / "p.mota");
  ASSERT_TRUE(p);
  auto m = read_manifest(t / "p.mota");
  ASSERT_TRUE(m) << m.error().message();
  EXPECT_EQ(m->name, "demo");
  // A package whose later entries are broken still yields its manifest.
  std::string bad = good_entries_then([](auto& e) { e[1].data[0] = 'W'; });
  test::write_file(t / "bad.mota", bad);
  EXPECT_TRUE(read_manifest(t / "bad.mota"));
  test::write_file(t / "garbage.mota", pseudo_random(5000, 4));
  EXPECT_FALSE(read_manifest(t / "garbage.mota"));
  auto missing = read_manifest(t / "nope.mota");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::not_found);
}

TEST(Package, VerifyTreeDetectsChanges) {
  TempDir t;
  make_model_dir(t / "src");
  ASSERT_TRUE(pack(t / "src", t / "p.mota"));
  auto fresh = [&](const std::string& name) {
    auto d = t / name;
    EXPECT_TRUE(unpack_file(t / "p.mota", d));
    return d;
  };
  auto d1 = fresh("flip");
  {
    std::fstream f(d1 / "model.onnx", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(1000);
    f.put('!');
  }
  auto r1 = verify_tree(d1);
  ASSERT_FALSE(r1);
  EXPECT_EQ(r1.error().code(), Errc::verification);
  EXPECT_NE(r1.error().message().find("model.onnx: sha256"), std::string::npos)
      << r1.error().message();

  auto d2 = fresh("extra");
  test::write_file(d2 / "deep/extra.txt", "x");
  auto r2 = verify_tree(d2);
  ASSERT_FALSE(r2);
  EXPECT_NE(r2.error().message().find("\"deep/extra.txt\" is not listed"), std::string::npos);

  auto d3 = fresh("missing");
  stdfs::remove(d3 / "labels.txt");
  auto r3 = verify_tree(d3);
  ASSERT_FALSE(r3);
  EXPECT_NE(r3.error().message().find("\"labels.txt\" is missing"), std::string::npos);

  auto d4 = fresh("grown");
  std::ofstream(d4 / "labels.txt", std::ios::app) << "more";
  auto r4 = verify_tree(d4);
  ASSERT_FALSE(r4);
  EXPECT_NE(r4.error().message().find("bytes, model.json says"), std::string::npos);

  auto d5 = fresh("link");
  stdfs::create_symlink("model.onnx", d5 / "alias");
  EXPECT_FALSE(verify_tree(d5));
}

// ---- memory ----

using test::peak_rss_kib;
using test::reset_peak_rss;

// Runs in a fresh process (re-executed by the tests below) so that its peak RSS reflects only
// the pack and unpack of $MOTA_PACKAGE_MEM_DIR/src, not what earlier tests allocated.
TEST(PackageMemoryChild, PackUnpack) {
  const char* dir = std::getenv("MOTA_PACKAGE_MEM_DIR");
  if (dir == nullptr) GTEST_SKIP() << "helper for PackageMemory tests";
  stdfs::path d = dir;
  long before = peak_rss_kib();
  auto p = pack(d / "src", d / "p.mota");
  ASSERT_TRUE(p) << p.error().message();
  long after_pack = peak_rss_kib();
  reset_peak_rss();
  long before_unpack = peak_rss_kib();
  auto u = unpack_file(d / "p.mota", d / "out");
  ASSERT_TRUE(u) << u.error().message();
  long after_unpack = peak_rss_kib();
  std::printf("MEM before=%ld pack=%ld unpack=%ld\n", before, after_pack - before,
              after_unpack - before_unpack);
}

struct MemReport {
  long before = 0, pack = 0, unpack = 0;
};

MemReport run_memory_child(const stdfs::path& dir) {
  auto r = test::run({"/proc/self/exe", "--gtest_filter=PackageMemoryChild.PackUnpack"},
                     {{"MOTA_PACKAGE_MEM_DIR", dir.string()}}, std::chrono::seconds(900));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  MemReport m;
  auto pos = r.out.find("MEM ");
  EXPECT_NE(pos, std::string::npos) << r.out;
  if (pos != std::string::npos) {
    EXPECT_EQ(std::sscanf(r.out.c_str() + pos, "MEM before=%ld pack=%ld unpack=%ld", &m.before,
                          &m.pack, &m.unpack),
              3);
  }
  return m;
}

TEST(PackageMemory, SixtyFourMiBFileStreams) {
  TempDir t;
  Json m = source_manifest();
  m.erase("health");
  m.erase("labels");
  test::write_file(t / "src/model.json", m.dump());
  {
    // Incompressible-ish data: a buffering implementation would need >= 64 MiB.
    std::ofstream f(t / "src/model.onnx", std::ios::binary);
    for (int i = 0; i < 64; ++i) f << pseudo_random(1 << 20, 100 + i);
  }
  auto mem = run_memory_child(t.path());
  std::printf("peak RSS KiB: at start %ld, growth in pack %ld, in unpack %ld\n", mem.before,
              mem.pack, mem.unpack);
  // zstd level 10 needs ~35 MiB of compression state; a packer or unpacker that held the file
  // in memory would need 64 MiB more than that.
  EXPECT_LT(mem.pack, 48 * 1024);
  EXPECT_LT(mem.unpack, 24 * 1024);
  EXPECT_EQ(stdfs::file_size(t / "out/model.onnx"), std::uint64_t(64) << 20);
}

}  // namespace
}  // namespace mota::storage
