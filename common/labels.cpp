#include "common/labels.hpp"

#include <algorithm>

#include "common/text.hpp"

namespace mota {

namespace {

bool alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool key_char(char c) {
  return alnum(c) || c == '.' || c == '_' || c == '/' || c == '-';
}
bool value_char(char c) {
  return alnum(c) || c == '.' || c == '_' || c == ':' || c == '+' || c == '-';
}
bool space(char c) {
  return c == ' ' || c == '\t';
}

// A cursor over one selector; every error names the requirement it is in.
class Parser {
 public:
  explicit Parser(std::string_view text) : s_(text) {}

  Result<std::vector<Requirement>> run() {
    std::vector<Requirement> out;
    skip();
    if (i_ == s_.size()) return fail(Errc::invalid_argument, "empty selector");
    while (true) {
      start_ = i_;
      if (out.size() == kMaxRequirements) {
        return fail(Errc::invalid_argument,
                    "more than " + std::to_string(kMaxRequirements) + " requirements");
      }
      out.push_back(MOTA_TRY(requirement(out.size() + 1)));
      skip();
      if (i_ == s_.size()) return out;
      if (s_[i_] != ',') return error(out.size(), "expected ',' or the end");
      ++i_;
      skip();
    }
  }

 private:
  Result<Requirement> requirement(std::size_t n) {
    Requirement r;
    bool negated = false;
    if (peek('!')) {
      ++i_;
      skip();
      negated = true;
    }
    r.key = word(key_char);
    if (r.key.empty()) return error(n, "expected a label key");
    if (!valid_label_key(r.key)) return error(n, "invalid label key \"" + r.key + "\"");
    skip();
    if (negated) {
      r.op = Requirement::Op::not_exists;
      return r;
    }
    if (i_ == s_.size() || s_[i_] == ',') {
      r.op = Requirement::Op::exists;
      return r;
    }
    if (peek('!') && i_ + 1 < s_.size() && s_[i_ + 1] == '=') {
      i_ += 2;
      r.op = Requirement::Op::not_equals;
    } else if (peek('=')) {
      i_ += (i_ + 1 < s_.size() && s_[i_ + 1] == '=') ? 2 : 1;
      r.op = Requirement::Op::equals;
    } else {
      const std::string op = word(alnum);
      if (op == "in") {
        r.op = Requirement::Op::in;
      } else if (op == "notin") {
        r.op = Requirement::Op::not_in;
      } else {
        return error(n, "expected =, ==, !=, in or notin after \"" + r.key + "\"");
      }
      skip();
      if (!peek('(')) return error(n, "expected '(' after " + op);
      ++i_;
      while (true) {
        skip();
        std::string v = MOTA_TRY(value(n));
        if (r.values.size() == kMaxSetValues) {
          return error(n, "more than " + std::to_string(kMaxSetValues) + " values");
        }
        r.values.push_back(std::move(v));
        skip();
        if (peek(',')) {
          ++i_;
          continue;
        }
        if (peek(')')) {
          ++i_;
          break;
        }
        return error(n, "expected ',' or ')' in the set");
      }
      std::sort(r.values.begin(), r.values.end());
      r.values.erase(std::unique(r.values.begin(), r.values.end()), r.values.end());
      return r;
    }
    skip();
    r.values.push_back(MOTA_TRY(value(n)));
    return r;
  }

  Result<std::string> value(std::size_t n) {
    std::string v = word(value_char);
    if (v.empty()) return error(n, "expected a label value");
    if (!valid_label_value(v)) return error(n, "invalid label value \"" + v + "\"");
    return v;
  }

  template <class Pred>
  std::string word(Pred pred) {
    const std::size_t from = i_;
    while (i_ < s_.size() && pred(s_[i_])) ++i_;
    return std::string(s_.substr(from, i_ - from));
  }
  bool peek(char c) const { return i_ < s_.size() && s_[i_] == c; }
  void skip() {
    while (i_ < s_.size() && space(s_[i_])) ++i_;
  }
  tl::unexpected<Error> error(std::size_t n, const std::string& what) const {
    std::size_t end = s_.find(',', start_);
    if (end == std::string_view::npos || end < i_) end = std::min(s_.size(), i_ + 1);
    const std::string_view near = s_.substr(start_, std::min<std::size_t>(end - start_, 80));
    std::string at = i_ < s_.size() ? "at byte " + std::to_string(i_ + 1) : "at the end";
    return fail(Errc::invalid_argument, "requirement " + std::to_string(n) + " \"" +
                                            printable(near) + "\" (" + at + "): " + what);
  }

  std::string_view s_;
  std::size_t i_ = 0;
  std::size_t start_ = 0;
};

}  // namespace

bool valid_label_key(std::string_view key) {
  if (key.empty() || key.size() > kMaxLabelBytes) return false;
  if (!alnum(key.front()) || !alnum(key.back())) return false;
  return std::all_of(key.begin(), key.end(), key_char);
}

bool valid_label_value(std::string_view value) {
  if (value.empty() || value.size() > kMaxLabelBytes) return false;
  return std::all_of(value.begin(), value.end(), value_char);
}

Status check_label(std::string_view key, std::string_view value) {
  if (!valid_label_key(key)) {
    return fail(Errc::invalid_argument,
                "label key \"" + printable(key.substr(0, 80)) +
                    "\": 1 to 63 of A-Z a-z 0-9 . _ / -, starting and ending with a letter or "
                    "digit");
  }
  if (!valid_label_value(value)) {
    return fail(Errc::invalid_argument, "label " + std::string(key) + " value \"" +
                                            printable(value.substr(0, 80)) +
                                            "\": 1 to 63 of A-Z a-z 0-9 . _ : + -");
  }
  return {};
}

Labels merge_labels(const Labels& base, const Labels& over) {
  Labels out = base;
  for (const auto& [k, v] : over) out[k] = v;
  return out;
}

Result<Selector> Selector::parse(std::string_view text) {
  if (text.size() > kMaxSelectorBytes) {
    return fail(Errc::invalid_argument,
                "selector longer than " + std::to_string(kMaxSelectorBytes) + " bytes");
  }
  Selector s;
  s.reqs_ = MOTA_TRY(Parser(text).run());
  return s;
}

bool Selector::matches(const Labels& labels) const {
  for (const auto& r : reqs_) {
    const auto it = labels.find(r.key);
    const bool has = it != labels.end();
    const auto in_set = [&] {
      return has && std::binary_search(r.values.begin(), r.values.end(), it->second);
    };
    bool ok = false;
    switch (r.op) {
      case Requirement::Op::equals:
        ok = has && it->second == r.values.front();
        break;
      case Requirement::Op::not_equals:
        ok = !has || it->second != r.values.front();
        break;
      case Requirement::Op::in:
        ok = in_set();
        break;
      case Requirement::Op::not_in:
        ok = !in_set();
        break;
      case Requirement::Op::exists:
        ok = has;
        break;
      case Requirement::Op::not_exists:
        ok = !has;
        break;
    }
    if (!ok) return false;
  }
  return true;
}

std::string Selector::text() const {
  std::string out;
  for (const auto& r : reqs_) {
    if (!out.empty()) out += ',';
    switch (r.op) {
      case Requirement::Op::equals:
        out += r.key + "=" + r.values.front();
        break;
      case Requirement::Op::not_equals:
        out += r.key + "!=" + r.values.front();
        break;
      case Requirement::Op::in:
      case Requirement::Op::not_in: {
        out += r.key + (r.op == Requirement::Op::in ? " in (" : " notin (");
        for (std::size_t i = 0; i < r.values.size(); ++i) out += (i ? "," : "") + r.values[i];
        out += ')';
        break;
      }
      case Requirement::Op::exists:
        out += r.key;
        break;
      case Requirement::Op::not_exists:
        out += "!" + r.key;
        break;
    }
  }
  return out;
}

}  // namespace mota
