#pragma once
// Verification of a repository or of a served tree, as a client would see it
// (Repository::verify, this unit's: mota_manager_verify). Reads only; takes the shared lock when
// DIR is a repository, so it never sees half a publish.

#include <string>
#include <vector>

#include "manager/repo/repository.hpp"

namespace mota::manager {

// What verify() checked, in order, and what it found worth a warning: every role within its
// refresh window (Settings::refresh_window), each with when it expires and what renews it.
struct VerifyReport {
  std::vector<std::string> checked;
  std::vector<std::string> warnings;
};

}  // namespace mota::manager
