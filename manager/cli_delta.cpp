#include "manager/cli_commands.hpp"

namespace mota::manager {

// Filled in by the delta issue.
void add_delta_commands(CLI::App&, CliAction&, std::string&) {}

}  // namespace mota::manager
