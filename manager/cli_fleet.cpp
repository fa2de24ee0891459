#include "manager/cli_commands.hpp"

namespace mota::manager {

// Filled in by the fleet issue.
void add_fleet_commands(CLI::App&, CliAction&, std::string&) {}

}  // namespace mota::manager
