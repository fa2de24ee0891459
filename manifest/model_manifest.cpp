#include "manifest/model_manifest.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <string_view>

#include "common/semver.hpp"
#include "manifest/crypto.hpp"

namespace mota {
namespace {

constexpr std::string_view kFrameworks[] = {"onnx", "tflite", "gguf", "tensorrt", "other"};
constexpr std::string_view kDtypes[] = {"float32", "float16", "int8", "uint8", "int32", "int64"};
constexpr std::size_t kMaxPathBytes = 1024;

template <class Range>
bool one_of(std::string_view s, const Range& range) {
  return std::find(std::begin(range), std::end(range), s) != std::end(range);
}

template <class Range>
std::string list_of(const Range& range) {
  std::string out;
  for (std::string_view s : range) out += (out.empty() ? "" : ", ") + std::string(s);
  return out;
}

std::string in_quotes(std::string_view s) {
  return "\"" + std::string(s) + "\"";
}

// Validation walks the JSON with a field path ("inputs[0].shape[2]") so that each error names the
// exact place; the first error wins.
class Validator {
 public:
  explicit Validator(bool require_files) : require_files_(require_files) {}

  Result<ModelManifest> run(const Json& doc) {
    if (!doc.is_object()) return bad("", "must be a JSON object");
    static const std::set<std::string> kKnown = {
        "name",   "version", "framework", "entry",        "description", "files",
        "inputs", "outputs", "labels",    "requirements", "metrics",     "health"};
    MOTA_TRY(no_unknown_keys(doc, "", kKnown));

    ModelManifest m;
    // A source manifest (require_files == false) may leave name and version to the packer.
    m.name = MOTA_TRY(string_field(doc, "", "name", require_files_));
    if (doc.contains("name") && !valid_model_name(m.name)) {
      return bad("name", "must match [a-z0-9][a-z0-9._-]* and be at most 64 characters");
    }
    m.version = MOTA_TRY(string_field(doc, "", "version", require_files_));
    if (doc.contains("version")) MOTA_TRY_CTX(SemVer::parse(m.version), "version");
    m.framework = MOTA_TRY(string_field(doc, "", "framework", true));
    if (!one_of(m.framework, kFrameworks)) {
      return bad("framework", in_quotes(m.framework) + " is not one of " + list_of(kFrameworks));
    }
    m.entry = MOTA_TRY(path_field(doc, "", "entry", true));
    m.description = MOTA_TRY(string_field(doc, "", "description", false));

    bool have_files = doc.contains("files");
    if (require_files_ && !have_files) return bad("files", "required");
    if (have_files) m.files = MOTA_TRY(files(doc["files"]));

    if (doc.contains("inputs")) m.inputs = MOTA_TRY(tensors(doc["inputs"], "inputs"));
    if (doc.contains("outputs")) m.outputs = MOTA_TRY(tensors(doc["outputs"], "outputs"));
    m.labels = MOTA_TRY(path_field(doc, "", "labels", false));
    if (doc.contains("requirements")) m.requirements = MOTA_TRY(requirements(doc["requirements"]));
    if (doc.contains("metrics")) m.metrics = MOTA_TRY(metrics(doc["metrics"]));
    if (doc.contains("health")) m.health = MOTA_TRY(health(doc["health"]));

    // Files named by other fields must be in the package. Without a file list (source manifest)
    // the packer checks this once it has walked the directory.
    if (have_files) {
      MOTA_TRY(listed(m, m.entry, "entry"));
      if (!m.labels.empty()) MOTA_TRY(listed(m, m.labels, "labels"));
      if (m.health) {
        MOTA_TRY(listed(m, m.health->input, "health.input"));
        if (!m.health->expected_output.empty()) {
          MOTA_TRY(listed(m, m.health->expected_output, "health.expected_output"));
        }
      }
    }
    return m;
  }

 private:
  static tl::unexpected<Error> bad(std::string_view field, std::string_view why) {
    return fail(Errc::parse,
                field.empty() ? std::string(why) : std::string(field) + ": " + std::string(why));
  }
  static std::string join(std::string_view parent, std::string_view key) {
    return parent.empty() ? std::string(key) : std::string(parent) + "." + std::string(key);
  }
  static std::string index(std::string_view parent, std::size_t i) {
    return std::string(parent) + "[" + std::to_string(i) + "]";
  }

  static Status no_unknown_keys(const Json& obj, std::string_view where,
                                const std::set<std::string>& known) {
    for (const auto& [key, value] : obj.items()) {
      (void)value;
      if (!known.count(key)) return bad(join(where, key), "unknown field");
    }
    return {};
  }

  static Result<std::string> string_field(const Json& obj, std::string_view where, const char* key,
                                          bool required) {
    auto it = obj.find(key);
    if (it == obj.end()) {
      if (required) return bad(join(where, key), "required");
      return std::string();
    }
    if (!it->is_string()) return bad(join(where, key), "must be a string");
    return it->get<std::string>();
  }

  static Result<std::string> path_field(const Json& obj, std::string_view where, const char* key,
                                        bool required) {
    std::string p = MOTA_TRY(string_field(obj, where, key, required));
    if (obj.contains(key) && !valid_package_path(p)) {
      return bad(join(where, key), in_quotes(p) + " is not a valid relative path");
    }
    if (p == kManifestName) return bad(join(where, key), "must not be model.json");
    return p;
  }

  static Result<std::uint64_t> uint_value(const Json& v, std::string_view field) {
    if (v.is_number_unsigned()) return v.get<std::uint64_t>();
    if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
      return static_cast<std::uint64_t>(v.get<std::int64_t>());
    }
    return bad(field, "must be a non-negative integer");
  }

  static Result<double> number_value(const Json& v, std::string_view field) {
    if (!v.is_number()) return bad(field, "must be a number");
    double d = v.get<double>();
    if (!std::isfinite(d)) return bad(field, "must be a finite number");
    return d;
  }

  static bool lower_hex64(std::string_view s) {
    return s.size() == 64 && std::all_of(s.begin(), s.end(), [](char c) {
             return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
           });
  }

  Result<std::vector<FileEntry>> files(const Json& arr) {
    if (!arr.is_array()) return bad("files", "must be an array");
    std::vector<FileEntry> out;
    out.reserve(arr.size());
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const Json& f = arr[i];
      std::string where = index("files", i);
      if (!f.is_object()) return bad(where, "must be an object");
      MOTA_TRY(no_unknown_keys(f, where, {"path", "size", "sha256"}));
      FileEntry e;
      e.path = MOTA_TRY(path_field(f, where, "path", true));
      if (!f.contains("size")) return bad(join(where, "size"), "required");
      e.size = MOTA_TRY(uint_value(f["size"], join(where, "size")));
      e.sha256 = MOTA_TRY(string_field(f, where, "sha256", true));
      if (!lower_hex64(e.sha256)) {
        return bad(join(where, "sha256"), "must be 64 lower-case hex digits");
      }
      if (!out.empty()) {
        const std::string& prev = out.back().path;
        if (e.path == prev) return bad(join(where, "path"), in_quotes(e.path) + " is listed twice");
        if (e.path < prev) {
          return bad(join(where, "path"),
                     in_quotes(e.path) + " is out of order (files must be sorted by path)");
        }
      }
      out.push_back(std::move(e));
    }
    // A path cannot be both a file and a directory ("a" and "a/b"). With the list sorted, any
    // file below "a" sorts after it, but not necessarily right after ("a.txt" < "a/b").
    std::set<std::string_view> names;
    for (const auto& e : out) names.insert(e.path);
    for (std::size_t i = 0; i < out.size(); ++i) {
      std::string_view p = out[i].path;
      for (auto slash = p.find('/'); slash != std::string_view::npos;
           slash = p.find('/', slash + 1)) {
        if (names.count(p.substr(0, slash))) {
          return bad(
              join(index("files", i), "path"),
              in_quotes(p) + " is inside " + in_quotes(p.substr(0, slash)) + ", which is a file");
        }
      }
    }
    return out;
  }

  Result<std::vector<TensorSpec>> tensors(const Json& arr, const std::string& field) {
    if (!arr.is_array()) return bad(field, "must be an array");
    std::vector<TensorSpec> out;
    for (std::size_t i = 0; i < arr.size(); ++i) {
      const Json& t = arr[i];
      std::string where = index(field, i);
      if (!t.is_object()) return bad(where, "must be an object");
      MOTA_TRY(no_unknown_keys(t, where, {"name", "shape", "dtype"}));
      TensorSpec spec;
      spec.name = MOTA_TRY(string_field(t, where, "name", true));
      if (spec.name.empty()) return bad(join(where, "name"), "must not be empty");
      if (!t.contains("shape")) return bad(join(where, "shape"), "required");
      const Json& shape = t["shape"];
      if (!shape.is_array()) return bad(join(where, "shape"), "must be an array");
      for (std::size_t d = 0; d < shape.size(); ++d) {
        const Json& dim = shape[d];
        bool ok = dim.is_number_integer() &&
                  (dim.is_number_unsigned()
                       ? dim.get<std::uint64_t>() >= 1 &&
                             dim.get<std::uint64_t>() <= std::uint64_t(INT64_MAX)
                       : (dim.get<std::int64_t>() >= 1 || dim.get<std::int64_t>() == -1));
        if (!ok) return bad(index(join(where, "shape"), d), "must be a positive integer or -1");
        spec.shape.push_back(dim.is_number_unsigned()
                                 ? static_cast<std::int64_t>(dim.get<std::uint64_t>())
                                 : dim.get<std::int64_t>());
      }
      spec.dtype = MOTA_TRY(string_field(t, where, "dtype", true));
      if (!one_of(spec.dtype, kDtypes)) {
        return bad(join(where, "dtype"),
                   in_quotes(spec.dtype) + " is not one of " + list_of(kDtypes));
      }
      out.push_back(std::move(spec));
    }
    return out;
  }

  static Result<std::vector<std::string>> names(const Json& obj, const char* key,
                                                std::string_view where) {
    std::vector<std::string> out;
    auto it = obj.find(key);
    if (it == obj.end()) return out;
    std::string field = join(where, key);
    if (!it->is_array()) return bad(field, "must be an array of strings");
    for (std::size_t i = 0; i < it->size(); ++i) {
      const Json& v = (*it)[i];
      if (!v.is_string() || v.get_ref<const std::string&>().empty()) {
        return bad(index(field, i), "must be a non-empty string");
      }
      out.push_back(v.get<std::string>());
    }
    return out;
  }

  Result<Requirements> requirements(const Json& obj) {
    if (!obj.is_object()) return bad("requirements", "must be an object");
    MOTA_TRY(no_unknown_keys(obj, "requirements", {"min_ram_mb", "arch", "accelerators"}));
    Requirements r;
    if (obj.contains("min_ram_mb")) {
      r.min_ram_mb = MOTA_TRY(uint_value(obj["min_ram_mb"], "requirements.min_ram_mb"));
    }
    r.arch = MOTA_TRY(names(obj, "arch", "requirements"));
    r.accelerators = MOTA_TRY(names(obj, "accelerators", "requirements"));
    return r;
  }

  Result<Json> metrics(const Json& obj) {
    if (!obj.is_object()) return bad("metrics", "must be an object");
    for (const auto& [key, value] : obj.items()) {
      MOTA_TRY(number_value(value, join("metrics", key)));
    }
    return obj;
  }

  Result<HealthSpec> health(const Json& obj) {
    if (!obj.is_object()) return bad("health", "must be an object");
    MOTA_TRY(no_unknown_keys(
        obj, "health", {"input", "expected_output", "tolerance", "latency_budget_ms", "soak_s"}));
    HealthSpec h;
    h.input = MOTA_TRY(path_field(obj, "health", "input", true));
    h.expected_output = MOTA_TRY(path_field(obj, "health", "expected_output", false));
    if (obj.contains("tolerance")) {
      h.tolerance = MOTA_TRY(number_value(obj["tolerance"], "health.tolerance"));
      if (h.tolerance < 0) return bad("health.tolerance", "must not be negative");
    }
    if (obj.contains("latency_budget_ms")) {
      h.latency_budget_ms =
          MOTA_TRY(number_value(obj["latency_budget_ms"], "health.latency_budget_ms"));
      if (h.latency_budget_ms <= 0) return bad("health.latency_budget_ms", "must be positive");
    }
    if (obj.contains("soak_s")) {
      h.soak_s = MOTA_TRY(number_value(obj["soak_s"], "health.soak_s"));
      if (h.soak_s < 0) return bad("health.soak_s", "must not be negative");
    }
    return h;
  }

  static Status listed(const ModelManifest& m, const std::string& path, std::string_view field) {
    auto it = std::lower_bound(m.files.begin(), m.files.end(), path,
                               [](const FileEntry& e, const std::string& p) { return e.path < p; });
    if (it == m.files.end() || it->path != path) {
      return bad(field, in_quotes(path) + " is not listed in files");
    }
    return {};
  }

  bool require_files_;
};

}  // namespace

Result<ModelManifest> ModelManifest::parse(std::string_view json_text, bool require_files) {
  Json doc = MOTA_TRY(parse_json(json_text, kMaxManifestBytes));
  try {
    return Validator(require_files).run(doc);
  } catch (const std::exception& e) {
    // get<>() on a validated node does not throw; this is a guard against a missed check.
    return fail(Errc::parse, std::string("model.json: ") + e.what());
  }
}

Json ModelManifest::to_json() const {
  Json j = Json::object();
  j["name"] = name;
  j["version"] = version;
  j["framework"] = framework;
  j["entry"] = entry;
  if (!description.empty()) j["description"] = description;
  Json fs = Json::array();
  for (const auto& f : files)
    fs.push_back({{"path", f.path}, {"size", f.size}, {"sha256", f.sha256}});
  j["files"] = std::move(fs);
  auto tensors = [](const std::vector<TensorSpec>& ts) {
    Json arr = Json::array();
    for (const auto& t : ts)
      arr.push_back({{"name", t.name}, {"shape", t.shape}, {"dtype", t.dtype}});
    return arr;
  };
  j["inputs"] = tensors(inputs);
  j["outputs"] = tensors(outputs);
  if (!labels.empty()) j["labels"] = labels;
  j["requirements"] = {{"min_ram_mb", requirements.min_ram_mb},
                       {"arch", requirements.arch},
                       {"accelerators", requirements.accelerators}};
  j["metrics"] = metrics.is_object() ? metrics : Json::object();
  if (health) {
    Json h = {{"input", health->input},
              {"tolerance", health->tolerance},
              {"latency_budget_ms", health->latency_budget_ms},
              {"soak_s", health->soak_s}};
    if (!health->expected_output.empty()) h["expected_output"] = health->expected_output;
    j["health"] = std::move(h);
  }
  return j;
}

std::string ModelManifest::serialize() const {
  // nlohmann's default object is a std::map: keys come out sorted by bytes. Invalid UTF-8 cannot
  // come from parse(); `replace` keeps dump() from throwing on a hand-built manifest.
  return to_json().dump(2, ' ', false, Json::error_handler_t::replace) + "\n";
}

bool valid_model_name(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin() + 1, name.end(),
                     [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool valid_package_path(std::string_view path) {
  if (path.empty() || path.size() > kMaxPathBytes || path.front() == '/') return false;
  // Control characters (NUL, newline, ...) would make names ambiguous in listings and in the
  // line-based tree digest.
  if (std::any_of(path.begin(), path.end(), [](char c) {
        return c == '\\' || static_cast<unsigned char>(c) < 0x20 || c == 0x7f;
      })) {
    return false;
  }
  std::size_t start = 0;
  for (;;) {
    auto slash = path.find('/', start);
    std::string_view comp =
        path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    if (comp.empty() || comp == "." || comp == "..") return false;
    if (slash == std::string_view::npos) return true;
    start = slash + 1;
  }
}

std::string tree_digest(std::vector<FileEntry> entries) {
  std::sort(entries.begin(), entries.end(),
            [](const FileEntry& a, const FileEntry& b) { return a.path < b.path; });
  crypto::Hasher h(crypto::HashAlgo::sha256);
  for (const auto& e : entries) {
    h.update(e.sha256);
    h.update(" ");
    h.update(std::to_string(e.size));
    h.update(" ");
    h.update(e.path);
    h.update("\n");
  }
  return h.hex_digest();
}

}  // namespace mota
