#pragma once
// Naming a mistyped command. CLI11 reports one as "A subcommand is required" or "The following
// arguments were not expected", which does not say what was wrong; the three binaries say
// "unknown command 'x' (known, commands)" instead, with usage exit code 2.

#include <string>
#include <string_view>
#include <vector>

namespace mota::cli {

// The command word of a command line: the first argument after argv[0] that is neither an option
// nor the value of one of `value_options` (global options given as "--opt VALUE"; "--opt=VALUE"
// is one word). Empty when there is none (e.g. only options, or "--help").
std::string_view command_word(int argc, char** argv,
                              const std::vector<std::string_view>& value_options);

// "" when `word` is empty or one of `commands`, else "unknown command 'WORD' (a, b, c)".
std::string unknown_command(std::string_view word, const std::vector<std::string>& commands);

}  // namespace mota::cli
