#include "agent/requirements.hpp"

#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <map>
#include <system_error>

#include "agent/download.hpp"  // format_bytes
#include "common/fs.hpp"
#include "common/version.hpp"
#include "manifest/json.hpp"

namespace mota::agent {

namespace stdfs = std::filesystem;

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

void add_unique(std::vector<std::string>& list, std::string name) {
  if (std::find(list.begin(), list.end(), name) == list.end()) list.push_back(std::move(name));
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : std::string(sep)) + s;
  return out;
}

constexpr std::uint64_t kMiB = 1024 * 1024;

}  // namespace

std::string canonical_arch(std::string_view arch) {
  static const std::map<std::string, std::string, std::less<>> kAliases = {
      {"amd64", "x86_64"}, {"x64", "x86_64"},   {"arm64", "aarch64"}, {"armv8", "aarch64"},
      {"armhf", "armv7l"}, {"armv7", "armv7l"}, {"i386", "i686"},     {"i486", "i686"},
      {"i586", "i686"},    {"x86", "i686"}};
  std::string a = lower(arch);
  if (auto it = kAliases.find(a); it != kAliases.end()) return it->second;
  return a;
}

std::vector<std::string> detect_accelerators(const stdfs::path& dev) {
  std::vector<std::string> out;
  std::error_code ec;
  // The NVIDIA driver's first GPU, or the GPU of a Jetson (nvgpu): CUDA can run.
  if (stdfs::exists(dev / "nvidia0", ec) || stdfs::exists(dev / "nvhost-ctrl-gpu", ec)) {
    out.push_back("cuda");
  }
  return out;
}

Result<DeviceFacts> device_facts(const Config& config, const SlotSet* slots) {
  DeviceFacts f;
  struct utsname uts {};
  if (::uname(&uts) != 0) return fail(errno_error("uname", "", errno));
  f.arch = canonical_arch(uts.machine);
  struct sysinfo si {};
  if (::sysinfo(&si) != 0) return fail(errno_error("sysinfo", "", errno));
  f.ram_total_bytes = static_cast<std::uint64_t>(si.totalram) * si.mem_unit;
  f.disk_free_bytes = MOTA_TRY(fs::free_space(config.state_dir));
  if (slots) {
    auto inactive = MOTA_TRY(slots->inactive());
    f.disk_reclaimable_bytes = disk_usage(slots->path(inactive));
  }
  for (const auto& a : config.accelerators) add_unique(f.accelerators, lower(a));
  for (auto& a : detect_accelerators()) add_unique(f.accelerators, std::move(a));
  return f;
}

Labels device_labels(const Config& config, const DeviceFacts& facts) {
  Labels out = config.labels;
  const std::string p(kFactPrefix);
  if (valid_label_value(facts.arch)) out[p + "arch"] = facts.arch;
  if (valid_label_value(kVersion)) out[p + "agent"] = kVersion;
  const std::uint64_t gib = 1ull << 30;
  out[p + "ram-gb"] =
      std::to_string(std::max<std::uint64_t>(1, (facts.ram_total_bytes + gib / 2) / gib));
  for (const auto& a : facts.accelerators) {
    if (valid_label_key(p + "accel." + a) && out.size() < kMaxLabels)
      out[p + "accel." + a] = "true";
  }
  return out;
}

Result<std::optional<Requirements>> signed_requirements(const Json& custom) {
  if (!custom.is_object()) return std::optional<Requirements>();
  auto it = custom.find("requirements");
  if (it == custom.end()) return std::optional<Requirements>();
  const Json& r = *it;
  const std::string bad = "target custom.requirements: ";
  if (!r.is_object()) return fail(Errc::verification, bad + "not an object");
  Requirements out;
  // Signed data the publisher's tools never write malformed: a wrong type is refused, named.
  auto refused = [&](Error e) { return Error(Errc::verification, bad + e.message()); };
  if (r.contains("min_ram_mb")) {
    auto ram = json_get<std::uint64_t>(r, "min_ram_mb");
    if (!ram) return fail(refused(std::move(ram).error()));
    out.min_ram_mb = *ram;
  }
  for (auto [key, list] : {std::pair{"arch", &out.arch}, {"accelerators", &out.accelerators}}) {
    if (!r.contains(key)) continue;
    auto a = json_get_array(r, key);
    if (!a) return fail(refused(std::move(a).error()));
    for (std::size_t i = 0; i < (*a)->size(); ++i) {
      auto v = json_as<std::string>((**a)[i], std::string(key) + "[" + std::to_string(i) + "]");
      if (!v) return fail(refused(std::move(v).error()));
      list->push_back(std::move(*v));
    }
  }
  return std::optional<Requirements>(std::move(out));
}

std::uint64_t unpacked_size(const Json& custom, std::uint64_t package_length) {
  return json_get_or<std::uint64_t>(custom, "tree_size", package_length);
}

std::string custom_string(const Json& custom, std::string_view key) {
  return json_get_or<std::string>(custom, key, "");
}

std::string unmet_requirements(const Requirements* req, const DeviceFacts& facts,
                               std::uint64_t disk_needed, const stdfs::path& state_dir) {
  std::vector<std::string> unmet;
  if (req && !req->arch.empty()) {
    bool ok = false;
    std::vector<std::string> names;
    for (const auto& a : req->arch) {
      add_unique(names, canonical_arch(a));
      ok = ok || canonical_arch(a) == facts.arch;
    }
    if (!ok) {
      unmet.push_back("arch: the release runs on " + join(names, ", ") + "; this device is " +
                      facts.arch);
    }
  }
  if (req && req->min_ram_mb > 0 && facts.ram_total_bytes / kMiB < req->min_ram_mb) {
    unmet.push_back("min_ram_mb: the release needs " + std::to_string(req->min_ram_mb) +
                    " MiB of RAM; this device has " + std::to_string(facts.ram_total_bytes / kMiB) +
                    " MiB");
  }
  if (req && !req->accelerators.empty()) {
    std::vector<std::string> missing;
    for (const auto& a : req->accelerators) {
      const std::string name = lower(a);
      if (std::find(facts.accelerators.begin(), facts.accelerators.end(), name) ==
          facts.accelerators.end()) {
        add_unique(missing, name);
      }
    }
    if (!missing.empty()) {
      unmet.push_back(
          "accelerators: the release needs " + join(missing, ", ") + "; this device has " +
          (facts.accelerators.empty() ? std::string("none") : join(facts.accelerators, ", ")) +
          " (declare what it has in agent.toml: accelerators)");
    }
  }
  const std::uint64_t available = facts.disk_free_bytes + facts.disk_reclaimable_bytes;
  if (available < disk_needed) {
    std::string have = format_bytes(facts.disk_free_bytes) + " free in " + state_dir.string();
    if (facts.disk_reclaimable_bytes > 0) {
      have += " and " + format_bytes(facts.disk_reclaimable_bytes) + " in the slot it replaces";
    }
    unmet.push_back("disk: the release needs " + format_bytes(disk_needed) + " unpacked; " + have);
  }
  return join(unmet, "; ");
}

Result<std::string> requirements_refusal(const Config& config, const SlotSet& slots,
                                         const Json& custom, std::uint64_t package_length) {
  auto req = MOTA_TRY(signed_requirements(custom));
  auto facts = MOTA_TRY_CTX(device_facts(config, &slots), "requirements: device facts");
  std::string unmet = unmet_requirements(req ? &*req : nullptr, facts,
                                         unpacked_size(custom, package_length), config.state_dir);
  return unmet.empty() ? unmet : "requirements not met: " + unmet;
}

}  // namespace mota::agent
