// valid_utf8 / printable (common/text.hpp), and the log facade writing every message and field
// value through printable().

#include "common/text.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <string_view>

#include "common/log.hpp"

namespace mota {
namespace {

using namespace std::string_literals;

TEST(ValidUtf8, AcceptsWellFormedText) {
  EXPECT_TRUE(valid_utf8(""));
  EXPECT_TRUE(valid_utf8("detector-1.2.3"));
  EXPECT_TRUE(valid_utf8("\xc3\xa9"));          // é, 2 bytes
  EXPECT_TRUE(valid_utf8("\xe6\xbc\xa2"));      // 漢, 3 bytes
  EXPECT_TRUE(valid_utf8("\xf0\x9f\x98\x80"));  // 😀, 4 bytes
  EXPECT_TRUE(valid_utf8("\xc2\x80"));          // U+0080, the smallest 2-byte
  EXPECT_TRUE(valid_utf8("\xe0\xa0\x80"));      // U+0800, the smallest 3-byte
  EXPECT_TRUE(valid_utf8("\xed\x9f\xbf"));      // U+D7FF, below the surrogates
  EXPECT_TRUE(valid_utf8("\xee\x80\x80"));      // U+E000, above them
  EXPECT_TRUE(valid_utf8("\xf0\x90\x80\x80"));  // U+10000, the smallest 4-byte
  EXPECT_TRUE(valid_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF, the largest
  EXPECT_TRUE(valid_utf8("a\0b"s));             // controls are valid UTF-8
}

TEST(ValidUtf8, RefusesOverlongSurrogatesTooLargeAndTruncated) {
  for (const std::string& s : {
           "\xc0\xaf"s,          // overlong '/'
           "\xc1\xbf"s,          // overlong
           "\xe0\x80\xaf"s,      // overlong 3-byte
           "\xf0\x80\x80\xaf"s,  // overlong 4-byte
           "\xed\xa0\x80"s,      // U+D800, a surrogate
           "\xed\xbf\xbf"s,      // U+DFFF
           "\xf4\x90\x80\x80"s,  // U+110000, above U+10FFFF
           "\xf5\x80\x80\x80"s,  // lead byte beyond F4
           "\xff"s,              // never in UTF-8
           "\x80"s,              // a lone continuation byte
           "\xc3"s,              // truncated 2-byte
           "\xe6\xbc"s,          // truncated 3-byte
           "\xf0\x9f\x98"s,      // truncated 4-byte
           "\xe6\xbc!"s,         // continuation expected, ASCII found
           "ok\xc3\xa9\xc3"s,    // valid, then truncated at the end
       }) {
    EXPECT_FALSE(valid_utf8(s)) << printable(s);
  }
}

TEST(Printable, LeavesPrintableTextUnchanged) {
  for (const std::string& s :
       {""s, "victim-01"s, "detector 1.2.3-rc.1+build.5"s, "path/to/model.onnx?x=1&y=~"s,
        "\xc3\xa9\xe6\xbc\xa2\xf0\x9f\x98\x80"s,
        "caf\xc3\xa9 \xd0\x9c\xd0\xbe\xd1\x81\xd0\xba\xd0\xb2\xd0\xb0"s}) {
    EXPECT_EQ(printable(s), s);
  }
}

TEST(Printable, EscapesC0ControlsDelAndBackslash) {
  EXPECT_EQ(printable("\x1b[2J"), "\\x1b[2J");                     // clear screen
  EXPECT_EQ(printable("\x1b]0;pwned\x07"), "\\x1b]0;pwned\\x07");  // set the terminal's title
  EXPECT_EQ(printable("a\nb\rc\td"), "a\\nb\\rc\\td");
  EXPECT_EQ(printable("victim-01\0spoof"s), "victim-01\\x00spoof");  // shown whole
  EXPECT_EQ(printable("\x01\x1f\x7f"), "\\x01\\x1f\\x7f");
  EXPECT_EQ(printable("a\\nb"), "a\\\\nb");  // a literal backslash-n is not a newline's escape
  EXPECT_EQ(printable("\\"), "\\\\");
}

TEST(Printable, EscapesC1AndFormattingControlsAsCodePoints) {
  // CSI (ESC [ in one character); then U+0080, NEL (a line break to some viewers) and U+009F.
  EXPECT_EQ(printable("\xc2\x9b[2J"), "\\u{009B}[2J");
  EXPECT_EQ(printable("\xc2\x80\xc2\x85\xc2\x9f"), "\\u{0080}\\u{0085}\\u{009F}");
  EXPECT_EQ(printable("\xc2\xa0"), "\xc2\xa0");  // U+00A0 (no-break space) is not a control
  // U+202E RIGHT-TO-LEFT OVERRIDE: "photo_<U+202E>gnp.exe" would show as "photo_exe.png".
  EXPECT_EQ(printable("photo_\xe2\x80\xaegnp.exe"), "photo_\\u{202E}gnp.exe");
  EXPECT_EQ(printable("\xd8\x9c"), "\\u{061C}");
  // U+2028/U+2029: line and paragraph separators, a line break to some log viewers.
  EXPECT_EQ(printable("a\xe2\x80\xa8"
                      "b\xe2\x80\xa9"
                      "c"),
            "a\\u{2028}b\\u{2029}c");
  EXPECT_EQ(printable("a\xe2\x80\x8bz"), "a\\u{200B}z");  // zero-width space
  EXPECT_EQ(printable("\xe2\x80\x8f\xe2\x80\xaa\xe2\x81\xa0\xe2\x81\xa4\xe2\x81\xa6\xe2\x81\xa9"),
            "\\u{200F}\\u{202A}\\u{2060}\\u{2064}\\u{2066}\\u{2069}");
  EXPECT_EQ(printable("\xef\xbb\xbfid"), "\\u{FEFF}id");  // BOM / zero-width no-break space
  // Neighbours of the ranges stay.
  EXPECT_EQ(printable("\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa"),
            "\xe2\x80\x8a\xe2\x80\x90\xe2\x80\xaf\xe2\x81\xa5\xe2\x81\xaa");
}

TEST(Printable, EscapesEveryByteOfInvalidUtf8) {
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80");
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");
  EXPECT_EQ(printable("\xff\xfe"), "\\xff\\xfe");
  EXPECT_EQ(printable("id\xe6\xbc"), "id\\xe6\\xbc");  // truncated at the end
  // A broken sequence does not swallow the valid text after it.
  EXPECT_EQ(printable("\xe6\xbc\xc3\xa9!"), "\\xe6\\xbc\xc3\xa9!");
  EXPECT_EQ(printable("\xc3\n"), "\\xc3\\n");
  // The output is always valid UTF-8 with no control characters.
  const std::string all = [] {
    std::string s;
    for (int c = 0; c < 256; ++c) s += static_cast<char>(c);
    return s;
  }();
  const std::string out = printable(all);
  EXPECT_TRUE(valid_utf8(out));
  EXPECT_TRUE(std::none_of(out.begin(), out.end(), [](char c) {
    const auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  }));
}

// One record through the plain-line mode (stderr is not the journal under the test runner).
std::string log_line(log::Level level, std::string_view message,
                     std::initializer_list<log::Field> fields) {
  ::testing::internal::CaptureStderr();
  log::write(level, message, fields);
  return ::testing::internal::GetCapturedStderr();
}

// The line without its leading timestamp.
std::string after_time(const std::string& line) {
  const auto sp = line.find(' ');
  return sp == std::string::npos ? line : line.substr(sp + 1);
}

TEST(Log, OrdinaryTextIsWrittenAsItIs) {
  const std::string line = log_line(log::Level::info, "installed caf\xc3\xa9",
                                    {{"MODEL", "detector"},
                                     {"VERSION", "1.2.3"},
                                     {"REASON", "probe failed: \"x\""},
                                     {"EMPTY", ""}});
  EXPECT_EQ(after_time(line),
            "INFO installed caf\xc3\xa9 MODEL=detector VERSION=1.2.3 REASON=\"probe failed: "
            "\"x\"\" EMPTY=\"\"\n");
}

TEST(Log, DeviceTextCannotForgeALineOrDriveTheTerminal) {
  log::set_common_fields({{"DEVICE", "victim-01\0\n2026-01-01T00:00:00Z INFO spoof"s}});
  const std::string line =
      log_line(log::Level::warn, "report from \x1b]0;title\x07 refused",
               {{"VALUE", "x\n2026-01-01T00:00:00Z ERROR forged"}, {"PATH", "/a\\b\x9b"}});
  log::set_common_fields({});
  EXPECT_EQ(std::count(line.begin(), line.end(), '\n'), 1) << line;
  EXPECT_EQ(line.back(), '\n');
  EXPECT_EQ(line.find('\x1b'), std::string::npos) << line;
  EXPECT_EQ(line.find('\x07'), std::string::npos) << line;
  EXPECT_EQ(line.find('\0'), std::string::npos) << line;
  EXPECT_EQ(after_time(line),
            "WARN report from \\x1b]0;title\\x07 refused "
            "VALUE=\"x\\n2026-01-01T00:00:00Z ERROR forged\" PATH=/a\\\\b\\x9b "
            "DEVICE=\"victim-01\\x00\\n2026-01-01T00:00:00Z INFO spoof\"\n");
}

}  // namespace
}  // namespace mota
