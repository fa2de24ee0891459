#include "runtime/shm.hpp"

#include <fcntl.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cerrno>

#include "manifest/model_manifest.hpp"

namespace mota::runtime {

Region::~Region() {
  if (map_) ::munmap(map_, map_len_);
  if (fd_ >= 0) ::close(fd_);
}

Result<std::string_view> Region::read(std::uint64_t offset, std::uint64_t length,
                                      std::string& scratch) const {
  if (offset > info_.byte_size || length > info_.byte_size - offset) {
    return fail(Errc::invalid_argument,
                "region \"" + info_.name + "\": bytes [" + std::to_string(offset) + ", " +
                    std::to_string(offset) + " + " + std::to_string(length) +
                    ") are not inside its " + std::to_string(info_.byte_size) + " bytes");
  }
  if (base_) return std::string_view(base_ + offset, length);
  // Not sealed: the owner may have truncated the file, so read it instead of touching a mapping.
  scratch.resize(length);
  std::uint64_t done = 0;
  while (done < length) {
    auto at = static_cast<off_t>(info_.offset + offset + done);
    ssize_t n = ::pread(fd_, scratch.data() + done, length - done, at);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return fail(errno_error("read region \"" + info_.name + "\"", "", errno));
    if (n == 0) {
      return fail(Errc::io, "region \"" + info_.name + "\": " + info_.path.string() +
                                " is shorter than registered (truncated by its owner?)");
    }
    done += static_cast<std::uint64_t>(n);
  }
  return std::string_view(scratch);
}

Result<RegionInfo> RegionRegistry::add(const std::string& name, const std::filesystem::path& path,
                                       std::uint64_t offset, std::uint64_t byte_size) {
  std::string what = "region \"" + name + "\"";
  if (!valid_model_name(name)) {
    return fail(Errc::invalid_argument,
                "invalid region name \"" + name + "\" (letters, digits, '.', '-', '_')");
  }
  if (path.native().find('\0') != std::string::npos) {
    // The kernel would see the path up to the NUL: another file than the one named.
    return fail(Errc::invalid_argument, what + ": the path contains a NUL byte");
  }
  if (!path.is_absolute()) {
    return fail(Errc::invalid_argument, what + ": path must be absolute: " + path.string());
  }
  // Whether `name` can be added; with mu_ held.
  auto room = [&]() -> Status {
    if (regions_.count(name)) {
      return fail(Errc::already_exists, what + " is already registered (unregister it first)");
    }
    if (regions_.size() >= kMaxRegions) {
      return fail(Errc::too_large,
                  what + ": " + std::to_string(kMaxRegions) + " regions are registered already");
    }
    return {};
  };
  {
    std::lock_guard lock(mu_);
    MOTA_TRY(room());
  }
  std::shared_ptr<Region> r(new Region());
  r->info_ = {name, path, offset, byte_size, false};
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it is refused just below).
  r->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (r->fd_ < 0) return fail(errno_error("open " + what, path.string(), errno));
  struct stat st {};
  struct statfs sfs {};
  if (::fstat(r->fd_, &st) != 0) return fail(errno_error("stat " + what, path.string(), errno));
  if (!S_ISREG(st.st_mode)) {
    return fail(Errc::invalid_argument, what + ": " + path.string() + " is not a regular file");
  }
  if (::fstatfs(r->fd_, &sfs) != 0) {
    return fail(errno_error("statfs " + what, path.string(), errno));
  }
  // Only shared memory: the API must not become a way to read arbitrary files through the
  // runtime, and a disk-backed file would make every request a disk read.
  if (sfs.f_type != TMPFS_MAGIC) {
    return fail(Errc::invalid_argument,
                what + ": " + path.string() +
                    " is not in shared memory (tmpfs: /dev/shm, or a memfd as /proc/PID/fd/N)");
  }
  auto size = static_cast<std::uint64_t>(st.st_size);
  if (offset > size) {
    return fail(Errc::invalid_argument, what + ": offset " + std::to_string(offset) +
                                            " is past the end of " + path.string() + " (" +
                                            std::to_string(size) + " bytes)");
  }
  if (byte_size == 0) byte_size = size - offset;
  if (byte_size == 0) return fail(Errc::invalid_argument, what + ": the region is empty");
  if (byte_size > size - offset) {
    return fail(Errc::invalid_argument,
                what + ": bytes [" + std::to_string(offset) + ", " + std::to_string(offset) +
                    " + " + std::to_string(byte_size) + ") do not fit in " + path.string() + " (" +
                    std::to_string(size) + " bytes)");
  }
  r->info_.byte_size = byte_size;
  int seals = ::fcntl(r->fd_, F_GET_SEALS);
  if (seals >= 0 && (seals & F_SEAL_SHRINK)) {
    // The file can never get shorter: a mapping of it can never fault.
    auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    std::uint64_t start = offset / page * page;
    r->map_len_ = static_cast<std::size_t>(offset + byte_size - start);
    void* p =
        ::mmap(nullptr, r->map_len_, PROT_READ, MAP_SHARED, r->fd_, static_cast<off_t>(start));
    if (p == MAP_FAILED) {
      r->map_ = nullptr;
      return fail(errno_error("map " + what, path.string(), errno));
    }
    r->map_ = p;
    r->base_ = static_cast<const char*>(p) + (offset - start);
    r->info_.mapped = true;
  }
  std::lock_guard lock(mu_);
  MOTA_TRY(room());  // again: another thread may have registered the name meanwhile
  regions_[name] = r;
  return r->info_;
}

Status RegionRegistry::remove(const std::string& name) {
  std::lock_guard lock(mu_);
  if (regions_.erase(name) == 0) {
    return fail(Errc::not_found, "no region \"" + name + "\" is registered");
  }
  return {};
}

std::shared_ptr<const Region> RegionRegistry::get(const std::string& name) const {
  std::lock_guard lock(mu_);
  auto it = regions_.find(name);
  return it == regions_.end() ? nullptr : it->second;
}

std::vector<RegionInfo> RegionRegistry::list() const {
  std::lock_guard lock(mu_);
  std::vector<RegionInfo> out;
  for (const auto& [name, r] : regions_) out.push_back(r->info());
  return out;
}

}  // namespace mota::runtime
