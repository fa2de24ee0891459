#pragma once
// Shared-memory input regions (like Triton's system shared memory): a client on the same machine
// writes its input tensors into a file in shared memory, registers it once under a name, and then
// sends inference requests that name the region, an offset and a byte count instead of carrying
// the bytes in the HTTP body. The inputs then never pass through the socket.
//
//   register    RegionRegistry::add(name, path, offset, byte_size)
//   use         RegionRegistry::get(name) -> Region::read(offset, length, scratch)
//   unregister  RegionRegistry::remove(name) (requests already holding the region finish on it)
//
// A region's file must be a regular file in shared memory (tmpfs: /dev/shm, or a memfd named by
// /proc/<pid>/fd/<n>), opened read-only by the runtime. How it is read depends on whether its
// size can change under the runtime:
// - sealed against shrinking (a memfd with F_SEAL_SHRINK): mapped read-only once, and requests use
//   views of the mapping (no copy at all: the engine's own input copy is the only one);
// - otherwise (e.g. a /dev/shm file from shm_open): read with pread() into a per-request buffer,
//   one copy, because a mapping of a file that its owner may truncate would crash the runtime
//   (SIGBUS) on the next access.
// The client must not rewrite a region's bytes while a request that reads them is in flight.
//
// Thread-safety: every method may be called from any thread at any time.

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace mota::runtime {

struct RegionInfo {
  std::string name;
  std::filesystem::path path;  // as registered
  std::uint64_t offset = 0;    // where the region starts in the file
  std::uint64_t byte_size = 0;
  bool mapped = false;  // true: zero-copy views of a sealed mapping; false: pread per request
};

class Region {
 public:
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

  const RegionInfo& info() const { return info_; }
  // The bytes [offset, offset + length) of the region (offsets relative to the region's start).
  // For a mapped region the result points into the mapping (valid while this Region lives);
  // otherwise it is read into `scratch` and points there. Errors: Errc::invalid_argument when
  // the range is not inside the region; Errc::io when the file is shorter than registered (its
  // owner truncated it) or cannot be read. The message names the region.
  Result<std::string_view> read(std::uint64_t offset, std::uint64_t length,
                                std::string& scratch) const;

 private:
  friend class RegionRegistry;
  Region() = default;
  RegionInfo info_;
  int fd_ = -1;
  void* map_ = nullptr;  // whole pages covering the region, when mapped
  std::size_t map_len_ = 0;
  const char* base_ = nullptr;  // first byte of the region inside map_
};

class RegionRegistry {
 public:
  static constexpr std::size_t kMaxRegions = 64;  // each holds an open file (and maybe a mapping)

  // Opens and validates `path` and registers [offset, offset + byte_size) of it as `name`
  // (byte_size 0: up to the end of the file). Errors, nothing registered: Errc::invalid_argument
  // for a bad name (same rules as model names), a relative path, a file that is not a regular
  // file on tmpfs, an empty region or one that does not fit in the file; Errc::not_found when the
  // file does not exist; Errc::already_exists when the name is taken; Errc::too_large past
  // kMaxRegions; Errc::io for other open/map failures.
  Result<RegionInfo> add(const std::string& name, const std::filesystem::path& path,
                         std::uint64_t offset, std::uint64_t byte_size);
  // Errc::not_found if no region has that name. Requests holding it keep it until they finish.
  Status remove(const std::string& name);
  // The region, or null. Holding the pointer keeps its file (and mapping) open.
  std::shared_ptr<const Region> get(const std::string& name) const;
  std::vector<RegionInfo> list() const;  // sorted by name

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const Region>> regions_;
};

}  // namespace mota::runtime
