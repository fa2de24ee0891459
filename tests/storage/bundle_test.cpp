// The .motab container (storage/bundle.hpp): what BundleWriter writes reads back entry for entry
// (ustar and pax names, streaming by offset, GNU tar lists it), BundleSource answers as a web
// server would (ranges, 404, size limits), and hostile or damaged archives are refused with the
// entry named: path traversal, absolute paths, links and other entry types, sizes beyond the
// file, too many entries, bad checksums, truncation, trailing data, duplicates, control bytes.
// The hostile archives are built here byte by byte, independently of the writer.

#include "storage/bundle.hpp"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "manifest/canonical_json.hpp"
#include "tests/support/test_support.hpp"

namespace mota::storage {
namespace {

namespace stdfs = std::filesystem;

std::string index_json(const std::string& model = "detector", int format_version = 1) {
  return Json{{"format", "mota-bundle"},
              {"format_version", format_version},
              {"model", model},
              {"version", "1.1.0"},
              {"package", "models/" + model + "/1.1.0/" + model + "-1.1.0.mota"},
              {"deltas", Json::array()}}
      .dump();
}

// A raw ustar header, built independently of BundleWriter. `size_field` overrides the octal
// size text (for sizes the test wants to lie about).
std::string raw_header(const std::string& name, std::uint64_t size, char type = '0',
                       const std::string& prefix = "", bool break_checksum = false,
                       std::string_view magic = std::string_view("ustar\0"
                                                                 "00",
                                                                 8)) {
  std::string h(512, '\0');
  std::memcpy(h.data(), name.data(), std::min<std::size_t>(name.size(), 100));
  std::memcpy(h.data() + 345, prefix.data(), std::min<std::size_t>(prefix.size(), 155));
  std::snprintf(h.data() + 100, 8, "%07o", 0644);
  std::snprintf(h.data() + 108, 8, "%07o", 0);
  std::snprintf(h.data() + 116, 8, "%07o", 0);
  std::snprintf(h.data() + 124, 12, "%011llo", static_cast<unsigned long long>(size));
  std::snprintf(h.data() + 136, 12, "%011o", 0);
  h[156] = type;
  std::memcpy(h.data() + 257, magic.data(), 8);
  std::memset(h.data() + 148, ' ', 8);
  unsigned sum = 0;
  for (unsigned char c : h) sum += c;
  if (break_checksum) sum += 1;
  std::snprintf(h.data() + 148, 8, "%06o", sum);
  h[155] = ' ';
  return h;
}

std::string padded(const std::string& data) {
  std::string out = data;
  out.resize((data.size() + 511) / 512 * 512, '\0');
  return out;
}

std::string raw_entry(const std::string& name, const std::string& data, char type = '0') {
  return raw_header(name, data.size(), type) + padded(data);
}

// One pax record: "<len> key=value\n", len counting itself.
std::string pax_record(const std::string& key, const std::string& value) {
  const std::size_t body = key.size() + value.size() + 3;
  std::size_t len = body + 1;
  while (std::to_string(len).size() + body != len) len = std::to_string(len).size() + body;
  return std::to_string(len) + " " + key + "=" + value + "\n";
}

std::string pax_entry(const std::string& records) {
  return raw_header("PaxHeaders/x", records.size(), 'x') + padded(records);
}

std::string end_marker() {
  return std::string(1024, '\0');
}

// A valid archive: bundle.json, then the given entries, then the end marker.
std::string archive(const std::string& middle) {
  return raw_entry("bundle.json", index_json()) + middle + end_marker();
}

class Bundle : public ::testing::Test {
 protected:
  stdfs::path write(const std::string& bytes, const std::string& name = "b.motab") {
    auto p = dir_ / name;
    test::write_file(p, bytes);
    return p;
  }
  // The error opening `bytes` as a bundle (empty when it opened).
  std::string open_error(const std::string& bytes, const BundleLimits& limits = {}) {
    auto r = BundleReader::open(write(bytes), limits);
    return r ? std::string() : r.error().message();
  }
  test::TempDir dir_;
};

TEST_F(Bundle, WrittenBundleReadsBackEntryForEntry) {
  const auto out = dir_ / "d-1.1.0.motab";
  const std::string long_name =
      "targets/models/detector/1.1.0/" + std::string(64, 'a') +
      ".detector-with-a-rather-long-model-name-so-that-no-split-fits-1.1.0.mota";
  // Its file name alone is over ustar's 100 bytes: only a pax record can hold it.
  ASSERT_GT(long_name.size() - long_name.rfind('/') - 1, 100u);
  std::string big(300000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7 + i / 511);
  test::write_file(dir_ / "pkg", big);
  {
    auto w = BundleWriter::create(out);
    ASSERT_TRUE(w) << w.error().message();
    ASSERT_TRUE(w->add("bundle.json", index_json()));
    ASSERT_TRUE(w->add("metadata/timestamp.json", "{\"signed\": {}}"));
    ASSERT_TRUE(w->add("metadata/empty.json", ""));
    ASSERT_TRUE(w->add_file(long_name, dir_ / "pkg"));
    ASSERT_TRUE(w->commit());
  }
  EXPECT_EQ(stdfs::file_size(out) % 512, 0u);
  auto r = BundleReader::open(out);
  ASSERT_TRUE(r) << r.error().message();
  EXPECT_EQ(r->index().model, "detector");
  EXPECT_EQ(r->index().version, "1.1.0");
  ASSERT_EQ(r->entries().size(), 4u);
  EXPECT_EQ(r->entries()[3].name, long_name);
  const auto* pkg = r->find(long_name);
  ASSERT_NE(pkg, nullptr);
  EXPECT_EQ(pkg->size, big.size());
  auto whole = r->read(*pkg, big.size());
  ASSERT_TRUE(whole);
  EXPECT_EQ(*whole, big);
  EXPECT_FALSE(r->read(*pkg, big.size() - 1)) << "a limit below the size is refused";

  // BundleSource: the entries as a web server would serve them.
  BundleSource src(*r);
  std::string got;
  http::GetRequest req;
  req.url = BundleSource::url(long_name);
  req.range_start = 100000;
  bool headers_seen = false;
  req.on_headers = [&](const http::ResponseInfo& info) -> Status {
    headers_seen = true;
    EXPECT_TRUE(info.partial);
    EXPECT_EQ(info.status, 206);
    EXPECT_EQ(info.content_length, big.size() - 100000);
    return {};
  };
  auto info = src.get(req, [&](std::span<const std::byte> c) -> Status {
    got.append(reinterpret_cast<const char*>(c.data()), c.size());
    return {};
  });
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_TRUE(headers_seen);
  EXPECT_EQ(got, big.substr(100000));
  EXPECT_EQ(info->bytes_received, big.size() - 100000);

  auto missing = src.get_body(BundleSource::url("metadata/2.root.json"), 1000);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::http);
  EXPECT_EQ(missing.error().http_status(), 404);
  auto too_big = src.get_body(BundleSource::url(long_name), 1000);
  ASSERT_FALSE(too_big);
  EXPECT_EQ(too_big.error().code(), Errc::too_large);
  auto empty = src.get_body(BundleSource::url("metadata/empty.json"), 10);
  ASSERT_TRUE(empty);
  EXPECT_EQ(*empty, "");
  EXPECT_FALSE(src.post("bundle:x", "", {}, 10));

  // Any tar reads it: GNU tar lists the same names (the long one through its pax record).
  auto tar = test::run({"tar", "-tf", out.string()});
  ASSERT_EQ(tar.exit_code, 0) << tar.err;
  EXPECT_EQ(tar.out,
            "bundle.json\nmetadata/timestamp.json\nmetadata/empty.json\n" + long_name + "\n");
}

TEST_F(Bundle, WriterIsDeterministicAndLeavesNothingWithoutCommit) {
  auto make = [&](const stdfs::path& p) {
    auto w = BundleWriter::create(p);
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->add("bundle.json", index_json()));
    ASSERT_TRUE(w->add("targets/x", "data"));
    ASSERT_TRUE(w->commit());
  };
  make(dir_ / "one.motab");
  make(dir_ / "two.motab");
  EXPECT_EQ(test::read_file(dir_ / "one.motab"), test::read_file(dir_ / "two.motab"));
  {
    auto w = BundleWriter::create(dir_ / "never.motab");
    ASSERT_TRUE(w);
    ASSERT_TRUE(w->add("bundle.json", index_json()));
  }
  EXPECT_FALSE(stdfs::exists(dir_ / "never.motab"));
  EXPECT_EQ(std::distance(stdfs::directory_iterator(dir_.path()), stdfs::directory_iterator()), 2);
  auto w = BundleWriter::create(dir_ / "bad.motab");
  ASSERT_TRUE(w);
  EXPECT_FALSE(w->add("../escape", "x")) << "the writer refuses what the reader would";
}

TEST_F(Bundle, BarePackageAndOtherFilesAreRefusedWithWhatToDo) {
  // A .mota package starts with a zstd frame.
  std::string zstd = "\x28\xb5\x2f\xfd";
  zstd += std::string(600, 'x');
  auto e = open_error(zstd);
  EXPECT_NE(e.find("is a bare package, not a signed bundle: make one with `mota bundle create"),
            std::string::npos)
      << e;
  e = open_error("hello, not a tar at all, but long enough to hold a block? no.");
  EXPECT_NE(e.find("is not a mota bundle"), std::string::npos) << e;
  e = open_error("");
  EXPECT_NE(e.find("is not a mota bundle"), std::string::npos) << e;
  e = open_error(raw_entry("model.json", "{}") + end_marker());
  EXPECT_NE(e.find("its first entry is 'model.json', not bundle.json"), std::string::npos) << e;
  e = open_error(archive(raw_entry("other/file", "x")));
  EXPECT_NE(e.find("unexpected entry 'other/file'"), std::string::npos) << e;
  e = open_error(archive(raw_entry("metadata/sub/file", "x")));
  EXPECT_NE(e.find("unexpected entry 'metadata/sub/file'"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", index_json("detector", 2)) + end_marker());
  EXPECT_NE(e.find("bundle format version 2"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", "{\"format\": \"other\"}") + end_marker());
  EXPECT_NE(e.find("\"format\" is not \"mota-bundle\""), std::string::npos) << e;
  EXPECT_EQ(open_error(archive(raw_entry("targets/x", "y"))), "");  // control: a valid one
}

TEST_F(Bundle, HostileNamesAreRefused) {
  struct Case {
    const char* what;
    std::string bytes;
    const char* error;
  };
  const Case cases[] = {
      {"dot-dot", archive(raw_entry("targets/../../etc/passwd", "x")), "a '..' path component"},
      {"dot-dot alone", archive(raw_entry("..", "x")), "a '..' path component"},
      {"absolute", archive(raw_entry("/etc/passwd", "x")), "an absolute path"},
      {"empty component", archive(raw_entry("targets//x", "x")), "an empty or '.' path component"},
      {"dot component", archive(raw_entry("targets/./x", "x")), "an empty or '.' path component"},
      {"trailing slash", archive(raw_entry("targets/x/", "x")), "an empty or '.' path component"},
      {"escape sequence", archive(raw_entry("targets/\x1b[31mred", "x")),
       "'targets/\\x1b[31mred': names hold printable ASCII only"},
      {"space", archive(raw_entry("targets/a b", "x")), "printable ASCII only"},
      {"prefix traversal", archive(raw_header("x", 1, '0', "targets/..") + padded("x")),
       "a '..' path component"},
      {"pax path traversal",
       archive(pax_entry(pax_record("path", "targets/../../x")) + raw_entry("ok", "x")),
       "a '..' path component"},
      {"pax path too long",
       archive(pax_entry(pax_record("path", "targets/" + std::string(1100, 'a'))) +
               raw_entry("ok", "x")),
       "name of 1108 bytes (limit 1024)"},
      {"empty name", archive(raw_entry("", "x")), "an entry has an empty name"},
      {"duplicate", archive(raw_entry("targets/x", "1") + raw_entry("targets/x", "2")),
       "entry 'targets/x' appears twice"},
  };
  for (const auto& c : cases) {
    const std::string e = open_error(c.bytes);
    EXPECT_NE(e.find(c.error), std::string::npos) << c.what << ": " << e;
    EXPECT_EQ(e.find('\x1b'), std::string::npos) << c.what << ": raw control byte in the message";
  }
}

TEST_F(Bundle, LinksDirectoriesAndOtherTypesAreRefused) {
  const std::pair<char, const char*> types[] = {
      {'1', "is a hard link"},         {'2', "is a symbolic link"}, {'3', "is a character device"},
      {'4', "is a block device"},      {'5', "is a directory"},     {'6', "is a FIFO"},
      {'g', "is a global pax header"}, {'L', "is a GNU long name"}, {'Z', "unknown type"},
  };
  for (const auto& [type, error] : types) {
    const std::string e = open_error(archive(raw_header("targets/link", 0, type)));
    EXPECT_NE(e.find(error), std::string::npos) << type << ": " << e;
    EXPECT_NE(e.find("a bundle holds regular files only"), std::string::npos) << e;
  }
}

TEST_F(Bundle, SizesBeyondTheFileAndTruncationAreRefused) {
  // An entry that claims 8 GiB in a file of a few KiB.
  auto e = open_error(raw_entry("bundle.json", index_json()) +
                      raw_header("targets/huge", (std::uint64_t(1) << 33) - 1) + end_marker());
  EXPECT_NE(e.find("entry 'targets/huge' declares 8589934591 bytes, only"), std::string::npos) << e;
  EXPECT_NE(e.find("truncated?"), std::string::npos) << e;
  // Sizes in pax records too (up to 2^64 - 1).
  e = open_error(
      archive(pax_entry(pax_record("size", "18446744073709551615")) + raw_entry("targets/x", "")));
  EXPECT_NE(e.find("declares 18446744073709551615 bytes"), std::string::npos) << e;
  // A pax header larger than its limit.
  BundleLimits small;
  small.max_pax_bytes = 16;
  e = open_error(archive(pax_entry(pax_record("path", "targets/x")) + raw_entry("n", "")), small);
  EXPECT_NE(e.find("a pax header of 18 bytes (limit 16)"), std::string::npos) << e;
  e = open_error(archive(pax_entry("99 path=x\n") + raw_entry("n", "")));
  EXPECT_NE(e.find("pax header at byte 1024: malformed record"), std::string::npos) << e;

  const std::string good = archive(raw_entry("targets/pkg", std::string(5000, 'p')));
  ASSERT_EQ(open_error(good), "");
  // Cut inside the package, inside the end marker, and right before it.
  e = open_error(good.substr(0, 3000));
  EXPECT_NE(e.find("declares 5000 bytes"), std::string::npos) << e;
  e = open_error(good.substr(0, good.size() - 512));
  EXPECT_NE(e.find("end-of-archive marker is cut short"), std::string::npos) << e;
  e = open_error(good.substr(0, good.size() - 1024));
  EXPECT_NE(e.find("ends without its end-of-archive marker"), std::string::npos) << e;
  e = open_error(good.substr(0, good.size() - 100));
  EXPECT_NE(e.find("truncated?"), std::string::npos) << e;
}

TEST_F(Bundle, DamageIsDetected) {
  const std::string good = archive(raw_entry("targets/pkg", "payload"));
  // A header byte flipped: the checksum says so.
  std::string bad = good;
  const std::size_t second = raw_entry("bundle.json", index_json()).size();
  bad[second + 10] ^= 0x01;
  auto e = open_error(bad);
  EXPECT_NE(e.find("tar header checksum mismatch (at byte " + std::to_string(second) + ")"),
            std::string::npos)
      << e;
  e = open_error(archive(raw_header("targets/x", 0, '0', "", /*break_checksum=*/true)));
  EXPECT_NE(e.find("checksum mismatch"), std::string::npos) << e;
  // Data after the end marker; non-zero padding; a lone zero block between entries.
  e = open_error(good + "appended");
  EXPECT_NE(e.find("data after the end-of-archive marker"), std::string::npos) << e;
  e = open_error(good + std::string(20000, '\0'));
  EXPECT_NE(e.find("20000 bytes follow the end-of-archive marker"), std::string::npos) << e;
  e = open_error(good + std::string(512, '\0') + std::string(1, 'x') + std::string(511, '\0'));
  EXPECT_NE(e.find("data after the end-of-archive marker"), std::string::npos) << e;
  EXPECT_EQ(open_error(good + std::string(8192, '\0')), "");  // a tar record's zero padding
  std::string pad = raw_entry("bundle.json", index_json()) + raw_entry("targets/pkg", "payload");
  pad[pad.size() - 1] = 'z';
  e = open_error(pad + end_marker());
  EXPECT_NE(e.find("non-zero padding after entry 'targets/pkg'"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", index_json()) + std::string(512, '\0') +
                 raw_entry("targets/x", "y") + end_marker());
  EXPECT_NE(e.find("a lone zero block"), std::string::npos) << e;
  // Not ustar (an old GNU header) and base-256 sizes.
  e = open_error(
      archive(raw_header("targets/x", 0, '0', "", false, std::string_view("ustar  \0", 8))));
  EXPECT_NE(e.find("not a POSIX ustar header"), std::string::npos) << e;
}

TEST_F(Bundle, TooManyEntriesAreRefused) {
  std::string many;
  for (int i = 0; i < 4096; ++i) many += raw_entry("targets/f" + std::to_string(i), "");
  auto e = open_error(archive(many));
  EXPECT_NE(e.find("more than 4096 entries in the archive"), std::string::npos) << e;
  BundleLimits limits;
  limits.max_entries = 10;
  std::string ten;
  for (int i = 0; i < 9; ++i) ten += raw_entry("targets/f" + std::to_string(i), "");
  EXPECT_EQ(open_error(archive(ten), limits), "");
  e = open_error(archive(ten + raw_entry("targets/one-more", "")), limits);
  EXPECT_NE(e.find("more than 10 entries"), std::string::npos) << e;
}

TEST_F(Bundle, IndexIsBounded) {
  BundleLimits limits;
  limits.max_index_bytes = 100;
  auto e = open_error(archive(""), limits);
  EXPECT_NE(e.find("more than the limit of 100"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", "[1,2]") + end_marker());
  EXPECT_NE(e.find("not a JSON object"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", R"({"format": "mota-bundle", "format_version": 1,
      "model": "m", "version": "1", "package": "p", "deltas": [{"from": 1}]})") +
                 end_marker());
  EXPECT_NE(e.find("a delta without \"from\" and \"target\" strings"), std::string::npos) << e;
  e = open_error(raw_entry("bundle.json", index_json("det\x1b[2Jector")) + end_marker());
  EXPECT_NE(e.find("printable ASCII"), std::string::npos) << e;
  EXPECT_EQ(e.find('\x1b'), std::string::npos) << "a control byte from the index in a message";
}

}  // namespace
}  // namespace mota::storage
