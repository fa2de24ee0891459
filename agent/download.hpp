#pragma once
// The agent's downloader: fetches one signed target into a partial file, resumable across
// dropped connections, retries and restarts of the agent, and verified against the signed
// length and sha256 before it is reported complete.
//
// Trust: the length and sha256 come from verified TUF metadata; nothing the server says (status,
// Content-Length, Content-Range) is trusted beyond what libcurl and these checks enforce. The
// server can never make the partial file grow past the signed length.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "common/http.hpp"
#include "common/result.hpp"

namespace mota::agent {

struct DownloadSpec {
  std::string url;
  std::uint64_t length = 0;  // signed length in bytes
  std::string sha256;        // signed digest, 64 hex digits (either case)
  // Where the bytes accumulate, e.g. <state>/downloads/<sha256>.part. Its parent directory is
  // created if missing. The caller owns the file: after success it is complete and verified and
  // the caller renames or consumes it; the downloader never touches any other path.
  std::filesystem::path partial;
  // The whole call (every attempt and every wait between attempts) ends within this: past it the
  // download stops with Errc::network ("not complete within its deadline of 10 s: 3.2 MiB of
  // 8.0 MiB"), keeping the partial for a later call. 0: none. The agent scales it from the signed
  // length (download_deadline()). The http::Client's minimum rate cuts each request that stalls.
  std::chrono::milliseconds deadline{0};
};

struct RetryPolicy {
  // Failed attempts in a row before giving up. An attempt that received at least 1 MiB before
  // failing resets the count, so a flaky link that keeps making progress is not abandoned.
  unsigned max_attempts = 5;
  // Backoff before attempt n+1 is uniform in [0, min(max_delay, base_delay * 2^(n-1))]
  // ("full jitter"), so a fleet that lost its server does not come back in lockstep.
  std::chrono::milliseconds base_delay{1000};
  std::chrono::milliseconds max_delay{60000};
};

struct DownloadResult {
  std::uint64_t bytes_fetched = 0;  // body bytes received over the network in this call
  bool resumed = false;   // a partial left by an earlier call was kept (not restarted from 0)
  unsigned attempts = 0;  // HTTP requests made (0 if the partial was already complete)
};

// Called with (bytes in the partial file, signed length) on the calling thread: after taking over
// an existing partial, after each MiB written or half second of receiving, and once at the end.
// Every byte below `done` is in the file (readable by another thread). A `done` lower than before
// means the partial restarted from byte 0; it is announced before the file is truncated. May be
// empty.
using DownloadProgress = std::function<void(std::uint64_t done, std::uint64_t total)>;

// Downloads spec.url into spec.partial, continuing a partial file left by an earlier call.
//
// - An existing partial no longer than the signed length is re-hashed (streaming) and the rest is
//   asked for with a Range request: 206 appends, 200 (Range ignored) restarts from byte 0. A
//   partial longer than the signed length is discarded. A complete partial whose digest is wrong
//   is discarded and downloaded again.
// - Errc::network and HTTP 5xx/408/429 are retried (see RetryPolicy) from where the last attempt
//   stopped; other errors are returned at once. When the retry budget is spent the last error is
//   returned with "giving up after N attempts".
// - Errors that mean the received bytes cannot be trusted delete the partial: Errc::too_large
//   (the server sent more than the signed length) and Errc::verification (length or sha256
//   mismatch, "sha256 mismatch: got X, signed Y"). Every other error keeps it for a later resume.
// - `cancel` (may be null) stops a transfer or a backoff sleep within about 100 ms with
//   Errc::cancelled; the partial is kept (and fsynced).
// - Errc::no_space if the partial's filesystem lacks room for the remaining bytes (checked
//   before any request), or when it fills up while writing (the partial is kept: what was
//   written is a good prefix); Errc::invalid_argument for a malformed sha256 or empty path;
//   Errc::io for local file errors.
// - spec.deadline, when set, bounds the whole call (see DownloadSpec).
// Memory use is constant (a 1 MiB write buffer). The partial is fsynced every 8 MiB and at the
// end of every attempt, so a crash or kill -9 loses at most the unsynced tail, which the next call
// simply fetches again. One download per partial path at a time: concurrent calls on the same
// path corrupt it. `client` is used from the calling thread only.
Result<DownloadResult> download(http::Client& client, const DownloadSpec& spec,
                                const RetryPolicy& policy = {},
                                const std::atomic<bool>* cancel = nullptr,
                                const DownloadProgress& progress = {});

// True for errors worth another attempt: Errc::network, and Errc::http with status 5xx, 408 or
// 429.
bool retryable(const Error& error);

// The full-jitter backoff before attempt `failed_attempts + 1` (failed_attempts >= 1).
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, unsigned failed_attempts);

// The deadline of one download of `length` bytes: allowance + length / min_rate, at most `cap`
// (`cap` alone when min_rate is 0).
std::chrono::milliseconds download_deadline(std::uint64_t length, std::uint64_t min_rate,
                                            std::chrono::milliseconds allowance,
                                            std::chrono::milliseconds cap);

// Succeeds if the filesystem holding `dir` (or its nearest existing ancestor) has at least
// `needed` bytes available to unprivileged users; else Errc::no_space
// ("need 1.2 GiB in /var/lib/mota, 300 MiB free").
Status check_space(const std::filesystem::path& dir, std::uint64_t needed);

// What an install will write to the state directory's filesystem, counted from what it writes
// rather than guessed from the package size: the bytes still to download (the package or delta's
// signed length minus a partial already on disk) and the new slot's expanded size, less what is
// removed before anything is written (the slot being replaced: prepare() empties it first),
// plus a margin.
struct SpaceNeed {
  std::uint64_t download = 0;
  std::uint64_t tree = 0;
  std::uint64_t freed = 0;
  std::string freed_what;  // names `freed` in messages: "slot b"
  // 1 MiB + 1/64 of what is written: filesystem blocks and directories, the state database.
  std::uint64_t margin() const;
  // download + tree + margin - freed, but never less than the margin.
  std::uint64_t total() const;
};

// check_space for an install, naming every term when it fails: "need 9.3 MiB in /var/lib/mota
// (16 MiB to unpack + 12 KiB to download + 1.3 MiB margin - 8.0 MiB of slot a, removed first),
// 5.0 MiB free".
Status check_space(const std::filesystem::path& dir, const SpaceNeed& need);

// Bytes the regular files under `path` (a file or a directory, symlinks not followed) occupy on
// disk, in allocated blocks; 0 when it does not exist.
std::uint64_t disk_usage(const std::filesystem::path& path);

// "512 bytes", "300 MiB", "1.2 GiB": binary units, one decimal below 10.
std::string format_bytes(std::uint64_t bytes);

}  // namespace mota::agent
