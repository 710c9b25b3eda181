// json_guard.h: reading JSON that comes from outside (safetensors headers, tokenizer files,
// meta.json, state.json) without trusting its shape, and quoting what it holds in one-line
// error messages.
//
// nlohmann's parser keeps its own stack and its destructor is iterative, but dump(),
// comparisons and copies recurse: a value nested 200,000 levels deep crashes the moment a
// message prints it whole. So nesting is bounded before anything is parsed, and messages
// show a value only one level deep, cut short (json_brief), never dump()ed.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace loom {

// Deeper than any file loom reads needs (a safetensors header is 3 levels, state.json 2).
inline constexpr int kMaxJsonDepth = 64;

// Throws UserError "<source>: <what>: nested deeper than N levels (at byte B)" when the
// brackets of `text` (outside strings) nest deeper than max_depth. Linear, allocation-free;
// run it on untrusted text before parsing.
void check_json_depth(std::string_view text, const std::string& source, const std::string& what,
                      int max_depth = kMaxJsonDepth);

// `text` parsed after check_json_depth: the JSON value, or UserError "<source>: <what>: ..."
// (too deep) or "<source>: not valid JSON: <reason>".
nlohmann::json parse_untrusted_json(std::string_view text, const std::string& source, const std::string& what);

// nlohmann's reason for a failed parse, on one line and short: the position and the problem,
// without the library's "[json.exception...]" tag and without its "last read: '...'" echo of
// the input (which can be the whole of a huge string token, or bytes of a file nobody asked
// to print).
std::string json_error_text(const std::exception& e);

// `s` cut to at most `max` bytes (then "..." and the full length), for names and values
// quoted in messages. Control characters are left to the CLI, which escapes them.
std::string brief(std::string_view s, size_t max = 96);

namespace detail {
// A JSON string literal of at most 40 bytes of `s`, followed by "... (N bytes)" when cut.
std::string json_string_brief(std::string_view s);
template <typename Json>
std::string json_one_brief(const Json& v) {
  if (v.is_array()) return v.empty() ? "[]" : "[...]";
  if (v.is_object()) return v.empty() ? "{}" : "{...}";
  if (v.is_string()) return json_string_brief(v.template get_ref<const std::string&>());
  return v.dump();  // a number, true, false or null: no recursion
}
}  // namespace detail

// A value for a message: scalars as they are (strings cut short), arrays and objects with at
// most their first 4 members, each shown as a scalar or as [...] / {...}. Never recurses.
template <typename Json>
std::string json_brief(const Json& v) {
  constexpr size_t kShown = 4;
  if (!v.is_array() && !v.is_object()) return detail::json_one_brief(v);
  std::string s = v.is_array() ? "[" : "{";
  size_t i = 0;
  for (auto it = v.begin(); it != v.end() && i < kShown; ++it, ++i) {
    if (i) s += ", ";
    if (v.is_object()) s += detail::json_string_brief(it.key()) + ": ";
    s += detail::json_one_brief(*it);
  }
  if (v.size() > kShown) s += ", ... " + std::to_string(v.size() - kShown) + " more";
  return s + (v.is_array() ? "]" : "}");
}

}  // namespace loom
