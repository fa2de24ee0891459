#pragma once
// mota-agent configuration: /etc/mota/agent.toml (see agent/agent.toml.example for a commented
// file). Parsing is strict: an unknown key, a wrong type or a bad value is an error that names the
// file and the key ("agent.toml: model[1].channel: missing"), because a typo in a fleet's config
// must stop the agent at start rather than silently fall back to a default. Syntax errors carry
// line:column ("agent.toml:3:14: ...").
//
// Keys (top level unless noted):
//   server_url       required. http:// or https:// URL of the repository root, no query or
//                    fragment; trailing '/' removed. The agent fetches <server_url>/metadata/...
//                    and <server_url>/targets/..., and reports to <report_url>/v1/...
//   report_url       default: server_url. Same form. Where reports go (the `mota serve` API), for
//                    fleets that fetch the repository from a static server or CDN.
//   device_id        default: /etc/machine-id, trimmed. 1..128 of [A-Za-z0-9._:-].
//   state_dir        default /var/lib/mota. Absolute. Slots, device key, TUF metadata, database.
//   poll_interval    default "5m". Duration string (common/time.hpp parse_duration), at least 1s.
//   poll_jitter      default 0.1. A fraction 0..1 of poll_interval, or a duration string; each
//                    poll waits poll_interval + uniform(0, jitter) so a fleet does not stampede.
//   heartbeat_interval  default "1h". Duration; a poll queues a heartbeat (inventory) when the
//                    last one is at least this old, so an idle poll costs no report request in
//                    between. "0s": every poll.
//   field_interval   default "5m". Duration; field health (docs/fleet.md, "Field health"): a poll
//                    also queues a heartbeat when the last one is at least this old and the
//                    models mota-runtime serves ran inferences since, carrying the runtime's
//                    counters and latency histogram per model version. "0s": never (heartbeats
//                    then carry no field health at all).
//   bandwidth_limit  default "0" (unlimited). "<number><unit>[/s]" with unit B, KB, MB, GB
//                    (powers of 1000) or KiB, MiB, GiB (powers of 1024); decimals allowed
//                    ("1.5MB/s"); a plain integer is bytes per second.
//   runtime_socket   default /run/mota/runtime.sock. Absolute.
//   trusted_root     default /etc/mota/root.json. Absolute. The root.json baked into the image:
//                    read-only, used only to seed <state_dir>/metadata on first start (after
//                    that the TUF client follows root rotations in its own copy), so a factory
//                    reset of state_dir falls back to the image's root, never to nothing.
//   ca_file          optional. Absolute path of a PEM CA bundle for https; default: system CAs.
//   enrollment_key   optional. Absolute path of a fleet enrollment key (PEM, from `mota enrollment
//                    create`) baked into the image: its signature over this device's id and key
//                    goes with the report handshakes, and a server that has the key on record
//                    admits the device on first contact (docs/security.md, "Devices").
//   labels           optional. A table of this device's labels, e.g. { site = "plant-3", hw =
//                    "orin-nano" }: keys and values as common/labels.hpp says, at most 48, none
//                    under "mota/" (the agent's facts: mota/arch, mota/agent, mota/ram-gb,
//                    mota/accel.NAME). Reported in heartbeats; rollouts and `mota devices
//                    --select` choose devices by them (docs/fleet.md, "Labels and selectors").
//   delta            default "prefer". "prefer" | "only" | "never" (reserved for delta updates).
//   log_level        default "info". "debug" | "info" | "warn" | "error".
//   [retry]          max_attempts (integer 1..1000, default 5), base_delay (default "1s",
//                    at least 1s), max_delay (default "1m", >= base_delay): the downloader's
//                    RetryPolicy (agent/download.hpp; exponential backoff with full jitter).
//   [download]       what a slow server may cost (agent/download.hpp): min_rate (a bandwidth like
//                    bandwidth_limit, default "1KB/s"; "0": none) over min_rate_window (default
//                    "60s", at least 1s): every request (metadata, packages, reports) moving
//                    fewer bytes in any such window is cut off; it must be below
//                    bandwidth_limit when both are set. A package or delta download as a whole
//                    (every retry included) must end within deadline_allowance (default "10m")
//                    + its signed length / min_rate, at most max_deadline (default "24h", at
//                    least 1s); its partial is kept for the next poll either way.
//                    metadata_timeout (default "60s", at least 1s): whole-request limit of each
//                    TUF metadata file and channel file, plus its signed length / min_rate
//                    where the length is known (snapshot, targets, channel files).
//   [health]         the gate in front of every switch (agent/health.hpp): enabled (default
//                    true; false: a verified slot is switched and committed directly, for devices
//                    without mota-runtime), runtime_binary (default /usr/bin/mota-runtime, runs
//                    the probe), hooks_dir (default /etc/mota/health.d: operator hooks),
//                    hook_timeout (default "30s"), probe_timeout (default "2m"),
//                    max_error_rate (0..1, default 0.01: failed inferences / inferences in the
//                    soak window), watch_interval (default "10s"; "0s": only at start
//                    and after each poll): how often the daemon checks between polls that the
//                    runtime serves each committed model (agent/agent.hpp, "Serving");
//                    max_retries (integer 0..100, default 3): how many failures of a version
//                    that may pass on retry (latency budget, timeouts, runtime unavailable) are
//                    retried before the version is blocked; retry_backoff (default "10m", "0s"
//                    allowed): the wait before the first retry, doubled after each failure, at
//                    most a day (agent/install.hpp, "Failure classes").
//   accelerators     default []. What this device has beyond the CPU, for the releases'
//                    requirements.accelerators (agent/requirements.hpp): names of
//                    [a-z0-9][a-z0-9._-]* such as "cuda", "tensorrt"; added to what the agent
//                    detects by itself.
//   verify_at_start  default true. Re-hash each committed slot at start (see Config).
//   install_window   optional. When this device may switch to a new version, in its local time:
//                    a string or an array of strings like "Mon-Fri 01:00-05:00" (common/window.hpp;
//                    at most 32). Outside every window the agent downloads, stages and probes,
//                    then waits before the switch and reports "deferred"; `mota-agent install-now
//                    MODEL` lets the next switch through. Absent: any time.
//   update_lock      default /run/mota-agent/update.lock. Absolute. A file applications hold a
//   shared
//                    flock(2) on while doing work a model switch must not interrupt; the agent
//                    takes it exclusively for the switch and defers while it cannot
//                    (docs/agent.md, "Install windows and update locks"). "" disables it.
//   update_lock_max_defer  default "6h". How long a held lock may defer a staged version; then
//                    the agent switches anyway (and says so). "0s": the lock never defers.
//   [[model]]        at least one; each with name (valid_model_name) and channel
//                    (valid_channel_name), both required; a name may appear only once;
//                    install_window as above, for this model only (with the device's: both
//                    must allow); activate and probe (absolute paths of executables; the
//                    hand-over to another inference stack, docs/handover.md: activate runs after
//                    every switch and rollback with MOTA_EVENT, MOTA_MODEL, MOTA_VERSION,
//                    MOTA_SLOT, MOTA_PREVIOUS_VERSION, MOTA_PREVIOUS_SLOT; probe replaces
//                    `mota-runtime probe` with MOTA_MODEL, MOTA_VERSION, MOTA_SLOT).
// Path values are not checked for existence here: loading a config touches no file other than
// the config itself and the machine-id file.
//
// Thread-safety: the functions are pure (apart from reading those files); Config is a value.

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "agent/download.hpp"  // RetryPolicy
#include "common/labels.hpp"
#include "common/log.hpp"
#include "common/result.hpp"
#include "common/window.hpp"

namespace mota::agent {

enum class DeltaPolicy { prefer, only, never };
std::string_view delta_policy_name(DeltaPolicy p);

struct ModelSubscription {
  std::string name;
  std::string channel;
  WindowSet install_window;  // empty: the device's only
  // Hand-over (docs/handover.md): an executable run after every switch to a new version and
  // after every rollback, which tells the inference stack serving this model to load the slot
  // `current` points at. Set: the model is served by that stack, not by mota-runtime (the agent
  // neither asks mota-runtime to load it nor lists it in serving.json). Empty: mota-runtime.
  std::filesystem::path activate;
  // An executable that replaces `mota-runtime probe` for this model in the health gate: exit 0
  // passes the staged slot, anything else fails it (a timeout: may pass on retry). Empty: the
  // mota-runtime probe (a handed-over model without one is not probed).
  std::filesystem::path probe;
  bool handed_over() const { return !activate.empty(); }
};

struct HealthConfig {
  bool enabled = true;
  std::filesystem::path runtime_binary = "/usr/bin/mota-runtime";
  std::filesystem::path hooks_dir = "/etc/mota/health.d";
  std::chrono::seconds hook_timeout{30};
  std::chrono::seconds probe_timeout{120};
  double max_error_rate = 0.01;
  // How often the daemon checks, between polls, that mota-runtime serves every committed model
  // (and makes it when not: a restarted or crashed runtime). 0: only at start and after polls.
  std::chrono::seconds watch_interval{10};
  // Transient failures of a version retried before it is blocked, and the first backoff.
  int max_retries = 3;
  std::chrono::seconds retry_backoff{600};
};

struct DownloadConfig {
  std::uint64_t min_rate = 1000;  // bytes per second; 0: no minimum
  std::chrono::seconds min_rate_window{60};
  std::chrono::seconds deadline_allowance{600};
  std::chrono::seconds max_deadline{86400};
  std::chrono::seconds metadata_timeout{60};
};

struct Config {
  std::string server_url;  // normalised: no trailing '/'
  std::string report_url;  // normalised; defaults to server_url
  std::string device_id;
  std::filesystem::path state_dir = "/var/lib/mota";
  std::chrono::seconds poll_interval{300};
  std::chrono::milliseconds poll_jitter{30000};  // resolved: max extra delay per poll
  std::chrono::seconds heartbeat_interval{3600};
  std::chrono::seconds field_interval{300};
  std::vector<ModelSubscription> models;  // non-empty, unique names, file order
  std::uint64_t bandwidth_limit = 0;      // bytes per second; 0 = unlimited
  RetryPolicy retry;                      // agent/download.hpp
  DownloadConfig download;
  HealthConfig health;
  std::filesystem::path runtime_socket = "/run/mota/runtime.sock";
  std::filesystem::path trusted_root = "/etc/mota/root.json";
  std::filesystem::path ca_file;         // empty: system CAs
  std::filesystem::path enrollment_key;  // empty: none
  DeltaPolicy delta = DeltaPolicy::prefer;
  log::Level log_level = log::Level::info;
  // Operator-chosen labels of this device (agent.toml `labels`); the agent adds its facts under
  // "mota/" (agent/requirements.hpp fact_labels) and reports both in heartbeats.
  Labels labels;
  // Declared accelerators (lower case, unique, file order); requirements add the detected ones.
  std::vector<std::string> accelerators;
  // At start, re-hash each committed slot against its signed tree digest before serving it (a
  // slot damaged on disk is replaced by the previous good one, or reinstalled).
  bool verify_at_start = true;
  WindowSet install_window;                                           // empty: any time
  std::filesystem::path update_lock = "/run/mota-agent/update.lock";  // empty: none
  std::chrono::seconds update_lock_max_defer{6 * 3600};

  std::string metadata_url() const { return server_url + "/metadata"; }
  std::string targets_url() const { return server_url + "/targets"; }
  // <report_url>/v1/<route>, route given without a leading '/': "devices/x/status".
  std::string api_url(std::string_view route) const;
};

struct ConfigOptions {
  // Where device_id comes from when the file does not set it (tests point this elsewhere).
  std::filesystem::path machine_id_file = "/etc/machine-id";
};

inline constexpr const char* kDefaultConfigPath = "/etc/mota/agent.toml";

// Reads and parses the config file. Errors: Errc::io/not_found if unreadable, Errc::parse for
// TOML syntax (with line:column), Errc::invalid_argument for a bad key or value. Every message
// starts with the file path.
Result<Config> load_config(const std::filesystem::path& path, const ConfigOptions& options = {});

// The same from text; `source_name` prefixes every error message.
Result<Config> parse_config(std::string_view text, std::string_view source_name = "agent.toml",
                            const ConfigOptions& options = {});

// "2MB/s", "512KiB/s", "1.5MB", "0" -> bytes per second (see bandwidth_limit above).
Result<std::uint64_t> parse_bandwidth(std::string_view s);

}  // namespace mota::agent
