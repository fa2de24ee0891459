#include "manifest/serving.hpp"

#include <algorithm>
#include <set>

#include "common/fs.hpp"
#include "common/semver.hpp"
#include "manifest/canonical_json.hpp"
#include "manifest/model_manifest.hpp"

namespace mota {

namespace {

constexpr std::size_t kMaxBytes = 1u << 20;

tl::unexpected<Error> bad(const std::string& field, std::string_view why) {
  return fail(Errc::parse, "serving manifest: " + field + ": " + std::string(why));
}

Result<ServingSlot> parse_slot(const Json& j, const std::string& field) {
  if (!j.is_object()) return bad(field, "not an object");
  ServingSlot s;
  auto slot = j.find("slot");
  if (slot == j.end() || !slot->is_string()) return bad(field + ".slot", "missing or not a string");
  s.slot = slot->get<std::string>();
  if (!s.slot.is_absolute())
    return bad(field + ".slot", "'" + s.slot.string() + "' is not absolute");
  auto version = j.find("version");
  if (version == j.end() || !version->is_string()) {
    return bad(field + ".version", "missing or not a string");
  }
  s.version = version->get<std::string>();
  if (!SemVer::parse(s.version)) {
    return bad(field + ".version", "'" + s.version + "' is not a semantic version");
  }
  return s;
}

Json slot_json(const ServingSlot& s) {
  return Json{{"slot", s.slot.string()}, {"version", s.version}};
}

}  // namespace

Result<ServingManifest> ServingManifest::parse(std::string_view json_text) {
  Json j = MOTA_TRY_CTX(parse_json(json_text, kMaxBytes), "serving manifest");
  if (!j.is_object()) return fail(Errc::parse, "serving manifest: not a JSON object");
  auto format = j.find("format");
  if (format == j.end() || !format->is_number_integer() || format->get<std::int64_t>() != 1) {
    return bad("format", "missing or not 1 (written by a newer agent?)");
  }
  auto models = j.find("models");
  if (models == j.end() || !models->is_array()) return bad("models", "missing or not an array");
  ServingManifest m;
  std::set<std::string> names;
  for (std::size_t i = 0; i < models->size(); ++i) {
    const Json& e = (*models)[i];
    const std::string field = "models[" + std::to_string(i) + "]";
    if (!e.is_object()) return bad(field, "not an object");
    ServingModel sm;
    auto name = e.find("name");
    if (name == e.end() || !name->is_string())
      return bad(field + ".name", "missing or not a string");
    sm.name = name->get<std::string>();
    if (!valid_model_name(sm.name)) return bad(field + ".name", "not a valid model name");
    if (!names.insert(sm.name).second) return bad(field + ".name", "'" + sm.name + "' repeated");
    sm.committed = MOTA_TRY(parse_slot(e, field));
    if (auto fb = e.find("fallback"); fb != e.end() && !fb->is_null()) {
      sm.fallback = MOTA_TRY(parse_slot(*fb, field + ".fallback"));
    }
    m.models.push_back(std::move(sm));
  }
  return m;
}

std::string ServingManifest::serialize() const {
  std::vector<const ServingModel*> sorted;
  for (const auto& m : models) sorted.push_back(&m);
  std::sort(sorted.begin(), sorted.end(),
            [](const ServingModel* a, const ServingModel* b) { return a->name < b->name; });
  Json arr = Json::array();
  for (const auto* m : sorted) {
    Json e = slot_json(m->committed);
    e["name"] = m->name;
    if (m->fallback) e["fallback"] = slot_json(*m->fallback);
    arr.push_back(std::move(e));
  }
  return Json{{"format", 1}, {"models", arr}}.dump(2) + "\n";
}

const ServingModel* ServingManifest::find(std::string_view name) const {
  for (const auto& m : models) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

Result<std::optional<ServingManifest>> read_serving_manifest(
    const std::filesystem::path& state_dir) {
  const auto path = state_dir / kServingFile;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return std::optional<ServingManifest>();
  auto text = MOTA_TRY_CTX(fs::read_file(path, kMaxBytes), path.string());
  return std::optional<ServingManifest>(MOTA_TRY_CTX(ServingManifest::parse(text), path.string()));
}

Status write_serving_manifest(const std::filesystem::path& state_dir, const ServingManifest& m) {
  const auto path = state_dir / kServingFile;
  const std::string text = m.serialize();
  std::error_code ec;
  if (std::filesystem::exists(path, ec)) {
    auto old = fs::read_file(path, kMaxBytes);
    if (old && *old == text) return {};
  }
  return fs::write_file_atomic(path, text);
}

}  // namespace mota
