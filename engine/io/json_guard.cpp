// json_guard.cpp: bounded nesting and bounded quoting of untrusted JSON (see json_guard.h).
#include "engine/io/json_guard.h"

#include <algorithm>

#include "core/check.h"

namespace loom {

void check_json_depth(std::string_view text, const std::string& source, const std::string& what, int max_depth) {
  // Brackets inside strings do not nest; a backslash escapes the next byte (so \" stays in the
  // string). On valid JSON this is exactly the parser's nesting; on invalid JSON the parser
  // stops at the first error, before any nesting this scan would have missed.
  int depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (c == '\\')
        ++i;
      else if (c == '"')
        in_string = false;
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth)
        user_error(source, ": ", what, ": nested deeper than ", max_depth, " levels (at byte ", i, ")");
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
}

nlohmann::json parse_untrusted_json(std::string_view text, const std::string& source, const std::string& what) {
  check_json_depth(text, source, what);
  try {
    return nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    user_error(source, ": not valid JSON: ", json_error_text(e));
  }
}

std::string json_error_text(const std::exception& e) {
  std::string s = e.what();
  // "[json.exception.parse_error.101] parse error at line 1, column 3: ...; last read: '...'"
  if (s.rfind("[json.exception.", 0) == 0) {
    const size_t end = s.find("] ");
    if (end != std::string::npos) s.erase(0, end + 2);
  }
  if (const size_t echo = s.find("; last read:"); echo != std::string::npos) s.erase(echo);
  std::replace_if(s.begin(), s.end(), [](char c) { return c == '\n' || c == '\r'; }, ' ');
  return brief(s, 200);
}

std::string brief(std::string_view s, size_t max) {
  if (s.size() <= max) return std::string(s);
  return std::string(s.substr(0, max)) + "... (" + std::to_string(s.size()) + " bytes)";
}

namespace detail {

std::string json_string_brief(std::string_view s) {
  constexpr size_t kMax = 40;
  // replace: a cut through a UTF-8 character (or a string that was never UTF-8) prints as
  // U+FFFD instead of throwing from inside an error message.
  const std::string lit =
      nlohmann::json(std::string(s.substr(0, std::min(s.size(), kMax)))).dump(-1, ' ', false,
                                                                             nlohmann::json::error_handler_t::replace);
  return s.size() <= kMax ? lit : lit + "... (" + std::to_string(s.size()) + " bytes)";
}

}  // namespace detail

}  // namespace loom
