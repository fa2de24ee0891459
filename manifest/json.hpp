#pragma once
// Typed reads of untrusted JSON (device-side files, network answers, signed custom data) that
// never throw: nlohmann's value(), get<>() and at() throw type_error/out_of_range on a field of
// another type or a missing one, which would escape the caller's Result. Every read here checks
// the type first and answers an Error that names the field and what it got:
//   "field 'seq' must be an integer, got string"
//   "field 'seq' is missing"
//   "expected an object with field 'seq', got array"
// (Errc::parse). Integers: a float is not one (3.0 included); std::uint64_t refuses negatives and
// std::int64_t values above INT64_MAX ("must be a non-negative integer" / "... within int64").
//
// Supported T: std::string, bool, std::int64_t, std::uint64_t, double (any number).
// Thread-safety: pure functions.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"
#include "manifest/canonical_json.hpp"

namespace mota {

// "string", "integer", "number" (a float), "boolean", "object", "array", "null", "binary".
std::string_view json_type_name(const Json& value);

// `value` itself as T; `what` names it in the message ("field 'seq'", "the answer").
template <class T>
Result<T> json_as(const Json& value, std::string_view what);

template <>
Result<std::string> json_as<std::string>(const Json& value, std::string_view what);
template <>
Result<bool> json_as<bool>(const Json& value, std::string_view what);
template <>
Result<std::int64_t> json_as<std::int64_t>(const Json& value, std::string_view what);
template <>
Result<std::uint64_t> json_as<std::uint64_t>(const Json& value, std::string_view what);
template <>
Result<double> json_as<double>(const Json& value, std::string_view what);

// Field `key` of `object` as T. Errors: `object` not an object, the field missing, another type.
template <class T>
Result<T> json_get(const Json& object, std::string_view key);

// Field `key` of `object` as T, or nullopt when absent or null. Errors: `object` neither an
// object nor null, the field of another type.
template <class T>
Result<std::optional<T>> json_get_optional(const Json& object, std::string_view key);

// Field `key` of `object` as T, or `fallback` when absent, null or of another type. For fields
// whose absence and malformation mean the same (a best-effort display, a documented default).
template <class T>
T json_get_or(const Json& object, std::string_view key, T fallback);

// Field `key` of `object` when it is an object (resp. array): a pointer into `object`. Errors as
// json_get.
Result<const Json*> json_get_object(const Json& object, std::string_view key);
Result<const Json*> json_get_array(const Json& object, std::string_view key);

}  // namespace mota
