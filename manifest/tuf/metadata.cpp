#include "manifest/tuf/metadata.hpp"

#include <algorithm>
#include <set>
#include <string_view>

#include "common/hex.hpp"

namespace mota::tuf {

namespace {

constexpr std::string_view kTopLevelRoles[] = {"root", "timestamp", "snapshot", "targets"};

bool is_top_level(std::string_view name) {
  return std::find(std::begin(kTopLevelRoles), std::end(kTopLevelRoles), name) !=
         std::end(kTopLevelRoles);
}

std::string qstr(std::string_view s) {
  std::string out = "\"";
  out += s;
  out += '"';
  return out;
}

// Every parse error names the JSON path it is about ("signed.roles.root.threshold: ...").
tl::unexpected<Error> bad(const std::string& where, std::string why) {
  return fail(Errc::parse, where + ": " + why);
}

std::string child(const std::string& where, std::string_view key) {
  // Keys that are not plain identifiers (file names, target paths) are shown quoted.
  bool plain = !key.empty() && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
  });
  if (plain) return where + "." + std::string(key);
  return where + "[" + qstr(key) + "]";
}

std::string index(const std::string& where, std::size_t i) {
  return where + "[" + std::to_string(i) + "]";
}

Result<const Json*> require(const Json& obj, std::string_view key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) return bad(where, "missing required field " + qstr(key));
  return &*it;
}

Result<const Json*> require_object(const Json& obj, std::string_view key,
                                   const std::string& where) {
  const Json* v = MOTA_TRY(require(obj, key, where));
  if (!v->is_object())
    return bad(child(where, key), std::string("expected an object, got ") + v->type_name());
  return v;
}

Result<const Json*> require_array(const Json& obj, std::string_view key, const std::string& where) {
  const Json* v = MOTA_TRY(require(obj, key, where));
  if (!v->is_array())
    return bad(child(where, key), std::string("expected an array, got ") + v->type_name());
  return v;
}

Result<std::string> as_string(const Json& v, const std::string& where) {
  if (!v.is_string()) return bad(where, std::string("expected a string, got ") + v.type_name());
  return v.get<std::string>();
}

Result<std::string> require_string(const Json& obj, std::string_view key,
                                   const std::string& where) {
  const Json* v = MOTA_TRY(require(obj, key, where));
  return as_string(*v, child(where, key));
}

// A non-negative JSON integer (not a float such as 1.0, not a bool, not a string) >= min.
Result<std::uint64_t> as_uint(const Json& v, const std::string& where, std::uint64_t min) {
  std::uint64_t n = 0;
  if (v.is_number_unsigned()) {
    n = v.get<std::uint64_t>();
  } else if (v.is_number_integer()) {
    auto s = v.get<std::int64_t>();
    if (s < 0)
      return bad(where, "expected an integer >= " + std::to_string(min) + ", got " + v.dump());
    n = static_cast<std::uint64_t>(s);
  } else {
    return bad(where, "expected an integer >= " + std::to_string(min) + ", got " +
                          (v.is_number() ? v.dump() : std::string(v.type_name())));
  }
  if (n < min)
    return bad(where,
               "expected an integer >= " + std::to_string(min) + ", got " + std::to_string(n));
  return n;
}

Result<std::uint64_t> require_uint(const Json& obj, std::string_view key, const std::string& where,
                                   std::uint64_t min) {
  const Json* v = MOTA_TRY(require(obj, key, where));
  return as_uint(*v, child(where, key), min);
}

Result<unsigned> require_threshold(const Json& obj, const std::string& where) {
  std::uint64_t t = MOTA_TRY(require_uint(obj, "threshold", where, 1));
  if (t > 0xFFFFFFFFu)
    return bad(child(where, "threshold"), "threshold " + std::to_string(t) + " is too large");
  return static_cast<unsigned>(t);
}

Result<std::vector<std::string>> string_list(const Json& obj, std::string_view key,
                                             const std::string& where) {
  const Json* arr = MOTA_TRY(require_array(obj, key, where));
  std::vector<std::string> out;
  out.reserve(arr->size());
  for (std::size_t i = 0; i < arr->size(); ++i) {
    out.push_back(MOTA_TRY(as_string((*arr)[i], index(child(where, key), i))));
  }
  return out;
}

bool is_hex(std::string_view s) {
  return std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
  });
}

std::string lower(std::string s) {
  for (char& c : s) {
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  }
  return s;
}

Result<std::map<std::string, std::string>> parse_hashes(const Json& obj, const std::string& where) {
  if (!obj.is_object())
    return bad(where, std::string("expected an object, got ") + obj.type_name());
  if (obj.empty()) return bad(where, "must list at least one hash");
  std::map<std::string, std::string> out;
  for (const auto& [algo, value] : obj.items()) {
    std::string h = MOTA_TRY(as_string(value, child(where, algo)));
    if (h.empty() || h.size() % 2 != 0 || !is_hex(h)) {
      return bad(child(where, algo), "hash " + qstr(h) + " is not a hex string");
    }
    out.emplace(algo, lower(std::move(h)));
  }
  return out;
}

Status check_spec_version(const std::string& v, const std::string& where) {
  // "1.0.31" or legacy "1.0": two or three dot-separated decimal numbers, major 1.
  std::vector<std::string_view> parts;
  std::string_view rest = v;
  for (;;) {
    auto dot = rest.find('.');
    parts.push_back(rest.substr(0, dot));
    if (dot == std::string_view::npos) break;
    rest.remove_prefix(dot + 1);
  }
  bool digits = std::all_of(parts.begin(), parts.end(), [](std::string_view p) {
    return !p.empty() &&
           std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
  });
  if ((parts.size() != 2 && parts.size() != 3) || !digits) {
    return bad(where, qstr(v) + " is not a version of the form X.Y.Z");
  }
  if (parts[0] != "1") {
    return bad(where,
               "specification version " + qstr(v) + " is not supported (major version 1 is)");
  }
  return {};
}

Status parse_common(const Json& s, std::string_view expected_type, Common& c) {
  const std::string w = "signed";
  c.type = MOTA_TRY(require_string(s, "_type", w));
  if (c.type != expected_type) {
    return bad(w + "._type", "expected " + qstr(expected_type) + ", got " + qstr(c.type));
  }
  c.spec_version = MOTA_TRY(require_string(s, "spec_version", w));
  MOTA_TRY(check_spec_version(c.spec_version, w + ".spec_version"));
  c.version = MOTA_TRY(require_uint(s, "version", w, 1));
  std::string expires = MOTA_TRY(require_string(s, "expires", w));
  auto t = parse_time(expires);
  if (!t) return bad(w + ".expires", t.error().message());
  c.expires = *t;
  return {};
}

Result<Key> parse_key(const Json& v, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("expected a key object, got ") + v.type_name());
  Key k;
  k.keytype = MOTA_TRY(require_string(v, "keytype", where));
  k.scheme = MOTA_TRY(require_string(v, "scheme", where));
  const Json* keyval = MOTA_TRY(require_object(v, "keyval", where));
  k.public_value = MOTA_TRY(require_string(*keyval, "public", child(where, "keyval")));
  // An unsupported key type is not a parse error: the key simply never verifies, and other keys
  // may still meet the threshold (to_public() reports Errc::unsupported).
  return k;
}

Result<std::map<std::string, Key>> parse_keys(const Json& obj, std::string_view key,
                                              const std::string& where) {
  const Json* keys = MOTA_TRY(require_object(obj, key, where));
  std::map<std::string, Key> out;
  for (const auto& [id, v] : keys->items()) {
    if (id.empty()) return bad(child(where, key), "empty key id");
    out.emplace(id, MOTA_TRY(parse_key(v, child(child(where, key), id))));
  }
  return out;
}

Result<MetaFile> parse_meta_file(const Json& v, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("expected an object, got ") + v.type_name());
  MetaFile m;
  m.version = MOTA_TRY(require_uint(v, "version", where, 1));
  if (auto it = v.find("length"); it != v.end()) {
    m.length = MOTA_TRY(as_uint(*it, child(where, "length"), 0));
  }
  if (auto it = v.find("hashes"); it != v.end()) {
    m.hashes = MOTA_TRY(parse_hashes(*it, child(where, "hashes")));
  }
  return m;
}

Result<std::map<std::string, MetaFile>> parse_meta(const Json& s) {
  const Json* meta = MOTA_TRY(require_object(s, "meta", "signed"));
  std::map<std::string, MetaFile> out;
  for (const auto& [name, v] : meta->items()) {
    out.emplace(name, MOTA_TRY(parse_meta_file(v, child("signed.meta", name))));
  }
  return out;
}

Result<TargetFile> parse_target_file(const Json& v, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("expected an object, got ") + v.type_name());
  TargetFile f;
  f.length = MOTA_TRY(require_uint(v, "length", where, 0));
  const Json* hashes = MOTA_TRY(require(v, "hashes", where));
  f.hashes = MOTA_TRY(parse_hashes(*hashes, child(where, "hashes")));
  if (auto it = v.find("custom"); it != v.end()) f.custom = *it;
  return f;
}

Result<DelegatedRole> parse_delegated_role(const Json& v, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("expected an object, got ") + v.type_name());
  DelegatedRole r;
  r.name = MOTA_TRY(require_string(v, "name", where));
  if (r.name.empty() || is_top_level(r.name)) {
    return bad(child(where, "name"),
               qstr(r.name) + " cannot name a delegated role (empty or a top-level role name)");
  }
  r.keyids = MOTA_TRY(string_list(v, "keyids", where));
  r.threshold = MOTA_TRY(require_threshold(v, where));
  const Json* term = MOTA_TRY(require(v, "terminating", where));
  if (!term->is_boolean()) {
    return bad(child(where, "terminating"),
               std::string("expected a boolean, got ") + term->type_name());
  }
  r.terminating = term->get<bool>();
  bool has_paths = v.contains("paths");
  bool has_prefixes = v.contains("path_hash_prefixes");
  if (has_paths && has_prefixes) {
    return bad(where, "role " + qstr(r.name) +
                          " sets both \"paths\" and \"path_hash_prefixes\" (only one is allowed)");
  }
  if (!has_paths && !has_prefixes) {
    return bad(where, "role " + qstr(r.name) +
                          " sets neither \"paths\" nor \"path_hash_prefixes\" (one is required)");
  }
  if (has_paths) {
    r.paths = MOTA_TRY(string_list(v, "paths", where));
  } else {
    auto prefixes = MOTA_TRY(string_list(v, "path_hash_prefixes", where));
    for (std::size_t i = 0; i < prefixes.size(); ++i) {
      if (!is_hex(prefixes[i])) {
        return bad(index(child(where, "path_hash_prefixes"), i),
                   qstr(prefixes[i]) + " is not a hex prefix");
      }
      prefixes[i] = lower(std::move(prefixes[i]));
    }
    r.path_hash_prefixes = std::move(prefixes);
  }
  return r;
}

Result<Delegations> parse_delegations(const Json& v, const std::string& where) {
  if (!v.is_object()) return bad(where, std::string("expected an object, got ") + v.type_name());
  if (v.contains("succinct_roles")) {
    return fail(Errc::unsupported, where + ": succinct_roles (TAP 15) is not supported");
  }
  Delegations d;
  d.keys = MOTA_TRY(parse_keys(v, "keys", where));
  const Json* roles = MOTA_TRY(require_array(v, "roles", where));
  std::set<std::string> names;
  for (std::size_t i = 0; i < roles->size(); ++i) {
    std::string w = index(child(where, "roles"), i);
    DelegatedRole r = MOTA_TRY(parse_delegated_role((*roles)[i], w));
    if (!names.insert(r.name).second) {
      return bad(w, "role " + qstr(r.name) + " is delegated twice");
    }
    d.roles.push_back(std::move(r));
  }
  return d;
}

// Parses the envelope and the common fields; the caller fills in the role-specific part.
template <class T>
Result<Signed<T>> parse_envelope(std::string_view bytes, std::string_view type) {
  Signed<T> out;
  out.envelope = MOTA_TRY(parse_json(bytes));
  const Json& env = out.envelope;
  if (!env.is_object())
    return bad("metadata", std::string("expected an object, got ") + env.type_name());
  const Json* sigs = MOTA_TRY(require_array(env, "signatures", "metadata"));
  std::map<std::string, std::size_t> first_index;  // keyid -> where it first signs
  for (std::size_t i = 0; i < sigs->size(); ++i) {
    const Json& s = (*sigs)[i];
    std::string w = index("signatures", i);
    if (!s.is_object()) return bad(w, std::string("expected an object, got ") + s.type_name());
    Signature sig;
    sig.keyid = MOTA_TRY(require_string(s, "keyid", w));
    // The specification makes keyids unique in "signatures". verify_threshold would count a
    // repeated key once anyway, but metadata that breaks the rule is refused outright, as the
    // reference implementation does, rather than interpreted.
    if (auto [it, fresh] = first_index.emplace(sig.keyid, i); !fresh) {
      return fail(Errc::verification, w + ": keyid " + qstr(sig.keyid) + " already signs in " +
                                          index("signatures", it->second) +
                                          "; keyids in \"signatures\" must be unique");
    }
    // A signature that is not hex is kept: it just fails verification, and other signatures may
    // still meet the threshold.
    sig.sig = MOTA_TRY(require_string(s, "sig", w));
    out.signatures.push_back(std::move(sig));
  }
  const Json* signed_json = MOTA_TRY(require_object(env, "signed", "metadata"));
  // Signatures are over the canonical form; a document without one can never verify.
  if (auto c = canonical_json(*signed_json); !c) return bad("signed", c.error().message());
  MOTA_TRY(parse_common(*signed_json, type, out.signed_));
  return out;
}

Result<std::vector<std::pair<std::string, RoleKeys>>> parse_roles(const Json& s) {
  const Json* roles = MOTA_TRY(require_object(s, "roles", "signed"));
  std::vector<std::pair<std::string, RoleKeys>> out;
  for (const auto& [name, v] : roles->items()) {
    std::string w = child("signed.roles", name);
    if (!v.is_object()) return bad(w, std::string("expected an object, got ") + v.type_name());
    RoleKeys rk;
    rk.keyids = MOTA_TRY(string_list(v, "keyids", w));
    rk.threshold = MOTA_TRY(require_threshold(v, w));
    out.emplace_back(name, std::move(rk));
  }
  for (std::string_view r : kTopLevelRoles) {
    if (!roles->contains(r)) return bad("signed.roles", "missing role " + qstr(r));
  }
  return out;
}

Json meta_file_json(const MetaFile& m) {
  Json j = {{"version", m.version}};
  if (m.length) j["length"] = *m.length;
  if (!m.hashes.empty()) j["hashes"] = m.hashes;
  return j;
}

Json common_json(const Common& c, std::string_view type) {
  return Json{{"_type", type},
              {"spec_version", c.spec_version},
              {"version", c.version},
              {"expires", format_time(c.expires)}};
}

Json keys_json(const std::map<std::string, Key>& keys) {
  Json j = Json::object();
  for (const auto& [id, k] : keys) j[id] = k.to_json();
  return j;
}

// One segment of a TUF path pattern, matched like Python's fnmatch.fnmatchcase: '*' any run of
// characters, '?' one character, '[seq]' / '[!seq]' a character class with ranges; a '[' without
// a closing ']' is literal. Segments never contain '/', so '*' cannot cross directories.
bool class_matches(std::string_view cls, char c) {
  bool hit = false;
  for (std::size_t i = 0; i < cls.size(); ++i) {
    if (i + 2 < cls.size() && cls[i + 1] == '-') {
      auto lo = static_cast<unsigned char>(cls[i]), hi = static_cast<unsigned char>(cls[i + 2]);
      auto uc = static_cast<unsigned char>(c);
      if (lo <= uc && uc <= hi) hit = true;
      i += 2;
    } else if (cls[i] == c) {
      hit = true;
    }
  }
  return hit;
}

// At pattern position p: if it starts a complete class "[...]", returns the index just past the
// closing ']' and sets `cls`/`negate`; otherwise returns 0.
std::size_t parse_class(std::string_view pat, std::size_t p, std::string_view& cls, bool& negate) {
  std::size_t j = p + 1;
  negate = false;
  if (j < pat.size() && pat[j] == '!') {
    negate = true;
    ++j;
  }
  std::size_t start = j;
  if (j < pat.size() && pat[j] == ']') ++j;  // a leading ']' is a member, not the end
  while (j < pat.size() && pat[j] != ']') ++j;
  if (j >= pat.size()) return 0;
  cls = pat.substr(start, j - start);
  return j + 1;
}

bool segment_matches(std::string_view pat, std::string_view s) {
  std::size_t p = 0, i = 0;
  std::size_t star_p = std::string_view::npos, star_i = 0;
  while (i < s.size()) {
    if (p < pat.size()) {
      char pc = pat[p];
      if (pc == '*') {
        star_p = ++p;
        star_i = i;
        continue;
      }
      if (pc == '?') {
        ++p;
        ++i;
        continue;
      }
      if (pc == '[') {
        std::string_view cls;
        bool negate = false;
        if (std::size_t next = parse_class(pat, p, cls, negate)) {
          if (class_matches(cls, s[i]) != negate) {
            p = next;
            ++i;
            continue;
          }
        } else if (s[i] == '[') {
          ++p;
          ++i;
          continue;
        }
      } else if (pc == s[i]) {
        ++p;
        ++i;
        continue;
      }
    }
    // Mismatch: let the last '*' absorb one more character, or fail.
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    i = ++star_i;
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

std::vector<std::string_view> split_slash(std::string_view s) {
  std::vector<std::string_view> parts;
  for (;;) {
    auto pos = s.find('/');
    parts.push_back(s.substr(0, pos));
    if (pos == std::string_view::npos) return parts;
    s.remove_prefix(pos + 1);
  }
}

bool path_matches(std::string_view pattern, std::string_view target) {
  auto pp = split_slash(pattern), tp = split_slash(target);
  if (pp.size() != tp.size()) return false;
  for (std::size_t i = 0; i < pp.size(); ++i) {
    if (!segment_matches(pp[i], tp[i])) return false;
  }
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Keys

Key Key::from_public(const crypto::PublicKey& pk) {
  return Key{std::string(crypto::keytype_name(pk.type)), std::string(crypto::scheme_name(pk.type)),
             pk.public_value};
}

Json Key::to_json() const {
  return Json{{"keytype", keytype}, {"scheme", scheme}, {"keyval", {{"public", public_value}}}};
}

std::string Key::key_id() const {
  // Only strings: canonicalisation cannot fail.
  return crypto::sha256_hex(canonical_json(to_json()).value_or(std::string()));
}

Result<crypto::PublicKey> Key::to_public() const {
  crypto::PublicKey pk;
  pk.type = MOTA_TRY(crypto::key_type_from_tuf(keytype, scheme));
  pk.public_value = public_value;
  return pk;
}

bool DelegatedRole::matches(const std::string& target_path) const {
  if (paths) {
    for (const auto& p : *paths) {
      if (path_matches(p, target_path)) return true;
    }
  }
  if (path_hash_prefixes) {
    std::string digest = crypto::sha256_hex(target_path);
    for (const auto& prefix : *path_hash_prefixes) {
      if (digest.starts_with(lower(prefix))) return true;
    }
  }
  return false;
}

// ---------------------------------------------------------------------------------------------
// Parsing

Result<Signed<Root>> parse_root(std::string_view bytes) {
  auto out = MOTA_TRY_CTX(parse_envelope<Root>(bytes, "root"), "root metadata");
  auto body = [&]() -> Status {
    const Json& s = out.envelope["signed"];
    Root& r = out.signed_;
    if (auto it = s.find("consistent_snapshot"); it != s.end()) {
      if (!it->is_boolean()) {
        return bad("signed.consistent_snapshot",
                   std::string("expected a boolean, got ") + it->type_name());
      }
      r.consistent_snapshot = it->get<bool>();
    } else {
      r.consistent_snapshot = false;  // as python-tuf reads an absent field
    }
    r.keys = MOTA_TRY(parse_keys(s, "keys", "signed"));
    for (auto& [name, rk] : MOTA_TRY(parse_roles(s))) r.roles.emplace(name, std::move(rk));
    return {};
  };
  MOTA_TRY_CTX(body(), "root metadata");
  return out;
}

Result<Signed<Timestamp>> parse_timestamp(std::string_view bytes) {
  auto out = MOTA_TRY_CTX(parse_envelope<Timestamp>(bytes, "timestamp"), "timestamp metadata");
  auto body = [&]() -> Status {
    auto meta = MOTA_TRY(parse_meta(out.envelope["signed"]));
    auto it = meta.find("snapshot.json");
    if (it == meta.end()) return bad("signed.meta", "missing the \"snapshot.json\" entry");
    out.signed_.snapshot = it->second;
    return {};
  };
  MOTA_TRY_CTX(body(), "timestamp metadata");
  return out;
}

Result<Signed<Snapshot>> parse_snapshot(std::string_view bytes) {
  auto out = MOTA_TRY_CTX(parse_envelope<Snapshot>(bytes, "snapshot"), "snapshot metadata");
  auto body = [&]() -> Status {
    out.signed_.meta = MOTA_TRY(parse_meta(out.envelope["signed"]));
    if (!out.signed_.meta.contains("targets.json")) {
      return bad("signed.meta", "missing the \"targets.json\" entry");
    }
    return {};
  };
  MOTA_TRY_CTX(body(), "snapshot metadata");
  return out;
}

Result<Signed<Targets>> parse_targets(std::string_view bytes) {
  auto out = MOTA_TRY_CTX(parse_envelope<Targets>(bytes, "targets"), "targets metadata");
  auto body = [&]() -> Status {
    const Json& s = out.envelope["signed"];
    const Json* targets = MOTA_TRY(require_object(s, "targets", "signed"));
    for (const auto& [path, v] : targets->items()) {
      out.signed_.targets.emplace(path,
                                  MOTA_TRY(parse_target_file(v, child("signed.targets", path))));
    }
    if (auto it = s.find("delegations"); it != s.end()) {
      out.signed_.delegations = MOTA_TRY(parse_delegations(*it, "signed.delegations"));
    }
    return {};
  };
  MOTA_TRY_CTX(body(), "targets metadata");
  return out;
}

// ---------------------------------------------------------------------------------------------
// Serialisation

Json to_json(const Root& r) {
  Json j = common_json(r, "root");
  j["consistent_snapshot"] = r.consistent_snapshot;
  j["keys"] = keys_json(r.keys);
  Json roles = Json::object();
  for (const auto& [name, rk] : r.roles) {
    roles[name] = Json{{"keyids", rk.keyids}, {"threshold", rk.threshold}};
  }
  j["roles"] = std::move(roles);
  return j;
}

Json to_json(const Timestamp& t) {
  Json j = common_json(t, "timestamp");
  j["meta"] = Json{{"snapshot.json", meta_file_json(t.snapshot)}};
  return j;
}

Json to_json(const Snapshot& s) {
  Json j = common_json(s, "snapshot");
  Json meta = Json::object();
  for (const auto& [name, m] : s.meta) meta[name] = meta_file_json(m);
  j["meta"] = std::move(meta);
  return j;
}

Json to_json(const TargetFile& f) {
  Json j = {{"length", f.length}, {"hashes", f.hashes}};
  if (!f.custom.is_null()) j["custom"] = f.custom;
  return j;
}

Json to_json(const Targets& t) {
  Json j = common_json(t, "targets");
  Json targets = Json::object();
  for (const auto& [path, f] : t.targets) targets[path] = to_json(f);
  j["targets"] = std::move(targets);
  if (t.delegations) {
    Json roles = Json::array();
    for (const auto& r : t.delegations->roles) {
      Json rj = {{"name", r.name},
                 {"keyids", r.keyids},
                 {"threshold", r.threshold},
                 {"terminating", r.terminating}};
      if (r.paths) rj["paths"] = *r.paths;
      if (r.path_hash_prefixes) rj["path_hash_prefixes"] = *r.path_hash_prefixes;
      roles.push_back(std::move(rj));
    }
    j["delegations"] = Json{{"keys", keys_json(t.delegations->keys)}, {"roles", std::move(roles)}};
  }
  return j;
}

// ---------------------------------------------------------------------------------------------
// Signatures and expiry

Status verify_threshold(const Json& envelope, const std::vector<Signature>& signatures,
                        const std::map<std::string, Key>& keys, const RoleKeys& role,
                        std::string_view role_name) {
  const std::string name(role_name);
  if (role.threshold < 1) {
    return fail(Errc::verification, name + ": threshold 0 would accept unsigned metadata");
  }
  auto it = envelope.is_object() ? envelope.find("signed") : envelope.end();
  if (it == envelope.end() || !it->is_object()) {
    return fail(Errc::verification, name + ": metadata has no \"signed\" object");
  }
  auto message = canonical_json(*it);
  if (!message) return fail(Errc::verification, name + ": " + message.error().message());

  std::set<std::string> seen_ids;
  // The same key material listed under two key ids must not count twice.
  std::set<std::string> counted_keys;
  unsigned valid = 0;
  for (const auto& keyid : role.keyids) {
    if (!seen_ids.insert(keyid).second) continue;
    auto kit = keys.find(keyid);
    if (kit == keys.end()) continue;
    auto pk = kit->second.to_public();
    if (!pk) continue;
    std::string material =
        kit->second.keytype + '\n' + kit->second.scheme + '\n' +
        (pk->type == crypto::KeyType::ed25519 ? lower(pk->public_value) : pk->public_value);
    if (counted_keys.contains(material)) continue;
    for (const auto& sig : signatures) {
      if (sig.keyid != keyid) continue;
      auto raw = from_hex(sig.sig);
      if (!raw) continue;
      if (crypto::verify(*pk, *message, *raw)) {
        ++valid;
        counted_keys.insert(std::move(material));
        break;
      }
    }
  }
  if (valid >= role.threshold) return {};
  return fail(Errc::verification, name + ": " + std::to_string(valid) + " of " +
                                      std::to_string(role.threshold) +
                                      " required signatures valid");
}

Result<std::string> sign_metadata(const Json& signed_json,
                                  const std::vector<const crypto::PrivateKey*>& keys) {
  if (!signed_json.is_object()) {
    return fail(Errc::invalid_argument, "sign metadata: the signed part must be a JSON object");
  }
  std::string message = MOTA_TRY_CTX(canonical_json(signed_json), "sign metadata");
  Json sigs = Json::array();
  std::set<std::string> seen;
  for (const crypto::PrivateKey* k : keys) {
    if (k == nullptr) return fail(Errc::invalid_argument, "sign metadata: null key");
    std::string id = Key::from_public(k->public_key()).key_id();
    if (!seen.insert(id).second) continue;  // a second signature by one key adds nothing
    std::string sig = MOTA_TRY_CTX(k->sign(message), "sign metadata with key " + id);
    sigs.push_back(Json{{"keyid", id}, {"sig", to_hex(sig)}});
  }
  Json env = {{"signatures", std::move(sigs)}, {"signed", signed_json}};
  try {
    return env.dump(2) + "\n";
  } catch (const Json::exception& e) {
    // dump() throws on strings that are not valid UTF-8.
    return fail(Errc::invalid_argument, std::string("sign metadata: ") + e.what());
  }
}

Status check_expiry(const Common& c, std::string_view role_name, TimePoint now) {
  // Expired at the exact expiry second too (spec 5.3.10: expiry must be *after* now).
  if (now >= c.expires) {
    return fail(Errc::expired, std::string(role_name) + " expired at " + format_time(c.expires));
  }
  return {};
}

}  // namespace mota::tuf
