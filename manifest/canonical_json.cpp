#include "manifest/canonical_json.hpp"

#include <optional>
#include <string_view>
#include <vector>

namespace mota {

namespace {

constexpr std::size_t kMaxDepth = 64;

// Appends `s` in securesystemslib's string form: only '\\' and '"' are escaped.
void append_string(std::string& out, const std::string& s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
}

Status encode(const Json& v, std::string& out, std::size_t depth) {
  // Values built in code are not depth-limited by parse_json; this keeps recursion bounded.
  if (depth > kMaxDepth) {
    return fail(Errc::invalid_argument, "canonical JSON: nested deeper than 64 levels");
  }
  switch (v.type()) {
    case Json::value_t::null:
      out += "null";
      return {};
    case Json::value_t::boolean:
      out += v.get<bool>() ? "true" : "false";
      return {};
    case Json::value_t::number_integer:
      out += std::to_string(v.get<std::int64_t>());
      return {};
    case Json::value_t::number_unsigned:
      out += std::to_string(v.get<std::uint64_t>());
      return {};
    case Json::value_t::number_float:
      return fail(Errc::invalid_argument,
                  "canonical JSON: non-integer number " + v.dump() + " cannot be canonicalised");
    case Json::value_t::string:
      append_string(out, v.get_ref<const std::string&>());
      return {};
    case Json::value_t::array: {
      out += '[';
      bool first = true;
      for (const auto& e : v) {
        if (!first) out += ',';
        first = false;
        MOTA_TRY(encode(e, out, depth + 1));
      }
      out += ']';
      return {};
    }
    case Json::value_t::object: {
      // nlohmann's object_t is a std::map<std::string, ...>; std::string compares as unsigned
      // char, so iteration order is exactly "sorted by UTF-8 bytes".
      out += '{';
      bool first = true;
      for (const auto& [k, e] : v.items()) {
        if (!first) out += ',';
        first = false;
        append_string(out, k);
        out += ':';
        MOTA_TRY(encode(e, out, depth + 1));
      }
      out += '}';
      return {};
    }
    case Json::value_t::binary:
      return fail(Errc::invalid_argument, "canonical JSON: binary values cannot be canonicalised");
    case Json::value_t::discarded:
      return fail(Errc::invalid_argument, "canonical JSON: discarded value");
  }
  return fail(Errc::internal, "canonical JSON: unknown value type");
}

// Builds the DOM from nlohmann's SAX events so that duplicate keys and excessive depth can be
// rejected (the DOM parser silently keeps the last duplicate).
class StrictBuilder {
 public:
  using number_integer_t = Json::number_integer_t;
  using number_unsigned_t = Json::number_unsigned_t;
  using number_float_t = Json::number_float_t;
  using string_t = Json::string_t;
  using binary_t = Json::binary_t;

  bool null() { return put(Json(nullptr)) != nullptr; }
  bool boolean(bool v) { return put(Json(v)) != nullptr; }
  bool number_integer(number_integer_t v) { return put(Json(v)) != nullptr; }
  bool number_unsigned(number_unsigned_t v) { return put(Json(v)) != nullptr; }
  bool number_float(number_float_t v, const string_t&) { return put(Json(v)) != nullptr; }
  bool string(string_t& v) { return put(Json(std::move(v))) != nullptr; }
  bool binary(binary_t&) {
    error_ = Error(Errc::parse, "binary values are not JSON");
    return false;
  }

  bool start_object(std::size_t) { return open(Json::object()); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open(Json::array()); }
  bool end_array() { return close(); }

  bool key(string_t& k) {
    Json& obj = *stack_.back();
    if (obj.contains(k)) {
      error_ = Error(Errc::parse, "duplicate object key \"" + k + "\" at " + where());
      return false;
    }
    keys_.back() = k;
    return true;
  }

  bool parse_error(std::size_t, const std::string&, const Json::exception& ex) {
    // nlohmann's message carries line and column ("parse error at line 1, column 7: ...").
    std::string msg = ex.what();
    if (auto p = msg.find("] "); msg.rfind("[json.exception", 0) == 0 && p != std::string::npos) {
      msg.erase(0, p + 2);
    }
    error_ = Error(Errc::parse, std::move(msg));
    return false;
  }

  Json take() { return std::move(root_); }
  const std::optional<Error>& error() const { return error_; }

 private:
  // Inserts a value into the innermost open container; returns its address (stable, since only
  // the innermost container is ever modified while it stays open).
  Json* put(Json v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return &root_;
    }
    Json& top = *stack_.back();
    if (top.is_array()) {
      top.push_back(std::move(v));
      return &top.back();
    }
    Json& slot = top[keys_.back()];
    slot = std::move(v);
    return &slot;
  }

  bool open(Json container) {
    if (stack_.size() >= kMaxDepth) {
      error_ = Error(Errc::too_large, "JSON nested deeper than 64 levels");
      return false;
    }
    Json* p = put(std::move(container));
    stack_.push_back(p);
    keys_.emplace_back();
    return true;
  }

  bool close() {
    stack_.pop_back();
    keys_.pop_back();
    return true;
  }

  // A JSON-pointer-like location of the innermost container, for error messages.
  std::string where() const {
    std::string out;
    for (std::size_t i = 0; i + 1 < stack_.size(); ++i) {
      out += '/';
      if (stack_[i]->is_array()) {
        out += std::to_string(stack_[i]->size() - 1);
      } else {
        out += keys_[i];
      }
    }
    return out.empty() ? std::string("top level") : out;
  }

  Json root_;
  std::vector<Json*> stack_;
  std::vector<std::string> keys_;  // current key of each open object (unused for arrays)
  std::optional<Error> error_;
};

}  // namespace

Result<std::string> canonical_json(const Json& value) {
  std::string out;
  MOTA_TRY(encode(value, out, 0));
  return out;
}

Result<Json> parse_json(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes) {
    return fail(Errc::too_large, "JSON document of " + std::to_string(text.size()) +
                                     " bytes exceeds the limit of " + std::to_string(max_bytes));
  }
  StrictBuilder builder;
  bool ok = false;
  try {
    ok = Json::sax_parse(text.begin(), text.end(), &builder, Json::input_format_t::json,
                         /*strict=*/true, /*ignore_comments=*/false);
  } catch (const std::exception& e) {
    // The SAX parser reports through parse_error(); this only catches allocation failure.
    return fail(Errc::parse, std::string("JSON: ") + e.what());
  }
  if (!ok || builder.error()) {
    if (builder.error()) return fail(*builder.error());
    return fail(Errc::parse, "malformed JSON");
  }
  return builder.take();
}

}  // namespace mota
