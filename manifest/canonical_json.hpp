#pragma once
// Canonical JSON as TUF signs it (the OLPC form used by securesystemslib):
// objects with keys sorted by their UTF-8 bytes, no insignificant whitespace, strings with only
// '"' and '\\' escaped (all other bytes, including control characters and non-ASCII, verbatim),
// integers only. Floats and other non-integral numbers cannot be canonicalised:
// Errc::invalid_argument.

#include <nlohmann/json.hpp>
#include <string>

#include "common/result.hpp"

namespace mota {

using Json = nlohmann::json;

Result<std::string> canonical_json(const Json& value);

// Parses untrusted JSON text: Errc::parse with position on malformed input, Errc::too_large for
// input over max_bytes or nested deeper than 64 levels. Duplicate object keys are rejected (two
// parsers may otherwise disagree on which one counts).
Result<Json> parse_json(std::string_view text, std::size_t max_bytes = 16u << 20);

}  // namespace mota
