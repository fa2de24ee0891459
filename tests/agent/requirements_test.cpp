// Requirements checked before a download (agent/requirements.hpp): architecture aliases, RAM,
// accelerators (declared and detected), the disk an unpacked model needs, and the signed custom
// data they are read from. Each unmet requirement names itself and the device's value.

#include "agent/requirements.hpp"

#include <gtest/gtest.h>

#include "agent/download.hpp"
#include "common/version.hpp"
#include "tests/support/test_support.hpp"

namespace mota::agent {
namespace {

namespace stdfs = std::filesystem;

constexpr std::uint64_t kMiB = 1024 * 1024;

DeviceFacts facts() {
  DeviceFacts f;
  f.arch = "x86_64";
  f.ram_total_bytes = 2048 * kMiB;
  f.disk_free_bytes = 500 * kMiB;
  f.accelerators = {"cuda"};
  return f;
}

// The labels a device reports: agent.toml's plus its facts under "mota/".
TEST(Requirements, DeviceLabelsAreConfigPlusFacts) {
  Config c;
  c.labels = {{"site", "plant-3"}};
  auto f = facts();
  f.ram_total_bytes = 7 * 1024 * kMiB + 900 * kMiB;  // 7.9 GiB: rounds to 8
  f.accelerators = {"cuda", "tensorrt"};
  const Labels l = device_labels(c, f);
  EXPECT_EQ(l, (Labels{{"site", "plant-3"},
                       {"mota/arch", "x86_64"},
                       {"mota/agent", kVersion},
                       {"mota/ram-gb", "8"},
                       {"mota/accel.cuda", "true"},
                       {"mota/accel.tensorrt", "true"}}));
  for (const auto& [k, v] : l) EXPECT_TRUE(check_label(k, v)) << k << "=" << v;
  f.ram_total_bytes = 300 * kMiB;  // a small board: at least 1
  EXPECT_EQ(device_labels(c, f).at("mota/ram-gb"), "1");
}

TEST(Requirements, ArchitecturesAreComparedByTheirCanonicalName) {
  EXPECT_EQ(canonical_arch("x86_64"), "x86_64");
  EXPECT_EQ(canonical_arch("AMD64"), "x86_64");
  EXPECT_EQ(canonical_arch("arm64"), "aarch64");
  EXPECT_EQ(canonical_arch("aarch64"), "aarch64");
  EXPECT_EQ(canonical_arch("armhf"), "armv7l");
  EXPECT_EQ(canonical_arch("armv7"), "armv7l");
  EXPECT_EQ(canonical_arch("i386"), "i686");
  EXPECT_EQ(canonical_arch("riscv64"), "riscv64");

  Requirements r;
  r.arch = {"amd64"};
  EXPECT_EQ(unmet_requirements(&r, facts(), 0, "/s"), "");
  r.arch = {"armv7l", "arm64"};
  EXPECT_EQ(unmet_requirements(&r, facts(), 0, "/s"),
            "arch: the release runs on armv7l, aarch64; this device is x86_64");
  auto pi = facts();
  pi.arch = canonical_arch("arm64");
  EXPECT_EQ(unmet_requirements(&r, pi, 0, "/s"), "");
}

TEST(Requirements, RamAcceleratorsAndDiskNameTheDevicesValue) {
  Requirements r;
  r.min_ram_mb = 2048;
  EXPECT_EQ(unmet_requirements(&r, facts(), 0, "/s"), "");
  r.min_ram_mb = 999999;
  EXPECT_EQ(unmet_requirements(&r, facts(), 0, "/s"),
            "min_ram_mb: the release needs 999999 MiB of RAM; this device has 2048 MiB");

  Requirements a;
  a.accelerators = {"CUDA"};
  EXPECT_EQ(unmet_requirements(&a, facts(), 0, "/s"), "");
  a.accelerators = {"cuda", "tensorrt"};
  EXPECT_EQ(unmet_requirements(&a, facts(), 0, "/s"),
            "accelerators: the release needs tensorrt; this device has cuda (declare what it has "
            "in agent.toml: accelerators)");
  auto bare = facts();
  bare.accelerators.clear();
  EXPECT_NE(
      unmet_requirements(&a, bare, 0, "/s").find("needs cuda, tensorrt; this device has none"),
      std::string::npos);

  // The disk: free space plus the slot the install empties first.
  EXPECT_EQ(unmet_requirements(nullptr, facts(), 500 * kMiB, "/var/lib/mota"), "");
  EXPECT_EQ(unmet_requirements(nullptr, facts(), 600 * kMiB, "/var/lib/mota"),
            "disk: the release needs 600 MiB unpacked; 500 MiB free in /var/lib/mota");
  auto with_slot = facts();
  with_slot.disk_reclaimable_bytes = 100 * kMiB;
  EXPECT_EQ(unmet_requirements(nullptr, with_slot, 600 * kMiB, "/var/lib/mota"), "");
  EXPECT_EQ(unmet_requirements(nullptr, with_slot, 700 * kMiB, "/var/lib/mota"),
            "disk: the release needs 700 MiB unpacked; 500 MiB free in /var/lib/mota and 100 MiB "
            "in the slot it replaces");

  // Everything unmet at once, each named.
  Requirements all;
  all.arch = {"armv7l"};
  all.min_ram_mb = 999999;
  all.accelerators = {"tpu"};
  const auto why = unmet_requirements(&all, facts(), 1u << 30, "/s");
  for (const char* part : {"arch: ", "; min_ram_mb: ", "; accelerators: ", "; disk: "}) {
    EXPECT_NE(why.find(part), std::string::npos) << part << " in " << why;
  }
}

TEST(Requirements, SignedCustomDataIsReadStrictlyAndMayBeAbsent) {
  auto none = signed_requirements(Json{{"kind", "full"}});
  ASSERT_TRUE(none);
  EXPECT_FALSE(none->has_value());  // published before requirements were signed

  auto r = signed_requirements(
      Json{{"requirements",
            {{"min_ram_mb", 256}, {"arch", {"x86_64", "aarch64"}}, {"accelerators", {"cuda"}}}}});
  ASSERT_TRUE(r) << r.error().message();
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ((*r)->min_ram_mb, 256u);
  EXPECT_EQ((*r)->arch, (std::vector<std::string>{"x86_64", "aarch64"}));
  EXPECT_EQ((*r)->accelerators, (std::vector<std::string>{"cuda"}));

  // Each wrong type is named with what it got (typed reads, manifest/json.hpp).
  const std::pair<Json, std::string> bad_ones[] = {
      {Json{{"requirements", "lots"}}, "target custom.requirements: not an object"},
      {Json{{"requirements", {{"min_ram_mb", -1}}}},
       "target custom.requirements: field 'min_ram_mb' must be a non-negative integer, got -1"},
      {Json{{"requirements", {{"min_ram_mb", "1G"}}}},
       "target custom.requirements: field 'min_ram_mb' must be a non-negative integer, got "
       "string"},
      {Json{{"requirements", {{"min_ram_mb", nullptr}}}},
       "target custom.requirements: field 'min_ram_mb' must be a non-negative integer, got null"},
      {Json{{"requirements", {{"arch", "x86_64"}}}},
       "target custom.requirements: field 'arch' must be an array, got string"},
      {Json{{"requirements", {{"accelerators", {"cuda", 1}}}}},
       "target custom.requirements: accelerators[1] must be a string, got integer"}};
  for (const auto& [bad, message] : bad_ones) {
    auto e = signed_requirements(bad);
    ASSERT_FALSE(e) << bad.dump();
    EXPECT_EQ(e.error().code(), Errc::verification);
    EXPECT_EQ(e.error().message(), message);
  }
  // Unsigned custom data of other types reads as absent: the target's length, an empty string.
  EXPECT_EQ(unpacked_size(Json{{"tree_size", "big"}}, 99), 99u);
  EXPECT_EQ(unpacked_size(Json::array(), 99), 99u);
  EXPECT_EQ(custom_string(Json{{"tree_digest", 5}}, "tree_digest"), "");
  EXPECT_EQ(custom_string(Json("text"), "tree_digest"), "");

  EXPECT_EQ(unpacked_size(Json{{"tree_size", 12345}}, 99), 12345u);
  EXPECT_EQ(unpacked_size(Json{{"kind", "full"}}, 99), 99u);  // older targets: the package
}

// The agent reads "tree_digest" and a delta's "kind", "from", ... with custom_string: a wrong type
// in signed custom data is a missing field (the target is refused naming it), not an exception.
// Before, `custom.value("tree_digest", std::string())` threw json type_error 302 out of the poll.
TEST(Requirements, SignedCustomStringsOfAnotherTypeReadAsMissing) {
  const Json custom = {{"tree_digest", 12},
                       {"kind", "delta"},
                       {"from", nullptr},
                       {"to", {"1.0.0"}},
                       {"name", {{"x", 1}}}};
  EXPECT_EQ(custom_string(custom, "kind"), "delta");
  for (const char* key : {"tree_digest", "from", "to", "name", "absent"}) {
    EXPECT_EQ(custom_string(custom, key), "") << key;
  }
  for (const Json& not_object : {Json(), Json("tree_digest"), Json::array({1, 2})}) {
    EXPECT_EQ(custom_string(not_object, "tree_digest"), "") << not_object.dump();
  }
}

TEST(Requirements, CudaIsDetectedFromDeviceNodes) {
  test::TempDir dev;
  EXPECT_TRUE(detect_accelerators(dev.path()).empty());
  test::write_file(dev / "nvhost-ctrl-gpu", "");
  EXPECT_EQ(detect_accelerators(dev.path()), (std::vector<std::string>{"cuda"}));
  stdfs::remove(dev / "nvhost-ctrl-gpu");
  test::write_file(dev / "nvidia0", "");
  EXPECT_EQ(detect_accelerators(dev.path()), (std::vector<std::string>{"cuda"}));
}

TEST(Requirements, FactsOfThisDeviceAndTheWholeCheck) {
  test::TempDir tmp;
  Config c;
  c.state_dir = tmp.path();
  c.accelerators = {"tensorrt"};
  auto slots = SlotSet::open(tmp.path(), "detector");
  ASSERT_TRUE(slots) << slots.error().message();
  test::write_file(slots->path(Slot::a) / "model.onnx", std::string(4096, 'x'));
  auto f = device_facts(c, &*slots);
  ASSERT_TRUE(f) << f.error().message();
  EXPECT_FALSE(f->arch.empty());
  EXPECT_GT(f->ram_total_bytes, 0u);
  EXPECT_GT(f->disk_free_bytes, 0u);
  // Slot a is the inactive one (nothing current); what removing it frees, in allocated blocks
  // (the file and its directory), as the space check counts it.
  EXPECT_GE(f->disk_reclaimable_bytes, 4096u);
  EXPECT_EQ(f->disk_reclaimable_bytes, disk_usage(slots->path(Slot::a)));
  ASSERT_FALSE(f->accelerators.empty());
  EXPECT_EQ(f->accelerators[0], "tensorrt");

  Json custom = {{"requirements", {{"arch", {f->arch}}, {"min_ram_mb", 1}}}};
  auto ok = requirements_refusal(c, *slots, custom, 1000);
  ASSERT_TRUE(ok) << ok.error().message();
  EXPECT_EQ(*ok, "");
  custom["requirements"]["min_ram_mb"] = 999999999;
  auto no = requirements_refusal(c, *slots, custom, 1000);
  ASSERT_TRUE(no);
  EXPECT_EQ(no->rfind("requirements not met: min_ram_mb: the release needs 999999999 MiB", 0), 0u)
      << *no;
  custom["requirements"]["min_ram_mb"] = "lots";
  EXPECT_FALSE(requirements_refusal(c, *slots, custom, 1000));
}

}  // namespace
}  // namespace mota::agent
