#include "agent/download.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <optional>
#include <random>
#include <system_error>
#include <thread>
#include <vector>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "manifest/crypto.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;
using crypto::digest_equal;
using crypto::Hasher;

namespace {

constexpr std::size_t kBufferBytes = 1 << 20;
// fsync cadence: bounds what a power cut can lose without making the disk the bottleneck.
constexpr std::uint64_t kSyncEvery = 32ull << 20;
// Longest time received bytes wait in the buffer (see Partial::append).
constexpr auto kFlushEvery = std::chrono::milliseconds(500);
// An attempt that received at least this much resets the retry budget.
constexpr std::uint64_t kProgressBytes = 1 << 20;
constexpr auto kSleepSlice = std::chrono::milliseconds(50);

// "10 s", "3.5 s".
std::string seconds(std::chrono::milliseconds d) {
  if (d.count() % 1000 == 0) return std::to_string(d.count() / 1000) + " s";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f s", static_cast<double>(d.count()) / 1000);
  return buf;
}

bool is_cancelled(const std::atomic<bool>* cancel) {
  return cancel && cancel->load();
}

bool is_hex_digest(std::string_view s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
         });
}

std::string lower(std::string s) {
  for (char& c : s)
    if (c >= 'A' && c <= 'F') c = static_cast<char>(c - 'A' + 'a');
  return s;
}

// Sleeps for `d` in short slices; false if cancelled first.
bool sleep_unless_cancelled(std::chrono::milliseconds d, const std::atomic<bool>* cancel) {
  auto until = std::chrono::steady_clock::now() + d;
  while (true) {
    if (is_cancelled(cancel)) return false;
    auto now = std::chrono::steady_clock::now();
    if (now >= until) return true;
    std::this_thread::sleep_for(
        std::min<std::chrono::steady_clock::duration>(until - now, kSleepSlice));
  }
}

// The partial file together with the sha256 state of exactly the bytes in it. Bytes are buffered
// (1 MiB), then written and hashed together, so the hash always matches the file's content up to
// `offset`.
class Partial {
 public:
  Partial(stdfs::path path, std::uint64_t length, const DownloadProgress& progress)
      : path_(std::move(path)), length_(length), progress_(progress) {
    buffer_.reserve(kBufferBytes);
  }

  std::uint64_t offset() const { return offset_; }
  const stdfs::path& path() const { return path_; }

  // Takes over what an earlier call left: discards a partial longer than the signed length,
  // otherwise re-hashes it (OpenSSL 3 cannot serialise a digest state, so it is not stored).
  Status load(const std::atomic<bool>* cancel) {
    std::error_code ec;
    auto st = stdfs::symlink_status(path_, ec);
    if (!ec && stdfs::exists(st)) {
      if (!stdfs::is_regular_file(st)) {
        return fail(Errc::io, path_.string() + ": exists and is not a regular file");
      }
      std::uint64_t size = stdfs::file_size(path_, ec);
      if (ec) return fail(Errc::io, "stat " + path_.string() + ": " + ec.message());
      if (size > length_) {
        log::warn("discarding a partial download longer than the signed length",
                  {{"PATH", path_.string()},
                   {"SIZE", std::to_string(size)},
                   {"LENGTH", std::to_string(length_)}});
        if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
          return fail(errno_error("remove", path_.string(), errno));
        }
      } else if (size > 0) {
        auto in = MOTA_TRY(fs::File::open_read(path_));
        std::vector<std::byte> buf(kBufferBytes);
        std::uint64_t hashed = 0;
        while (hashed < size) {
          if (is_cancelled(cancel)) {
            return fail(Errc::cancelled, "re-hash " + path_.string() + ": cancelled");
          }
          std::size_t n = MOTA_TRY(in.read_some(buf));
          if (n == 0) break;  // shrank meanwhile: hash what is there
          n = static_cast<std::size_t>(std::min<std::uint64_t>(n, size - hashed));
          hasher_.update(std::span<const std::byte>(buf.data(), n));
          hashed += n;
        }
        offset_ = hashed;
      }
    }
    file_ = MOTA_TRY(fs::File::open_write(path_, O_CREAT | O_APPEND));
    // The bytes beyond offset_ (if the file grew while hashing) are cut off by consistent().
    return {};
  }

  // Makes the file hold exactly the hashed bytes: a failed write may have left a torn tail.
  Status consistent() {
    auto size = MOTA_TRY(file_.size());
    if (size == offset_) return {};
    if (size > offset_) return truncate(offset_);
    return restart();  // shorter than what was hashed: someone else changed it
  }

  // Empties the file and the hash (the server ignored Range, or the content was wrong).
  Status restart() {
    // Tell a concurrent reader (agent/growing_file.hpp) before the bytes go away.
    if (progress_ && offset_ > 0) progress_(0, length_);
    buffer_.clear();
    hasher_ = Hasher();
    offset_ = 0;
    return truncate(0);
  }

  Status append(std::span<const std::byte> data) {
    while (!data.empty()) {
      std::size_t n = std::min(data.size(), kBufferBytes - buffer_.size());
      buffer_.insert(buffer_.end(), data.begin(), data.begin() + static_cast<std::ptrdiff_t>(n));
      data = data.subspan(n);
      if (buffer_.size() == kBufferBytes) MOTA_TRY(flush());
    }
    // On a slow link a MiB can take minutes: flush at least every kFlushEvery as well, so the
    // progress callback (status lines, the service watchdog, a concurrent unpacker) keeps moving.
    if (!buffer_.empty() && std::chrono::steady_clock::now() - last_flush_ >= kFlushEvery) {
      MOTA_TRY(flush());
    }
    return {};
  }

  Status flush() {
    if (buffer_.empty()) return {};
    MOTA_TRY_CTX(file_.write_all(buffer_), "write " + path_.string());
    hasher_.update(buffer_);
    offset_ += buffer_.size();
    unsynced_ += buffer_.size();
    buffer_.clear();
    last_flush_ = std::chrono::steady_clock::now();
    if (unsynced_ >= kSyncEvery) MOTA_TRY(sync());
    if (progress_) progress_(offset_, length_);
    return {};
  }

  Status sync() {
    MOTA_TRY_CTX(file_.sync(), "fsync " + path_.string());
    unsynced_ = 0;
    return {};
  }

  // Flushes and fsyncs so everything received survives for a later resume.
  Status save() {
    MOTA_TRY(flush());
    return sync();
  }

  std::string digest() { return hasher_.hex_digest(); }

  // Removes the file: its bytes cannot be trusted.
  void discard() {
    buffer_.clear();
    (void)file_.close();
    if (::unlink(path_.c_str()) != 0 && errno != ENOENT) {
      log::error("cannot remove untrusted partial download",
                 {{"PATH", path_.string()}, {"ERROR", std::strerror(errno)}});
      return;
    }
    if (path_.has_parent_path()) (void)fs::fsync_dir(path_.parent_path());
  }

 private:
  Status truncate(std::uint64_t size) {
    if (::ftruncate(file_.fd(), static_cast<off_t>(size)) != 0) {
      return fail(errno_error("truncate", path_.string(), errno));
    }
    return {};
  }

  stdfs::path path_;
  std::uint64_t length_;
  const DownloadProgress& progress_;
  fs::File file_;
  Hasher hasher_;
  std::uint64_t offset_ = 0;  // bytes written to the file and hashed
  std::uint64_t unsynced_ = 0;
  std::vector<std::byte> buffer_;
  std::chrono::steady_clock::time_point last_flush_ = std::chrono::steady_clock::now();
};

struct AttemptOutcome {
  bool restarted = false;  // the server ignored Range: the partial began again at 0
};

// One GET for the bytes from partial.offset() on. The received bytes are saved even when the
// transfer fails, so the next attempt continues from there.
Status fetch_once(http::Client& client, const DownloadSpec& spec, Partial& partial,
                  const std::atomic<bool>* cancel, std::chrono::milliseconds timeout,
                  std::uint64_t& fetched, AttemptOutcome& outcome) {
  MOTA_TRY(partial.consistent());
  const std::uint64_t start = partial.offset();
  std::uint64_t limit = spec.length - start;  // what the server may still send
  std::uint64_t got = 0;

  http::GetRequest req;
  req.url = spec.url;
  req.cancel = cancel;
  req.timeout = timeout;
  // A server ignoring Range legitimately sends the whole file; the tighter bound for a 206 is
  // enforced by the sink below.
  req.max_bytes = spec.length;
  if (start > 0) req.range_start = start;
  req.on_headers = [&](const http::ResponseInfo& info) -> Status {
    if (start > 0 && !info.partial) {
      log::info("server ignored the Range request: downloading from the start",
                {{"URL", spec.url}, {"STATUS", std::to_string(info.status)}});
      MOTA_TRY(partial.restart());
      limit = spec.length;
      outcome.restarted = true;
    }
    if (info.content_length && *info.content_length > limit) {
      return fail(Errc::too_large, "GET " + spec.url + ": server announced " +
                                       std::to_string(*info.content_length) + " bytes but only " +
                                       std::to_string(limit) + " remain of the signed length " +
                                       std::to_string(spec.length));
    }
    return {};
  };
  auto sink = [&](std::span<const std::byte> chunk) -> Status {
    if (chunk.size() > limit - got) {
      return fail(Errc::too_large, "GET " + spec.url +
                                       ": server sent more than the signed length " +
                                       std::to_string(spec.length) + " bytes");
    }
    got += chunk.size();
    fetched += chunk.size();
    return partial.append(chunk);
  };

  auto info = client.get(req, sink);
  if (!info &&
      (info.error().code() == Errc::too_large || info.error().code() == Errc::verification)) {
    return fail(std::move(info).error());  // the partial is discarded: no point saving it
  }
  Status saved = partial.save();
  if (!info) {
    if (!saved) {
      log::warn("cannot save a partial download", {{"ERROR", saved.error().message()}});
    }
    return fail(std::move(info).error());
  }
  MOTA_TRY(std::move(saved));
  if (start > 0 && !info->partial && info->bytes_received == 0) {
    // A 200 with an empty body: on_headers never ran, but the body still replaces the file.
    MOTA_TRY(partial.restart());
    outcome.restarted = true;
  }
  return {};
}

}  // namespace

bool retryable(const Error& error) {
  if (error.code() == Errc::network) return true;
  if (error.code() != Errc::http) return false;
  int s = error.http_status();
  return (s >= 500 && s <= 599) || s == 408 || s == 429;
}

std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, unsigned failed_attempts) {
  using ms = std::chrono::milliseconds;
  const auto cap = std::max(policy.max_delay, ms(0));
  auto ceiling = std::max(policy.base_delay, ms(0));
  for (unsigned i = 1; i < failed_attempts && ceiling < cap; ++i) {
    ceiling = ceiling > cap / 2 ? cap : ceiling * 2;  // no overflow for huge caps
  }
  ceiling = std::min(ceiling, cap);
  if (ceiling.count() <= 0) return ms(0);
  thread_local std::mt19937_64 rng{std::random_device{}()};
  std::uniform_int_distribution<ms::rep> dist(0, ceiling.count());
  return ms(dist(rng));
}

std::string format_bytes(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  if (bytes < 1024) return std::to_string(bytes) + (bytes == 1 ? " byte" : " bytes");
  double v = static_cast<double>(bytes) / 1024;
  std::size_t unit = 0;
  while (v >= 1024 && unit + 1 < std::size(kUnits)) {
    v /= 1024;
    ++unit;
  }
  char buf[32];
  if (v < 10) {
    std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, kUnits[unit]);
  }
  return buf;
}

std::chrono::milliseconds download_deadline(std::uint64_t length, std::uint64_t min_rate,
                                            std::chrono::milliseconds allowance,
                                            std::chrono::milliseconds cap) {
  if (min_rate == 0) return cap;
  // In ms without overflow for any length (a u64 of bytes at >= 1 byte/s).
  const double ms = static_cast<double>(allowance.count()) +
                    1000.0 * static_cast<double>(length) / static_cast<double>(min_rate);
  if (ms >= static_cast<double>(cap.count())) return cap;
  return std::chrono::milliseconds(static_cast<std::chrono::milliseconds::rep>(ms));
}

namespace {

Result<std::uint64_t> free_bytes(const stdfs::path& dir) {
  // The directory may not exist yet: the filesystem that will hold it is its nearest ancestor's.
  stdfs::path probe = dir.empty() ? stdfs::path(".") : dir;
  std::error_code ec;
  while (!stdfs::exists(probe, ec) && probe.has_parent_path() && probe != probe.parent_path()) {
    probe = probe.parent_path();
  }
  return fs::free_space(probe).context("check free space");
}

}  // namespace

Status check_space(const std::filesystem::path& dir, std::uint64_t needed) {
  auto free = MOTA_TRY(free_bytes(dir));
  if (free < needed) {
    return fail(Errc::no_space, "need " + format_bytes(needed) + " in " + dir.string() + ", " +
                                    format_bytes(free) + " free");
  }
  return {};
}

std::uint64_t SpaceNeed::margin() const {
  return (1u << 20) + (download + tree) / 64;
}

std::uint64_t SpaceNeed::total() const {
  const std::uint64_t gross = download + tree + margin();
  return gross - std::min(freed, gross - margin());
}

Status check_space(const std::filesystem::path& dir, const SpaceNeed& need) {
  auto free = MOTA_TRY(free_bytes(dir));
  if (free >= need.total()) return {};
  std::string terms = format_bytes(need.tree) + " to unpack";
  if (need.download > 0) terms += " + " + format_bytes(need.download) + " to download";
  terms += " + " + format_bytes(need.margin()) + " margin";
  if (need.freed > 0) {
    terms += " - " + format_bytes(need.freed) + " of " +
             (need.freed_what.empty() ? std::string("old files") : need.freed_what) +
             ", removed first";
  }
  return fail(Errc::no_space, "need " + format_bytes(need.total()) + " in " + dir.string() + " (" +
                                  terms + "), " + format_bytes(free) + " free");
}

std::uint64_t disk_usage(const std::filesystem::path& path) {
  struct ::stat st {};
  if (::lstat(path.c_str(), &st) != 0) return 0;
  if (S_ISREG(st.st_mode)) return static_cast<std::uint64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return 0;
  std::uint64_t total = static_cast<std::uint64_t>(st.st_blocks) * 512;
  std::error_code ec;
  for (auto it = stdfs::recursive_directory_iterator(path, ec);
       !ec && it != stdfs::recursive_directory_iterator(); it.increment(ec)) {
    if (::lstat(it->path().c_str(), &st) == 0 && (S_ISREG(st.st_mode) || S_ISDIR(st.st_mode))) {
      total += static_cast<std::uint64_t>(st.st_blocks) * 512;
    }
  }
  return total;
}

namespace {

Result<DownloadResult> download_impl(http::Client& client, const DownloadSpec& spec,
                                     const RetryPolicy& policy, const std::atomic<bool>* cancel,
                                     const DownloadProgress& progress) {
  const std::string what = "download " + spec.url;
  if (!is_hex_digest(spec.sha256)) {
    return fail(Errc::invalid_argument,
                what + ": signed sha256 '" + spec.sha256 + "' is not 64 hex digits");
  }
  if (spec.partial.empty() || !spec.partial.has_filename()) {
    return fail(Errc::invalid_argument, what + ": no partial file path given");
  }
  const std::string want = lower(spec.sha256);
  const stdfs::path dir =
      spec.partial.has_parent_path() ? spec.partial.parent_path() : stdfs::path(".");
  MOTA_TRY_CTX(fs::make_dirs(dir), what);

  DownloadResult result;
  Partial partial(spec.partial, spec.length, progress);
  MOTA_TRY_CTX(partial.load(cancel), what);
  result.resumed = partial.offset() > 0;
  if (progress && result.resumed) progress(partial.offset(), spec.length);

  if (partial.offset() == spec.length && spec.length > 0) {
    // Complete from an earlier call (crash between the last write and the caller's rename).
    if (digest_equal(partial.digest(), want)) {
      if (progress) progress(spec.length, spec.length);
      return result;
    }
    log::warn("discarding a complete partial download with the wrong sha256",
              {{"PATH", spec.partial.string()}});
    MOTA_TRY_CTX(partial.restart(), what);
    result.resumed = false;
  }

  MOTA_TRY_CTX(check_space(dir, spec.length - partial.offset()), what);

  using Clock = std::chrono::steady_clock;
  const auto started = Clock::now();
  // Time left before spec.deadline (none: zero, meaning no limit for the request).
  auto time_left = [&]() -> std::optional<std::chrono::milliseconds> {
    if (spec.deadline.count() <= 0) return std::chrono::milliseconds(0);
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(spec.deadline -
                                                                      (Clock::now() - started));
    if (left.count() <= 0) return std::nullopt;
    return left;
  };
  auto past_deadline = [&]() {
    return fail(Errc::network, what + ": not complete within its deadline of " +
                                   seconds(spec.deadline) + ": " + format_bytes(partial.offset()) +
                                   " of " + format_bytes(spec.length) +
                                   " (kept for the next attempt)");
  };

  unsigned failures = 0;  // consecutive failed attempts without real progress
  while (partial.offset() < spec.length) {
    if (is_cancelled(cancel)) return fail(Errc::cancelled, what + ": cancelled");
    auto left = time_left();
    if (!left) return past_deadline();
    ++result.attempts;
    AttemptOutcome outcome;
    const std::uint64_t fetched_before = result.bytes_fetched;
    Status st = fetch_once(client, spec, partial, cancel, *left, result.bytes_fetched, outcome);
    if (outcome.restarted) result.resumed = false;
    if (st) {
      if (partial.offset() < spec.length) {
        partial.discard();
        return fail(Errc::verification, what + ": length mismatch: the server ended the body at " +
                                            std::to_string(partial.offset()) + " of " +
                                            std::to_string(spec.length) + " signed bytes");
      }
      break;
    }
    Error err = std::move(st).error();
    if (err.code() == Errc::too_large || err.code() == Errc::verification) {
      partial.discard();
      return fail(std::move(err));
    }
    if (!retryable(err)) return fail(std::move(err));
    if (!time_left()) return past_deadline();
    // A link that drops every few hundred MiB still finishes a large download: an attempt that
    // got at least kProgressBytes forgives the failures before it.
    if (result.bytes_fetched - fetched_before >= kProgressBytes) failures = 0;
    ++failures;
    if (failures >= policy.max_attempts) {
      std::string why = "giving up after " + std::to_string(failures) + " attempts";
      if (failures != result.attempts) {
        why +=
            " in a row without progress (" + std::to_string(result.attempts) + " requests in all)";
      }
      return fail(std::move(err).context(what + ": " + why));
    }
    auto delay = backoff_delay(policy, failures);
    if (auto rest = time_left(); rest && rest->count() > 0) delay = std::min(delay, *rest);
    log::warn("download failed, retrying", {{"URL", spec.url},
                                            {"ATTEMPT", std::to_string(result.attempts)},
                                            {"DELAY_MS", std::to_string(delay.count())},
                                            {"ERROR", err.message()}});
    if (!sleep_unless_cancelled(delay, cancel)) {
      return fail(Errc::cancelled, what + ": cancelled while waiting to retry");
    }
    if (!time_left()) return past_deadline();
  }

  std::string got = partial.digest();
  if (!digest_equal(got, want)) {
    partial.discard();
    return fail(Errc::verification, what + ": sha256 mismatch: got " + got + ", signed " + want);
  }
  if (progress) progress(spec.length, spec.length);
  return result;
}

}  // namespace

Result<DownloadResult> download(http::Client& client, const DownloadSpec& spec,
                                const RetryPolicy& policy, const std::atomic<bool>* cancel,
                                const DownloadProgress& progress) {
  auto r = download_impl(client, spec, policy, cancel, progress);
  if (!r && !spec.partial.empty()) {
    // An empty partial is worth nothing for a resume: a failed first attempt leaves no trace.
    std::error_code ec;
    if (stdfs::is_regular_file(spec.partial, ec) && stdfs::file_size(spec.partial, ec) == 0 && !ec)
      stdfs::remove(spec.partial, ec);
  }
  return r;
}

}  // namespace mota::agent
