#pragma once
// Package deltas for `mota release add` (manager/release/): built between unpacked trees in the
// release's scratch directory, kept only when small enough. Internal to manager/release/.

#include <filesystem>
#include <vector>

#include "manager/release/release.hpp"
#include "manager/repo/store.hpp"

namespace mota::manager::detail {

// Deltas to the new release `to` from up to `n` lower released versions of its name, newest
// first, each added to `targets` (its .mdelta placed, and recorded in `cleanup`) when at most
// `max_ratio` of the package. A delta that fails is a skipped outcome with a warning, never an
// error of the release.
std::vector<DeltaOutcome> build_deltas(const Paths& p, const tuf::Targets& current,
                                       const Release& to, const stdfs::path& to_package, unsigned n,
                                       double max_ratio, const stdfs::path& scratch,
                                       tuf::Targets& targets, Cleanup& cleanup);

}  // namespace mota::manager::detail
