// mota-bench-fleet-fill: writes a fleet.db of --devices devices (default 1,000,000) through the
// real schema (open_fleet_db applies manager/fleet/migrations), for timing `mota fleet` and
// `mota devices` at scale (scripts/bench-fleet, bench/README.md).
//
// Distribution (deterministic from the device index, so every run writes the same rows; times
// are relative to now):
//   devices    0.2 % enrolled but never reported (no models); of the rest 96 % seen in the last
//              20 minutes, 1 % 20-60 minutes ago, 3 % between 1 hour and 30 days ago (stale)
//   models     detector on every device, classifier 40 %, keyword-spotter 25 %, segmenter 8 %
//   versions   per model five versions, 55 / 25 / 12 / 6 / 2 %
//   state      1.5 % failed (target = failed_version = the newest version), 0.3 % refused,
//              0.4 % rolled back from the newest version, the rest ok; channel stable 85 %,
//              beta 10 %, none 5 %
//   metadata   --metadata-errors P % of the reporting devices (default 1) with a failing TUF
//              metadata refresh (devices.metadata_error); 100 is the worst case for `mota fleet`
//   events     --events N per reporting device (default 2): an install event, then heartbeats,
//              with the agent's bodies
//   labels     every reporting device: site = plant-0..plant-19 (5 % each), hw = orin-nano 40 %,
//              rpi5 30 %, xavier 20 %, ipc 10 %, and its facts (mota/arch, mota/agent,
//              mota/ram-gb), as an agent's heartbeat leaves them (for `--select` timings)
//   rollouts   one running rollout (stable/classifier at 25 %) unless --no-rollout, so
//              `mota fleet` also counts the devices updating now
// Direct SQLite inserts in 100,000-device transactions (synchronous=OFF for the fill only: the
// file is a throwaway, the timed commands open it normally).
// Exit codes: 0 written, 1 failure, 2 usage.
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>

#include "common/time.hpp"
#include "manager/fleet/fleet_db.hpp"
#include "storage/sqlite.hpp"

namespace {

namespace stdfs = std::filesystem;

[[noreturn]] void die(const std::string& what) {
  std::fprintf(stderr, "mota-bench-fleet-fill: %s\n", what.c_str());
  std::exit(1);
}

void check(const mota::Status& st, const char* what) {
  if (!st) die(std::string(what) + ": " + st.error().message());
}

std::uint64_t mix(std::uint64_t x) {  // splitmix64
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

struct Model {
  const char* name;
  int share_percent;        // of reporting devices
  const char* versions[5];  // newest first
};
constexpr Model kModels[] = {
    {"detector", 100, {"3.2.0", "3.1.2", "3.1.1", "3.0.0", "2.9.4"}},
    {"classifier", 40, {"1.8.0", "1.7.3", "1.7.2", "1.6.0", "1.5.1"}},
    {"keyword-spotter", 25, {"0.9.1", "0.9.0", "0.8.7", "0.8.2", "0.7.0"}},
    {"segmenter", 8, {"2.0.0", "1.9.9", "1.9.0", "1.8.5", "1.2.0"}},
};
constexpr int kVersionShare[5] = {55, 25, 12, 6, 2};

int pick_version(std::uint64_t r) {
  int x = int(r % 100);
  for (int i = 0; i < 5; ++i) {
    if (x < kVersionShare[i]) return i;
    x -= kVersionShare[i];
  }
  return 4;
}

std::string hex64(std::uint64_t seed) {
  static const char* digits = "0123456789abcdef";
  std::string s(64, '0');
  std::uint64_t v = seed;
  for (int i = 0; i < 64; ++i) {
    if (i % 16 == 0) v = mix(v + std::uint64_t(i));
    s[std::size_t(i)] = digits[v & 15];
    v >>= 4;
  }
  return s;
}

int usage() {
  std::fprintf(stderr,
               "usage: mota-bench-fleet-fill --db PATH [--devices N] [--events N] "
               "[--metadata-errors PERCENT] [--no-rollout]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string db_path;
  long devices = 1000000;
  int events = 2;
  int metadata_errors = 1;
  bool rollout = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--db" && i + 1 < argc)
      db_path = argv[++i];
    else if (a == "--devices" && i + 1 < argc)
      devices = std::atol(argv[++i]);
    else if (a == "--events" && i + 1 < argc)
      events = std::atoi(argv[++i]);
    else if (a == "--metadata-errors" && i + 1 < argc)
      metadata_errors = std::atoi(argv[++i]);
    else if (a == "--no-rollout")
      rollout = false;
    else
      return usage();
  }
  if (db_path.empty() || devices < 1 || events < 0 || metadata_errors < 0 ||
      metadata_errors > 100) {
    return usage();
  }
  for (const char* s : {"", "-wal", "-shm"}) stdfs::remove(db_path + s);

  const auto t0 = std::chrono::steady_clock::now();
  auto db = mota::manager::open_fleet_db(db_path);
  if (!db) die(db.error().message());
  check(db->exec("PRAGMA synchronous=OFF; PRAGMA cache_size=-262144"), "pragmas");
  const std::int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(mota::now_seconds().time_since_epoch())
          .count();

  auto dev = db->prepare(
      "INSERT INTO devices (id, key, enrolled, first_seen, last_seen, agent_version, arch, tags, "
      "last_seq, metadata_error, metadata_error_since, labels) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, "
      "?, ?, ?)");
  auto ins = db->prepare(
      "INSERT INTO installed (device, model, version, slot, committed, state, target, last_error, "
      "rolled_back_from, channel, failed_version, failed_at, updated_at) VALUES (?, ?, ?, ?, ?, "
      "?, ?, ?, ?, ?, ?, ?, ?)");
  auto ev = db->prepare(
      "INSERT INTO events (device, seq, kind, created_at, received_at, model, from_version, "
      "to_version, state, step, error, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)");
  if (!dev || !ins || !ev) die("prepare failed");

  std::int64_t n_installed = 0, n_events = 0;
  constexpr long kPerTx = 100000;
  char buf[1024];
  for (long d0 = 0; d0 < devices; d0 += kPerTx) {
    auto tx = mota::storage::Transaction::begin(*db);
    if (!tx) die(tx.error().message());
    for (long d = d0; d < std::min(devices, d0 + kPerTx); ++d) {
      const std::uint64_t r = mix(std::uint64_t(d));
      std::snprintf(buf, sizeof buf, "dev-%07ld", d);
      const std::string id = buf;
      const bool never = r % 1000 < 2;
      const int age_dice = int((r >> 10) % 100);
      const std::int64_t age = age_dice < 96   ? std::int64_t((r >> 20) % 1200)
                               : age_dice < 97 ? 1200 + std::int64_t((r >> 20) % 2400)
                                               : 3600 + std::int64_t((r >> 20) % (30 * 86400));
      const std::int64_t last_seen = now - age;
      const std::int64_t first_seen = last_seen - std::int64_t((r >> 30) % (200 * 86400));
      const int arch_dice = int((r >> 40) % 10);
      const char* arch = arch_dice < 7 ? "aarch64" : arch_dice < 9 ? "x86_64" : "armv7l";
      check(dev->reset(), "reset");
      if (never) {
        check(dev->bind_all(id, hex64(r), 1, nullptr, nullptr, "", "", "", 0, "", 0, "{}"), "bind");
      } else {
        const bool stuck = int((r >> 50) % 100) < metadata_errors;
        const char* agent = (r >> 44) % 10 < 3 ? "0.1.0" : "0.2.0";
        const int hw_dice = int((r >> 54) % 10);
        const char* hw = hw_dice < 4   ? "orin-nano"
                         : hw_dice < 7 ? "rpi5"
                         : hw_dice < 9 ? "xavier"
                                       : "ipc";
        char labels[256];
        std::snprintf(labels, sizeof labels,
                      R"({"hw":"%s","mota/agent":"%s","mota/arch":"%s","mota/ram-gb":"%d",)"
                      R"("site":"plant-%d"})",
                      hw, agent, arch, hw_dice < 4 ? 8 : 4, int((r >> 58) % 20));
        check(dev->bind_all(id, hex64(r), int(r % 7 == 0), first_seen, last_seen, agent, arch, "",
                            events,
                            stuck ? "TUF refresh from http://fleet.example/metadata: "
                                    "timestamp.json: expired (possible freeze attack)"
                                  : "",
                            stuck ? last_seen - 3600 : 0, labels),
              "bind");
      }
      check(dev->run(), "insert device");
      if (never) continue;

      std::string first_model, first_version;
      for (std::size_t m = 0; m < std::size(kModels); ++m) {
        const Model& model = kModels[m];
        const std::uint64_t rm = mix(r ^ (0x1000 + m));
        if (int(rm % 100) >= model.share_percent) continue;
        int vi = pick_version(rm >> 8);
        const int sdice = int((rm >> 16) % 1000);
        std::string state = "ok", target = model.versions[vi], error, rolled_back_from,
                    failed_version;
        if (sdice < 15) {
          state = "failed";
          target = failed_version = model.versions[0];
          if (vi == 0) vi = 1;
          error = "verify: tree digest of " + std::string(model.name) + " " + target +
                  " does not match the signed one";
        } else if (sdice < 18) {
          state = "refused";
          target = model.versions[0];
          if (vi == 0) vi = 1;
          error = "refused: not enough disk space (need 412 MiB, 96 MiB free)";
        } else if (sdice < 22) {
          vi = 1;
          rolled_back_from = model.versions[0];
          target = model.versions[0];
        }
        const int cdice = int((rm >> 28) % 100);
        const char* channel = cdice < 85 ? "stable" : cdice < 95 ? "beta" : "";
        check(ins->reset(), "reset");
        const std::int64_t updated = last_seen - std::int64_t((rm >> 44) % 86400);
        check(ins->bind_all(id, model.name, model.versions[vi], (rm >> 40) % 2 ? "b" : "a", 1,
                            state, target, error, rolled_back_from, channel, failed_version,
                            failed_version.empty() ? 0 : updated, updated),
              "bind");
        check(ins->run(), "insert installed");
        ++n_installed;
        if (m == 0) {
          first_model = model.name;
          first_version = model.versions[vi];
        }
      }

      for (int e = 1; e <= events; ++e) {
        const std::string created = mota::format_time(
            mota::Clock::time_point(std::chrono::seconds(last_seen - (events - e) * 900)));
        check(ev->reset(), "reset");
        if (e == 1) {
          std::snprintf(buf, sizeof buf,
                        "{\"bytes\":48234112,\"device\":\"%s\",\"duration_ms\":6120,\"error\":\"\","
                        "\"from\":\"\",\"install_id\":\"inst-%08" PRIx64
                        "\",\"kind\":\"full\",\"model\":\"%s\",\"state\":\"installed\","
                        "\"step\":\"commit\",\"time\":\"%s\",\"to\":\"%s\"}",
                        id.c_str(), r & 0xffffffff, first_model.c_str(), created.c_str(),
                        first_version.c_str());
          check(ev->bind_all(id, e, "event", created, last_seen, first_model, "", first_version,
                             "installed", "commit", "", buf),
                "bind");
        } else {
          std::snprintf(buf, sizeof buf,
                        "{\"agent_version\":\"0.2.0\",\"arch\":\"%s\",\"disk_free_bytes\":%" PRIu64
                        ",\"models\":[{\"channel\":\"stable\",\"committed\":true,\"model\":\"%s\","
                        "\"slot\":\"a\",\"version\":\"%s\"}],\"ram_total_bytes\":4294967296,"
                        "\"time\":\"%s\",\"tuf\":{\"root\":1,\"snapshot\":310,\"targets\":42,"
                        "\"timestamp\":%d}}",
                        arch, std::uint64_t(9000000000ULL - (r % 1000000)), first_model.c_str(),
                        first_version.c_str(), created.c_str(), 4000 + e);
          check(ev->bind_all(id, e, "heartbeat", created, last_seen, "", "", "", "", "", "", buf),
                "bind");
        }
        check(ev->run(), "insert event");
        ++n_events;
      }
    }
    check(tx->commit(), "commit");
    std::fprintf(stderr, "\r%ld devices", std::min(devices, d0 + kPerTx));
  }
  std::fprintf(stderr, "\n");

  if (rollout) {
    // A running rollout of the newest classifier on stable, at its second step (25 %).
    const std::string sql =
        "INSERT INTO releases (model, version, first_used) VALUES ('classifier', '1.8.0', " +
        std::to_string(now - 86400) + "), ('classifier', '1.7.3', " +
        std::to_string(now - 30 * 86400) +
        ");"
        "INSERT INTO channels (channel, model, version, percent, salt, fallback, updated_at) "
        "VALUES ('stable', 'classifier', '1.8.0', 25, 'bench-salt', '1.7.3', " +
        std::to_string(now - 3600) +
        ");"
        "INSERT INTO rollouts (id, channel, model, version, previous_version, percents, step, "
        "max_failure_bp, min_devices, step_after, salt, state, started_at, step_started_at, "
        "updated_at) VALUES (1, 'stable', 'classifier', '1.8.0', '1.7.3', '5,25,100', 1, 500, "
        "20, 3600, 'bench-salt', 'running', " +
        std::to_string(now - 86400) + ", " + std::to_string(now - 3600) + ", " +
        std::to_string(now - 3600) +
        ");"
        "INSERT INTO rollout_transitions (rollout_id, at, state, step, percent, reason) VALUES "
        "(1, " +
        std::to_string(now - 86400) + ", 'running', 0, 5, 'started'), (1, " +
        std::to_string(now - 3600) + ", 'running', 1, 25, 'step 1 healthy: advanced')";
    check(db->exec(sql), "rollout");
  }
  check(db->exec("PRAGMA wal_checkpoint(TRUNCATE)"), "checkpoint");
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr,
               "%s: %ld devices, %" PRId64 " installed rows, %" PRId64 " events in %.1f s\n",
               db_path.c_str(), devices, n_installed, n_events, s);
  return 0;
}
