#include "common/http.hpp"

#include <cmath>
#include <cstdio>
#include <iterator>

namespace mota::http {

Result<std::string> Client::get_body(const std::string& url, std::uint64_t max_bytes) {
  std::string body;
  GetRequest req;
  req.url = url;
  req.max_bytes = max_bytes;
  auto info = get(req, [&](std::span<const std::byte> chunk) -> Status {
    body.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    return {};
  });
  if (!info) return fail(std::move(info).error());
  return body;
}

Result<Response> Client::request(const Request& req) {
  return fail(Errc::unsupported, req.method + " " + req.url + ": this client cannot send it");
}

std::string format_rate(std::uint64_t bytes_per_sec) {
  static constexpr const char* kUnits[] = {"KB/s", "MB/s", "GB/s", "TB/s"};
  if (bytes_per_sec < 1000) return std::to_string(bytes_per_sec) + " B/s";
  double v = static_cast<double>(bytes_per_sec) / 1000;
  std::size_t unit = 0;
  while (v >= 1000 && unit + 1 < std::size(kUnits)) {
    v /= 1000;
    ++unit;
  }
  // "1 KB/s", not "1.0 KB/s": one decimal only below 10 and only where it says something.
  const long long tenths = std::llround(v * 10);
  char buf[32];
  if (v < 10 && tenths % 10 != 0) {
    std::snprintf(buf, sizeof buf, "%.1f %s", static_cast<double>(tenths) / 10, kUnits[unit]);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f %s", v, kUnits[unit]);
  }
  return buf;
}

std::string percent_encode(std::string_view s) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : s) {
    bool unreserved = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '-' || c == '.' || c == '_' || c == '~';
    if (unreserved) {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

}  // namespace mota::http
