// pair_decode_e2e_test.cpp: decoding and evaluating a sequence-to-sequence checkpoint from the
// CLI, on a small encdec trained briefly on the synthetic sorting task: `loom sample
// --source/--source-file` (greedy, sampled, beam search and n-best; beam 1 equals greedy; each
// beam hypothesis's score is the model's log-probability of its tokens by a separate
// teacher-forced forward pass), `loom eval` on pairs (loss, exact match, token accuracies and
// BLEU/chrF recomputed by hand or by `loom score` from what it writes), and bad inputs as
// one-line errors.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/rng.h"
#include "engine/data/pairs.h"

#include "engine/backend/device.h"
#include "engine/data/tokenizer.h"
#include "engine/graph/executor.h"
#include "engine/optim/weights.h"
#include "launch/run/checkpoint.h"
#include "launch/run/pair_decode.h"
#include "tests/support/helpers.h"
#include "tests/support/pair_tasks.h"
#include "tests/support/seeded_test.h"

namespace loom::test {
namespace {

class PairDecoding : public ::testing::Test {
 protected:
  // Undertrained on purpose: its decodes are neither all right nor all wrong, and beams differ.
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    data_ = new std::string(prepare_pairs(*dir_, "sort", 1000));
    std::ofstream(d("sort.toml")) << encdec_config(*data_, d("run"), 120, "positions = \"learned\"\n");
    const RunResult r = run_loom({"train", "--config", d("sort.toml")});
    ASSERT_EQ(r.rc, 0) << r.err;
    // The val pairs (the last 100 lines of the TSV) as source and target text.
    const auto lines = split_lines(read_bytes(d("sort.tsv")));
    ASSERT_EQ(lines.size(), 1000u);
    sources_ = new std::vector<std::string>, targets_ = new std::vector<std::string>;
    for (size_t i = 900; i < lines.size(); ++i) {
      const auto f = split_lines(lines[i], '\t');
      sources_->push_back(f.at(0));
      targets_->push_back(f.at(1));
    }
  }
  static void TearDownTestSuite() {
    delete dir_, delete data_, delete sources_, delete targets_;
  }
  static std::string d(const std::string& s) { return *dir_ / s; }
  static RunResult sample(std::vector<std::string> extra) {
    std::vector<std::string> args = {"sample", "--checkpoint", d("run")};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  }
  // The first n val sources written one per line.
  static std::string source_file(size_t n) {
    std::string text;
    for (size_t i = 0; i < n; ++i) text += (*sources_)[i] + "\n";
    write_bytes(d("sources.txt"), text);
    return d("sources.txt");
  }
  static TempDir* dir_;
  static std::string* data_;
  static std::vector<std::string>*sources_, *targets_;
};
TempDir* PairDecoding::dir_ = nullptr;
std::string* PairDecoding::data_ = nullptr;
std::vector<std::string>* PairDecoding::sources_ = nullptr;
std::vector<std::string>* PairDecoding::targets_ = nullptr;

// The model's log-probability of `tokens` (EOS included where the decode ended) after a
// source, from the Eval graph over the whole teacher-forced target at once (one row): the
// graph's loss is the sum of -log p over the real target tokens divided by B x T.
class TeacherForced {
 public:
  TeacherForced(const CheckpointData& ck, const PairVocab& v)
      : c_(ck.model), v_(v), be_(make_cpu_backend()),
        eg_(build_model(c_, GraphMode::Eval, 1, c_.seq_len, be_->float_dtype())), w_(*be_, eg_.g.param_count) {
    w_.upload(ck.params);
    ex_ = std::make_unique<Executor>(eg_.g, *be_);
    ex_->bind_params(w_.graph_params(), nullptr);
  }
  double log_prob(const std::vector<int32_t>& source, const std::vector<int32_t>& tokens) {
    const auto pad = static_cast<int32_t>(v_.pad());
    std::vector<int32_t> src(c_.src_len, pad), len{static_cast<int32_t>(source.size())}, input(c_.seq_len, pad),
        target(c_.seq_len, kIgnoreTarget);
    std::copy(source.begin(), source.end(), src.begin());
    input[0] = static_cast<int32_t>(v_.bos());
    for (size_t t = 0; t < tokens.size(); ++t) {
      target[t] = tokens[t];
      if (t + 1 < static_cast<size_t>(c_.seq_len)) input[t + 1] = tokens[t];
    }
    ex_->set_input(eg_.source, src.data(), src.size() * 4);
    ex_->set_input(eg_.source_len, len.data(), 4);
    ex_->set_input(eg_.tokens, input.data(), input.size() * 4);
    ex_->set_input(eg_.targets, target.data(), target.size() * 4);
    ex_->forward();
    return -static_cast<double>(ex_->fetch_f32(eg_.loss)[0]) * c_.seq_len;
  }

 private:
  ModelConfig c_;
  PairVocab v_;
  std::unique_ptr<Backend> be_;
  ModelGraph eg_;
  DeviceWeights w_;
  std::unique_ptr<Executor> ex_;
};

TEST_F(PairDecoding, SourcesFromTheCliBeamOneIsGreedyNBestSorted) {
  const std::string file = source_file(16);
  const RunResult greedy = sample({"--source-file", file, "--greedy"});
  ASSERT_EQ(greedy.rc, 0) << greedy.err;
  const RunResult beam1 = sample({"--source-file", file, "--beam", "1"});
  ASSERT_EQ(beam1.rc, 0) << beam1.err;
  EXPECT_EQ(split_lines(greedy.out).size(), 16u) << greedy.out;  // one line per source
  EXPECT_EQ(beam1.out, greedy.out);
  // --source alone prints the same line as the file's first.
  const RunResult one = sample({"--source", (*sources_)[0], "--greedy"});
  ASSERT_EQ(one.rc, 0) << one.err;
  EXPECT_EQ(one.out, split_lines(greedy.out)[0] + "\n");
  // The decodes are the model's own: some right, some wrong (an undertrained model).
  int right = 0;
  for (size_t i = 0; i < 16; ++i) right += split_lines(greedy.out)[i] == (*targets_)[i];
  EXPECT_LT(right, 16);
  // Sampling: a seed fixes the output; with a low temperature it is the greedy decode.
  const RunResult s1 = sample({"--source-file", file, "--seed", "3", "--top-k", "4"});
  const RunResult s2 = sample({"--source-file", file, "--seed", "3", "--top-k", "4"});
  ASSERT_EQ(s1.rc, 0) << s1.err;
  EXPECT_EQ(s1.out, s2.out);
  EXPECT_EQ(split_lines(s1.out).size(), 16u);
  const RunResult cold = sample({"--source-file", file, "--temperature", "1e-6"});
  ASSERT_EQ(cold.rc, 0) << cold.err;
  EXPECT_EQ(cold.out, greedy.out);
  // n-best: a line per hypothesis, source number, rank, score, text, best first.
  {
  const std::string file3 = source_file(3);
  const RunResult best = sample({"--source-file", file3, "--beam", "3"});
  ASSERT_EQ(best.rc, 0) << best.err;
  const RunResult all = sample({"--source-file", file3, "--beam", "3", "--n-best", "3", "--length-penalty", "0.6"});
  ASSERT_EQ(all.rc, 0) << all.err;
  const RunResult all0 = sample({"--source-file", file3, "--beam", "3", "--n-best", "3"});
  ASSERT_EQ(all0.rc, 0) << all0.err;
  for (const RunResult* r : {&all, &all0}) {
    const auto lines = split_lines(r->out);
    ASSERT_EQ(lines.size(), 9u) << r->out;
    for (size_t i = 0; i < lines.size(); ++i) {
      const auto f = split_lines(lines[i], '\t');
      ASSERT_GE(f.size(), 3u) << lines[i];  // source, rank, score, text (empty text: no 4th field)
      EXPECT_EQ(f[0], std::to_string(i / 3 + 1));
      EXPECT_EQ(f[1], std::to_string(i % 3 + 1));
      if (i % 3 > 0) {
        EXPECT_LE(std::stod(f[2]), std::stod(split_lines(lines[i - 1], '\t')[2])) << r->out;
      }
      EXPECT_LT(std::stod(f[2]), 0.0);
    }
  }
  // The first of the n-best (length penalty 0) is what --beam alone prints.
  const auto lines = split_lines(all0.out), top = split_lines(best.out);
  for (size_t s = 0; s < 3; ++s) {
    const auto f = split_lines(lines[s * 3], '\t');
    EXPECT_EQ(f.size() > 3 ? f[3] : "", top[s]);
  }
  }
}

// (One test per trained model: each test of a fixture trains it again under ctest.)
TEST_F(PairDecoding, BeamScoresAreTheModelsLogProbabilities) {
  const CheckpointData ck = load_checkpoint(d("run"), false);
  const auto tok = make_tokenizer(ck.tokenizer);
  const PairVocab v = pair_vocab_of(ck.model, *tok);
  EXPECT_EQ(v.eos(), 258u);
  auto be = make_cpu_backend();
  PairDecoder dec(ck.model, ck.params, *be, v);
  TeacherForced forward(ck, v);
  SampleOptions greedy;
  greedy.greedy = true;
  for (size_t i = 0; i < 8; ++i) {
    const std::vector<int32_t> source = encode_source((*sources_)[i], *tok, v, ck.model.src_len, "source");
    dec.encode(source);
    const Hypothesis g = dec.decode(greedy);
    const std::vector<Hypothesis> one = dec.beam({.beam = 1, .n_best = 1, .max_len = 100});
    ASSERT_EQ(one.size(), 1u);
    EXPECT_EQ(one[0].tokens, g.tokens) << "beam 1 is greedy, source " << i;
    EXPECT_NEAR(one[0].log_prob, g.log_prob, 1e-9);
    for (const double alpha : {0.0, 0.6}) {
      const std::vector<Hypothesis> hyps = dec.beam({.beam = 4, .n_best = 4, .max_len = 100, .length_penalty = alpha});
      ASSERT_EQ(hyps.size(), 4u);
      for (size_t h = 0; h < hyps.size(); ++h) {
        const Hypothesis& y = hyps[h];
        ASSERT_TRUE(std::isfinite(y.log_prob));
        if (h > 0) {
          EXPECT_LE(y.score, hyps[h - 1].score) << "n-best out of order";
        }
        EXPECT_LE(y.tokens.size(), static_cast<size_t>(ck.model.seq_len));
        EXPECT_EQ(y.ended, !y.tokens.empty() && y.tokens.back() == static_cast<int32_t>(v.eos()));
        EXPECT_NEAR(y.score, y.log_prob / gnmt_length_penalty(static_cast<int>(y.tokens.size()), alpha), 1e-9);
        const double tf = forward.log_prob(source, y.tokens);
        EXPECT_NEAR(y.log_prob, tf, 1e-4 * (1 + std::fabs(tf))) << "source " << i << " hypothesis " << h;
      }
    }
  }
}

TEST_F(PairDecoding, EvalReportsLossExactMatchBleuAndTheExposureGap) {
  const RunResult r = run_loom({"eval", "--checkpoint", d("run"), "--json", d("eval.json"), "--decodes", d("dec.txt")});
  ASSERT_EQ(r.rc, 0) << r.err;
  const auto j = nlohmann::json::parse(read_bytes(d("eval.json")));
  const size_t n = targets_->size();
  ASSERT_EQ(j["pairs"].get<size_t>(), n);  // every val pair
  EXPECT_EQ(j["decoding"], "greedy");
  EXPECT_FALSE(j.contains("by_kind"));  // plain pairs: no span kinds
  EXPECT_EQ(r.out.find("by target-token kind"), std::string::npos) << r.out;
  const auto decodes = split_lines(read_bytes(d("dec.txt")));
  ASSERT_EQ(decodes.size(), n);
  // Exact match, and free-running accuracy position by position (EOS included: a decode
  // shorter than seq_len = 8 letters ended with EOS; targets hold at most 7).
  int64_t exact = 0, tokens = 0, right = 0;
  for (size_t i = 0; i < n; ++i) {
    const std::string& t = (*targets_)[i];
    const std::string& y = decodes[i];
    exact += y == t;
    const std::string eos(1, '\0');  // stands for EOS in both strings (no letter is NUL)
    const std::string yy = y.size() < 8 ? y + eos : y, tt = t + eos;
    tokens += static_cast<int64_t>(tt.size());
    for (size_t k = 0; k < tt.size() && k < yy.size(); ++k) right += yy[k] == tt[k];
  }
  EXPECT_EQ(j["exact"].get<int64_t>(), exact);
  EXPECT_DOUBLE_EQ(j["exact_match"].get<double>(), static_cast<double>(exact) / static_cast<double>(n));
  EXPECT_GT(exact, 0);
  EXPECT_LT(exact, static_cast<int64_t>(n));  // undertrained: the metrics are not at their bounds
  EXPECT_EQ(j["target_tokens"].get<int64_t>(), tokens);
  const double fr = j["free_running_accuracy"].get<double>(), tf = j["teacher_forced_accuracy"].get<double>();
  EXPECT_DOUBLE_EQ(fr, static_cast<double>(right) / static_cast<double>(tokens));
  // Reading its own outputs, an undertrained model loses accuracy it has with the gold prefix.
  EXPECT_GT(tf, fr);
  EXPECT_LT(tf, 1.0);
  EXPECT_NEAR(j["exposure_gap"].get<double>(), tf - fr, 1e-12);
  char line[128];
  std::snprintf(line, sizeof line, "exact match %.4f (%lld of %zu)",
                static_cast<double>(exact) / static_cast<double>(n), static_cast<long long>(exact), n);
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  std::snprintf(line, sizeof line, "teacher-forced %.4f | free-running %.4f | exposure gap %.4f", tf, fr, tf - fr);
  EXPECT_NE(r.out.find(line), std::string::npos) << r.out;
  // BLEU and chrF are what `loom score` gives the written decodes against the targets.
  std::string refs;
  for (const std::string& t : *targets_) refs += t + "\n";
  write_bytes(d("ref.txt"), refs);
  const RunResult score = run_loom({"score", "--hyp", d("dec.txt"), "--ref", d("ref.txt"), "--metric", "all"});
  ASSERT_EQ(score.rc, 0) << score.err;
  const auto lines = split_lines(score.out);
  ASSERT_EQ(lines.size(), 2u) << score.out;
  EXPECT_EQ(j["bleu_signature"], lines[0]);
  EXPECT_EQ(j["chrf_signature"], lines[1]);
  EXPECT_NE(r.out.find(lines[0] + "\n" + lines[1] + "\n"), std::string::npos) << r.out;
  EXPECT_GT(j["chrf"].get<double>(), 0.0);

  // The loss over the first 10 pairs is the mean of -log p of their targets (EOS included), each
  // from its own forward pass with one row (the evaluation's batches pad with rows of no loss).
  const RunResult ten = run_loom({"eval", "--checkpoint", d("run"), "--max-pairs", "10", "--json", d("ten.json")});
  ASSERT_EQ(ten.rc, 0) << ten.err;
  const auto j10 = nlohmann::json::parse(read_bytes(d("ten.json")));
  ASSERT_EQ(j10["pairs"].get<int>(), 10);
  const CheckpointData ck = load_checkpoint(d("run"), false);
  const auto tok = make_tokenizer(ck.tokenizer);
  const PairVocab v = pair_vocab_of(ck.model, *tok);
  TeacherForced forward(ck, v);
  double nll = 0, count = 0;
  for (size_t i = 0; i < 10; ++i) {
    std::vector<int32_t> target = encode_source((*targets_)[i], *tok, v, ck.model.seq_len, "target");  // + EOS
    nll -= forward.log_prob(encode_source((*sources_)[i], *tok, v, ck.model.src_len, "source"), target);
    count += static_cast<double>(target.size());
  }
  EXPECT_NEAR(j10["loss"].get<double>(), nll / count, 1e-5);
  EXPECT_NEAR(j10["perplexity"].get<double>(), std::exp(nll / count), 1e-4);

  // Beam search scores its own decodes; the exposure gap stays the greedy decodes'.
  const RunResult beam = run_loom({"eval", "--checkpoint", d("run"), "--max-pairs", "10", "--beam", "3",
                                   "--json", d("beam.json")});
  ASSERT_EQ(beam.rc, 0) << beam.err;
  const auto jb = nlohmann::json::parse(read_bytes(d("beam.json")));
  EXPECT_EQ(jb["decoding"], "beam");
  EXPECT_EQ(jb["beam"], 3);
  EXPECT_EQ(jb["free_running_accuracy"], j10["free_running_accuracy"]);
  EXPECT_EQ(jb["loss"], j10["loss"]);
}

// On a span-corruption folder `loom eval` splits the teacher-forced loss by target-token kind
// (span_kinds.h): the kinds' token counts are those of the val pairs, their losses average to
// the whole loss, and the unigram baseline is the add-one unigram of the train lines' bytes.
class PairEvalByKind : public SeededTest {};

TEST_F(PairEvalByKind, SpanCorruptionLossSplitsByKindBesideTheCountingBaselines) {
  SEED_TRACE();
  const TempDir& dir = dir_;
  Rng& rng = rng_;
  static const char* words[] = {"and", "the", "lord", "said", "unto", "moses", "of", "israel"};
  std::vector<std::string> lines;
  std::string text;
  while (lines.size() < 400) {
    std::string line;
    while (line.size() < 8 + rng.below(20)) line += (line.empty() ? "" : " ") + std::string(words[rng.below(8)]);
    if (line.size() > 30) continue;
    lines.push_back(line);
    text += line + "\n";
  }
  write_bytes(dir / "corpus.txt", text);
  const std::string spans = dir / "spans";
  RunResult r = run_loom({"prepare", "--corpus", dir / "corpus.txt", "--task", "span-corruption", "--max-len", "30",
                          "--val-fraction", "0.1", "--masks", "3", "--whole-words", "--out", spans});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::ofstream(dir / "run.toml") << encdec_config(spans, dir / "run", 60);
  r = run_loom({"train", "--config", dir / "run.toml", "--model.src_len", "31", "--model.seq_len", "16"});
  ASSERT_EQ(r.rc, 0) << r.err;
  r = run_loom({"eval", "--checkpoint", dir / "run", "--json", dir / "eval.json"});
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("by target-token kind"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(read_bytes(dir / "eval.json"));
  ASSERT_TRUE(j.contains("by_kind")) << j.dump();
  const auto& k = j["by_kind"];

  // Counted from the val split: a span start per sentinel, the other span tokens inside, an EOS
  // per pair.
  const PairFolder f = open_pair_folder(spans);
  const PairSplit val(spans, "val");
  int64_t sentinels = 0, span_tokens = 0;
  std::vector<uint32_t> t;
  std::vector<uint32_t> targets;  // every span token of the val targets
  for (uint64_t i = 0; i < val.size(); ++i) {
    t.clear();
    val.read_target(i, t);
    for (uint32_t x : t) {
      if (f.vocab.is_sentinel(x)) {
        ++sentinels;
      } else {
        ++span_tokens;
        targets.push_back(x);
      }
    }
  }
  EXPECT_EQ(k["sentinel"]["tokens"].get<int64_t>(), sentinels);
  EXPECT_EQ(k["span start"]["tokens"].get<int64_t>(), sentinels);
  EXPECT_EQ(k["span inside"]["tokens"].get<int64_t>(), span_tokens - sentinels);
  EXPECT_EQ(k["EOS"]["tokens"].get<int64_t>(), static_cast<int64_t>(val.size()));
  double weighted = 0;
  int64_t tokens = 0;
  for (const char* name : {"sentinel", "span start", "span inside", "EOS"}) {
    const double loss = k[name]["loss"].get<double>(), acc = k[name]["accuracy"].get<double>();
    EXPECT_TRUE(std::isfinite(loss) && loss >= 0) << name;
    EXPECT_TRUE(acc >= 0 && acc <= 1) << name;
    weighted += loss * k[name]["tokens"].get<double>();
    tokens += k[name]["tokens"].get<int64_t>();
  }
  ASSERT_EQ(tokens, j["target_tokens"].get<int64_t>());
  EXPECT_NEAR(weighted / static_cast<double>(tokens), j["loss"].get<double>(), 1e-4);

  // The unigram, by hand: the bytes of the train lines (the first lines; the last 10% are val),
  // each line once whatever its masks, add-one over the 256 byte tokens, on the val span tokens.
  const size_t n_val = static_cast<size_t>(std::ceil(lines.size() * 0.1));
  std::vector<double> count(256, 0.0);
  double total = 0;
  for (size_t i = 0; i + n_val < lines.size(); ++i)
    for (unsigned char c : lines[i]) count[c] += 1, total += 1;
  double uni = 0;
  for (uint32_t x : targets) uni -= std::log((count[x] + 1) / (total + 256));
  const double uni_start = k["span start"]["unigram_loss"].get<double>(),
               uni_inside = k["span inside"]["unigram_loss"].get<double>();
  EXPECT_NEAR((uni_start * static_cast<double>(sentinels) + uni_inside * static_cast<double>(span_tokens - sentinels)) /
                  static_cast<double>(span_tokens),
              uni / static_cast<double>(targets.size()), 1e-9);
  // Inside words of eight, the byte before says much: the bigram beats the unigram there.
  EXPECT_LT(k["span inside"]["bigram_loss"].get<double>(), uni_inside - 0.5);
  EXPECT_FALSE(k["sentinel"].contains("bigram_loss"));

  // --fill prints each source with its gap filled: the words around the gap as they were, the
  // fill in brackets after the spaces it starts with.
  std::string sources;
  std::vector<std::pair<std::string, std::string>> around;  // the text before and after <s0>
  for (size_t i = lines.size() - 5; i < lines.size(); ++i) {
    const size_t cut = lines[i].find(' ');
    ASSERT_NE(cut, std::string::npos);
    const size_t end = lines[i].find(' ', cut + 1);
    around.push_back({lines[i].substr(0, cut), end == std::string::npos ? "" : lines[i].substr(end)});
    sources += around.back().first + "<s0>" + around.back().second + "\n";
  }
  write_bytes(dir / "sources.txt", sources);
  r = run_loom({"sample", "--checkpoint", dir / "run", "--source-file", dir / "sources.txt", "--beam", "2", "--fill"});
  ASSERT_EQ(r.rc, 0) << r.err;
  std::istringstream out(r.out);
  std::string line;
  for (const auto& [before, after] : around) {
    ASSERT_TRUE(std::getline(out, line)) << r.out;
    const size_t open = line.find('['), close = line.find(']');
    ASSERT_TRUE(open != std::string::npos && close != std::string::npos && open < close) << line;
    EXPECT_EQ(line.find('[', open + 1), std::string::npos) << line;
    EXPECT_EQ(line.substr(0, before.size()), before) << line;
    EXPECT_EQ(line.find_first_not_of(' ', before.size()), open) << line;  // only spaces before '['
    EXPECT_EQ(line.substr(close + 1), after) << line;
    EXPECT_EQ(line.find("<s"), std::string::npos) << line;
  }
  expect_user_error(run_loom({"sample", "--checkpoint", dir / "run", "--prompt", "and", "--fill"}), "--fill");
}

TEST(PairDecodingBadInput, OneLineErrors) {
  TempDir dir;
  auto d = [&](const std::string& s) { return dir / s; };
  std::ofstream(d("sort.toml")) << encdec_config(prepare_pairs(dir, "sort", 400), d("run"), 2);
  ASSERT_EQ(run_loom({"train", "--config", d("sort.toml")}).rc, 0);
  auto sample = [&](std::vector<std::string> extra) {
    extra.insert(extra.begin(), {"sample", "--checkpoint", d("run")});
    return run_loom(extra);
  };
  expect_user_error(sample({"--source", "abcdefgh"}), "model.src_len");  // 8 letters + EOS > 8
  write_bytes(d("blank.txt"), "abc\n\nbca\n");
  expect_user_error(sample({"--source-file", d("blank.txt")}), d("blank.txt") + ":2");
  write_bytes(d("long.txt"), "abc\nabcdefghabcdefgh\n");
  expect_user_error(sample({"--source-file", d("long.txt")}), d("long.txt") + ":2");
  expect_user_error(sample({"--source-file", d("missing.txt")}), "missing.txt");
  expect_user_error(sample({"--prompt", "abc"}), "--prompt");
  expect_user_error(sample({"--source", "abc", "--stop", "a"}), "--stop");
  expect_user_error(sample({"--source", "abc", "--beam", "2", "--eos", "a"}), "--eos");
  expect_user_error(sample({"--source", "abc", "--beam", "2", "--n-best", "3"}), "--n-best");
  expect_user_error(sample({"--source", ""}), "--source");
  expect_user_error(sample({"--source", "abc", "--fill"}), "--fill: the checkpoint's pairs have no sentinels");
  // A decoder-only checkpoint has no source.
  fs::create_directories(d("lm"));
  const std::string lm = prepare_tiny_data(d("lm"), 20000);
  std::ofstream(d("lm.toml")) << tiny_config(lm, d("lm_run"), 2);
  ASSERT_EQ(run_loom({"train", "--config", d("lm.toml")}).rc, 0);
  expect_user_error(run_loom({"sample", "--checkpoint", d("lm_run"), "--source", "abc"}), "does not learn pairs");
  // loom eval: the pair flags only on pair checkpoints, the token-window flags only on the others.
  expect_user_error(run_loom({"eval", "--checkpoint", d("lm_run"), "--max-pairs", "3"}), "--max-pairs");
  expect_user_error(run_loom({"eval", "--checkpoint", d("run"), "--batches", "3"}), "--batches");
  expect_user_error(run_loom({"eval", "--checkpoint", d("run"), "--length-penalty", "1"}), "--length-penalty");
  expect_user_error(run_loom({"eval", "--checkpoint", d("run"), "--beam", "0"}), "--beam");
  expect_user_error(run_loom({"eval", "--checkpoint", d("run"), "--data", d("lm")}), "lm");
  write_bytes(d("mc.jsonl"), "{\"context\": \"ab\", \"endings\": [\"c\", \"d\"], \"label\": 0}\n");
  expect_user_error(run_loom({"eval", "--checkpoint", d("run"), "--task", "mc", d("mc.jsonl")}), "--task");
}

}  // namespace
}  // namespace loom::test
