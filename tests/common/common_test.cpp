#include <gtest/gtest.h>
#include <sys/stat.h>

#include "common/cli_words.hpp"
#include "common/fs.hpp"
#include "common/hex.hpp"
#include "common/result.hpp"
#include "common/semver.hpp"
#include "common/time.hpp"
#include "tests/support/test_support.hpp"

namespace mota {
namespace {

Result<int> half(int x) {
  if (x % 2) return fail(Errc::invalid_argument, std::to_string(x) + " is odd");
  return x / 2;
}
Result<int> quarter(int x) {
  int h = MOTA_TRY_CTX(half(x), "first half");
  return MOTA_TRY_CTX(half(h), "second half");
}

TEST(CliWords, TheCommandWordSkipsGlobalOptionsAndTheirValues) {
  auto word = [](std::vector<std::string> args) {
    args.insert(args.begin(), "mota");
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    return std::string(cli::command_word(static_cast<int>(argv.size()), argv.data(), {"--repo"}));
  };
  EXPECT_EQ(word({"release", "list"}), "release");
  EXPECT_EQ(word({"--repo", "release", "relase"}), "relase");  // "release" is --repo's value
  EXPECT_EQ(word({"--repo=/x", "fleet"}), "fleet");
  EXPECT_EQ(word({"--version"}), "");
  EXPECT_EQ(word({"--help", "fleet"}), "");  // another option first: the parser decides
  EXPECT_EQ(word({"--repo"}), "");
  EXPECT_EQ(word({}), "");
  EXPECT_EQ(cli::unknown_command("fleet", {"devices", "fleet"}), "");
  EXPECT_EQ(cli::unknown_command("", {"devices"}), "");
  EXPECT_EQ(cli::unknown_command("flet", {"devices", "fleet"}),
            "unknown command 'flet' (devices, fleet)");
}

TEST(Result, PropagatesWithContext) {
  EXPECT_EQ(*quarter(8), 2);
  auto r = quarter(6);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::invalid_argument);
  EXPECT_EQ(r.error().message(), "second half: 3 is odd");
}

TEST(Fs, AtomicWriteReplacesAndLeavesNoTemp) {
  test::TempDir dir;
  auto p = dir / "f.txt";
  ASSERT_TRUE(fs::write_file_atomic(p, "one"));
  ASSERT_TRUE(fs::write_file_atomic(p, "two", 0600));
  EXPECT_EQ(*fs::read_file(p), "two");
  struct stat st {};
  ASSERT_EQ(::stat(p.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  int entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1);
}

TEST(Fs, AbandonedAtomicFileLeavesNothing) {
  test::TempDir dir;
  {
    auto af = fs::AtomicFile::create(dir / "x");
    ASSERT_TRUE(af);
    ASSERT_TRUE(af->write_all("partial"));
  }
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
}

TEST(Fs, ReadFileRefusesOversize) {
  test::TempDir dir;
  test::write_file(dir / "big", std::string(100, 'x'));
  auto r = fs::read_file(dir / "big", 99);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::too_large);
  auto missing = fs::read_file(dir / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::not_found);
}

TEST(Fs, ReadFileRefusesWhatIsNotARegularFileWithoutBlocking) {
  // A FIFO with no writer: opening it for reading would wait for ever.
  test::TempDir dir;
  ASSERT_EQ(::mkfifo((dir / "fifo").c_str(), 0600), 0);
  for (const std::filesystem::path& p :
       {dir / "fifo", dir.path(), std::filesystem::path("/dev/zero")}) {
    auto r = fs::read_file(p, 1 << 20);
    ASSERT_FALSE(r) << p;
    EXPECT_EQ(r.error().code(), Errc::invalid_argument) << p;
    EXPECT_NE(r.error().message().find("is not a regular file"), std::string::npos)
        << r.error().message();
  }
}

TEST(Hex, RoundTripAndRejects) {
  EXPECT_EQ(to_hex(std::string("\x00\xff\x10", 3)), "00ff10");
  EXPECT_EQ(*from_hex("00FF10"), std::string("\x00\xff\x10", 3));
  EXPECT_FALSE(from_hex("abc"));
  EXPECT_FALSE(from_hex("zz"));
}

TEST(Time, FormatParseRoundTrip) {
  auto t = parse_time("2030-01-02T03:04:05Z");
  ASSERT_TRUE(t);
  EXPECT_EQ(format_time(*t), "2030-01-02T03:04:05Z");
  EXPECT_FALSE(parse_time("2030-01-02T03:04:05"));
  EXPECT_FALSE(parse_time("2030-01-02 03:04:05Z"));
  EXPECT_FALSE(parse_time("2030-13-02T03:04:05Z"));
  // Found by the TUF fuzzer: expiries past 2262 overflowed the nanosecond clock when formatted
  // (signed overflow, then a wrong year in metadata written back).
  // And years before 1000 were written with fewer than four digits ("625-01-06T03:11:00Z").
  for (const char* far : {"2263-01-01T00:00:00Z", "4054-02-03T04:05:06Z", "9999-12-31T23:59:59Z",
                          "0625-01-06T03:11:00Z", "0000-01-01T00:00:00Z", "1969-12-31T23:59:59Z"}) {
    auto f = parse_time(far);
    ASSERT_TRUE(f) << far;
    EXPECT_EQ(format_time(*f), far);
  }
  EXPECT_EQ(parse_duration("3mo")->count(), 90 * 86400);
  EXPECT_EQ(parse_duration("1d")->count(), 86400);
  EXPECT_FALSE(parse_duration("5 parsecs"));
}

TEST(SemVer, PrecedenceFollowsSpec) {
  auto v = [](const char* s) { return *SemVer::parse(s); };
  EXPECT_LT(v("1.0.0-alpha"), v("1.0.0-alpha.1"));
  EXPECT_LT(v("1.0.0-alpha.1"), v("1.0.0-alpha.beta"));
  EXPECT_LT(v("1.0.0-beta.2"), v("1.0.0-beta.11"));
  EXPECT_LT(v("1.0.0-rc.1"), v("1.0.0"));
  EXPECT_LT(v("1.9.0"), v("1.10.0"));
  EXPECT_EQ(v("1.0.0+build1"), v("1.0.0+build2"));
  EXPECT_EQ(v("2.1.3-rc.1+b7").to_string(), "2.1.3-rc.1+b7");
  for (const char* bad : {"1.0", "01.0.0", "1.0.0-", "1.0.0-01", "a.b.c", "1.0.0+", ""}) {
    EXPECT_FALSE(SemVer::parse(bad)) << bad;
  }
}

}  // namespace
}  // namespace mota
