// counting_learner.cpp: the learner of the counting kinds (ngram). A step counts the next
// batch_size x grad_accum x seq_len tokens of the train split from its start -- the token
// budget of a neural run of the same config -- and once the split is exhausted the remaining
// steps count nothing. Checkpoints hold the counts so far; the model is finalized and
// validated after the last step (counts cannot grow after finalizing).
#include <algorithm>
#include <cstdio>

#include "launch/run/evaluate.h"
#include "launch/run/learner.h"

namespace loom {

namespace {

class CountingLearner final : public Learner {
 public:
  CountingLearner(const RunContext& rc, const CheckpointData* resume)
      : rc_(rc), cfg_(rc.cfg), kind_(model_kind(cfg_.model.kind)) {
    LOOM_USER_CHECK(rc.comm->world() == 1, "model.kind = ", cfg_.model.kind, ": a counted model counts in one process "
                    "and has no data-parallel mode; run it without loom launch / srun / mpirun (got ",
                    rc.comm->world(), " ranks)");
    if (cfg_.device != "cpu" && cfg_.device != "auto" && !rc.opt->quiet)
      std::printf("note: the %s model counts on the CPU (device = %s is not used)\n", cfg_.model.kind.c_str(),
                  cfg_.device.c_str());
    tokens_.resize(rc.train->size());
    rc.train->read(0, tokens_.size(), tokens_.data());
    if (resume) {
      model_ = kind_.load_counts(resume->counts, resume->dir + "/model.safetensors");
    } else {
      try {
        model_ = kind_.new_counts(cfg_.model);
      } catch (const UserError& e) {
        user_error(rc.data.dir, ": ", e.what());  // the vocabulary comes from the data
      }
    }
  }

  std::string banner() const override {
    const uint64_t budget = std::min<uint64_t>(tokens_.size(), static_cast<uint64_t>(cfg_.train.steps) * per_step());
    char b[256];
    std::snprintf(b, sizeof b, "loom train | model %s %s V=%d | counting %llu of %llu train tokens in %lld steps\n",
                  cfg_.model.kind.c_str(), kind_.describe(cfg_.model).c_str(), cfg_.model.vocab,
                  static_cast<unsigned long long>(budget), static_cast<unsigned long long>(tokens_.size()),
                  static_cast<long long>(cfg_.train.steps));
    return b;
  }
  const char* verb() const override { return "count"; }

  StepStats step(const TrainProgress& p) override {
    const uint64_t N = tokens_.size();
    const uint64_t b = std::min(N, per_step() * static_cast<uint64_t>(p.step));
    const uint64_t e = std::min(N, per_step() * static_cast<uint64_t>(p.step + 1));
    model_->count(tokens_, b, e);
    StepStats s;
    s.tokens = static_cast<int64_t>(e - b);
    return s;
  }

  // Counts cannot grow once finalized: validation comes after the last step only.
  bool validates_at(int64_t, bool last) const override { return last; }
  double validate() override {
    model_->finalize();
    if (!scorer_) scorer_ = make_count_scorer(*model_);
    return eval_counts(*model_, *rc_.val, cfg_.model.seq_len, static_cast<int>(cfg_.train.batch_size),
                       static_cast<int>(cfg_.train.eval_steps), static_cast<uint64_t>(cfg_.train.seed) + 2);
  }

  LearnerState snapshot(TrainProgress&) override {
    LearnerState st;
    st.extra.counts = model_->to_tensors();
    return st;
  }
  RowScorer* scorer() override { return scorer_.get(); }
  std::string summary(const TrainResult&) const override {
    return std::to_string(model_->tokens_counted()) + " tokens counted";
  }

 private:
  uint64_t per_step() const {
    return static_cast<uint64_t>(cfg_.train.batch_size * cfg_.train.grad_accum) * cfg_.model.seq_len;
  }

  const RunContext& rc_;
  const Config& cfg_;
  const ModelKind& kind_;
  std::vector<uint32_t> tokens_;
  std::unique_ptr<CountingModel> model_;
  std::unique_ptr<RowScorer> scorer_;  // once finalized
};

}  // namespace

std::unique_ptr<Learner> make_counting_learner(const RunContext& rc, const CheckpointData* resume) {
  return std::make_unique<CountingLearner>(rc, resume);
}

}  // namespace loom
