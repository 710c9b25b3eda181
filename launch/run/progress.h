// progress.h: what a long job shows. On a terminal: a progress bar with ETA kept on the last
// line, log lines printed above it. Elsewhere (CI, files, pipes): plain lines only.
#pragma once
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

namespace loom {

class Progress {
 public:
  Progress(std::string what, int64_t total, int64_t start = 0);
  ~Progress();
  // Advances to `done` units; `note` is shown after the bar (e.g. the last loss).
  void update(int64_t done, const std::string& note = "");
  // Prints a line above the bar (or plainly when not on a terminal).
  void line(const std::string& text);
  void finish();
  bool tty() const { return tty_; }
  static std::string format_duration(double seconds);

 private:
  void draw();
  void clear();
  std::string what_, note_;
  int64_t total_, start_, done_;
  bool tty_, drawn_ = false, finished_ = false;
  std::chrono::steady_clock::time_point t0_, last_draw_;
};

// printf-style formatting of one number, for progress and log lines ("%.4f").
std::string fmt(const char* format, double v);

// A job that reports (done, total) as it goes: on a terminal a bar named `bar`, made at the
// first report; elsewhere a line "<line> <done> of <total> <unit> | elapsed | ETA" every 10 s,
// timed from the first report.
class ProgressReport {
 public:
  ProgressReport(std::string bar, std::string line, std::string unit)
      : name_(std::move(bar)), line_(std::move(line)), unit_(std::move(unit)) {}
  void operator()(int64_t done, int64_t total);
  void finish();  // the bar's last draw, where there is one

 private:
  std::string name_, line_, unit_;
  std::unique_ptr<Progress> bar_;
  std::chrono::steady_clock::time_point start_, last_;
};

// A progress bar over bytes (corpus reading, tokenizer training), created on the first
// report, when the total is known: "12.0 / 40.5 MiB" beside the bar.
class BytesBar {
 public:
  explicit BytesBar(std::string what) : what_(std::move(what)) {}
  void operator()(uint64_t done, uint64_t total);

 private:
  std::string what_;
  std::unique_ptr<Progress> bar_;
};

}  // namespace loom
