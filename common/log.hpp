#pragma once
// One logging facade for every binary. Messages carry a level and structured fields
// (MODEL=, VERSION=, DEVICE=, ...). Under systemd (stderr connected to the journal, detected from
// $JOURNAL_STREAM) records go to journald with the fields as journal fields; otherwise one line per
// record goes to stderr: "2026-11-21T10:00:00Z INFO message key=value ...".
// The message and every field value are written through printable() (common/text.hpp) in both
// modes: text a device or a client sent cannot end the line, forge a record or drive a terminal,
// and callers need not escape it themselves (doing so would escape it twice).
// Thread-safe: records from several threads never interleave.

#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace mota::log {

enum class Level { debug = 0, info = 1, warn = 2, error = 3 };

struct Field {
  std::string_view key;  // journald style: upper case, [A-Z0-9_]
  std::string value;
};

void set_level(Level level);
Level level();
// Parses "debug|info|warn|error"; false if the name is unknown.
bool parse_level(std::string_view name, Level& out);

void write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

// Fields appended to every later record, after the record's own (the agent sets DEVICE=<id> once
// its config is loaded, so every journal entry can be filtered by device). Replaces the previous
// set; keys are copied.
void set_common_fields(std::vector<std::pair<std::string, std::string>> fields);

inline void debug(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::debug, m, f);
}
inline void info(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::info, m, f);
}
inline void warn(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::warn, m, f);
}
inline void error(std::string_view m, std::initializer_list<Field> f = {}) {
  write(Level::error, m, f);
}

}  // namespace mota::log
