// tensorboard.cpp: see tensorboard.h. Compiled when protobuf is found; tensorboard_none.cpp
// stands in otherwise.
#include "launch/run/tensorboard.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "core/check.h"
#include "engine/io/crc32c.h"
#include "engine/io/fd.h"
#include "launch/run/tensorboard.pb.h"

namespace loom {

namespace {

// The scalars of a step: metrics.jsonl key -> TensorBoard tag. train/skipped (1 when the step's
// update was skipped, else 0) comes from the line's "skipped" flag.
struct Scalar {
  const char* key;
  const char* tag;
};
constexpr Scalar kScalars[] = {{"loss", "train/loss"},           {"val_loss", "val/loss"},
                               {"lr", "train/lr"},               {"grad_norm", "train/grad_norm"},
                               {"tokens_per_s", "perf/tokens_per_s"}, {"mfu", "perf/mfu"}};

double wall_time() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out += static_cast<char>(v >> (8 * i));
}

// One TFRecord around `data`.
void append_record(std::string& out, const std::string& data) {
  std::string len;
  put_le(len, data.size(), 8);
  out += len;
  put_le(out, mask_crc32c(crc32c(len.data(), len.size())), 4);
  out += data;
  put_le(out, mask_crc32c(crc32c(data.data(), data.size())), 4);
}

// The host name as it may stand in a file name.
std::string host_for_file_name() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) return "localhost";
  std::string h = host;
  for (char& c : h)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '.' && c != '_') c = '_';
  return h;
}

class EventFile final : public TensorBoardLog {
 public:
  EventFile(const std::string& dir, const std::string& config_toml, int64_t resume_step)
      : fd_(create(dir, path_)) {
    const int64_t first_step = resume_step >= 0 ? resume_step + 1 : 0;
    std::string records;
    tensorboard::Event version;
    version.set_wall_time(wall_time());
    version.set_file_version("brain.Event:2");
    append_record(records, version.SerializeAsString());
    if (resume_step >= 0) {
      tensorboard::Event start;
      start.set_wall_time(wall_time());
      start.set_step(first_step);
      start.mutable_session_log()->set_status(tensorboard::SessionLog::START);
      append_record(records, start.SerializeAsString());
    }
    append_record(records, config_event(config_toml, first_step).SerializeAsString());
    write(records);
  }

  void log(const nlohmann::json& m) override {
    if (!fd_) return;
    tensorboard::Event e;
    e.set_wall_time(wall_time());
    e.set_step(m.value("step", int64_t{0}));
    tensorboard::Summary* s = e.mutable_summary();
    auto add = [&](const char* tag, double v) {
      tensorboard::Summary::Value* value = s->add_value();
      value->set_tag(tag);
      value->set_simple_value(static_cast<float>(v));
    };
    for (const Scalar& sc : kScalars) {
      const auto it = m.find(sc.key);
      if (it != m.end() && it->is_number()) add(sc.tag, it->get<double>());
    }
    add("train/skipped", m.value("skipped", false) ? 1.0 : 0.0);
    // Downstream task scores (train.eval_tasks) keep their metrics.jsonl names: mc/<task>/acc...
    for (const auto& [key, v] : m.items())
      if (key.rfind("mc/", 0) == 0 && v.is_number()) add(key.c_str(), v.get<double>());
    std::string record;
    append_record(record, e.SerializeAsString());
    write(record);
  }

  const std::string& path() const override { return path_; }

 private:
  // Creates `dir` and a new event file in it; its name goes to `path`. TensorBoard reads a
  // run's files in name order: the time first keeps that the order of writing, and n gives a
  // run resumed within the same second a new file.
  static int create(const std::string& dir, std::string& path) {
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    LOOM_USER_CHECK(!ec, dir, ": cannot create the TensorBoard folder: ", ec.message());
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%010lld", static_cast<long long>(wall_time()));
    const std::string stem = dir + "/events.out.tfevents." + stamp + "." + host_for_file_name() + "." +
                             std::to_string(::getpid()) + ".";
    for (int n = 0;; ++n) {
      path = stem + std::to_string(n);
      const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
      if (fd >= 0) return fd;
      LOOM_USER_CHECK(errno == EEXIST, path, ": cannot create: ", std::strerror(errno));
    }
  }

  // The config as the text dashboard expects it: plugin "text", a scalar string tensor of
  // Markdown. Indented four spaces, the TOML shows as a code block (monospaced, unwrapped).
  static tensorboard::Event config_event(const std::string& config_toml, int64_t step) {
    std::string markdown;
    size_t at = 0;
    while (at < config_toml.size()) {
      const size_t end = config_toml.find('\n', at);
      const std::string line = config_toml.substr(at, end == std::string::npos ? std::string::npos : end - at);
      markdown += line.empty() ? "\n" : "    " + line + "\n";
      at = end == std::string::npos ? config_toml.size() : end + 1;
    }
    tensorboard::Event e;
    e.set_wall_time(wall_time());
    e.set_step(step);
    tensorboard::Summary::Value* v = e.mutable_summary()->add_value();
    v->set_tag("config");
    tensorboard::SummaryMetadata* md = v->mutable_metadata();
    md->mutable_plugin_data()->set_plugin_name("text");
    md->mutable_plugin_data()->set_content(tensorboard::TextPluginData().SerializeAsString());
    md->set_data_class(tensorboard::DATA_CLASS_TENSOR);
    tensorboard::TensorProto* t = v->mutable_tensor();
    t->set_dtype(tensorboard::DT_STRING);
    t->mutable_tensor_shape();  // no dimensions: one string
    t->add_string_val(markdown);
    return e;
  }

  // Whole records in one write, so that a reader never meets half a step but at a crash.
  void write(const std::string& bytes) {
    const int fd = fd_.get();
    const size_t done = transfer(const_cast<char*>(bytes.data()), bytes.size(), 0,
                                 [fd](void* p, size_t n, uint64_t) { return ::write(fd, p, n); });
    if (done == bytes.size()) return;
    std::fprintf(stderr, "loom: warning: %s: cannot write (%s); no more TensorBoard events for this run\n",
                 path_.c_str(), errno ? std::strerror(errno) : "short write");
    fd_.close();
  }

  std::string path_;
  UniqueFd fd_;
};

}  // namespace

std::unique_ptr<TensorBoardLog> open_tensorboard_log(const std::string& dir, const std::string& config_toml,
                                                     int64_t resume_step) {
  return std::make_unique<EventFile>(dir, config_toml, resume_step);
}

}  // namespace loom
