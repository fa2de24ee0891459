#include "manifest/channel.hpp"

#include <cstdint>

#include "common/semver.hpp"
#include "common/time.hpp"
#include "manifest/crypto.hpp"
#include "manifest/model_manifest.hpp"

namespace mota {
namespace {

tl::unexpected<Error> bad(std::string_view field, std::string_view why) {
  return fail(Errc::parse, "channel: " + std::string(field) + ": " + std::string(why));
}

// `label` names the field in errors ("rollout.salt"); defaults to the key.
Result<std::string> get_string(const Json& obj, const char* key, bool required,
                               const char* label = nullptr) {
  std::string_view field = label ? label : key;
  auto it = obj.find(key);
  if (it == obj.end()) {
    if (required) return bad(field, "missing");
    return std::string();
  }
  if (!it->is_string()) return bad(field, "not a string");
  return it->get<std::string>();
}

Status check_semver(std::string_view field, const std::string& v) {
  auto parsed = SemVer::parse(v);
  if (!parsed) return bad(field, "'" + v + "' is not a semantic version");
  return {};
}

bool is_lower_hex(std::string_view s) {
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

// "percent" (required) and "bp" (optional) of the "rollout" or "targeted" object `obj`.
Status parse_share(const Json& obj, const std::string& section, Share& out) {
  const std::string pf = section + ".percent";
  auto p = obj.find("percent");
  if (p == obj.end()) return bad(pf, "missing");
  if (!p->is_number_integer() || p->get<std::int64_t>() < 0 || p->get<std::int64_t>() > 100) {
    return bad(pf, p->dump() + " is not an integer in 0..100");
  }
  out.percent = static_cast<unsigned>(p->get<std::int64_t>());
  out.bp.reset();
  auto b = obj.find("bp");
  if (b == obj.end()) return {};
  const std::string bf = section + ".bp";
  if (!b->is_number_integer() || b->get<std::int64_t>() < 0 || b->get<std::int64_t>() > 10000) {
    return bad(bf, b->dump() + " is not an integer in 0..10000");
  }
  const auto bp = static_cast<unsigned>(b->get<std::int64_t>());
  // Older agents read percent: it must not give them a larger share than bp gives the others.
  if (bp / 100 != out.percent) {
    return bad(bf, std::to_string(bp) + " basis points do not round down to percent " +
                       std::to_string(out.percent));
  }
  out.set_share_bp(bp);
  return {};
}

void write_share(const Share& share, Json& obj) {
  obj["percent"] = share.percent;
  if (share.bp) obj["bp"] = *share.bp;
}

}  // namespace

void Share::set_share_bp(unsigned value) {
  value = value > 10000 ? 10000 : value;
  percent = value / 100;
  if (value % 100 != 0) {
    bp = value;
  } else {
    bp.reset();
  }
}

bool in_share(const Share& share, unsigned bucket) {
  const unsigned s = share.share_bp();
  return s >= 10000 || bucket < s;
}

bool valid_channel_name(std::string_view name) {
  return valid_model_name(name);
}

std::string channel_target_path(std::string_view channel, std::string_view model) {
  return "channels/" + std::string(channel) + "/" + std::string(model) + ".json";
}

Result<Channel> Channel::parse(std::string_view json_text) {
  Json j = MOTA_TRY_CTX(parse_json(json_text, 1u << 20), "channel");
  if (!j.is_object()) return fail(Errc::parse, "channel: not a JSON object");
  Channel c;
  c.model = MOTA_TRY(get_string(j, "model", true));
  if (!valid_model_name(c.model))
    return bad("model", "'" + c.model + "' is not a valid model name");
  c.channel = MOTA_TRY(get_string(j, "channel", true));
  if (!valid_channel_name(c.channel)) {
    return bad("channel", "'" + c.channel + "' is not a valid channel name");
  }
  c.version = MOTA_TRY(get_string(j, "version", true));
  MOTA_TRY(check_semver("version", c.version));

  auto ro = j.find("rollout");
  if (ro != j.end()) {
    if (!ro->is_object()) return bad("rollout", "not an object");
    MOTA_TRY(parse_share(*ro, "rollout", c.rollout));
    c.rollout.salt = MOTA_TRY(get_string(*ro, "salt", true, "rollout.salt"));
    if (c.rollout.salt.size() != 16 || !is_lower_hex(c.rollout.salt)) {
      return bad("rollout.salt", "'" + c.rollout.salt + "' is not 16 lower-case hex digits");
    }
    c.rollout.fallback_version =
        MOTA_TRY(get_string(*ro, "fallback_version", false, "rollout.fallback_version"));
    if (!c.rollout.fallback_version.empty()) {
      MOTA_TRY(check_semver("rollout.fallback_version", c.rollout.fallback_version));
      if (c.rollout.percent == 100) {
        return bad("rollout.fallback_version", "must be absent when percent is 100");
      }
    }
  } else {
    c.rollout.percent = 100;
  }

  auto tg = j.find("targeted");
  if (tg != j.end()) {
    if (!tg->is_object()) return bad("targeted", "not an object");
    Targeted t;
    const std::string select = MOTA_TRY(get_string(*tg, "select", true, "targeted.select"));
    auto sel = Selector::parse(select);
    if (!sel) return bad("targeted.select", sel.error().message());
    t.select = sel->text();
    t.version = MOTA_TRY(get_string(*tg, "version", true, "targeted.version"));
    MOTA_TRY(check_semver("targeted.version", t.version));
    MOTA_TRY(parse_share(*tg, "targeted", t));
    t.salt = MOTA_TRY(get_string(*tg, "salt", true, "targeted.salt"));
    if (t.salt.size() != 16 || !is_lower_hex(t.salt)) {
      return bad("targeted.salt", "'" + t.salt + "' is not 16 lower-case hex digits");
    }
    t.fallback_version =
        MOTA_TRY(get_string(*tg, "fallback_version", false, "targeted.fallback_version"));
    if (!t.fallback_version.empty()) {
      MOTA_TRY(check_semver("targeted.fallback_version", t.fallback_version));
      if (t.percent == 100) {
        return bad("targeted.fallback_version", "must be absent when percent is 100");
      }
    }
    c.targeted = std::move(t);
  }

  c.min_version = MOTA_TRY(get_string(j, "min_version", false));
  if (!c.min_version.empty()) {
    MOTA_TRY(check_semver("min_version", c.min_version));
    SemVer min = *SemVer::parse(c.min_version);
    if (*SemVer::parse(c.version) < min) {
      return bad("version", c.version + " is below min_version " + c.min_version);
    }
    if (!c.rollout.fallback_version.empty() && *SemVer::parse(c.rollout.fallback_version) < min) {
      return bad("rollout.fallback_version",
                 c.rollout.fallback_version + " is below min_version " + c.min_version);
    }
    if (c.targeted && *SemVer::parse(c.targeted->version) < min) {
      return bad("targeted.version",
                 c.targeted->version + " is below min_version " + c.min_version);
    }
    if (c.targeted && !c.targeted->fallback_version.empty() &&
        *SemVer::parse(c.targeted->fallback_version) < min) {
      return bad("targeted.fallback_version",
                 c.targeted->fallback_version + " is below min_version " + c.min_version);
    }
  }

  auto ad = j.find("allow_downgrade");
  if (ad != j.end()) {
    if (!ad->is_boolean()) return bad("allow_downgrade", "not a boolean");
    c.allow_downgrade = ad->get<bool>();
  }
  if (auto iw = j.find("install_window"); iw != j.end()) {
    if (!iw->is_array() || iw->empty() || iw->size() > kMaxWindows) {
      return bad("install_window",
                 "not an array of 1.." + std::to_string(kMaxWindows) + " window strings");
    }
    std::vector<std::string> texts;
    for (const auto& w : *iw) {
      if (!w.is_string()) return bad("install_window", "not an array of strings");
      texts.push_back(w.get<std::string>());
    }
    auto set = WindowSet::parse(texts);
    if (!set) return bad("install_window", set.error().message());
    for (const auto& w : set->windows()) c.install_window.push_back(w.text());
  }
  c.updated = MOTA_TRY(get_string(j, "updated", true));
  if (!parse_time(c.updated))
    return bad("updated", "'" + c.updated + "' is not YYYY-MM-DDTHH:MM:SSZ");
  return c;
}

Json Channel::to_json() const {
  Json j = Json::object();
  j["model"] = model;
  j["channel"] = channel;
  j["version"] = version;
  // A channel parsed without "rollout" (everyone, no salt) is written without one: an empty
  // salt would not parse back.
  if (!rollout.salt.empty() || rollout.share_bp() != 10000 || !rollout.fallback_version.empty()) {
    Json ro = Json::object();
    write_share(rollout, ro);
    ro["salt"] = rollout.salt;
    if (!rollout.fallback_version.empty()) ro["fallback_version"] = rollout.fallback_version;
    j["rollout"] = std::move(ro);
  }
  if (targeted) {
    j["targeted"] = Json{
        {"select", targeted->select}, {"version", targeted->version}, {"salt", targeted->salt}};
    write_share(*targeted, j["targeted"]);
    if (!targeted->fallback_version.empty()) {
      j["targeted"]["fallback_version"] = targeted->fallback_version;
    }
  }
  if (!min_version.empty()) j["min_version"] = min_version;
  j["allow_downgrade"] = allow_downgrade;
  if (!install_window.empty()) j["install_window"] = install_window;
  j["updated"] = updated;
  return j;
}

std::string Channel::serialize() const {
  return to_json().dump(2) + "\n";
}

unsigned rollout_bucket(std::string_view salt, std::string_view device_id) {
  std::string input;
  input.reserve(salt.size() + 1 + device_id.size());
  input.append(salt).append(":").append(device_id);
  const std::string hex = crypto::sha256_hex(input);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 16; ++i) {
    char ch = hex[i];
    unsigned d = (ch >= '0' && ch <= '9') ? unsigned(ch - '0') : unsigned(ch - 'a' + 10);
    v = (v << 4) | d;
  }
  return static_cast<unsigned>(v % 10000);
}

namespace {

bool matches(const Targeted& t, const Labels& labels) {
  // Parsed when the channel was: a selector that no longer parses cannot happen; it would
  // match nobody.
  auto sel = Selector::parse(t.select);
  return sel && sel->matches(labels);
}

bool in_sample(const Targeted& t, std::string_view device_id) {
  return t.share_bp() >= 10000 || in_share(t, rollout_bucket(t.salt, device_id));
}

}  // namespace

bool in_target(const Channel& channel, std::string_view device_id, const Labels& labels) {
  return channel.targeted && in_sample(*channel.targeted, device_id) &&
         matches(*channel.targeted, labels);
}

std::string wanted_version(const Channel& channel, std::string_view device_id,
                           const Labels& labels) {
  if (const auto& t = channel.targeted; t && matches(*t, labels)) {
    if (in_sample(*t, device_id)) return t->version;
    if (!t->fallback_version.empty()) return t->fallback_version;
  }
  if (channel.rollout.share_bp() >= 10000) return channel.version;
  if (in_share(channel.rollout, rollout_bucket(channel.rollout.salt, device_id))) {
    return channel.version;
  }
  return channel.rollout.fallback_version;
}

}  // namespace mota
