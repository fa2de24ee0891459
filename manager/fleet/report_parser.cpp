#include "manager/fleet/report_parser.hpp"

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>

#include "common/latency_histogram.hpp"

namespace mota::manager {

namespace {

enum class Field { absent, ok, bad };

// An item as scanned, before the checks (which run in a fixed order once the whole body is known
// to be valid JSON).
struct RawItem {
  bool object = false;
  Field seq = Field::absent;
  bool kind_string = false;
  std::string kind;
  Field body = Field::absent;
  ReportItem item;
};

// A validating JSON scanner over the report, with one routine per place in the report's shape
// (report, batch, item, body, models, model entry) and a generic skip for everything else.
// Grammar as RFC 8259 and nlohmann's lexer: no comments, no trailing commas, strings valid UTF-8
// with escapes (paired surrogates), no raw control characters, numbers that fit a double.
// Every routine returns false on a syntax error (the whole body is then "not a JSON object").
class Scanner {
 public:
  Scanner(std::string_view text, std::size_t max_items)
      : p_(text.data()), end_(text.data() + text.size()), max_items_(max_items) {}

  static constexpr int kMaxDepth = 64;  // nesting levels; agents send 6
  bool too_deep = false;
  bool top_object = false;
  Field device_field = Field::absent;
  std::string device;
  Field batch_field = Field::absent;
  std::size_t batch_count = 0;  // elements of "batch", also those past max_items
  std::vector<RawItem> items;   // the first max_items of them

  bool scan() {
    ws();
    if (p_ == end_) return false;
    if (*p_ != '{') {
      if (!skip_value(0)) return false;
    } else {
      top_object = true;
      const bool ok = members(0, [&](std::string_view key) {
        if (key == "device") {
          device.clear();
          if (*p_ == '"') {
            device_field = Field::ok;
            return string(&device);
          }
          device_field = Field::bad;
        } else if (key == "batch") {
          batch_count = 0;
          items.clear();
          if (*p_ == '[') {
            batch_field = Field::ok;
            return batch();
          }
          batch_field = Field::bad;
        }
        return skip_value(1);
      });
      if (!ok) return false;
    }
    ws();
    return p_ == end_;  // nothing but whitespace after the value
  }

 private:
  bool enter(int depth) {
    if (depth < kMaxDepth) return true;
    too_deep = true;
    return false;
  }

  void ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\n' || *p_ == '\r' || *p_ == '\t')) ++p_;
  }
  bool eat(char c) {
    ws();
    if (p_ < end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }

  // An object's members: `on_member(key)` is called with the scanner at the member's value and
  // must consume it. `depth` is the object's own nesting level.
  template <typename OnMember>
  bool members(int depth, OnMember on_member) {
    if (!enter(depth) || !eat('{')) return false;
    if (eat('}')) return true;
    std::string key_buf;
    do {
      ws();
      std::string_view key;
      if (!key_string(key_buf, key) || !eat(':')) return false;
      ws();
      if (p_ == end_ || !on_member(key)) return false;
    } while (eat(','));
    return eat('}');
  }

  // An array's elements: `on_element()` consumes one value.
  template <typename OnElement>
  bool elements(int depth, OnElement on_element) {
    if (!enter(depth) || !eat('[')) return false;
    if (eat(']')) return true;
    do {
      ws();
      if (p_ == end_ || !on_element()) return false;
    } while (eat(','));
    return eat(']');
  }

  bool batch() {
    return elements(1, [&] {
      ++batch_count;
      const bool keep = items.size() < max_items_;
      if (keep) items.emplace_back().object = *p_ == '{';
      if (keep && *p_ == '{') return item(items.back());
      return skip_value(2);
    });
  }

  bool item(RawItem& r) {
    return members(2, [&](std::string_view key) {
      const char c = *p_;
      if (key == "seq") return seq(r);
      if (key == "kind") {
        r.kind_string = c == '"';
        r.kind.clear();
        return c == '"' ? string(&r.kind) : skip_value(3);
      }
      if (key == "created_at") {
        r.item.created_at.clear();
        return c == '"' ? string(&r.item.created_at) : skip_value(3);
      }
      if (key == "body") {
        if (c != '{') {
          r.body = Field::bad;
          return skip_value(3);
        }
        // A repeated "body" replaces the earlier one, as in a DOM.
        r.body = Field::ok;
        const std::int64_t seq = r.item.seq;
        std::string created = std::move(r.item.created_at);
        r.item = ReportItem{};
        r.item.seq = seq;
        r.item.created_at = std::move(created);
        const char* start = p_;
        if (!body(r.item)) return false;
        r.item.body.assign(start, p_);  // kept as the device sent it
        return true;
      }
      return skip_value(3);
    });
  }

  bool seq(RawItem& r) {
    if (*p_ != '-' && (*p_ < '0' || *p_ > '9')) {
      r.seq = Field::bad;
      return skip_value(3);
    }
    bool integral = false;
    const char* start = p_;
    if (!number(integral)) return false;
    r.seq = Field::bad;
    r.item.seq = 0;
    if (!integral || *start == '-') return true;  // floats, negatives and -0 are not seqs
    std::uint64_t v = 0;
    for (const char* q = start; q < p_; ++q) {
      const std::uint64_t digit = std::uint64_t(*q - '0');
      if (v > (std::uint64_t(std::numeric_limits<std::int64_t>::max()) - digit) / 10) return true;
      v = v * 10 + digit;
    }
    if (v > 0) {
      r.seq = Field::ok;
      r.item.seq = std::int64_t(v);
    }
    return true;
  }

  bool body(ReportItem& it) {
    return members(3, [&](std::string_view key) {
      std::string* s = nullptr;
      std::optional<std::string>* opt = nullptr;
      if (key == "model")
        s = &it.model;
      else if (key == "from")
        s = &it.from;
      else if (key == "to")
        s = &it.to;
      else if (key == "state")
        s = &it.state;
      else if (key == "step")
        s = &it.step;
      else if (key == "error")
        s = &it.error;
      else if (key == "channel")
        s = &it.channel;
      else if (key == "agent_version")
        opt = &it.agent_version;
      else if (key == "arch")
        opt = &it.arch;
      else if (key == "slot")
        opt = &it.slot;
      else if (key == "models") {
        it.models.clear();  // anything but an array: no inventory
        return *p_ == '[' ? models(it.models) : skip_value(4);
      } else if (key == "blocked") {
        it.blocked.reset();  // anything but an array: not reported
        if (*p_ != '[') return skip_value(4);
        return blocked(it.blocked.emplace());
      } else if (key == "labels") {
        it.labels.reset();  // anything but an object: not reported
        if (*p_ != '{') return skip_value(4);
        return labels(it.labels.emplace());
      } else if (key == "field") {
        it.field.clear();  // anything but an array: not reported
        return *p_ == '[' ? field(it.field) : skip_value(4);
      }
      if (s) {
        s->clear();
        return *p_ == '"' ? string(s) : skip_value(4);
      }
      if (opt) {
        opt->reset();
        if (*p_ != '"') return skip_value(4);
        return string(&opt->emplace());
      }
      return skip_value(4);
    });
  }

  bool models(std::vector<ReportModel>& out) {
    return elements(4, [&] {
      if (*p_ != '{') return skip_value(5);
      ReportModel m;
      const bool ok = members(5, [&](std::string_view key) {
        std::string* s = key == "model"     ? &m.model
                         : key == "version" ? &m.version
                         : key == "slot"    ? &m.slot
                         : key == "channel" ? &m.channel
                                            : nullptr;
        if (s) {
          s->clear();
          return *p_ == '"' ? string(s) : skip_value(6);
        }
        if (key == "committed") {
          m.committed = false;
          if (literal("true")) {
            m.committed = true;
            return true;
          }
          return literal("false") || skip_value(6);
        }
        return skip_value(6);
      });
      if (ok && !m.model.empty()) out.push_back(std::move(m));
      return ok;
    });
  }

  bool blocked(std::vector<ReportBlocked>& out) {
    return elements(4, [&] {
      if (*p_ != '{') return skip_value(5);
      ReportBlocked b;
      const bool ok = members(5, [&](std::string_view key) {
        std::string* s = key == "model"     ? &b.model
                         : key == "version" ? &b.version
                         : key == "reason"  ? &b.reason
                         : key == "since"   ? &b.since
                                            : nullptr;
        if (!s) return skip_value(6);
        s->clear();
        return *p_ == '"' ? string(s) : skip_value(6);
      });
      if (ok && !b.model.empty()) out.push_back(std::move(b));
      return ok;
    });
  }

  bool field(std::vector<ReportField>& out) {
    return elements(4, [&] {
      if (*p_ != '{') return skip_value(5);
      ReportField f;
      // Per member, so that a member given twice counts as its last value (as in a DOM).
      bool bad_inferences = false, bad_errors = false, bad_latency = false;
      const bool ok = members(5, [&](std::string_view key) {
        std::string* s = key == "model"     ? &f.model
                         : key == "version" ? &f.version
                         : key == "load"    ? &f.load
                                            : nullptr;
        if (s) {
          s->clear();
          return *p_ == '"' ? string(s) : skip_value(6);
        }
        if (key == "inferences") return count(f.inferences, bad_inferences, 6);
        if (key == "errors") return count(f.errors, bad_errors, 6);
        if (key == "latency") {
          f.latency.clear();
          bad_latency = false;
          if (*p_ != '[') {
            bad_latency = true;
            return skip_value(6);
          }
          return elements(6, [&] {
            if (*p_ != '[') {
              bad_latency = true;
              return skip_value(7);
            }
            std::uint64_t v[2] = {0, 0};
            std::size_t n = 0;
            const bool pair_ok = elements(7, [&] {
              if (n >= 2) {
                bad_latency = true;
                return skip_value(8);
              }
              bool bad = false;
              const bool ok = count(v[n++], bad, 8);
              bad_latency |= bad;
              return ok;
            });
            if (n != 2) bad_latency = true;
            // Bounded while parsing: a histogram has kLatencyBuckets buckets at most.
            if (f.latency.size() >= kLatencyBuckets) {
              bad_latency = true;
            } else {
              f.latency.emplace_back(v[0], v[1]);
            }
            return pair_ok;
          });
        }
        return skip_value(6);
      });
      if (bad_inferences) {
        f.bad = "inferences is not an integer in 0..2^53";
      } else if (bad_errors) {
        f.bad = "errors is not an integer in 0..2^53";
      } else if (bad_latency) {
        f.bad = kBadLatency;
      }
      if (ok && !f.model.empty()) out.push_back(std::move(f));
      return ok;
    });
  }

  // A count: an integer in 0..2^53 (what a JSON number carries exactly); otherwise `bad` is set
  // and the value skipped (at nesting `depth`).
  bool count(std::uint64_t& out, bool& bad, int depth) {
    out = 0;
    bad = false;
    if (p_ >= end_) return false;
    const char* start = p_;
    if (*p_ < '0' || *p_ > '9') {
      bad = true;
      return skip_value(depth);
    }
    bool integral = false;
    if (!number(integral)) return false;
    std::uint64_t v = 0;
    const bool fits = integral && p_ - start <= 16;
    for (const char* q = start; fits && q < p_; ++q) v = v * 10 + std::uint64_t(*q - '0');
    if (!fits || v > (std::uint64_t{1} << 53)) {
      bad = true;
      return true;
    }
    out = v;
    return true;
  }

  bool labels(Labels& out) {
    return members(4, [&](std::string_view key) {
      std::string& v = out[std::string(key)];
      v.clear();
      return *p_ == '"' ? string(&v) : skip_value(5);  // not a string: "", refused later
    });
  }

  // Any value at nesting `depth` (its containers count from there).
  bool skip_value(int depth) {
    if (p_ >= end_) return false;
    switch (*p_) {
      case '{':
        return members(depth, [&](std::string_view) { return skip_value(depth + 1); });
      case '[':
        return elements(depth, [&] { return skip_value(depth + 1); });
      case '"':
        return string(nullptr);
      case 't':
        return literal("true");
      case 'f':
        return literal("false");
      case 'n':
        return literal("null");
      default: {
        bool integral = false;
        return number(integral);
      }
    }
  }

  bool literal(std::string_view word) {
    if (std::size_t(end_ - p_) < word.size() || std::memcmp(p_, word.data(), word.size()) != 0) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  // -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? that is a finite double (nlohmann refuses
  // 1e999). `integral`: no fraction or exponent.
  bool number(bool& integral) {
    const char* start = p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      return p_ > d;
    };
    if (p_ < end_ && *p_ == '-') ++p_;
    if (p_ < end_ && *p_ == '0') {
      ++p_;
    } else if (!digits()) {
      return false;
    }
    integral = true;
    if (p_ < end_ && *p_ == '.') {
      ++p_;
      integral = false;
      if (!digits()) return false;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      integral = false;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (!digits()) return false;
    }
    // Integers up to 19 digits fit an int64/uint64 as nlohmann reads them; anything else is
    // read as a double, which must be finite.
    const std::size_t n = std::size_t(p_ - start);
    if (integral && n <= 19) return true;
    std::string text(start, n);
    return std::isfinite(std::strtod(text.c_str(), nullptr));
  }

  // A member name; `key` views the raw text when it has no escapes, else `buf` decoded.
  bool key_string(std::string& buf, std::string_view& key) {
    if (p_ >= end_ || *p_ != '"') return false;
    const char* start = p_ + 1;
    const char* q = start;
    while (q < end_ && *q != '"' && *q != '\\' && static_cast<unsigned char>(*q) >= 0x20 &&
           static_cast<unsigned char>(*q) < 0x80) {
      ++q;
    }
    if (q < end_ && *q == '"') {
      key = std::string_view(start, std::size_t(q - start));
      p_ = q + 1;
      return true;
    }
    buf.clear();
    if (!string(&buf)) return false;
    key = buf;
    return true;
  }

  // A string; decoded into `out` unless null.
  bool string(std::string* out) {
    if (p_ >= end_ || *p_ != '"') return false;
    ++p_;
    const char* run = p_;  // start of the characters not yet copied to `out`
    auto flush = [&] {
      if (out) out->append(run, p_);
    };
    while (p_ < end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        flush();
        ++p_;
        return true;
      }
      if (c < 0x20) return false;
      if (c == '\\') {
        flush();
        ++p_;
        if (!escape(out)) return false;
        run = p_;
      } else if (c < 0x80) {
        ++p_;
      } else if (!utf8()) {
        return false;
      }
    }
    return false;
  }

  // One UTF-8 sequence at p_ (RFC 3629: no overlongs, no surrogates, at most U+10FFFF).
  bool utf8() {
    const auto b = [&](std::ptrdiff_t i) {
      return p_ + i < end_ ? static_cast<unsigned char>(p_[i]) : 0u;
    };
    const unsigned c = b(0);
    auto cont = [&](std::ptrdiff_t i, unsigned lo = 0x80, unsigned hi = 0xBF) {
      return b(i) >= lo && b(i) <= hi;
    };
    int n = 0;
    if (c >= 0xC2 && c <= 0xDF) {
      n = cont(1) ? 2 : 0;
    } else if (c == 0xE0) {
      n = cont(1, 0xA0) && cont(2) ? 3 : 0;
    } else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) {
      n = cont(1) && cont(2) ? 3 : 0;
    } else if (c == 0xED) {
      n = cont(1, 0x80, 0x9F) && cont(2) ? 3 : 0;
    } else if (c == 0xF0) {
      n = cont(1, 0x90) && cont(2) && cont(3) ? 4 : 0;
    } else if (c >= 0xF1 && c <= 0xF3) {
      n = cont(1) && cont(2) && cont(3) ? 4 : 0;
    } else if (c == 0xF4) {
      n = cont(1, 0x80, 0x8F) && cont(2) && cont(3) ? 4 : 0;
    }
    p_ += n;
    return n > 0;
  }

  bool hex4(unsigned& v) {
    if (end_ - p_ < 4) return false;
    v = 0;
    for (int i = 0; i < 4; ++i) {
      const char h = *p_++;
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= unsigned(h - '0');
      else if (h >= 'a' && h <= 'f')
        v |= unsigned(h - 'a' + 10);
      else if (h >= 'A' && h <= 'F')
        v |= unsigned(h - 'A' + 10);
      else
        return false;
    }
    return true;
  }

  // The escape after a backslash; appends what it stands for to `out` unless null.
  bool escape(std::string* out) {
    if (p_ >= end_) return false;
    const char e = *p_++;
    char plain = 0;
    switch (e) {
      case '"':
        plain = '"';
        break;
      case '\\':
        plain = '\\';
        break;
      case '/':
        plain = '/';
        break;
      case 'b':
        plain = '\b';
        break;
      case 'f':
        plain = '\f';
        break;
      case 'n':
        plain = '\n';
        break;
      case 'r':
        plain = '\r';
        break;
      case 't':
        plain = '\t';
        break;
      case 'u':
        break;
      default:
        return false;
    }
    if (plain != 0) {
      if (out) out->push_back(plain);
      return true;
    }
    unsigned cp = 0;
    if (!hex4(cp)) return false;
    if (cp >= 0xDC00 && cp <= 0xDFFF) return false;  // a low surrogate first
    if (cp >= 0xD800 && cp <= 0xDBFF) {              // a high one: its low one must follow
      unsigned lo = 0;
      if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return false;
      p_ += 2;
      if (!hex4(lo) || lo < 0xDC00 || lo > 0xDFFF) return false;
      cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
    }
    if (out) {
      if (cp < 0x80) {
        out->push_back(char(cp));
      } else if (cp < 0x800) {
        out->push_back(char(0xC0 | (cp >> 6)));
        out->push_back(char(0x80 | (cp & 0x3F)));
      } else if (cp < 0x10000) {
        out->push_back(char(0xE0 | (cp >> 12)));
        out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(char(0x80 | (cp & 0x3F)));
      } else {
        out->push_back(char(0xF0 | (cp >> 18)));
        out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
        out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
        out->push_back(char(0x80 | (cp & 0x3F)));
      }
    }
    return true;
  }

  const char* p_;
  const char* const end_;
  const std::size_t max_items_;
};

Error refused(int status, Errc code, std::string message) {
  return Error(code, std::move(message), status);
}

}  // namespace

// The per-item limits (report_parser.hpp, "Limits"): a reason, or nullopt. `inventory` counts
// the report's inventory and block list entries so far.
std::optional<std::string> report_item_bad_text(const ReportItem& item) {
  // JSON already guarantees valid UTF-8; a name with a control character is no agent's.
  auto bad = [](const std::string& v) {
    return std::any_of(v.begin(), v.end(), [](char c) {
      const auto u = static_cast<unsigned char>(c);
      return u < 0x20 || u == 0x7f;
    });
  };
  for (const auto& [v, name] : {std::pair<const std::string&, const char*>{item.model, "model"},
                                {item.from, "from"},
                                {item.to, "to"},
                                {item.state, "state"},
                                {item.step, "step"},
                                {item.channel, "channel"}}) {
    if (bad(v)) return std::string(".") + name + " contains a control character";
  }
  if (item.slot && bad(*item.slot)) return std::string(".slot contains a control character");
  for (const auto& f : {item.agent_version, item.arch}) {
    if (f && bad(*f)) return std::string(".agent_version/arch contains a control character");
  }
  for (const auto& m : item.models) {
    for (const auto* v : {&m.model, &m.version, &m.slot, &m.channel}) {
      if (bad(*v)) return std::string(".models[] contains a control character");
    }
  }
  if (item.blocked) {
    for (const auto& b : *item.blocked) {
      for (const auto* v : {&b.model, &b.version, &b.since}) {
        if (bad(*v)) return std::string(".blocked[] contains a control character");
      }
    }
  }
  if (item.labels) {
    for (const auto& [k, v] : *item.labels) {
      if (auto ok = check_label(k, v); !ok) return ".labels: " + ok.error().message();
    }
  }
  for (const auto& f : item.field) {
    for (const auto* v : {&f.model, &f.version, &f.load}) {
      if (bad(*v)) return std::string(".field[] contains a control character");
    }
    if (!f.bad.empty()) return ".field[] " + f.model + ": " + f.bad;
    if (auto h = LatencyHistogram::from_sparse(f.latency); !h) {
      return ".field[] " + f.model + ": " + h.error().message();
    }
  }
  return std::nullopt;
}

std::optional<std::string> report_item_over_limits(const ReportItem& item, std::size_t& inventory) {
  auto too_long = [](const std::string& v, const char* name) -> std::optional<std::string> {
    if (v.size() <= kMaxReportField) return std::nullopt;
    return std::string(".") + name + " is " + std::to_string(v.size()) +
           " bytes, over the limit of " + std::to_string(kMaxReportField);
  };
  for (const auto& [v, name] : {std::pair<const std::string&, const char*>{item.model, "model"},
                                {item.from, "from"},
                                {item.to, "to"},
                                {item.state, "state"},
                                {item.step, "step"},
                                {item.channel, "channel"}}) {
    if (auto why = too_long(v, name)) return why;
  }
  if (item.slot) {
    if (auto why = too_long(*item.slot, "slot")) return why;
  }
  for (const auto& f : {item.agent_version, item.arch}) {
    if (f) {
      if (auto why = too_long(*f, "agent_version/arch")) return why;
    }
  }
  if (item.error.size() > kMaxReportError) {
    return ".error is " + std::to_string(item.error.size()) + " bytes, over the limit of " +
           std::to_string(kMaxReportError);
  }
  const std::size_t blocked = item.blocked ? item.blocked->size() : 0;
  if (item.models.size() > kMaxInventory || blocked > kMaxInventory) {
    return ".body lists " + std::to_string(std::max(item.models.size(), blocked)) +
           " models, over the limit of " + std::to_string(kMaxInventory) + " per heartbeat";
  }
  for (const auto& m : item.models) {
    for (const auto* v : {&m.model, &m.version, &m.slot, &m.channel}) {
      if (auto why = too_long(*v, "models[]")) return why;
    }
  }
  if (item.blocked) {
    for (const auto& b : *item.blocked) {
      for (const auto* v : {&b.model, &b.version, &b.since}) {
        if (auto why = too_long(*v, "blocked[]")) return why;
      }
      if (b.reason.size() > kMaxReportError) return ".blocked[].reason is over the limit";
    }
  }
  if (item.field.size() > kMaxInventory) {
    return ".field lists " + std::to_string(item.field.size()) + " models, over the limit of " +
           std::to_string(kMaxInventory) + " per heartbeat";
  }
  for (const auto& f : item.field) {
    for (const auto* v : {&f.model, &f.version, &f.load}) {
      if (auto why = too_long(*v, "field[]")) return why;
    }
  }
  if (item.labels && item.labels->size() > kMaxLabels) {
    return ".labels has " + std::to_string(item.labels->size()) + " labels, over the limit of " +
           std::to_string(kMaxLabels);
  }
  inventory += item.models.size() + blocked + item.field.size();
  if (inventory > kMaxReportInventory) {
    return ": the report's heartbeats list more than " + std::to_string(kMaxReportInventory) +
           " models in all";
  }
  return std::nullopt;
}

Result<Report> parse_report(std::string_view body, std::string_view route_device,
                            std::size_t max_items) {
  Scanner sc(body, max_items);
  const bool valid = sc.scan();
  if (!valid && sc.too_deep) {
    return fail(refused(
        400, Errc::parse,
        "report: JSON nested deeper than " + std::to_string(Scanner::kMaxDepth) + " levels"));
  }
  if (!valid || !sc.top_object) {
    return fail(refused(400, Errc::parse, "report: body is not a JSON object"));
  }
  if (sc.device_field != Field::ok) {
    return fail(refused(400, Errc::parse, "report: \"device\" is missing or not a string"));
  }
  if (sc.device != route_device) {
    return fail(refused(403, Errc::verification,
                        "report: body names device '" + sc.device + "', not the device '" +
                            std::string(route_device) + "' of the route"));
  }
  if (sc.batch_field != Field::ok) {
    return fail(refused(400, Errc::parse, "report: \"batch\" is missing or not an array"));
  }
  if (sc.batch_count > max_items) {
    return fail(refused(413, Errc::too_large,
                        "report: " + std::to_string(sc.batch_count) +
                            " items is over the limit of " + std::to_string(max_items)));
  }
  Report out;
  out.device = std::move(sc.device);
  out.items.reserve(sc.items.size());
  std::size_t inventory = 0;  // inventory and block list entries of the whole report
  std::int64_t prev = 0;
  for (std::size_t i = 0; i < sc.items.size(); ++i) {
    RawItem& r = sc.items[i];
    // The message is built only for a refusal (this loop runs for every item of every report).
    auto bad = [&](const std::string& why) {
      return fail(refused(400, Errc::parse, "report: batch[" + std::to_string(i) + "]" + why));
    };
    if (!r.object) return bad(" is not an object");
    if (r.seq != Field::ok) return bad(".seq is not a positive integer");
    if (r.item.seq <= prev) {
      return bad(".seq " + std::to_string(r.item.seq) + " is not above " + std::to_string(prev) +
                 " (items must be in increasing seq order)");
    }
    prev = r.item.seq;
    if (!r.kind_string || (r.kind != "event" && r.kind != "heartbeat")) {
      return bad(".kind must be \"event\" or \"heartbeat\"");
    }
    if (r.body != Field::ok) return bad(".body is not an object");
    ReportItem& item = r.item;
    item.event = r.kind == "event";
    if (item.event) {
      item.agent_version.reset();
      item.arch.reset();
      item.models.clear();
      item.blocked.reset();
      item.labels.reset();
      item.field.clear();
    } else {
      item.from.clear();
      item.to.clear();
      item.state.clear();
      item.step.clear();
      item.error.clear();
      item.channel.clear();
      item.slot.reset();
    }
    if (auto why = report_item_bad_text(item)) {
      return fail(refused(400, Errc::parse, "report: batch[" + std::to_string(i) + "]" + *why));
    }
    if (auto why = report_item_over_limits(item, inventory)) {
      return fail(refused(413, Errc::too_large, "report: batch[" + std::to_string(i) + "]" + *why));
    }
    out.items.push_back(std::move(item));
  }
  return out;
}

}  // namespace mota::manager
