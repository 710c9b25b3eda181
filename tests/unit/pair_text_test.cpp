// pair_text_test.cpp: the text side of decoding pair checkpoints (launch/run/pair_decode.h):
// sources with sentinel markers to tokens, tokens back to text, and every decode on one line.
#include <gtest/gtest.h>

#include "engine/data/tokenizer.h"
#include "launch/run/pair_decode.h"
#include "tests/support/helpers.h"

namespace loom::test {
namespace {

TEST(PairText, SentinelsRoundTripAndOtherMarkersStayText) {
  const auto tok = make_tokenizer("byte");
  const PairVocab v{.base = 256, .sentinels = 3};
  const std::vector<int32_t> ids = encode_source("In<s0> the<s2>.<s3><s>", *tok, v, 64, "--source");
  // <s3> is past the 3 sentinels and <s> has no number: both are text.
  std::vector<int32_t> expect = {'I', 'n', 259, ' ', 't', 'h', 'e', 261, '.'};
  for (char c : std::string("<s3><s>")) expect.push_back(c);
  expect.push_back(258);  // EOS
  EXPECT_EQ(ids, expect);
  const std::vector<int32_t> no_eos(ids.begin(), ids.end() - 1);
  EXPECT_EQ(pair_text(no_eos, *tok, v), "In<s0> the<s2>.<s3><s>");
  EXPECT_EQ(encode_source(pair_text(no_eos, *tok, v), *tok, v, 64, "x"), ids);  // printed text reads back
  const std::vector<int32_t> extra = {256, 'a', 257, 258};
  EXPECT_EQ(pair_text(extra, *tok, v), "<pad>a<bos><eos>");
  expect_user_error([&] { encode_source("", *tok, v, 64, "f.txt:3"); }, {"f.txt:3", "no tokens"});
  expect_user_error([&] { encode_source("abcd", *tok, v, 4, "f.txt:4"); }, {"f.txt:4", "model.src_len = 4"}, "f.txt:4");
  EXPECT_EQ(encode_source("abc", *tok, v, 4, "x").size(), 4u);  // EOS fits exactly
}

TEST(PairText, FilledTextPutsEachSpanInItsGap) {
  const auto tok = make_tokenizer("byte");
  const PairVocab v{.base = 256, .sentinels = 3};
  const auto ids = [&](std::string_view text) {
    std::vector<int32_t> out = encode_source(text, *tok, v, 200, "x");
    out.pop_back();  // EOS
    return out;
  };
  const auto source = ids("For<s1> are our<s0> and joy<s2>");
  EXPECT_EQ(filled_text(source, ids("<s0> glory<s1> ye<s2>."), *tok, v), "For [ye] are our [glory] and joy[.]");
  // Spans in another order, one missing, one empty, and one the source has no gap for.
  EXPECT_EQ(filled_text(source, ids("<s2>!<s0><s1>  ye all"), *tok, v), "For  [ye all] are our[] and joy[!]");
  EXPECT_EQ(filled_text(source, ids("<s1> x"), *tok, v), "For [x] are our[] and joy[]");
  EXPECT_EQ(filled_text(ids("no gaps"), ids("<s0> y"), *tok, v), "no gaps");
  EXPECT_EQ(filled_text(ids("<s0>"), ids("<s0>x<s0>y"), *tok, v), "[x]");  // the first span K counts
}

TEST(PairText, OneLineEscapesControlsAndBytesThatAreNotUtf8) {
  EXPECT_EQ(one_line("a\\b\nc\td\re"), "a\\\\b\\nc\\td\\re");
  EXPECT_EQ(one_line("caf\xC3\xA9 \xE2\x82\xAC"), "caf\xC3\xA9 \xE2\x82\xAC");  // UTF-8 stays
  EXPECT_EQ(one_line("x\xC3"), "x\\xC3");                                     // cut character
  EXPECT_EQ(one_line("\xFF" "a\xC0\xAF"), "\\xFFa\\xC0\\xAF");                 // never UTF-8, overlong
}

TEST(PairText, VocabularyOfACheckpoint) {
  const auto tok = make_tokenizer("byte");
  ModelConfig c;
  c.vocab = 256 + 3 + 100;
  const PairVocab v = pair_vocab_of(c, *tok);
  EXPECT_EQ(v.base, 256u);
  EXPECT_EQ(v.sentinels, 100u);
  EXPECT_EQ(v.eos(), 258u);
  c.vocab = 257;
  expect_user_error([&] { pair_vocab_of(c, *tok); }, {"not a checkpoint of pairs"});
}

}  // namespace
}  // namespace loom::test
