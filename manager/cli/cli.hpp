#pragma once
// The `mota` command line (operators' side): init, release add/list, channel set/show,
// timestamp refresh, key rotate, verify, serve. See `mota --help`.
//
// Exit codes: 0 success, 1 the operation failed, 2 usage error (unknown command or flag, bad
// argument value). Errors are printed to stderr as "mota: error: <message>".
// The repository is --repo DIR (before or after the command; after wins), else $MOTA_REPO, else
// the current directory.

namespace mota::manager {

// Parses argv and runs one command. Installs SIGINT/SIGTERM handlers only for `mota serve`.
int cli_main(int argc, char** argv);

}  // namespace mota::manager
