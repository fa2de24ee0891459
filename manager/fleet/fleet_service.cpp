#include "manager/fleet/fleet_service.hpp"

#include <algorithm>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "common/log.hpp"
#include "common/time.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "manager/fleet/fleet_ingest.hpp"
#include "manager/fleet/rollout.hpp"
#include "manager/repo/repository.hpp"

namespace mota::manager {

namespace {

class Service final : public FleetService {
 public:
  Service(std::unique_ptr<FleetIngest> ingest, std::filesystem::path db_path, std::string repo,
          std::chrono::milliseconds interval)
      : ingest_(std::move(ingest)),
        db_path_(std::move(db_path)),
        repo_(std::move(repo)),
        interval_(interval) {
    if (interval_.count() > 0) ticker_ = std::thread([this] { tick_loop(); });
  }
  ~Service() override {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (ticker_.joinable()) ticker_.join();
  }

 private:
  void tick_loop() {
    auto db = open_fleet_db(db_path_);
    if (!db) {
      log::error("rollout ticker: " + db.error().message());
      return;
    }
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, interval_, [this] { return stop_; })) {
      lock.unlock();
      auto st = [&]() -> Status {
        auto repo = MOTA_TRY(Repository::open(repo_));
        auto changed = MOTA_TRY(tick_all_rollouts(*db, repo, now_seconds()));
        for (const auto& r : changed) {
          log::info("rollout " + r.state + " at " + std::to_string(r.percent()) + "%",
                    {{"CHANNEL", r.channel}, {"MODEL", r.model}, {"VERSION", r.version}});
        }
        return {};
      }();
      if (!st) log::error("rollout tick: " + st.error().message());
      lock.lock();
    }
  }

  std::unique_ptr<FleetIngest> ingest_;
  std::filesystem::path db_path_;
  std::string repo_;
  std::chrono::milliseconds interval_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread ticker_;
};

}  // namespace

FleetServeOptions& fleet_serve_options() {
  static FleetServeOptions options;
  return options;
}

Result<std::chrono::milliseconds> parse_duration_value(const std::string& text, bool allow_ms) {
  const std::string forms = std::string("want a number and a unit: 30s, 10m, 1h, 7d, 2w, 3mo, 1y") +
                            (allow_ms ? ", 500ms" : "") + "; or 0";
  if (text == "0") return std::chrono::milliseconds(0);
  if (allow_ms && text.size() > 2 && text.compare(text.size() - 2, 2, "ms") == 0) {
    const std::string digits = text.substr(0, text.size() - 2);
    if (digits.size() <= 12 &&
        std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return std::chrono::milliseconds(std::stoll(digits));
    }
    return fail(Errc::invalid_argument, "'" + text + "' is not a duration (" + forms + ")");
  }
  auto d = parse_duration(text);
  if (!d) return fail(Errc::invalid_argument, "'" + text + "' is not a duration (" + forms + ")");
  return std::chrono::milliseconds(*d);
}

Result<std::unique_ptr<FleetService>> attach_fleet(net::HttpServer& server,
                                                   const std::string& repo_dir,
                                                   const FleetServeOptions& options) {
  IngestOptions io;
  const std::string admission = options.enrolled_only ? "enrolled" : options.admission;
  if (admission == "pending") {
    io.admission = AdmissionMode::pending;
  } else if (admission == "automatic") {
    io.admission = AdmissionMode::automatic;
  } else if (admission == "enrolled") {
    io.admission = AdmissionMode::enrolled_only;
  } else {
    return fail(Errc::invalid_argument,
                "--admission: '" + admission + "' is not pending, automatic or enrolled");
  }
  io.new_devices_per_minute = options.new_devices_per_minute;
  io.new_devices_per_minute_per_address = options.new_devices_per_address;
  io.max_pending = options.max_pending;
  const auto skew = MOTA_TRY_CTX(parse_duration_value(options.max_clock_skew), "--max-clock-skew");
  io.max_clock_skew = std::chrono::duration_cast<std::chrono::seconds>(skew);
  const auto ttl = MOTA_TRY_CTX(parse_duration_value(options.session_ttl), "--session-ttl");
  if (ttl.count() == 0) {
    io.sessions = false;
  } else {
    io.session_ttl = std::chrono::duration_cast<std::chrono::seconds>(ttl);
  }
  if (options.max_sessions == 0) io.sessions = false;
  io.max_sessions = options.max_sessions;
  // Sub-second intervals ("200ms") are accepted for tests and demos; 0 disables the ticker.
  const auto interval =
      MOTA_TRY_CTX(parse_duration_value(options.rollout_interval, true), "--rollout-interval");
  const auto db_path = fleet_db_path(repo_dir, options.db);
  auto ingest = MOTA_TRY(FleetIngest::open(db_path, io));
  ingest->register_routes(server);
  log::info("fleet database " + db_path.string() +
            (admission == "pending"     ? " (new devices pending until accepted)"
             : admission == "automatic" ? " (new devices admitted on first contact)"
                                        : " (enrolled devices only)") +
            (io.sessions ? ", report sessions of " + options.session_ttl : ", no report sessions"));
  return std::unique_ptr<FleetService>(new Service(std::move(ingest), db_path, repo_dir, interval));
}

}  // namespace mota::manager
