#include "common/result.hpp"

#include <cstring>

namespace mota {

std::string_view errc_name(Errc code) noexcept {
  switch (code) {
    case Errc::invalid_argument:
      return "invalid_argument";
    case Errc::io:
      return "io";
    case Errc::not_found:
      return "not_found";
    case Errc::already_exists:
      return "already_exists";
    case Errc::parse:
      return "parse";
    case Errc::verification:
      return "verification";
    case Errc::expired:
      return "expired";
    case Errc::rollback:
      return "rollback";
    case Errc::too_large:
      return "too_large";
    case Errc::network:
      return "network";
    case Errc::http:
      return "http";
    case Errc::unsupported:
      return "unsupported";
    case Errc::no_space:
      return "no_space";
    case Errc::cancelled:
      return "cancelled";
    case Errc::deferred:
      return "deferred";
    case Errc::internal:
      return "internal";
  }
  return "unknown";
}

Error errno_error(std::string_view what, std::string_view subject, int err) {
  std::string msg(what);
  if (!subject.empty()) {
    msg += ' ';
    msg += subject;
  }
  msg += ": ";
  msg += std::strerror(err);
  Errc code = Errc::io;
  if (err == ENOENT) code = Errc::not_found;
  if (err == EEXIST) code = Errc::already_exists;
  if (err == ENOSPC || err == EDQUOT) code = Errc::no_space;
  return Error(code, std::move(msg));
}

}  // namespace mota
