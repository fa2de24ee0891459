#include "common/http.hpp"

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
