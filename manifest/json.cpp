#include "manifest/json.hpp"

#include <limits>

namespace mota {

namespace {

std::string field(std::string_view key) {
  return "field '" + std::string(key) + "'";
}

Error wrong_type(std::string_view what, std::string_view want, const Json& got) {
  return Error(Errc::parse, std::string(what) + " must be " + std::string(want) + ", got " +
                                std::string(json_type_name(got)));
}

// The field, nullptr when absent; an error when `object` is not an object.
Result<const Json*> find(const Json& object, std::string_view key) {
  if (!object.is_object()) {
    return fail(Errc::parse, "expected an object with " + field(key) + ", got " +
                                 std::string(json_type_name(object)));
  }
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

}  // namespace

std::string_view json_type_name(const Json& value) {
  switch (value.type()) {
    case Json::value_t::null:
      return "null";
    case Json::value_t::object:
      return "object";
    case Json::value_t::array:
      return "array";
    case Json::value_t::string:
      return "string";
    case Json::value_t::boolean:
      return "boolean";
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
      return "integer";
    case Json::value_t::number_float:
      return "number";
    case Json::value_t::binary:
      return "binary";
    case Json::value_t::discarded:
      return "discarded";
  }
  return "unknown";
}

template <>
Result<std::string> json_as<std::string>(const Json& v, std::string_view what) {
  if (!v.is_string()) return fail(wrong_type(what, "a string", v));
  return v.get_ref<const std::string&>();
}

template <>
Result<bool> json_as<bool>(const Json& v, std::string_view what) {
  if (!v.is_boolean()) return fail(wrong_type(what, "a boolean", v));
  return v.get<bool>();
}

template <>
Result<std::int64_t> json_as<std::int64_t>(const Json& v, std::string_view what) {
  if (v.is_number_unsigned()) {
    const auto u = v.get<std::uint64_t>();
    if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
      return fail(Errc::parse,
                  std::string(what) + " must be an integer within int64, got " + std::to_string(u));
    }
    return static_cast<std::int64_t>(u);
  }
  if (!v.is_number_integer()) return fail(wrong_type(what, "an integer", v));
  return v.get<std::int64_t>();
}

template <>
Result<std::uint64_t> json_as<std::uint64_t>(const Json& v, std::string_view what) {
  if (v.is_number_unsigned()) return v.get<std::uint64_t>();
  if (!v.is_number_integer()) return fail(wrong_type(what, "a non-negative integer", v));
  const auto i = v.get<std::int64_t>();
  if (i < 0) {
    return fail(Errc::parse,
                std::string(what) + " must be a non-negative integer, got " + std::to_string(i));
  }
  return static_cast<std::uint64_t>(i);
}

template <>
Result<double> json_as<double>(const Json& v, std::string_view what) {
  if (!v.is_number()) return fail(wrong_type(what, "a number", v));
  return v.get<double>();
}

template <class T>
Result<T> json_get(const Json& object, std::string_view key) {
  const Json* v = MOTA_TRY(find(object, key));
  if (!v) return fail(Errc::parse, field(key) + " is missing");
  return json_as<T>(*v, field(key));
}

template <class T>
Result<std::optional<T>> json_get_optional(const Json& object, std::string_view key) {
  if (object.is_null()) return std::optional<T>();
  const Json* v = MOTA_TRY(find(object, key));
  if (!v || v->is_null()) return std::optional<T>();
  return std::optional<T>(MOTA_TRY(json_as<T>(*v, field(key))));
}

template <class T>
T json_get_or(const Json& object, std::string_view key, T fallback) {
  auto v = json_get_optional<T>(object, key);
  return v && *v ? std::move(**v) : std::move(fallback);
}

Result<const Json*> json_get_object(const Json& object, std::string_view key) {
  const Json* v = MOTA_TRY(find(object, key));
  if (!v) return fail(Errc::parse, field(key) + " is missing");
  if (!v->is_object()) return fail(wrong_type(field(key), "an object", *v));
  return v;
}

Result<const Json*> json_get_array(const Json& object, std::string_view key) {
  const Json* v = MOTA_TRY(find(object, key));
  if (!v) return fail(Errc::parse, field(key) + " is missing");
  if (!v->is_array()) return fail(wrong_type(field(key), "an array", *v));
  return v;
}

#define MOTA_JSON_TYPE(T)                                                                \
  template Result<T> json_get<T>(const Json&, std::string_view);                         \
  template Result<std::optional<T>> json_get_optional<T>(const Json&, std::string_view); \
  template T json_get_or<T>(const Json&, std::string_view, T);
MOTA_JSON_TYPE(std::string)
MOTA_JSON_TYPE(bool)
MOTA_JSON_TYPE(std::int64_t)
MOTA_JSON_TYPE(std::uint64_t)
MOTA_JSON_TYPE(double)
#undef MOTA_JSON_TYPE

}  // namespace mota
