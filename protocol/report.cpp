#include "protocol/report.hpp"

#include "common/http.hpp"

namespace mota::protocol {

std::string events_route(std::string_view device_id) {
  return "/v1/devices/" + http::percent_encode(device_id) + "/events";
}

}  // namespace mota::protocol
