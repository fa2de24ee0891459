#pragma once
// Text from outside (a device, a network client, a file) shown on a terminal or written to a log.
//
// printable(s) is what such text may be shown as: one line, no terminal control, nothing that
// reorders or hides what is around it. Valid printable UTF-8 passes through unchanged (ids,
// versions, non-ASCII names stay readable); everything else becomes a visible escape:
//   \n \r \t                  for LF, CR, TAB
//   \\                        for a backslash (so an escape in the output is always ours)
//   \xNN (lower-case hex)     for the other C0 controls, NUL and DEL, and for every byte of an
//                             invalid UTF-8 sequence
//   \u{XXXX} (upper-case hex) for C1 controls (U+0080-U+009F) and the bidirectional and invisible
//                             formatting controls U+061C, U+200B-U+200F, U+2028-U+202E (the line
//                             and paragraph separators some viewers break lines at, and bidi),
//                             U+2060-U+2064, U+2066-U+2069, U+FEFF
// valid_utf8(s): strict UTF-8 (no overlong forms, no surrogates U+D800-U+DFFF, nothing above
// U+10FFFF); control characters are valid UTF-8.
// Both are O(n) and throw nothing but std::bad_alloc (printable's result).

#include <string>
#include <string_view>

namespace mota {

[[nodiscard]] bool valid_utf8(std::string_view s);
[[nodiscard]] std::string printable(std::string_view s);

}  // namespace mota
