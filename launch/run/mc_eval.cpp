// mc_eval.cpp: see mc_eval.h.
#include "launch/run/mc_eval.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>

#include "core/check.h"
#include "engine/backend/device.h"
#include "engine/graph/executor.h"
#include "engine/io/json_guard.h"
#include "engine/optim/weights.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

class GraphScorer final : public RowScorer {
 public:
  GraphScorer(const ModelConfig& model, Backend& be, void* params, int batch)
      : model_(model), be_(be), params_(params), B_(batch) {
    LOOM_CHECK(batch >= 1);
  }

  void reserve(int tokens) override { fit(tokens - 1); }

  std::vector<RowLoss> score(std::span<const TokenRow> rows) override {
    int longest = 1;
    for (const TokenRow& r : rows) longest = std::max(longest, static_cast<int>(r.tokens.size()) - 1);
    fit(longest);
    const int V = model_.vocab;
    std::vector<RowLoss> out(rows.size());
    std::vector<int32_t> x(static_cast<size_t>(B_) * T_), y(x.size());
    for (size_t b = 0; b < rows.size(); b += B_) {
      const size_t n = std::min(rows.size() - b, static_cast<size_t>(B_));
      // Right padding: a causal model's predictions never see what comes after them.
      std::fill(x.begin(), x.end(), 0);
      std::fill(y.begin(), y.end(), 0);
      for (size_t r = 0; r < n; ++r) {
        const auto& t = rows[b + r].tokens;
        for (size_t j = 0; j + 1 < t.size(); ++j) x[r * T_ + j] = t[j], y[r * T_ + j] = t[j + 1];
      }
      ex_->set_input(mg_->tokens, x.data(), x.size() * 4);
      ex_->set_input(mg_->targets, y.data(), y.size() * 4);
      for (int v : mg_->state_in) be_.zero(ex_->view(v).data, mg_->g.values[v].bytes());
      ex_->forward();
      const std::vector<float> logits = ex_->fetch_f32(mg_->logits);  // [B, T, V]
      for (size_t r = 0; r < n; ++r) {
        const TokenRow& row = rows[b + r];
        RowLoss& l = out[b + r];
        // Position j predicts token j + 1: the scored tokens are first..size-1.
        for (size_t j = row.first - 1; j + 1 < row.tokens.size(); ++j) {
          const float* z = logits.data() + (r * T_ + j) * V;
          double mx = z[0];
          for (int v = 1; v < V; ++v) mx = std::max<double>(mx, z[v]);
          double sum = 0;
          for (int v = 0; v < V; ++v) sum += std::exp(z[v] - mx);
          l.sum += mx + std::log(sum) - z[row.tokens[j + 1]];
          ++l.tokens;
        }
      }
    }
    return out;
  }

 private:
  // A graph of at least T positions (at most seq_len); rebuilt only to grow.
  void fit(int T) {
    T = std::clamp(T, 1, model_.seq_len);
    if (ex_ && T <= T_) return;
    ex_.reset();
    mg_ = std::make_unique<ModelGraph>(build_model(model_, GraphMode::Eval, B_, T, be_.float_dtype(), true));
    ex_ = std::make_unique<Executor>(mg_->g, be_);
    ex_->bind_params(params_, nullptr);
    T_ = T;
  }

  ModelConfig model_;
  Backend& be_;
  void* params_;
  const int B_;
  int T_ = 0;
  std::unique_ptr<ModelGraph> mg_;
  std::unique_ptr<Executor> ex_;  // reads *mg_: declared after it, destroyed before it
};

class CountScorer final : public RowScorer {
 public:
  explicit CountScorer(const CountingModel& model) : model_(model) {}
  std::vector<RowLoss> score(std::span<const TokenRow> rows) override {
    std::vector<RowLoss> out(rows.size());
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < static_cast<int64_t>(rows.size()); ++i) {
      const auto& t = rows[i].tokens;
      for (size_t j = rows[i].first; j < t.size(); ++j) {
        out[i].sum -= model_.log_prob(std::span<const int32_t>(t.data(), j), t[j]);
        ++out[i].tokens;
      }
    }
    return out;
  }

 private:
  const CountingModel& model_;
};

// A checkpoint's model with everything it needs held here.
class CheckpointScorer final : public RowScorer {
 public:
  CheckpointScorer(const CheckpointData& ck, const std::string& device, int batch) {
    const ModelKind& kind = model_kind(ck.model.kind);
    if (kind.counts()) {
      counts_ = kind.load_counts(ck.counts, ck.dir + "/model.safetensors");
      counts_->finalize();
      inner_ = make_count_scorer(*counts_);
    } else {
      be_ = make_backend(device);
      weights_ = std::make_unique<DeviceWeights>(*be_, static_cast<int64_t>(ck.params.size()));
      weights_->upload(ck.params);
      inner_ = make_graph_scorer(ck.model, *be_, weights_->graph_params(), batch);
    }
  }
  void reserve(int tokens) override { inner_->reserve(tokens); }
  std::vector<RowLoss> score(std::span<const TokenRow> rows) override { return inner_->score(rows); }

 private:
  std::unique_ptr<Backend> be_;
  std::unique_ptr<DeviceWeights> weights_;
  std::unique_ptr<CountingModel> counts_;
  std::unique_ptr<RowScorer> inner_;
};

std::vector<int32_t> encode(const Tokenizer& tok, const std::string& text, int vocab, const std::string& where) {
  std::vector<int32_t> ids;
  for (uint32_t t : tok.encode(text)) {
    LOOM_USER_CHECK(static_cast<int64_t>(t) < vocab, where, ": token ", t, " is outside the model's vocabulary of ", vocab);
    ids.push_back(static_cast<int32_t>(t));
  }
  return ids;
}

// One line of a task file as an example (its tokens), or a UserError naming `where`.
McExample parse_example(const std::string& line, const std::string& where, const Tokenizer& tok, int vocab,
                        int seq_len) {
  const nlohmann::json j = parse_untrusted_json(line, where, "not a task example");
  LOOM_USER_CHECK(j.is_object(), where, ": expected an object {\"context\", \"endings\", \"label\"} (or HellaSwag's "
                  "{\"ctx\", \"endings\", \"label\"}), got ", json_brief(j));
  auto text = [&](const char* key) {
    const nlohmann::json& v = j.at(key);
    LOOM_USER_CHECK(v.is_string(), where, ": \"", key, "\" must be a string, got ", json_brief(v));
    return v.get<std::string>();
  };
  // The context: loom's "context", else HellaSwag's "ctx", else its parts "ctx_a" and "ctx_b"
  // joined as HellaSwag's own "ctx" joins them.
  std::string context;
  if (j.contains("context")) {
    context = text("context");
  } else if (j.contains("ctx")) {
    context = text("ctx");
  } else if (j.contains("ctx_a")) {
    context = text("ctx_a");
    const std::string b = j.contains("ctx_b") ? text("ctx_b") : "";
    if (!b.empty()) context += " " + b;
  } else {
    user_error(where, ": no context (\"context\", or HellaSwag's \"ctx\" or \"ctx_a\")");
  }
  LOOM_USER_CHECK(!context.empty(), where, ": the context is empty");

  LOOM_USER_CHECK(j.contains("endings"), where, ": no \"endings\"");
  const nlohmann::json& ends = j["endings"];
  LOOM_USER_CHECK(ends.is_array() && ends.size() >= 2 && ends.size() <= static_cast<size_t>(kMaxEndings), where,
                  ": \"endings\" must be an array of 2 to ", kMaxEndings, " strings, got ", json_brief(ends));
  McExample ex;
  for (size_t i = 0; i < ends.size(); ++i) {
    LOOM_USER_CHECK(ends[i].is_string() && !ends[i].get_ref<const std::string&>().empty(), where, ": ending ", i,
                    " must be a non-empty string, got ", json_brief(ends[i]));
    // As HellaSwag's evaluation joins them: the ending after a space, tokenized on its own.
    std::string text = " ";
    text += ends[i].get_ref<const std::string&>();
    ex.endings.push_back(encode(tok, text, vocab, where));
    ex.ending_bytes.push_back(static_cast<int64_t>(text.size()));
  }

  LOOM_USER_CHECK(j.contains("label"), where, ": no \"label\"");
  const nlohmann::json& lab = j["label"];
  int64_t label = -1;
  if (lab.is_number_integer()) {
    label = lab.get<int64_t>();
  } else if (lab.is_string()) {  // Hugging Face's copy of HellaSwag: "3"
    const std::string& s = lab.get_ref<const std::string&>();
    if (!s.empty() && s.size() <= 3 && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; }))
      label = std::stoll(s);
  }
  LOOM_USER_CHECK(label >= 0 && label < static_cast<int64_t>(ends.size()), where, ": \"label\" must be the index of "
                  "an ending, 0 to ", ends.size() - 1, ", got ", json_brief(lab));
  ex.label = static_cast<int>(label);

  ex.context = encode(tok, context, vocab, where);
  LOOM_USER_CHECK(!ex.context.empty(), where, ": the context encodes to no tokens");
  for (const auto& e : ex.endings) ex.cut |= ex.context.size() + e.size() > static_cast<size_t>(seq_len) + 1;
  // A row never holds more than seq_len context tokens (an ending has at least one).
  if (ex.context.size() > static_cast<size_t>(seq_len))
    ex.context.erase(ex.context.begin(), ex.context.end() - seq_len);
  return ex;
}

// A task's name in metric keys: its file's stem, with anything but letters, digits, '_', '-'
// and '.' made '_' (the keys stay plain ASCII whatever the file is called).
std::string task_name(const std::string& file) {
  std::string s = fs::path(file).stem().string().substr(0, 64);
  for (char& c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'))
      c = '_';
  return s;
}

}  // namespace

std::unique_ptr<RowScorer> make_graph_scorer(const ModelConfig& model, Backend& be, void* params, int batch) {
  return std::make_unique<GraphScorer>(model, be, params, batch);
}

std::unique_ptr<RowScorer> make_count_scorer(const CountingModel& model) { return std::make_unique<CountScorer>(model); }

std::unique_ptr<RowScorer> make_checkpoint_scorer(const CheckpointData& ck, const std::string& device, int batch) {
  return std::make_unique<CheckpointScorer>(ck, device, batch);
}

TokenRow McExample::row(int ending, int seq_len) const {
  const std::vector<int32_t>& end = endings[ending];
  // The last seq_len + 1 tokens of context + ending: the model reads all but the last.
  const size_t n = std::min(context.size() + end.size(), static_cast<size_t>(seq_len) + 1);
  const size_t from_end = std::min(end.size(), n), from_ctx = n - from_end;
  TokenRow r;
  r.tokens.reserve(n);
  r.tokens.insert(r.tokens.end(), context.end() - from_ctx, context.end());
  r.tokens.insert(r.tokens.end(), end.end() - from_end, end.end());
  r.first = std::max<int>(1, static_cast<int>(from_ctx));
  return r;
}

McTask read_mc_task(const std::string& path, const Tokenizer& tok, int vocab, int seq_len, const std::string& name) {
  std::error_code ec;
  LOOM_USER_CHECK(fs::is_regular_file(path, ec), path, ": no such task file (JSONL, one example a line)");
  const uintmax_t bytes = fs::file_size(path, ec);
  LOOM_USER_CHECK(!ec && bytes <= kMaxTaskFileBytes, path, ": ", bytes, " bytes, larger than a task file can be (",
                  kMaxTaskFileBytes, ")");
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open task file");
  McTask task;
  task.name = name;
  task.path = path;
  task.seq_len = seq_len;
  std::string line;
  for (int n = 1; std::getline(f, line); ++n) {
    const std::string where = path + ":" + std::to_string(n);
    LOOM_USER_CHECK(line.size() <= kMaxTaskLineBytes, where, ": a line of ", line.size(),
                    " bytes, longer than any example can be (", kMaxTaskLineBytes, ")");
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    task.examples.push_back(parse_example(line, where, tok, vocab, seq_len));
    task.examples.back().line = n;
    task.cut += task.examples.back().cut;
  }
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read task file");
  LOOM_USER_CHECK(!task.examples.empty(), path, ": no examples (JSONL, one example a line)");
  return task;
}

McResult score_mc(const McTask& task, RowScorer& scorer, Comm& comm) {
  McResult res;
  res.examples = static_cast<int64_t>(task.examples.size());
  size_t longest = 0;
  for (const McExample& ex : task.examples) {
    res.chance += 1.0 / static_cast<double>(ex.endings.size());
    for (const auto& e : ex.endings) longest = std::max(longest, ex.context.size() + e.size());
  }
  res.chance /= static_cast<double>(res.examples);
  scorer.reserve(static_cast<int>(std::min(longest, static_cast<size_t>(task.seq_len) + 1)));

  // This rank's examples, a few dozen at a time (the rows of the whole task can be large).
  constexpr size_t kChunk = 64;
  const size_t world = static_cast<size_t>(comm.world()), rank = static_cast<size_t>(comm.rank());
  std::vector<size_t> mine;
  for (size_t i = rank; i < task.examples.size(); i += world) mine.push_back(i);
  double correct = 0, correct_sum = 0, correct_bytes = 0;
  for (size_t c = 0; c < mine.size(); c += kChunk) {
    const size_t e = std::min(mine.size(), c + kChunk);
    std::vector<TokenRow> rows;
    for (size_t k = c; k < e; ++k) {
      const McExample& ex = task.examples[mine[k]];
      for (size_t i = 0; i < ex.endings.size(); ++i) rows.push_back(ex.row(static_cast<int>(i), task.seq_len));
    }
    const std::vector<RowLoss> losses = scorer.score(rows);
    size_t at = 0;
    for (size_t k = c; k < e; ++k) {
      const McExample& ex = task.examples[mine[k]];
      McScore s;
      s.endings.assign(losses.begin() + at, losses.begin() + at + ex.endings.size());
      at += ex.endings.size();
      auto per_byte = [&](size_t i) { return s.endings[i].sum / static_cast<double>(ex.ending_bytes[i]); };
      for (size_t i = 1; i < s.endings.size(); ++i) {
        const int n = static_cast<int>(i);
        if (s.endings[i].mean() < s.endings[s.choice].mean()) s.choice = n;
        if (s.endings[i].sum < s.endings[s.choice_sum].sum) s.choice_sum = n;
        if (per_byte(i) < per_byte(s.choice_bytes)) s.choice_bytes = n;
      }
      correct += s.choice == ex.label;
      correct_sum += s.choice_sum == ex.label;
      correct_bytes += s.choice_bytes == ex.label;
      if (world == 1) res.scores.push_back(std::move(s));
    }
  }
  res.correct = static_cast<int64_t>(std::llround(comm.allreduce_scalar(correct)));
  res.correct_sum = static_cast<int64_t>(std::llround(comm.allreduce_scalar(correct_sum)));
  res.correct_bytes = static_cast<int64_t>(std::llround(comm.allreduce_scalar(correct_bytes)));
  return res;
}

std::string McTask::cut_note() const {
  if (cut == 0) return "";
  return name + ": " + std::to_string(cut) + " of " + std::to_string(examples.size()) +
         " examples longer than the model's window of " + std::to_string(seq_len) +
         " tokens: their context is cut from the left";
}

std::string McResult::summary() const {
  char b[512];
  std::snprintf(b, sizeof b,
                "acc       %.4f (%lld/%lld)  choice: lowest mean loss per ending token\n"
                "acc_sum   %.4f (%lld/%lld)  choice: lowest summed loss over the ending\n"
                "acc_bytes %.4f (%lld/%lld)  choice: lowest summed loss per byte of the ending",
                acc(), static_cast<long long>(correct), static_cast<long long>(examples), acc_sum(),
                static_cast<long long>(correct_sum), static_cast<long long>(examples), acc_bytes(),
                static_cast<long long>(correct_bytes), static_cast<long long>(examples));
  return b;
}

McTasks::McTasks(const std::vector<std::string>& files, int64_t every, const std::string& tokenizer, int vocab,
                 int seq_len)
    : every_(every) {
  if (files.empty()) return;
  LOOM_USER_CHECK(files.size() <= 64, "train.eval_tasks: ", files.size(), " task files, more than 64");
  const auto tok = make_tokenizer(tokenizer);
  for (const std::string& file : files) {
    LOOM_USER_CHECK(!file.empty(), "train.eval_tasks: an empty file name");
    const std::string name = task_name(file);
    LOOM_USER_CHECK(!name.empty(), "train.eval_tasks: ", file, ": no file name to call the task by");
    for (const McTask& t : tasks_)
      LOOM_USER_CHECK(t.name != name, "train.eval_tasks: ", file, ": a second task named '", name,
                      "' (tasks are named after their files: rename one)");
    tasks_.push_back(read_mc_task(file, *tok, vocab, seq_len, name));
  }
}

std::string McTasks::cut_notes() const {
  std::string out;
  for (const McTask& t : tasks_)
    if (!t.cut_note().empty()) out += "note: task " + t.cut_note() + "\n";
  return out;
}

bool McTasks::due(int64_t step, bool last, int64_t eval_every) const {
  return !tasks_.empty() && (last || step % (every_ > 0 ? every_ : eval_every) == 0);
}

std::string McTasks::run(RowScorer* scorer, Comm& comm, nlohmann::json& metrics) const {
  if (!scorer) return "";
  std::string said;
  for (const McTask& t : tasks_) {
    const McResult r = score_mc(t, *scorer, comm);
    metrics["mc/" + t.name + "/acc"] = r.acc();
    metrics["mc/" + t.name + "/acc_sum"] = r.acc_sum();
    metrics["mc/" + t.name + "/acc_bytes"] = r.acc_bytes();
    char b[256];
    std::snprintf(b, sizeof b, "%stask %s: acc %.4f | acc_sum %.4f | acc_bytes %.4f (%lld examples, chance %.4f)",
                  said.empty() ? "" : "\n", t.name.c_str(), r.acc(), r.acc_sum(), r.acc_bytes(),
                  static_cast<long long>(r.examples), r.chance);
    said += b;
  }
  return said;
}

}  // namespace loom
