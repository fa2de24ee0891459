// mota-bench-fleet-load: the fleet ingest load test (scripts/bench-fleet, bench/README.md).
//
// Starts `mota serve` on a free loopback port with a fresh fleet.db, then simulates --devices
// devices, each with its own Ed25519 key and increasing seqs, sending signed batches of events and
// heartbeats in the agent's wire format (protocol/report.hpp) over keep-alive connections (one
// libcurl easy handle per sender thread). Every request (JSON body, Ed25519 signature, headers) is
// built before the clock starts, so the load generator's own CPU during the timed part is libcurl
// only: on a 2-core machine, signing at send time took CPU from the server it measures. It then
// measures, in the same run, the raw SQLite insert
// ceiling: the same rows the server stored (events, devices, installed) inserted directly into a
// fresh database made by the same migrations, with the same pragmas, in 20,000-row transactions.
//
// Output: a markdown table on stdout (progress on stderr), or one JSON object with --json.
// Exit codes: 0 ran (targets are only reported), 1 failure (server did not start, requests
// refused, rows missing), 2 usage.
#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <latch>
#include <map>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/hex.hpp"
#include "common/time.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/crypto.hpp"
#include "protocol/identity.hpp"
#include "protocol/session.hpp"
#include "storage/sqlite.hpp"

namespace {

namespace stdfs = std::filesystem;
using mota::Json;
using SteadyClock = std::chrono::steady_clock;

struct Options {
  std::string mota;  // path of the mota binary
  std::string repo;  // a `mota init` repository (serve needs mota.toml)
  std::string work;  // where fleet.db, ceiling.db and serve.log go (fresh files)
  int devices = 10000;
  int batches = 3;       // batches per device
  int items = 20;        // items per batch
  int connections = 32;  // sender threads = keep-alive connections
  // "session": each device opens a report session first (protocol/session.hpp; not timed, measured
  // on its own) and MACs its reports, as the agent does; "signature": every report is signed.
  std::string auth = "session";
  bool json = false;
};

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mota-bench-fleet-load: %s\n", what.c_str());
  std::exit(1);
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64: a deterministic per-item dice
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

std::string device_id(int d) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "edge-%06d", d);
  return buf;
}

// The models a device runs: every device runs "detector", a third also "classifier", a fifth
// also "keyword-spotter" (heartbeats list them all, like the agent's inventory).
std::vector<std::string> device_models(int d) {
  std::vector<std::string> m{"detector"};
  if (d % 3 == 0) m.push_back("classifier");
  if (d % 5 == 0) m.push_back("keyword-spotter");
  return m;
}

std::string version_of(int d, const std::string& model) {
  const std::uint64_t r = mix(std::uint64_t(d) * 31 + model.size()) % 100;
  return r < 70 ? "2.3.1" : r < 95 ? "2.3.0" : "2.2.4";
}

// One outbox item as the agent sends it: roughly one event per four items (install outcomes),
// the rest heartbeats; bodies have the agent's fields (agent/agent.cpp, agent/report.cpp).
Json make_item(int d, std::int64_t seq, const std::string& id) {
  const std::uint64_t r = mix((std::uint64_t(d) << 32) ^ std::uint64_t(seq));
  const std::string created =
      "2030-01-01T" + std::string(seq % 24 < 10 ? "0" : "") + std::to_string(seq % 24) + ":00:00Z";
  const auto models = device_models(d);
  if (r % 4 == 0) {
    const std::string& model = models[(r >> 8) % models.size()];
    const std::string to = version_of(d, model);
    const int dice = int((r >> 16) % 100);
    const std::string state = dice < 85 ? "installed" : dice < 95 ? "failed" : "refused";
    const std::string error = state == "installed" ? ""
                              : state == "failed"
                                  ? "verify: sha256 of model.onnx is 4f1c...e9 (expected 9ab0...12)"
                                  : "refused: channel version 2.2.4 is below min_version 2.3.0";
    Json body = {{"device", id},
                 {"time", created},
                 {"model", model},
                 {"from", "2.2.4"},
                 {"to", to},
                 {"state", state},
                 {"step", state == "installed" ? "commit" : "verify"},
                 {"error", error},
                 {"bytes", 48234112 + std::int64_t(r % 1000)},
                 {"kind", "full"},
                 {"duration_ms", std::int64_t(2000 + (r >> 20) % 9000)},
                 {"install_id", "inst-" + std::to_string(r % 100000000)}};
    return Json{{"seq", seq}, {"kind", "event"}, {"created_at", created}, {"body", body}};
  }
  Json ms = Json::array();
  for (std::size_t i = 0; i < models.size(); ++i) {
    ms.push_back(Json{{"model", models[i]},
                      {"slot", (d + int(i)) % 2 ? "b" : "a"},
                      {"version", version_of(d, models[i])},
                      {"committed", true},
                      {"channel", "stable"}});
  }
  Json body = {
      {"agent_version", "0.1.0"},
      {"arch", d % 4 == 0 ? "x86_64" : "aarch64"},
      {"ram_total_bytes", std::int64_t(4) << 30},
      {"disk_free_bytes", std::int64_t(9000000000) - std::int64_t(r % 1000000)},
      {"time", created},
      {"tuf", {{"root", 1}, {"timestamp", 4000 + seq}, {"snapshot", 310}, {"targets", 42}}},
      {"models", ms}};
  return Json{{"seq", seq}, {"kind", "heartbeat"}, {"created_at", created}, {"body", body}};
}

std::int64_t first_seq(int batch, int items) {
  return std::int64_t(batch) * items + 1;
}

std::string batch_body(int d, const std::string& id, int batch, int items) {
  Json arr = Json::array();
  for (int i = 0; i < items; ++i) arr.push_back(make_item(d, first_seq(batch, items) + i, id));
  return Json{{"device", id}, {"batch", arr}}.dump();
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("no free port");
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

bool port_open(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(std::uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// Whether `mota serve --help` lists `flag`.
bool serve_has_flag(const std::string& mota, const std::string& flag) {
  const std::string cmd = "'" + mota + "' serve --help 2>/dev/null";
  FILE* p = ::popen(cmd.c_str(), "r");
  if (!p) return false;
  std::string text;
  char buf[4096];
  while (std::size_t n = std::fread(buf, 1, sizeof buf, p)) text.append(buf, n);
  ::pclose(p);
  return text.find(flag) != std::string::npos;
}

pid_t spawn(const std::vector<std::string>& argv, const stdfs::path& log) {
  pid_t pid = ::fork();
  if (pid < 0) die("fork failed");
  if (pid == 0) {
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      ::dup2(fd, 1);
      ::dup2(fd, 2);
    }
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  return pid;
}

// VmHWM (peak resident set) of a live process, in KiB.
long vm_hwm_kib(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
  }
  return -1;
}

// CPU seconds (user + system) a process has used so far, and those of its thread named `comm`
// (0 when there is none), from /proc.
double stat_cpu_s(const std::string& stat_path) {
  std::ifstream in(stat_path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = text.rfind(')');  // the name may hold spaces
  if (close == std::string::npos) return 0;
  std::istringstream fields(text.substr(close + 2));
  std::string f;
  double ticks = 0;
  for (int i = 3; i <= 15 && fields >> f; ++i) {
    if (i == 14 || i == 15) ticks += std::strtod(f.c_str(), nullptr);  // utime, stime
  }
  return ticks / double(::sysconf(_SC_CLK_TCK));
}
double process_cpu_s(pid_t pid) {
  return stat_cpu_s("/proc/" + std::to_string(pid) + "/stat");
}
double thread_cpu_s(pid_t pid, const std::string& comm) {
  const stdfs::path tasks = "/proc/" + std::to_string(pid) + "/task";
  std::error_code ec;
  for (const auto& t : stdfs::directory_iterator(tasks, ec)) {
    std::ifstream c(t.path() / "comm");
    std::string name;
    std::getline(c, name);
    if (name == comm) return stat_cpu_s((t.path() / "stat").string());
  }
  return 0;
}
double self_cpu_s() {
  rusage u{};
  ::getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         double(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

std::size_t on_body(char* p, std::size_t s, std::size_t n, void* out) {
  static_cast<std::string*>(out)->append(p, s * n);
  return s * n;
}

struct Device {
  std::string id;
  std::string key_hex;
  mota::crypto::PrivateKey key;
};

struct SenderStats {
  std::vector<double> latency_ms;
  std::uint64_t ok = 0, retried = 0, handshakes = 0;
  std::string failure;
};

// One request, ready to send: built and signed before the timed part.
struct Prepared {
  std::string url, body;
  std::vector<std::string> headers;
};

// POSTs `body` with `headers` on `c`; the status (0 on a transport error, `response` then says
// why).
long post(CURL* c, const std::string& url, const std::string& body,
          const std::vector<std::string>& headers, std::string& response) {
  curl_slist* h = nullptr;
  for (const auto& line : headers) h = curl_slist_append(h, line.c_str());
  response.clear();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
  curl_easy_setopt(c, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.size()));
  CURLcode rc = curl_easy_perform(c);
  long status = 0;
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
  curl_slist_free_all(h);
  if (rc != CURLE_OK) {
    response = curl_easy_strerror(rc);
    return 0;
  }
  return status;
}

CURL* new_handle(std::string& response) {
  CURL* c = curl_easy_init();
  if (!c) return nullptr;
  curl_easy_setopt(c, CURLOPT_POST, 1L);
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(c, CURLOPT_TCP_NODELAY, 1L);
  curl_easy_setopt(c, CURLOPT_TIMEOUT, 60L);
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  return c;
}

// Opens a report session for `dev` as the agent does (protocol/session.hpp).
mota::Result<mota::protocol::ReportSession> handshake(CURL* c, const std::string& base,
                                                      const Device& dev, std::string& response) {
  auto own = MOTA_TRY(mota::crypto::KeyAgreement::generate());
  const std::string route = mota::protocol::session_route(dev.id);
  const std::string body = mota::protocol::session_request_body(dev.id, own.public_hex());
  const std::string ts = mota::format_time(mota::now_seconds());
  auto sig = MOTA_TRY(dev.key.sign(mota::protocol::signed_message(dev.id, ts, route, body)));
  long status = post(c, base + route, body,
                     {"Content-Type: application/json", "Expect:", "X-Mota-Device: " + dev.id,
                      "X-Mota-Key: " + dev.key_hex, "X-Mota-Timestamp: " + ts,
                      "X-Mota-Signature: " + mota::to_hex(sig)},
                     response);
  if (status != 200) {
    return mota::fail(mota::Errc::http,
                      "POST " + base + route + ": HTTP " + std::to_string(status) + " " + response);
  }
  return mota::protocol::accept_session(own, dev.id, dev.key_hex, response);
}

void sender(int t, const Options& o, const std::vector<Device>& devices, const std::string& base,
            std::latch& sessions_open, std::latch& ready, SenderStats& out) {
  std::string response;
  CURL* c = new_handle(response);
  if (!c) out.failure = "curl_easy_init failed";
  // Sessions first (timed on their own by main()), one per device of this thread.
  std::map<int, mota::protocol::ReportSession> sessions;
  if (o.auth == "session") {
    for (int d = t; d < o.devices && out.failure.empty(); d += o.connections) {
      auto s = handshake(c, base, devices[std::size_t(d)], response);
      if (!s) {
        out.failure = s.error().message();
        break;
      }
      sessions.emplace(d, std::move(*s));
      ++out.handshakes;
    }
  }
  sessions_open.arrive_and_wait();
  std::vector<Prepared> requests;
  for (int b = 0; b < o.batches && out.failure.empty(); ++b) {
    for (int d = t; d < o.devices && out.failure.empty(); d += o.connections) {
      const Device& dev = devices[std::size_t(d)];
      const std::string route = "/v1/devices/" + dev.id + "/events";
      Prepared p{base + route, batch_body(d, dev.id, b, o.items), {}};
      // Signed now: the whole run must stay within the server's --max-clock-skew (10 min).
      const std::string ts = mota::format_time(mota::now_seconds());
      p.headers = {"Content-Type: application/json",
                   "Expect:",  // no 100-continue round trip (bodies are small)
                   "X-Mota-Device: " + dev.id, "X-Mota-Timestamp: " + ts};
      if (auto s = sessions.find(d); s != sessions.end()) {
        auto mac = mota::protocol::session_mac(s->second.key, dev.id, ts, route, p.body);
        if (!mac) {
          out.failure = mac.error().message();
          break;
        }
        p.headers.push_back("X-Mota-Session: " + s->second.id);
        p.headers.push_back("X-Mota-Mac: " + *mac);
      } else {
        auto sig = dev.key.sign(mota::protocol::signed_message(dev.id, ts, route, p.body));
        if (!sig) {
          out.failure = sig.error().message();
          break;
        }
        p.headers.push_back("X-Mota-Key: " + dev.key_hex);
        p.headers.push_back("X-Mota-Signature: " + mota::to_hex(*sig));
      }
      requests.push_back(std::move(p));
    }
  }
  ready.arrive_and_wait();
  if (!c) return;
  for (std::size_t i = 0; i < requests.size() && out.failure.empty(); ++i) {
    const Prepared& p = requests[i];
    curl_slist* h = nullptr;
    for (const auto& line : p.headers) h = curl_slist_append(h, line.c_str());
    curl_easy_setopt(c, CURLOPT_URL, p.url.c_str());
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, p.body.data());
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(p.body.size()));
    for (int attempt = 0;; ++attempt) {
      response.clear();
      const auto t0 = SteadyClock::now();
      CURLcode rc = curl_easy_perform(c);
      const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
      long status = 0;
      curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
      if (rc == CURLE_OK && status == 200) {
        out.latency_ms.push_back(ms);
        ++out.ok;
        break;
      }
      // 503 (writer overloaded) and a connection the server closed under a reused keep-alive
      // request are what an agent retries later (the server deduplicates by seq); anything else
      // is a failure.
      const bool transport = rc == CURLE_GOT_NOTHING || rc == CURLE_RECV_ERROR ||
                             rc == CURLE_SEND_ERROR || rc == CURLE_COULDNT_CONNECT;
      if (((rc == CURLE_OK && status == 503) || transport) && attempt < 20) {
        ++out.retried;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      out.failure = "POST " + p.url + ": " +
                    (rc != CURLE_OK ? std::string(curl_easy_strerror(rc))
                                    : "HTTP " + std::to_string(status) + " " + response);
      break;
    }
    curl_slist_free_all(h);
  }
  curl_easy_cleanup(c);
}

double percentile(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  std::size_t i = std::min(v.size() - 1, std::size_t(p * double(v.size() - 1) + 0.5));
  std::nth_element(v.begin(), v.begin() + std::ptrdiff_t(i), v.end());
  return v[i];
}

std::int64_t count_rows(const stdfs::path& db_path, const char* table) {
  auto db = mota::storage::Database::open(db_path);
  if (!db) die(db.error().message());
  auto st = db->prepare(std::string("SELECT COUNT(*) FROM ") + table);
  if (!st || !st->step()) die("count " + std::string(table));
  return st->column_int64(0);
}

void check(const mota::Status& st, const char* what) {
  if (!st) die(std::string(what) + ": " + st.error().message());
}

// The raw insert ceiling: every row the server ended up holding (each events row, one devices
// row per device, one installed row per device and model), inserted with prepared statements in
// 20,000-row transactions, in the order the server received them, into a fresh database with the
// same schema and pragmas. Row generation (JSON) is outside the timed part. Returns seconds spent
// inserting.
double raw_ceiling(const Options& o, const std::vector<Device>& devices, const stdfs::path& path) {
  stdfs::remove(path);
  stdfs::remove(path.string() + "-wal");
  stdfs::remove(path.string() + "-shm");
  auto db = mota::manager::open_fleet_db(path);
  if (!db) die(db.error().message());
  check(mota::manager::prepare_ingest_connection(*db), "ceiling pragmas");
  auto ev = db->prepare(
      "INSERT INTO events (device, seq, kind, created_at, received_at, model, from_version, "
      "to_version, state, step, error, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  auto dv = db->prepare(
      "INSERT INTO devices (id, key, enrolled, first_seen, last_seen, agent_version, arch, "
      "last_seq) VALUES (?, ?, 0, ?, ?, ?, ?, ?)");
  auto in = db->prepare(
      "INSERT INTO installed (device, model, version, slot, committed, state, target, last_error, "
      "rolled_back_from, channel, updated_at) VALUES (?, ?, ?, ?, 1, 'ok', ?, '', '', 'stable', "
      "?)");
  if (!ev || !dv || !in) die("ceiling: prepare failed");
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(mota::now_seconds().time_since_epoch())
          .count();
  struct Row {
    std::string device;
    std::int64_t seq;
    std::string kind, created, model, from, to, state, step, error, body;
  };
  auto field = [](const Json& j, const char* k) {
    auto it = j.find(k);
    return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  double seconds = 0;
  std::vector<Row> rows;
  std::vector<int> new_devices;  // first seen in this transaction: their devices/installed rows
  auto flush = [&]() {
    const auto t0 = SteadyClock::now();
    auto tx = mota::storage::Transaction::begin(*db);
    if (!tx) die(tx.error().message());
    for (int d : new_devices) {
      const auto& dev = devices[std::size_t(d)];
      check(dv->reset(), "reset");
      check(dv->bind_all(dev.id, dev.key_hex, now, now, "0.1.0", d % 4 == 0 ? "x86_64" : "aarch64",
                         first_seq(o.batches - 1, o.items) + o.items - 1),
            "bind");
      check(dv->run(), "insert device");
      for (const auto& m : device_models(d)) {
        check(in->reset(), "reset");
        check(in->bind_all(dev.id, m, version_of(d, m), d % 2 ? "b" : "a", version_of(d, m), now),
              "bind");
        check(in->run(), "insert installed");
      }
    }
    for (const auto& r : rows) {
      check(ev->reset(), "reset");
      check(ev->bind_all(r.device, r.seq, r.kind, r.created, now, r.model, r.from, r.to, r.state,
                         r.step, r.error, r.body),
            "bind");
      check(ev->run(), "insert event");
    }
    check(tx->commit(), "commit");
    seconds += std::chrono::duration<double>(SteadyClock::now() - t0).count();
    rows.clear();
    new_devices.clear();
  };
  // In the order the server received them (batch by batch, device after device), 20,000 event
  // rows per transaction: the same b-tree work as the server, minus everything but the inserts.
  for (int b = 0; b < o.batches; ++b) {
    for (int d = 0; d < o.devices; ++d) {
      const auto& id = devices[std::size_t(d)].id;
      if (b == 0) new_devices.push_back(d);
      for (int i = 0; i < o.items; ++i) {
        Json item = make_item(d, first_seq(b, o.items) + i, id);
        const Json& body = item["body"];
        const bool is_ev = item["kind"] == "event";
        rows.push_back(Row{id, item["seq"].get<std::int64_t>(), item["kind"].get<std::string>(),
                           item["created_at"].get<std::string>(), field(body, "model"),
                           is_ev ? field(body, "from") : "", is_ev ? field(body, "to") : "",
                           is_ev ? field(body, "state") : "", is_ev ? field(body, "step") : "",
                           is_ev ? field(body, "error") : "", body.dump()});
      }
      if (rows.size() >= 20000) flush();
    }
  }
  if (!rows.empty() || !new_devices.empty()) flush();
  return seconds;
}

int usage() {
  std::fprintf(stderr,
               "usage: mota-bench-fleet-load --mota PATH --repo DIR --work DIR [--devices N]\n"
               "         [--batches N] [--items N] [--connections N] [--auth session|signature]\n"
               "         [--json]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) std::exit(usage());
      return argv[++i];
    };
    if (a == "--mota")
      o.mota = next();
    else if (a == "--repo")
      o.repo = next();
    else if (a == "--work")
      o.work = next();
    else if (a == "--devices")
      o.devices = std::atoi(next().c_str());
    else if (a == "--batches")
      o.batches = std::atoi(next().c_str());
    else if (a == "--items")
      o.items = std::atoi(next().c_str());
    else if (a == "--connections")
      o.connections = std::atoi(next().c_str());
    else if (a == "--auth")
      o.auth = next();
    else if (a == "--json")
      o.json = true;
    else
      return usage();
  }
  if (o.mota.empty() || o.repo.empty() || o.work.empty() || o.devices < 1 || o.batches < 1 ||
      o.items < 1 || o.connections < 1 || (o.auth != "session" && o.auth != "signature")) {
    return usage();
  }
  ::signal(SIGPIPE, SIG_IGN);
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const stdfs::path work = o.work;
  stdfs::create_directories(work);

  std::fprintf(stderr, "generating %d device keys\n", o.devices);
  std::vector<Device> devices;
  devices.reserve(std::size_t(o.devices));
  for (int d = 0; d < o.devices; ++d) {
    auto key = mota::crypto::PrivateKey::generate(mota::crypto::KeyType::ed25519);
    if (!key) die(key.error().message());
    std::string hex = key->public_key().public_value;
    devices.push_back(Device{device_id(d), std::move(hex), std::move(*key)});
  }

  const stdfs::path db = work / "fleet.db";
  for (const char* s : {"", "-wal", "-shm"}) stdfs::remove(db.string() + s);
  const int port = free_port();
  std::vector<std::string> serve_argv = {o.mota, "serve",     "--repo",
                                         o.repo, "--listen",  "127.0.0.1:" + std::to_string(port),
                                         "--db", db.string(), "--rollout-interval",
                                         "0s"};
  if (serve_has_flag(o.mota, "--max-pending")) {
    // The default admission (new devices pending), with registration limits above the load's
    // 10,000 first contacts: the ingest path a fleet runs, not the limiter. (Revisions before
    // admission have no such flags: one loader drives every revision of an A/B run.)
    for (const char* a : {"--new-devices-per-minute", "10000000", "--new-devices-per-address",
                          "10000000", "--max-pending", "10000000"}) {
      serve_argv.push_back(a);
    }
  }
  const pid_t server = spawn(serve_argv, work / "serve.log");
  const auto deadline = SteadyClock::now() + std::chrono::seconds(20);
  while (!port_open(port)) {
    int status = 0;
    if (::waitpid(server, &status, WNOHANG) == server || SteadyClock::now() > deadline) {
      die("mota serve did not start; see " + (work / "serve.log").string());
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const long rss_idle = vm_hwm_kib(server);

  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  std::vector<SenderStats> stats(std::size_t(o.connections));
  std::vector<std::thread> threads;
  std::latch sessions_open(o.connections + 1);
  std::latch ready(o.connections + 1);
  if (o.auth == "session") std::fprintf(stderr, "opening %d report sessions\n", o.devices);
  const double hs_cpu0 = process_cpu_s(server);
  const auto hs_t0 = SteadyClock::now();
  for (int t = 0; t < o.connections; ++t) {
    threads.emplace_back(sender, t, std::cref(o), std::cref(devices), std::cref(base),
                         std::ref(sessions_open), std::ref(ready), std::ref(stats[std::size_t(t)]));
  }
  sessions_open.arrive_and_wait();
  const double hs_wall = std::chrono::duration<double>(SteadyClock::now() - hs_t0).count();
  const double hs_cpu = process_cpu_s(server) - hs_cpu0;
  std::uint64_t handshakes = 0;
  for (const auto& st : stats) handshakes += st.handshakes;
  std::fprintf(stderr, "%s %d batches of %d items (not timed)\n",
               o.auth == "session" ? "MACing" : "signing", o.devices * o.batches, o.items);
  ready.arrive_and_wait();
  std::fprintf(stderr, "sending %d batches of %d items from %d devices over %d connections\n",
               o.devices * o.batches, o.items, o.devices, o.connections);
  const double server_cpu0 = process_cpu_s(server);
  const double writer_cpu0 = thread_cpu_s(server, "mota-writer");
  const double self_cpu0 = self_cpu_s();
  const auto t0 = SteadyClock::now();
  for (auto& th : threads) th.join();
  const double wall = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  const double client_cpu = self_cpu_s() - self_cpu0;
  const double server_cpu = process_cpu_s(server) - server_cpu0;
  const double writer_cpu = thread_cpu_s(server, "mota-writer") - writer_cpu0;
  const long rss_peak = vm_hwm_kib(server);
  ::kill(server, SIGTERM);
  int wstatus = 0;
  ::waitpid(server, &wstatus, 0);

  std::vector<double> lat;
  std::uint64_t ok = 0, retried = 0;
  for (auto& s : stats) {
    if (!s.failure.empty()) die(s.failure);
    lat.insert(lat.end(), s.latency_ms.begin(), s.latency_ms.end());
    ok += s.ok;
    retried += s.retried;
  }
  const std::int64_t expected = std::int64_t(o.devices) * o.batches * o.items;
  const std::int64_t stored = count_rows(db, "events");
  if (stored != expected) {
    die("the server stored " + std::to_string(stored) + " events rows, expected " +
        std::to_string(expected));
  }
  const double p50 = percentile(lat, 0.50), p99 = percentile(lat, 0.99);
  const double events_s = double(expected) / wall;
  const double batches_s = double(ok) / wall;

  std::fprintf(stderr, "raw SQLite insert ceiling (same rows, fresh database)\n");
  const double ceiling_s = raw_ceiling(o, devices, work / "ceiling.db");
  const double ceiling_rate = double(expected) / ceiling_s;
  const double ratio = events_s / ceiling_rate;

  if (o.json) {
    Json j = {{"devices", o.devices},
              {"batches", ok},
              {"items_per_batch", o.items},
              {"connections", o.connections},
              {"events", expected},
              {"wall_s", wall},
              {"events_per_s", events_s},
              {"batches_per_s", batches_s},
              {"p50_ms", p50},
              {"p99_ms", p99},
              {"retried_503", retried},
              {"server_peak_rss_kib", rss_peak},
              {"server_idle_rss_kib", rss_idle},
              {"ceiling_s", ceiling_s},
              {"ceiling_events_per_s", ceiling_rate},
              {"ratio", ratio},
              {"server_cpu_s", server_cpu},
              {"writer_cpu_s", writer_cpu},
              {"load_generator_cpu_s", client_cpu},
              {"signing_excluded", true},
              {"auth", o.auth},
              {"handshakes", handshakes},
              {"handshakes_wall_s", hs_wall},
              {"handshake_server_cpu_s", hs_cpu}};
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf(
      "| devices | items/batch | auth | conns | events | accepted events/s | batches/s | p50 ms | "
      "p99 ms | retries | server peak RSS MiB | raw SQLite ceiling events/s | ratio | server CPU "
      "us/event | writer busy | load generator CPU us/event |\n");
  std::printf("|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::printf("| %d | %d | %s | %d | %" PRId64 " | %.0f | %.0f | %.2f | %.2f | %" PRIu64
              " | %.1f | %.0f | %.0f%% | %.1f | %.0f%% | %.1f |\n",
              o.devices, o.items, o.auth.c_str(), o.connections, expected, events_s, batches_s, p50,
              p99, retried, double(rss_peak) / 1024.0, ceiling_rate, ratio * 100.0,
              server_cpu / double(expected) * 1e6, writer_cpu / wall * 100.0,
              client_cpu / double(expected) * 1e6);
  if (handshakes > 0) {
    std::fprintf(stderr,
                 "sessions: %" PRIu64
                 " handshakes in %.2f s before the clock (%.0f/s), server CPU "
                 "%.0f us per handshake\n",
                 handshakes, hs_wall, double(handshakes) / hs_wall,
                 hs_cpu / double(handshakes) * 1e6);
  }
  return 0;
}
