#pragma once
// Errors are values. Every fallible function returns Result<T> (or Status for no value); each
// layer that passes an error up adds what it was doing with Error::context(), so the final message
// reads like a path: "release add: pack model: read weights.bin: No such file or directory".
// Only a binary's main() turns an Error into an exit code.

#include <string>
#include <string_view>
#include <tl/expected.hpp>
#include <utility>

namespace mota {

// Broad classes of failure that callers branch on; the message carries the detail.
enum class Errc {
  invalid_argument,  // caller passed something unusable (bad flag, bad config value)
  io,                // the OS refused a file/socket operation
  not_found,         // a file, key, target or record that must exist does not
  already_exists,    // refusing to overwrite (a published version, an initialised repo)
  parse,             // malformed input: JSON, TOML, archive, metadata
  verification,      // bad signature, hash or length mismatch, threshold not met
  expired,           // metadata past its expiry
  rollback,          // a version lower than one already trusted
  too_large,         // input exceeds a declared or configured bound
  network,           // transport failure (connect, reset, timeout)
  http,              // server answered with an error status
  unsupported,       // valid but not handled here (key type, archive entry type)
  no_space,          // disk full
  cancelled,         // stopped on request (SIGTERM)
  deferred,          // waiting on purpose (an install window, an update lock): not a failure
  internal,          // a bug or an invariant broken
};

std::string_view errc_name(Errc code) noexcept;

class Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}
  // An error that also carries the HTTP status the server answered (Errc::http from http::Client),
  // so callers branch on the number instead of parsing the message.
  Error(Errc code, std::string message, int http_status)
      : code_(code), message_(std::move(message)), http_status_(http_status) {}

  Errc code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // The HTTP status behind this error, or 0 when there is none. Kept through context().
  int http_status() const noexcept { return http_status_; }
  void set_http_status(int status) noexcept { http_status_ = status; }

  // Prefixes the message with what the caller was doing: "ctx: message".
  [[nodiscard]] Error context(std::string_view ctx) const& {
    return Error(code_, std::string(ctx) + ": " + message_, http_status_);
  }
  [[nodiscard]] Error context(std::string_view ctx) && {
    message_.insert(0, std::string(ctx) + ": ");
    return std::move(*this);
  }

 private:
  Errc code_;
  std::string message_;
  int http_status_ = 0;
};

// tl::expected with [[nodiscard]] on the type, so no call site can drop an error silently.
template <class T>
class [[nodiscard]] Result : public tl::expected<T, Error> {
 public:
  using Base = tl::expected<T, Error>;
  using Base::Base;
  Result(Base b) : Base(std::move(b)) {}  // NOLINT: implicit on purpose (monadic helpers)

  // Adds context to the error, if any; a success passes through untouched.
  Result context(std::string_view ctx) && {
    if (!this->has_value()) return tl::unexpected(std::move(this->error()).context(ctx));
    return std::move(*this);
  }
};

using Status = Result<void>;

inline tl::unexpected<Error> fail(Errc code, std::string message) {
  return tl::unexpected(Error(code, std::move(message)));
}
inline tl::unexpected<Error> fail(Error e) {
  return tl::unexpected(std::move(e));
}

// An error from errno, with what was being done and to what: "open /x/y: Permission denied".
Error errno_error(std::string_view what, std::string_view subject, int err);

namespace detail {
// Extracts the value for MOTA_TRY (tl::expected<void> has no value() to call).
template <class T>
T take(tl::expected<T, Error>&& r) {
  return std::move(*r);
}
inline void take(tl::expected<void, Error>&&) {}
}  // namespace detail

}  // namespace mota

// MOTA_TRY(expr): evaluates to the value of a Result, or returns its error from the caller.
// MOTA_TRY_CTX(expr, ctx): the same, prefixing the error with ctx.
// (GNU statement expressions: supported by GCC and Clang, the only compilers mota targets.)
#define MOTA_TRY(expr)                                                                 \
  ({                                                                                   \
    auto&& mota_try_r_ = (expr);                                                       \
    if (!mota_try_r_.has_value()) return ::mota::fail(std::move(mota_try_r_).error()); \
    ::mota::detail::take(std::move(mota_try_r_));                                      \
  })
#define MOTA_TRY_CTX(expr, ctx)                                         \
  ({                                                                    \
    auto&& mota_try_r_ = (expr);                                        \
    if (!mota_try_r_.has_value())                                       \
      return ::mota::fail(std::move(mota_try_r_).error().context(ctx)); \
    ::mota::detail::take(std::move(mota_try_r_));                       \
  })
