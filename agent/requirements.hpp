#pragma once
// A release's requirements (model.json "requirements": arch, min_ram_mb, accelerators;
// manifest/model_manifest.hpp) and the free disk it needs, checked on the device BEFORE anything
// is downloaded. A release the device does not meet is refused with the reason (agent/agent.hpp:
// a "refused" event, step "requirements"); it is not blocked, since the device may change (more
// RAM, a freed disk, an accelerator declared), so it is checked again at every poll.
//
// Signed facts only: the decision must not depend on the package, whose model.json is only read
// after the download. `mota release add` copies the requirements into the signed target's custom
// data ("requirements": {"min_ram_mb": N, "arch": [...], "accelerators": [...]},
// manager/repo/repository.cpp). Targets published before that carry none: their requirements are
// not checked (the free disk still is).
//
// The device's facts (DeviceFacts):
//   arch          uname(2) machine, canonical: amd64 and x64 are x86_64; arm64 and armv8 are
//                 aarch64; armhf and armv7 are armv7l; i386, i486, i586 and x86 are i686. A
//                 release's arch names are compared canonical too. An empty list: any arch.
//   RAM           sysinfo(2) total RAM; min_ram_mb counts MiB.
//   disk          the space available in the state directory's filesystem (statvfs, as for an
//                 unprivileged user) plus what the model's inactive slot holds now (the install
//                 empties it before it writes), against the unpacked model: custom "tree_size"
//                 when the target has it, else the package length (a lower bound: the package is
//                 compressed). The download itself is the download step's check (agent/download.hpp
//                 check_space), a failure there, not a refusal.
//   accelerators  agent.toml `accelerators` plus what is detected: "cuda" when /dev/nvidia0
//                 (NVIDIA GPU driver) or /dev/nvhost-ctrl-gpu (Jetson) exists. Libraries such as
//                 TensorRT cannot be seen from device nodes: declare them. A unit with
//                 PrivateDevices=yes (the packaged mota-agent.service) sees no GPU nodes at all,
//                 so on such a device every accelerator must be declared. Names are compared in
//                 lower case; every one a release needs must be there.
//
// Thread-safety: the functions are pure apart from the system calls named above.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/config.hpp"
#include "agent/slots.hpp"
#include "common/result.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/model_manifest.hpp"

namespace mota::agent {

struct DeviceFacts {
  std::string arch;  // canonical (canonical_arch)
  std::uint64_t ram_total_bytes = 0;
  std::uint64_t disk_free_bytes = 0;         // available in the state directory's filesystem
  std::uint64_t disk_reclaimable_bytes = 0;  // in the model's inactive slot, emptied first
  std::vector<std::string> accelerators;     // lower case, unique: declared, then detected
};

// The canonical name of an architecture (see above); other names lower-cased as they are.
std::string canonical_arch(std::string_view arch);

// The accelerators detectable under `dev` (normally /dev), see above.
std::vector<std::string> detect_accelerators(const std::filesystem::path& dev = "/dev");

// The facts of this device for the model of `slots` (its inactive slot counts as reclaimable;
// null: nothing does). Errors: uname/sysinfo/statvfs failures (Errc::io).
Result<DeviceFacts> device_facts(const Config& config, const SlotSet* slots);

// This device's labels (common/labels.hpp): config.labels plus its facts under "mota/":
//   mota/arch       facts.arch (canonical: x86_64, aarch64, armv7l, ...)
//   mota/agent      the agent's version
//   mota/ram-gb     total RAM in GiB, rounded to the nearest (at least 1)
//   mota/accel.X    "true" for each accelerator X (declared or detected) that makes a valid key
// Facts are what the device says about itself, like every label: a selector chooses among
// devices, it proves nothing about them.
Labels device_labels(const Config& config, const DeviceFacts& facts);

// The requirements in a target's signed custom data: nullopt when it has none (published before
// they were signed). Errc::verification for a malformed value (the publisher's tools never write
// one: refusing it is safer than guessing).
Result<std::optional<Requirements>> signed_requirements(const Json& custom);

// What the unpacked model takes on disk: custom "tree_size" when present, else the package length.
std::uint64_t unpacked_size(const Json& custom, std::uint64_t package_length);

// A string field of a target's signed custom data ("tree_digest", a delta's "kind", "from", ...):
// empty when `custom` is not an object, or the field is absent or of another type. Callers
// treat empty as missing and refuse the target with a message naming the field; nlohmann's
// value()/get() would throw on a wrong type instead, out of the daemon's poll.
std::string custom_string(const Json& custom, std::string_view key);

// "" when `facts` meet `req` and have `disk_needed` bytes (free + reclaimable), else every unmet
// requirement with the device's value, "; "-separated:
//   "arch: the release runs on armv7l; this device is x86_64"
//   "min_ram_mb: the release needs 999999 MiB of RAM; this device has 23456 MiB"
//   "accelerators: the release needs tensorrt; this device has cuda"
//   "disk: the release needs 1.2 GiB unpacked; 300 MiB free in /var/lib/mota"
// `req` may be null (no requirements signed): only the disk is checked then.
std::string unmet_requirements(const Requirements* req, const DeviceFacts& facts,
                               std::uint64_t disk_needed, const std::filesystem::path& state_dir);

// The whole check for one signed target of the model of `slots`: "" to go ahead, else the reason
// ("requirements not met: " + unmet_requirements(...)). Errors: the facts or a malformed custom.
Result<std::string> requirements_refusal(const Config& config, const SlotSet& slots,
                                         const Json& custom, std::uint64_t package_length);

}  // namespace mota::agent
