#include "tests/support/tuf_repo.hpp"

#include <stdexcept>
#include <type_traits>

#include "common/http.hpp"
#include "tests/support/test_support.hpp"

namespace mota::test {

namespace {

template <class T>
T must(Result<T> r, const std::string& what) {
  if (!r) throw std::runtime_error("TufRepo: " + what + ": " + r.error().message());
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

tuf::MetaFile meta_for(const std::string& bytes, std::uint64_t version, bool with_hashes) {
  tuf::MetaFile m;
  m.version = version;
  if (with_hashes) {
    m.length = bytes.size();
    m.hashes["sha256"] = crypto::sha256_hex(bytes);
  }
  return m;
}

}  // namespace

TimePoint TufRepo::in_days(int days) {
  return now_seconds() + std::chrono::hours(24) * days;
}

TufRepo::TufRepo(std::filesystem::path dir, bool consistent_snapshot) : dir_(std::move(dir)) {
  std::filesystem::create_directories(metadata_dir());
  std::filesystem::create_directories(targets_dir());
  root.type = "root";
  root.consistent_snapshot = consistent_snapshot;
  timestamp.type = "timestamp";
  snapshot.type = "snapshot";
  targets["targets"].type = "targets";
  for (tuf::Common* c :
       std::initializer_list<tuf::Common*>{&root, &timestamp, &snapshot, &targets["targets"]}) {
    c->version = 1;
    c->expires = in_days(30);
  }
  for (const char* role : {"root", "timestamp", "snapshot", "targets"}) {
    root.roles[role].threshold = 1;
    add_key(role);
  }
  publish_root();
  publish_all();
}

std::string TufRepo::add_key(const std::string& role) {
  auto key = must(crypto::PrivateKey::generate(crypto::KeyType::ed25519), "generate key");
  tuf::Key pub = tuf::Key::from_public(key.public_key());
  std::string id = pub.key_id();
  auto it = root.roles.find(role);
  if (it != root.roles.end()) {
    root.keys[id] = pub;
    it->second.keyids.push_back(id);
  } else {
    bool found = false;
    for (auto& [name, t] : targets) {
      if (!t.delegations) continue;
      for (auto& d : t.delegations->roles) {
        if (d.name != role) continue;
        t.delegations->keys[id] = pub;
        d.keyids.push_back(id);
        found = true;
      }
    }
    if (!found) throw std::runtime_error("TufRepo: no role named " + role);
  }
  keys[role].push_back(std::move(key));
  return id;
}

void TufRepo::rotate_keys(const std::string& role) {
  auto& r = root.roles.at(role);
  for (const auto& id : r.keyids) {
    bool used_elsewhere = false;
    for (const auto& [name, other] : root.roles) {
      if (name == role) continue;
      for (const auto& k : other.keyids) used_elsewhere |= k == id;
    }
    if (!used_elsewhere) root.keys.erase(id);
  }
  r.keyids.clear();
  keys[role].clear();
  for (unsigned i = 0; i < r.threshold; ++i) add_key(role);
}

void TufRepo::add_target(const std::string& role, const std::string& path,
                         std::string_view content) {
  tuf::TargetFile f;
  f.length = content.size();
  f.hashes["sha256"] = crypto::sha256_hex(content);
  f.hashes["sha512"] = crypto::sha512_hex(content);
  targets.at(role).targets[path] = f;
  std::filesystem::path p = targets_dir() / path;
  write_file(p, content);
  write_file(p.parent_path() / (f.hashes["sha256"] + "." + p.filename().string()), content);
}

void TufRepo::add_delegation(const std::string& delegator, tuf::DelegatedRole role) {
  auto& t = targets.at(delegator);
  if (!t.delegations) t.delegations.emplace();
  std::string name = role.name;
  t.delegations->roles.push_back(std::move(role));
  tuf::Targets& child = targets[name];
  child.type = "targets";
  child.version = 1;
  child.expires = in_days(30);
  add_key(name);
}

std::vector<const crypto::PrivateKey*> TufRepo::signers(const std::string& role) const {
  std::vector<const crypto::PrivateKey*> out;
  auto it = keys.find(role);
  if (it != keys.end()) {
    for (const auto& k : it->second) out.push_back(&k);
  }
  return out;
}

std::string TufRepo::sign(const Json& signed_json,
                          const std::vector<const crypto::PrivateKey*>& keys) {
  return must(tuf::sign_metadata(signed_json, keys), "sign");
}

void TufRepo::write_metadata(const std::string& file, std::string_view bytes) const {
  write_file(metadata_dir() / file, bytes);
}

std::string TufRepo::publish_root(const std::vector<const crypto::PrivateKey*>& extra) {
  auto s = signers("root");
  s.insert(s.end(), extra.begin(), extra.end());
  std::string bytes = sign(tuf::to_json(root), s);
  write_metadata(std::to_string(root.version) + ".root.json", bytes);
  write_metadata("root.json", bytes);
  roots_[root.version] = bytes;
  return bytes;
}

std::string TufRepo::publish_targets(const std::string& role) {
  const tuf::Targets& t = targets.at(role);
  std::string bytes = sign(tuf::to_json(t), signers(role));
  std::string enc = http::percent_encode(role);
  write_metadata(std::to_string(t.version) + "." + enc + ".json", bytes);
  write_metadata(enc + ".json", bytes);
  published_targets_[role] = bytes;
  return bytes;
}

std::string TufRepo::publish_snapshot() {
  for (const auto& [role, bytes] : published_targets_) {
    auto parsed = must(tuf::parse_targets(bytes), "parse published " + role);
    snapshot.meta[role + ".json"] = meta_for(bytes, parsed.signed_.version, meta_hashes);
  }
  std::string bytes = sign(tuf::to_json(snapshot), signers("snapshot"));
  write_metadata(std::to_string(snapshot.version) + ".snapshot.json", bytes);
  write_metadata("snapshot.json", bytes);
  published_snapshot_ = bytes;
  return bytes;
}

std::string TufRepo::publish_timestamp() {
  timestamp.snapshot = meta_for(published_snapshot_, snapshot.version, meta_hashes);
  std::string bytes = sign(tuf::to_json(timestamp), signers("timestamp"));
  write_metadata("timestamp.json", bytes);
  return bytes;
}

void TufRepo::publish_all() {
  for (const auto& [role, t] : targets) publish_targets(role);
  publish_snapshot();
  publish_timestamp();
}

void TufRepo::bump_all() {
  targets.at("targets").version++;
  snapshot.version++;
  timestamp.version++;
  publish_all();
}

std::string TufRepo::root_bytes(std::uint64_t version) const {
  auto it = roots_.find(version);
  if (it == roots_.end()) {
    throw std::runtime_error("TufRepo: root version " + std::to_string(version) +
                             " was not published");
  }
  return it->second;
}

}  // namespace mota::test
