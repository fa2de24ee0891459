#pragma once
// mota-agent's command line:
//   mota-agent [--config PATH] check-once           poll once; exit 0 up to date/updated, 1 failed
//   mota-agent [--config PATH] status [--json]      per model: version, slot, committed, install
//   mota-agent [--config PATH] install FILE.motab   offline install from a signed bundle
//   mota-agent [--config PATH] run                  daemon: poll until SIGTERM/SIGINT (exit 0)
//   mota-agent --version
// Exit codes: 0 success, 1 failure, 2 usage or configuration error.

namespace mota::agent {

int cli_main(int argc, char** argv);

}  // namespace mota::agent
