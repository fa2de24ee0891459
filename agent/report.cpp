#include "agent/report.hpp"

#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include <cerrno>
#include <utility>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/time.hpp"
#include "common/version.hpp"
#include "manifest/json.hpp"
#include "protocol/report.hpp"

namespace mota::agent {

namespace {

Json item_body(const OutboxItem& item) {
  auto parsed = parse_json(item.body);
  if (parsed) return std::move(*parsed);
  return Json{{"invalid_json", item.body}};
}

// Dumps without throwing: invalid UTF-8 in a stored body is replaced rather than failing the batch.
std::string dump(const Json& j) {
  return j.dump(-1, ' ', false, Json::error_handler_t::replace);
}

Json item_json(const OutboxItem& item) {
  return Json{{"seq", item.seq},
              {"kind", std::string(outbox_kind_name(item.kind))},
              {"created_at", format_time(item.created_at)},
              {"body", item_body(item)}};
}

// The ack of a 2xx answer: the highest seq the server has, given the batch's seqs [first, last].
Result<std::int64_t> parse_ack(const std::string& text, std::int64_t last) {
  if (text.find_first_not_of(" \t\r\n") == std::string::npos) return last;
  auto json = parse_json(text, 64u << 10);
  if (!json) return fail(Errc::parse, "answer is not JSON: " + json.error().message());
  if (!json->is_object()) return fail(Errc::parse, "answer is not a JSON object");
  if (!json->contains("acked")) return last;
  // Present, it must be an integer: a null acknowledges nothing rather than everything.
  const std::int64_t acked = MOTA_TRY_CTX(json_get<std::int64_t>(*json, "acked"), "answer");
  if (acked > last)
    return fail(Errc::parse, "server acknowledged seq " + std::to_string(acked) +
                                 " but the batch ended at seq " + std::to_string(last));
  return acked;
}

}  // namespace

bool report_refused(const Error& error) {
  int s = error.http_status();
  return error.code() == Errc::http && s >= 400 && s < 500 && s != 408 && s != 429;
}

Reporter::Reporter(StateStore& store, http::Client& client, protocol::DeviceIdentity& identity,
                   std::string server_url, ReporterOptions options, ReportSessionState* sessions)
    : store_(store),
      client_(client),
      identity_(identity),
      server_url_(std::move(server_url)),
      options_(options),
      sessions_(sessions ? *sessions : own_sessions_) {
  while (!server_url_.empty() && server_url_.back() == '/') server_url_.pop_back();
  if (options_.batch_items == 0) options_.batch_items = 1;
}

std::string Reporter::events_route() const {
  return protocol::events_route(identity_.device_id());
}

std::string Reporter::events_url() const {
  return server_url_ + events_route();
}

Result<SendResult> Reporter::flush(std::size_t max_batches) {
  SendResult result;
  const std::string route = events_route();
  const std::string url = server_url_ + route;
  for (std::size_t n = 0; n < max_batches; ++n) {
    auto items = MOTA_TRY_CTX(store_.peek(options_.batch_items), "report: read outbox");
    if (items.empty()) break;

    // Build the batch: as many items as fit in batch_bytes, at least one.
    Json batch = Json::array();
    std::vector<std::int64_t> seqs;  // of the batch's items, counted when acknowledged
    std::uint64_t bytes = 0;
    std::int64_t first = items.front().seq, last = 0;
    for (const auto& item : items) {
      Json j = item_json(item);
      auto size = dump(j).size() + 1;
      if (!batch.empty() && bytes + size > options_.batch_bytes) break;
      bytes += size;
      last = item.seq;
      seqs.push_back(item.seq);
      batch.push_back(std::move(j));
    }
    const std::string body = dump(Json{{"device", identity_.device_id()}, {"batch", batch}});
    const std::string what = "report: POST " + url + " (seqs " + std::to_string(first) + ".." +
                             std::to_string(last) + ")";

    bool used_session = false;
    auto send = [&]() -> Result<http::Response> {
      auto headers = MOTA_TRY_CTX(auth_headers(route, body, used_session, result), what);
      headers["Content-Type"] = "application/json";
      return MOTA_TRY_CTX(client_.post(url, body, headers, options_.max_response_bytes), what);
    };
    auto response = MOTA_TRY(send());
    if (used_session && response.status == 401) {
      // The server no longer knows the session (restarted, expired early, evicted): once more
      // with a new one. A second 401 is the server's verdict on the report itself.
      log::info("report session refused; opening a new one",
                {{"SESSION", sessions_.session ? sessions_.session->id : std::string()},
                 {"ANSWER", response.body.substr(0, 200)}});
      sessions_.session.reset();
      response = MOTA_TRY(send());
    }
    if (response.status < 200 || response.status >= 300) {
      std::string detail = response.body.substr(0, 200);
      bool retry = response.status == 408 || response.status == 429 || response.status >= 500;
      std::string msg = what + ": server answered HTTP " + std::to_string(response.status) +
                        (retry ? " (kept for a later retry)"
                               : " (refused: kept, not retried until something changes)");
      if (!detail.empty()) msg += ": " + detail;
      return tl::unexpected(Error(Errc::http, std::move(msg), static_cast<int>(response.status)));
    }
    auto acked = MOTA_TRY_CTX(parse_ack(response.body, last), what);
    ++result.batches;
    if (acked < first) {
      // Accepted but nothing stored: sending the same batch again now would spin.
      return fail(Errc::http, what + ": server answered HTTP " + std::to_string(response.status) +
                                  " but acknowledged none of the items (acked " +
                                  std::to_string(acked) + ")");
    }
    MOTA_TRY_CTX(store_.ack(acked), "report: acknowledge seq " + std::to_string(acked));
    for (const auto seq : seqs)
      if (seq <= acked) ++result.acked;
    result.acked_seq = acked;
  }
  auto stats = MOTA_TRY_CTX(store_.outbox_stats(), "report: outbox stats");
  result.remaining = stats.rows;
  return result;
}

Result<std::map<std::string, std::string>> Reporter::auth_headers(const std::string& route,
                                                                  const std::string& body,
                                                                  bool& used_session,
                                                                  SendResult& result) {
  used_session = false;
  const auto now = std::chrono::steady_clock::now();
  if (options_.sessions && now >= sessions_.no_session_until &&
      (!sessions_.session || now >= sessions_.session->renew_at)) {
    sessions_.session.reset();
    auto opened = protocol::open_session(client_, server_url_, identity_,
                                         options_.max_response_bytes, options_.extra_headers);
    if (opened) {
      sessions_.session = std::move(*opened);
      ++result.handshakes;
    } else if (opened.error().code() == Errc::network) {
      return tl::unexpected(opened.error());
    } else {
      // 404/405: a server without sessions, so sign each report and ask again in an hour. Any
      // other refusal: sign this report, whose answer then carries the server's verdict, and
      // try a handshake again in a minute.
      const int status = opened.error().http_status();
      const bool unsupported = status == 404 || status == 405;
      sessions_.no_session_until =
          now + (unsupported ? std::chrono::seconds(3600) : std::chrono::seconds(60));
      log::info(unsupported ? "server has no report sessions; signing each report"
                            : "report session not opened; signing this report",
                {{"ERROR", opened.error().message()}});
    }
  }
  if (sessions_.session) {
    used_session = true;
    return sessions_.session->report_headers(identity_.device_id(), route, body);
  }
  auto headers = MOTA_TRY(identity_.report_headers(route, body));
  headers.insert(options_.extra_headers.begin(), options_.extra_headers.end());
  return headers;
}

Result<Json> Reporter::heartbeat() {
  Json hb = Json::object();
  hb["agent_version"] = kVersion;

  struct utsname uts {};
  if (::uname(&uts) != 0) return fail(errno_error("heartbeat: uname", "", errno));
  hb["arch"] = std::string(uts.machine);

  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return fail(errno_error("heartbeat: sysinfo", "", errno));
  hb["ram_total_bytes"] =
      static_cast<std::uint64_t>(si.totalram) * static_cast<std::uint64_t>(si.mem_unit);

  auto state_dir = store_.database().path().parent_path();
  const std::uint64_t free = MOTA_TRY_CTX(fs::free_space(state_dir), "heartbeat: disk free");
  hb["disk_free_bytes"] = free;
  hb["disk_full"] = free < kDiskFullBytes;
  hb["time"] = format_time(now_seconds());

  Json tuf = Json::object();
  for (const auto& [role, version] : MOTA_TRY_CTX(store_.tuf_versions(), "heartbeat"))
    tuf[role] = version;
  hb["tuf"] = std::move(tuf);

  Json models = Json::array();
  for (const auto& active : MOTA_TRY_CTX(store_.all_active(), "heartbeat")) {
    auto slot = MOTA_TRY_CTX(store_.slot(active.model, active.slot), "heartbeat");
    Json m = {{"model", active.model},
              {"slot", slot_name(active.slot)},
              {"version", slot ? slot->version : std::string()},
              {"committed", active.committed}};
    if (auto ch = options_.channels.find(active.model); ch != options_.channels.end())
      m["channel"] = ch->second;
    models.push_back(std::move(m));
  }
  hb["models"] = std::move(models);

  // The versions this device will not install, so the fleet sees why it stays behind.
  Json blocked = Json::array();
  for (const auto& b : MOTA_TRY_CTX(store_.all_blocked(), "heartbeat")) {
    blocked.push_back({{"model", b.model},
                       {"version", b.version},
                       {"reason", b.reason},
                       {"since", format_time(b.blocked_at)}});
  }
  hb["blocked"] = std::move(blocked);
  Json labels = Json::object();
  for (const auto& [k, v] : options_.labels) labels[k] = v;
  hb["labels"] = std::move(labels);
  if (!options_.field.empty()) {
    Json field = Json::array();
    for (const auto& f : options_.field) {
      Json latency = Json::array();
      for (const auto& [i, n] : f.latency.sparse()) latency.push_back(Json::array({i, n}));
      field.push_back({{"model", f.model},
                       {"version", f.version},
                       {"load", f.load},
                       {"inferences", f.inferences},
                       {"errors", f.errors},
                       {"latency", std::move(latency)}});
    }
    hb["field"] = std::move(field);
  }
  return hb;
}

Status Reporter::enqueue_heartbeat() {
  auto hb = MOTA_TRY(heartbeat());
  MOTA_TRY_CTX(store_.enqueue(OutboxKind::heartbeat, dump(hb)), "heartbeat: enqueue");
  return {};
}

}  // namespace mota::agent
