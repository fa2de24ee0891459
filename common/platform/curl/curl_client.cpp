// libcurl backend of common/http.hpp.
//
// One easy handle and one multi handle per Client, reused across requests so connections, DNS and
// TLS sessions are cached. The transfer is driven through the multi interface (instead of
// curl_easy_perform) so the cancel flag, the request's timeout and the client's minimum rate are
// checked at least every 100 ms even while the server is silent: curl_easy_perform would only
// call the progress callback about once a second then. The timeout and the minimum rate are
// checked here rather than by curl (CURLOPT_TIMEOUT, CURLOPT_LOW_SPEED_*) so that the error says
// what was slow and by how much, and so that bytes dripped just above curl's 1 byte/s floor
// do not keep a request alive.

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "common/http.hpp"
#include "common/version.hpp"

namespace mota::http {
namespace {

constexpr int kPollMs = 100;
constexpr long kMaxRedirects = 5;
// An error answer's body up to this size is read and dropped, so curl keeps the connection for
// the next request (an idle poll's 404 root probe and its timestamp.json share one connection);
// a bigger one is cut off with its connection.
constexpr std::uint64_t kMaxDrainBytes = 64 * 1024;

using Clock = std::chrono::steady_clock;

std::string seconds_text(Clock::duration d) {
  const double s = std::chrono::duration<double>(d).count();
  char buf[32];
  std::snprintf(buf, sizeof buf, s < 10 ? "%.1f s" : "%.0f s", s);
  return buf;
}

// The minimum average rate over a sliding window (ClientConfig::min_rate): samples of the bytes
// moved so far, one every window/16, kept for one window.
class RateWindow {
 public:
  RateWindow(std::uint64_t min_rate, std::chrono::milliseconds window, Clock::time_point start)
      : min_rate_(min_rate),
        window_(window),
        step_(std::max<Clock::duration>(window / 16, std::chrono::milliseconds(10))) {
    samples_.push_back({start, 0});
  }

  // Empty while the rate holds; else why it does not ("stalled: 12 bytes in 60 s, ...").
  std::optional<std::string> check(Clock::time_point now, std::uint64_t moved) {
    if (min_rate_ == 0 || window_.count() <= 0) return std::nullopt;
    if (now - samples_.back().at >= step_) samples_.push_back({now, moved});
    // The base is the newest sample at least one window old.
    while (samples_.size() >= 2 && samples_[1].at <= now - window_) samples_.pop_front();
    const Sample& base = samples_.front();
    const auto span = now - base.at;
    if (span < window_) return std::nullopt;  // less than a window so far
    const double secs = std::chrono::duration<double>(span).count();
    const std::uint64_t got = moved - base.moved;
    if (static_cast<double>(got) >= static_cast<double>(min_rate_) * secs) return std::nullopt;
    return "stalled: " + std::to_string(got) + (got == 1 ? " byte" : " bytes") + " in " +
           seconds_text(span) + ", below the minimum " + format_rate(min_rate_);
  }

 private:
  struct Sample {
    Clock::time_point at;
    std::uint64_t moved;
  };
  std::uint64_t min_rate_;
  std::chrono::milliseconds window_;
  Clock::duration step_;
  std::deque<Sample> samples_;
};

Status global_init() {
  static std::once_flag once;
  static CURLcode rc = CURLE_OK;
  std::call_once(once, [] { rc = curl_global_init(CURL_GLOBAL_DEFAULT); });
  if (rc != CURLE_OK) {
    return fail(Errc::internal, std::string("curl_global_init: ") + curl_easy_strerror(rc));
  }
  return {};
}

struct SlistDeleter {
  void operator()(curl_slist* l) const { curl_slist_free_all(l); }
};
using Slist = std::unique_ptr<curl_slist, SlistDeleter>;

Result<Slist> make_headers(const std::map<std::string, std::string>& headers) {
  Slist list;
  for (const auto& [k, v] : headers) {
    if (k.find_first_of(":\r\n") != std::string::npos ||
        v.find_first_of("\r\n") != std::string::npos) {
      return fail(Errc::invalid_argument, "invalid HTTP header '" + k + "'");
    }
    // "Name:" with nothing after it would make curl remove the header; "Name;" sends it empty.
    std::string line = v.empty() ? k + ";" : k + ": " + v;
    curl_slist* next = curl_slist_append(list.get(), line.c_str());
    if (!next) return fail(Errc::internal, "out of memory building HTTP headers");
    (void)list.release();
    list.reset(next);
  }
  return list;
}

bool iequals_prefix(std::string_view line, std::string_view prefix) {
  if (line.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    char a = line[i], b = prefix[i];
    if (a >= 'A' && a <= 'Z') a = static_cast<char>(a - 'A' + 'a');
    if (b >= 'A' && b <= 'Z') b = static_cast<char>(b - 'A' + 'a');
    if (a != b) return false;
  }
  return true;
}

// State shared with the curl callbacks for one request.
struct Transfer {
  CURL* easy = nullptr;
  const std::atomic<bool>* cancel = nullptr;
  const std::atomic<bool>* request_cancel = nullptr;  // GetRequest::cancel
  const HeadersHook* on_headers = nullptr;
  std::string what;  // "GET <url>" for messages
  std::uint64_t max_bytes = 0;
  bool check_status = true;  // GET: non-2xx bodies are not delivered
  std::uint64_t max_bytes_per_sec = 0;
  std::optional<std::uint64_t> range_start;
  const Sink* sink = nullptr;
  std::string* buffer = nullptr;  // post(): collects the body instead of a sink
  // request(): the final response's headers (names lower-cased), else null.
  std::map<std::string, std::string>* headers_out = nullptr;

  bool started = false;  // the first body byte of the final response arrived
  bool partial = false;
  std::uint64_t received = 0;
  // A non-2xx answer to a GET: its body is read and dropped (kMaxDrainBytes), not delivered.
  bool draining = false;
  long status = 0;
  std::uint64_t drained = 0;
  // Bytes moved so far in either direction (headers, bodies), for the minimum rate.
  std::uint64_t wire = 0;
  std::uint64_t uploaded = 0;
  std::optional<std::string> content_range;  // of the latest response header block
  std::optional<Error> error;                // set by a callback that aborted the transfer
  std::chrono::steady_clock::time_point body_start;
  // Set when on_write paused the transfer to keep to the rate limit: when to resume.
  std::optional<std::chrono::steady_clock::time_point> resume_at;

  // Called before the first body byte: decides whether this body is wanted.
  bool begin_body() {
    started = true;
    body_start = std::chrono::steady_clock::now();
    long code = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &code);
    status = code;
    curl_off_t cl = -1;
    curl_easy_getinfo(easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (check_status && (code < 200 || code > 299)) {
      error = Error(Errc::http, what + ": HTTP " + std::to_string(code), static_cast<int>(code));
      // A small error body is read to its end so the connection can carry the next request.
      if (cl >= 0 && static_cast<std::uint64_t>(cl) > kMaxDrainBytes) return false;
      draining = true;
      return true;
    }
    if (cl >= 0 && static_cast<std::uint64_t>(cl) > max_bytes) {
      error =
          Error(Errc::too_large, what + ": server announced " + std::to_string(cl) +
                                     " bytes, more than the limit of " + std::to_string(max_bytes));
      return false;
    }
    // One allocation for an announced body instead of doubling through curl's chunks.
    if (buffer && cl > 0) buffer->reserve(static_cast<std::size_t>(cl));
    if (check_status && range_start && code == 206) {
      // A 206 for a different range than asked would splice wrong bytes into a resumed file.
      std::uint64_t first = 0;
      bool ok = false;
      if (content_range) {
        std::string_view cr = *content_range;
        if (iequals_prefix(cr, "bytes ")) {
          cr.remove_prefix(6);
          auto [p, ec] = std::from_chars(cr.data(), cr.data() + cr.size(), first);
          ok = ec == std::errc() && p != cr.data() && p < cr.data() + cr.size() && *p == '-';
        }
      }
      if (!ok || first != *range_start) {
        error =
            Error(Errc::http,
                  what + ": asked for bytes from " + std::to_string(*range_start) +
                      " but the server answered Content-Range '" + content_range.value_or("") + "'",
                  static_cast<int>(code));
        return false;
      }
      partial = true;
    }
    if (on_headers && *on_headers) {
      ResponseInfo info;
      info.status = code;
      info.partial = partial;
      if (cl >= 0) info.content_length = static_cast<std::uint64_t>(cl);
      Status st = (*on_headers)(info);
      if (!st) {
        error = std::move(st).error();
        return false;
      }
    }
    return true;
  }

  bool cancelled() const {
    return (cancel && cancel->load()) || (request_cancel && request_cancel->load());
  }

  static size_t on_write(char* ptr, size_t size, size_t nmemb, void* userdata) {
    auto* t = static_cast<Transfer*>(userdata);
    std::size_t n = size * nmemb;
    if (!t->started && !t->begin_body()) return CURL_WRITEFUNC_ERROR;
    if (t->draining) {
      t->drained += n;
      t->wire += n;
      return t->drained > kMaxDrainBytes ? CURL_WRITEFUNC_ERROR : n;
    }
    if (n > t->max_bytes - std::min(t->received, t->max_bytes)) {
      t->error = Error(Errc::too_large, t->what + ": server sent more than " +
                                            std::to_string(t->max_bytes) + " bytes");
      return CURL_WRITEFUNC_ERROR;
    }
    if (t->max_bytes_per_sec > 0) {
      // curl's own limit (CURLOPT_MAX_RECV_SPEED_LARGE, also set) averages over seconds and lets
      // short transfers through at full speed; this keeps every prefix of the body within the
      // rate. A paused chunk is delivered again by curl after curl_easy_pause(CONT).
      auto due = t->body_start +
                 std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                     std::chrono::duration<double>(static_cast<double>(t->received + n) /
                                                   static_cast<double>(t->max_bytes_per_sec)));
      if (due > std::chrono::steady_clock::now() + std::chrono::milliseconds(1)) {
        t->resume_at = due;
        return CURL_WRITEFUNC_PAUSE;
      }
    }
    if (t->buffer) {
      t->buffer->append(ptr, n);
    } else {
      Status st =
          (*t->sink)(std::span<const std::byte>(reinterpret_cast<const std::byte*>(ptr), n));
      if (!st) {
        t->error = std::move(st).error();
        return CURL_WRITEFUNC_ERROR;
      }
    }
    t->received += n;
    t->wire += n;
    return n;
  }

  static size_t on_header(char* ptr, size_t size, size_t nitems, void* userdata) {
    auto* t = static_cast<Transfer*>(userdata);
    std::size_t n = size * nitems;
    t->wire += n;
    std::string_view line(ptr, n);
    if (iequals_prefix(line, "HTTP/")) {
      t->content_range.reset();  // a new response (after a redirect or 100 Continue)
      if (t->headers_out) t->headers_out->clear();
    } else if (iequals_prefix(line, "content-range:")) {
      line.remove_prefix(14);
      while (!line.empty() && (line.front() == ' ' || line.front() == '\t')) line.remove_prefix(1);
      while (!line.empty() && (line.back() == '\r' || line.back() == '\n' || line.back() == ' '))
        line.remove_suffix(1);
      t->content_range = std::string(line);
    }
    if (t->headers_out && !iequals_prefix(line, "HTTP/")) add_header(*t->headers_out, line);
    return n;
  }

  // "Name: value\r\n" into `out` (name lower-cased; a repeated name's values joined by ", ").
  static void add_header(std::map<std::string, std::string>& out, std::string_view line) {
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return;  // the blank line ending the head
    std::string name(line.substr(0, colon));
    for (auto& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::string_view value = line.substr(colon + 1);
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t'))
      value.remove_prefix(1);
    while (!value.empty() && (value.back() == '\r' || value.back() == '\n' || value.back() == ' ' ||
                              value.back() == '\t')) {
      value.remove_suffix(1);
    }
    auto [it, inserted] = out.emplace(std::move(name), std::string(value));
    if (!inserted) {
      it->second += ", ";
      it->second += value;
    }
  }

  static int on_progress(void* userdata, curl_off_t, curl_off_t, curl_off_t, curl_off_t ulnow) {
    auto* t = static_cast<Transfer*>(userdata);
    if (ulnow > 0) t->uploaded = static_cast<std::uint64_t>(ulnow);
    return t->cancelled() ? 1 : 0;
  }
};

class CurlClient final : public Client {
 public:
  CurlClient(ClientConfig config, CURL* easy, CURLM* multi)
      : config_(std::move(config)), easy_(easy), multi_(multi) {
    if (config_.user_agent.empty()) config_.user_agent = std::string("mota/") + kVersion;
  }
  ~CurlClient() override {
    curl_multi_cleanup(multi_);
    curl_easy_cleanup(easy_);
  }
  CurlClient(const CurlClient&) = delete;
  CurlClient& operator=(const CurlClient&) = delete;

  Result<ResponseInfo> get(const GetRequest& req, const Sink& sink) override {
    Transfer t;
    t.what = "GET " + req.url;
    t.max_bytes = req.max_bytes;
    t.range_start = req.range_start;
    t.sink = &sink;
    t.request_cancel = req.cancel;
    t.on_headers = &req.on_headers;
    Slist headers = MOTA_TRY_CTX(make_headers(req.headers), t.what);
    std::string range;
    if (req.range_start) range = std::to_string(*req.range_start) + "-";
    // CURLOPT_RANGE rather than RESUME_FROM: with RESUME_FROM curl fails a 200 answer
    // (CURLE_RANGE_ERROR), while a server without Range support must give a full download.
    MOTA_TRY(perform(t, req.url, headers.get(), req.timeout,
                     range.empty() ? nullptr : range.c_str(), std::nullopt));
    ResponseInfo info;
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &info.status);
    if (info.status < 200 || info.status > 299) {
      return fail(Error(Errc::http, t.what + ": HTTP " + std::to_string(info.status),
                        static_cast<int>(info.status)));
    }
    curl_off_t cl = -1;
    curl_easy_getinfo(easy_, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
    if (cl >= 0) info.content_length = static_cast<std::uint64_t>(cl);
    if (!t.started && req.range_start && info.status == 206) {
      // An empty 206 body: nothing was checked by begin_body(); treat it as honoured.
      info.partial = true;
    } else {
      info.partial = t.partial;
    }
    info.bytes_received = t.received;
    return info;
  }

  Result<Response> post(const std::string& url, const std::string& body,
                        const std::map<std::string, std::string>& headers,
                        std::uint64_t max_response_bytes) override {
    Transfer t;
    t.what = "POST " + url;
    t.max_bytes = max_response_bytes;
    t.check_status = false;
    Response resp;
    t.buffer = &resp.body;
    Slist hl = MOTA_TRY_CTX(make_headers(headers), t.what);
    MOTA_TRY(perform(t, url, hl.get(), std::chrono::milliseconds(0), nullptr, body));
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &resp.status);
    return resp;
  }

  Result<Response> request(const Request& req) override {
    static constexpr std::string_view kMethods[] = {"GET", "HEAD",  "POST",
                                                    "PUT", "PATCH", "DELETE"};
    Transfer t;
    t.what = req.method + " " + req.url;
    if (std::find(std::begin(kMethods), std::end(kMethods), req.method) == std::end(kMethods)) {
      return fail(Errc::invalid_argument, t.what + ": unsupported method");
    }
    t.max_bytes = req.max_response_bytes;
    t.check_status = false;
    Response resp;
    t.buffer = &resp.body;
    t.headers_out = &resp.headers;
    Slist hl = MOTA_TRY_CTX(make_headers(req.headers), t.what);
    // "Expect:" with no value: curl sends no "Expect: 100-continue" (a round trip per big body).
    curl_slist* next = curl_slist_append(hl.get(), "Expect:");
    if (!next) return fail(Errc::internal, t.what + ": out of memory building HTTP headers");
    (void)hl.release();
    hl.reset(next);
    const bool with_body = !req.body.empty() || req.method == "POST" || req.method == "PUT";
    std::optional<std::string_view> body;
    if (with_body) body = req.body;
    MOTA_TRY(perform(t, req.url, hl.get(), req.timeout, nullptr, body, req.method.c_str()));
    curl_easy_getinfo(easy_, CURLINFO_RESPONSE_CODE, &resp.status);
    return resp;
  }

 private:
  // Runs one transfer on the reused easy handle. `range` is CURLOPT_RANGE ("N-") or null;
  // `post_body` switches to POST, or to `method` if set (request()).
  Status perform(Transfer& t, const std::string& url, curl_slist* headers,
                 std::chrono::milliseconds timeout, const char* range,
                 std::optional<std::string_view> post_body, const char* method = nullptr) {
    t.easy = easy_;
    t.cancel = config_.cancel;
    t.max_bytes_per_sec = config_.max_bytes_per_sec;
    if (t.cancelled()) return fail(Errc::cancelled, t.what + ": cancelled");

    // The handle's options are set once (set_fixed_options) and only the per-request ones here,
    // each of them every time: no curl_easy_reset per request, because resetting drops curl's
    // upload buffer size and (re)setting CURLOPT_UPLOAD_BUFFERSIZE frees the buffer, so a big
    // upload buffer would be allocated and page-faulted anew for every request.
    error_buf_[0] = '\0';
    CURLcode rc = fixed_ ? CURLE_OK : set_fixed_options();
    fixed_ = rc == CURLE_OK;
    auto set = [&](CURLoption opt, auto value) {
      if (rc == CURLE_OK) rc = curl_easy_setopt(easy_, opt, value);
    };
    const std::string_view verb = method ? method : (post_body ? "POST" : "GET");
    set(CURLOPT_URL, url.c_str());
    set(CURLOPT_HTTPHEADER, headers);  // null: none
    set(CURLOPT_RANGE, range);         // null: none
    set(CURLOPT_CUSTOMREQUEST, static_cast<char*>(nullptr));
    if (post_body) {
      // Never null: curl would read the body from stdin instead.
      set(CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(post_body->size()));
      set(CURLOPT_POSTFIELDS, post_body->empty() ? "" : post_body->data());
      set(CURLOPT_POST, 1L);
    } else {
      // No stale pointer to an earlier request's body; POSTFIELDS switches to POST, so GET last.
      set(CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t{-1});
      set(CURLOPT_POSTFIELDS, static_cast<char*>(nullptr));
      if (verb != "HEAD") set(CURLOPT_HTTPGET, 1L);
    }
    set(CURLOPT_NOBODY, verb == "HEAD" ? 1L : 0L);  // after POSTFIELDS, which means POST
    if (verb != "GET" && verb != "POST" && verb != "HEAD") set(CURLOPT_CUSTOMREQUEST, method);
    set(CURLOPT_WRITEDATA, &t);
    set(CURLOPT_HEADERDATA, &t);
    set(CURLOPT_XFERINFODATA, &t);
    if (rc != CURLE_OK) {
      return fail(Errc::internal, t.what + ": curl_easy_setopt: " + curl_easy_strerror(rc));
    }

    CURLMcode mc = curl_multi_add_handle(multi_, easy_);
    if (mc != CURLM_OK) {
      return fail(Errc::internal, t.what + ": curl_multi_add_handle: " + curl_multi_strerror(mc));
    }
    std::optional<CURLcode> result;
    bool cancelled = false;
    const auto start = Clock::now();
    RateWindow rate(config_.min_rate, config_.min_rate_window, start);
    std::optional<std::string> too_slow;  // why the request was stopped: timeout or stall
    while (!result) {
      int running = 0;
      mc = curl_multi_perform(multi_, &running);
      if (mc != CURLM_OK) break;
      int queued = 0;
      while (CURLMsg* msg = curl_multi_info_read(multi_, &queued)) {
        if (msg->msg == CURLMSG_DONE && msg->easy_handle == easy_) result = msg->data.result;
      }
      if (result) break;
      if (t.cancelled()) {
        cancelled = true;
        break;
      }
      const auto now = Clock::now();
      if (timeout.count() > 0 && now - start >= timeout) {
        too_slow = "timed out: no complete answer within " + seconds_text(timeout) + " (" +
                   std::to_string(t.received) + " bytes received)";
        break;
      }
      if ((too_slow = rate.check(now, t.wire + t.uploaded))) break;
      int wait_ms = kPollMs;
      if (t.resume_at) {
        auto now = std::chrono::steady_clock::now();
        if (now >= *t.resume_at) {
          t.resume_at.reset();
          // May call on_write right away, which may pause again.
          CURLcode pc = curl_easy_pause(easy_, CURLPAUSE_CONT);
          if (pc != CURLE_OK) {
            if (!t.error)
              t.error = Error(Errc::network, t.what + ": resume: " + curl_easy_strerror(pc));
            result = pc;
            break;
          }
          continue;
        }
        auto left = std::chrono::ceil<std::chrono::milliseconds>(*t.resume_at - now).count();
        wait_ms = static_cast<int>(std::min<long long>(wait_ms, left));
      }
      mc = curl_multi_poll(multi_, nullptr, 0, wait_ms, nullptr);
      if (mc != CURLM_OK) break;
    }
    // Mid-transfer (cancelled, too slow) this also closes the connection.
    curl_multi_remove_handle(multi_, easy_);

    if (cancelled) return fail(Errc::cancelled, t.what + ": cancelled");
    if (too_slow) return fail(Errc::network, t.what + ": " + *too_slow);
    if (!result) {
      return fail(Errc::internal, t.what + ": curl_multi: " + curl_multi_strerror(mc));
    }
    if (*result == CURLE_OK) return {};
    if (t.error) return fail(std::move(*t.error));
    if (*result == CURLE_ABORTED_BY_CALLBACK) return fail(Errc::cancelled, t.what + ": cancelled");
    std::string detail = error_buf_[0] ? std::string(error_buf_) : curl_easy_strerror(*result);
    return fail(Errc::network, t.what + ": " + detail);
  }

  // The options that are the same for every request (see perform()).
  CURLcode set_fixed_options() {
    CURLcode rc = CURLE_OK;
    auto set = [&](CURLoption opt, auto value) {
      if (rc == CURLE_OK) rc = curl_easy_setopt(easy_, opt, value);
    };
    set(CURLOPT_ERRORBUFFER, error_buf_);
    set(CURLOPT_NOSIGNAL, 1L);  // no SIGALRM for DNS timeouts: we run inside daemons with threads
    set(CURLOPT_USERAGENT, config_.user_agent.c_str());
    set(CURLOPT_PROTOCOLS_STR, "http,https");
    set(CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    set(CURLOPT_FOLLOWLOCATION, 1L);
    set(CURLOPT_MAXREDIRS, kMaxRedirects);
    set(CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(config_.connect_timeout.count()));
    if (config_.max_bytes_per_sec > 0) {
      set(CURLOPT_MAX_RECV_SPEED_LARGE, static_cast<curl_off_t>(config_.max_bytes_per_sec));
    }
    if (!config_.ca_file.empty()) set(CURLOPT_CAINFO, config_.ca_file.c_str());
    if (!config_.unix_socket.empty()) set(CURLOPT_UNIX_SOCKET_PATH, config_.unix_socket.c_str());
    if (config_.upload_buffer_bytes > 0) {
      set(CURLOPT_UPLOAD_BUFFERSIZE, static_cast<long>(config_.upload_buffer_bytes));
    }
    // Bigger receive buffer than the 16 KiB default: fewer callbacks for GiB packages.
    set(CURLOPT_BUFFERSIZE, 256L * 1024);
    set(CURLOPT_WRITEFUNCTION, &Transfer::on_write);
    set(CURLOPT_HEADERFUNCTION, &Transfer::on_header);
    set(CURLOPT_XFERINFOFUNCTION, &Transfer::on_progress);
    set(CURLOPT_NOPROGRESS, 0L);
    return rc;
  }

  ClientConfig config_;
  CURL* easy_;
  CURLM* multi_;
  bool fixed_ = false;  // set_fixed_options() done
  char error_buf_[CURL_ERROR_SIZE] = {};
};

class BrokenClient final : public Client {
 public:
  explicit BrokenClient(Error error) : error_(std::move(error)) {}
  Result<ResponseInfo> get(const GetRequest&, const Sink&) override { return fail(error_); }
  Result<Response> post(const std::string&, const std::string&,
                        const std::map<std::string, std::string>&, std::uint64_t) override {
    return fail(error_);
  }

 private:
  Error error_;
};

}  // namespace

std::unique_ptr<Client> make_http_client(const ClientConfig& config) {
  Status init = global_init();
  CURL* easy = init ? curl_easy_init() : nullptr;
  CURLM* multi = init ? curl_multi_init() : nullptr;
  if (!easy || !multi) {
    curl_multi_cleanup(multi);
    curl_easy_cleanup(easy);
    // The factory has no error channel: hand out a client that reports the reason on every call.
    return std::make_unique<BrokenClient>(
        init ? Error(Errc::internal, "libcurl: cannot create a handle (out of memory)")
             : init.error());
  }
  return std::make_unique<CurlClient>(config, easy, multi);
}

}  // namespace mota::http
