#include "agent/growing_file.hpp"

#include <unistd.h>

#include <cerrno>

namespace mota::agent {

void GrowingFile::advance(std::uint64_t size) {
  {
    std::lock_guard lock(mu_);
    if (size < available_) ++generation_;
    available_ = size;
  }
  cv_.notify_all();
}

void GrowingFile::finish(bool ok) {
  {
    std::lock_guard lock(mu_);
    finished_ = true;
    ok_ = ok;
  }
  cv_.notify_all();
}

bool GrowingFile::restarted() const {
  std::lock_guard lock(mu_);
  return generation_ > 0;
}

storage::ReadFn GrowingFile::reader() {
  return [this](std::span<std::byte> out) { return read(out); };
}

Result<std::size_t> GrowingFile::read(std::span<std::byte> out) {
  std::uint64_t gen = 0;
  std::size_t n = 0;
  {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return pos_ < available_ || finished_ || generation_ > 0; });
    if (generation_ > 0) {
      return fail(Errc::io, path_.string() + ": the download restarted from byte 0");
    }
    if (pos_ >= available_) {
      if (ok_) return std::size_t{0};
      return fail(Errc::cancelled, path_.string() + ": the download failed");
    }
    gen = generation_;
    n = static_cast<std::size_t>(std::min<std::uint64_t>(out.size(), available_ - pos_));
  }
  if (!open_) {
    file_ = MOTA_TRY(fs::File::open_read(path_));
    open_ = true;
  }
  ssize_t got;
  do {
    got = ::pread(file_.fd(), out.data(), n, static_cast<off_t>(pos_));
  } while (got < 0 && errno == EINTR);
  if (got < 0) return fail(errno_error("pread", path_.string(), errno));
  {
    // A restart that overlapped this read may have handed us bytes of the new pass.
    std::lock_guard lock(mu_);
    if (generation_ != gen) {
      return fail(Errc::io, path_.string() + ": the download restarted from byte 0");
    }
    if (got == 0) {
      return fail(Errc::io, path_.string() + ": ends at byte " + std::to_string(pos_) +
                                ", before the " + std::to_string(available_) +
                                " bytes the download announced (truncated by someone else?)");
    }
  }
  pos_ += static_cast<std::uint64_t>(got);
  return static_cast<std::size_t>(got);
}

}  // namespace mota::agent
