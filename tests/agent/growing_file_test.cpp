// GrowingFile: a reader thread consuming a file while this thread appends to it, with real files.

#include "agent/growing_file.hpp"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

class GrowingFileTest : public ::testing::Test {
 protected:
  std::filesystem::path path() const { return work_ / "pkg.part"; }
  void append(const std::string& bytes) {
    std::ofstream f(path(), std::ios::binary | std::ios::app);
    f << bytes;
  }
  // Reads everything the reader gives until end or error; returns the bytes, error text in *err.
  static std::string drain(const storage::ReadFn& read, std::string* err) {
    std::string out;
    std::byte buf[7];  // odd size: reads straddle the producer's writes
    for (;;) {
      auto n = read(buf);
      if (!n) {
        *err = n.error().message();
        return out;
      }
      if (*n == 0) return out;
      out.append(reinterpret_cast<const char*>(buf), *n);
    }
  }
  test::TempDir work_;
};

TEST_F(GrowingFileTest, ReaderGetsEveryByteAsItIsAnnouncedThenEnd) {
  test::write_file(path(), "");
  GrowingFile g(path());
  std::string err;
  std::string got;
  std::thread reader([&] { got = drain(g.reader(), &err); });
  std::string all;
  for (int i = 0; i < 50; ++i) {
    std::string chunk = "chunk-" + std::to_string(i) + ";";
    append(chunk);
    all += chunk;
    g.advance(all.size());
    if (i % 10 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  // Bytes in the file beyond the announced size are never handed out.
  append("NOT ANNOUNCED");
  g.finish(true);
  reader.join();
  EXPECT_EQ(err, "");
  EXPECT_EQ(got, all);
  EXPECT_FALSE(g.restarted());
}

TEST_F(GrowingFileTest, FailedProducerFailsTheReader) {
  test::write_file(path(), "abc");
  GrowingFile g(path());
  g.advance(3);
  std::string err;
  std::string got;
  std::thread reader([&] { got = drain(g.reader(), &err); });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  g.finish(false);
  reader.join();
  EXPECT_EQ(got, "abc");
  EXPECT_NE(err.find("the download failed"), std::string::npos) << err;
}

TEST_F(GrowingFileTest, RestartFailsTheReaderSoPassesAreNeverMixed) {
  test::write_file(path(), "first pass bytes");
  GrowingFile g(path());
  g.advance(16);
  auto read = g.reader();
  std::byte buf[5];
  auto n = read(buf);
  ASSERT_TRUE(n);
  EXPECT_EQ(*n, 5u);
  g.advance(0);  // announced before the producer truncates
  test::write_file(path(), "second pass bytes");
  g.advance(17);
  auto r = read(buf);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("restarted from byte 0"), std::string::npos);
  EXPECT_TRUE(g.restarted());
}

TEST_F(GrowingFileTest, FileShorterThanAnnouncedIsAnErrorNotAnEnd) {
  test::write_file(path(), "abc");
  GrowingFile g(path());
  g.advance(10);  // a producer bug or someone truncating behind its back
  std::string err;
  auto got = drain(g.reader(), &err);
  EXPECT_EQ(got, "abc");
  EXPECT_NE(err.find("ends at byte 3, before the 10 bytes the download announced"),
            std::string::npos)
      << err;
}

}  // namespace
}  // namespace mota::agent
