// progress.cpp: terminal progress bar with ETA (stderr), plain lines elsewhere (stdout).
#include "launch/run/progress.h"

#include <unistd.h>

#include <cstdio>

namespace loom {

Progress::Progress(std::string what, int64_t total, int64_t start)
    : what_(std::move(what)), total_(total), start_(start), done_(start),
      tty_(isatty(fileno(stderr)) && isatty(fileno(stdout))), t0_(std::chrono::steady_clock::now()), last_draw_(t0_) {}

Progress::~Progress() { finish(); }

std::string Progress::format_duration(double s) {
  char b[32];
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600)
    std::snprintf(b, sizeof b, "%ldh%02ldm", t / 3600, (t / 60) % 60);
  else if (t >= 60)
    std::snprintf(b, sizeof b, "%ldm%02lds", t / 60, t % 60);
  else
    std::snprintf(b, sizeof b, "%lds", t);
  return b;
}

void Progress::clear() {
  if (tty_ && drawn_) std::fputs("\r\033[K", stderr);
  drawn_ = false;
}

void Progress::draw() {
  if (!tty_ || finished_) return;
  const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
  const int64_t did = done_ - start_;
  const double eta = did > 0 ? el / did * (total_ - done_) : 0;
  const int width = 30;
  const int fill = total_ > 0 ? static_cast<int>(width * done_ / total_) : 0;
  std::string bar(fill, '#');
  bar.resize(width, '.');
  std::fprintf(stderr, "\r\033[K%s [%s] %lld/%lld %3d%% | elapsed %s | ETA %s%s%s", what_.c_str(), bar.c_str(),
               static_cast<long long>(done_), static_cast<long long>(total_),
               total_ > 0 ? static_cast<int>(100 * done_ / total_) : 0, format_duration(el).c_str(),
               did > 0 ? format_duration(eta).c_str() : "?", note_.empty() ? "" : " | ", note_.c_str());
  std::fflush(stderr);
  drawn_ = true;
}

void Progress::update(int64_t done, const std::string& note) {
  done_ = done;
  note_ = note;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_draw_ > std::chrono::milliseconds(100) || done_ == total_) {
    last_draw_ = now;
    draw();
  }
}

void Progress::line(const std::string& text) {
  clear();
  std::fprintf(stdout, "%s\n", text.c_str());
  std::fflush(stdout);
  draw();
}

void Progress::finish() {
  if (finished_) return;
  clear();
  finished_ = true;
}

std::string fmt(const char* format, double v) {
  char b[64];
  std::snprintf(b, sizeof b, format, v);
  return b;
}

void ProgressReport::operator()(int64_t done, int64_t total) {
  const auto now = std::chrono::steady_clock::now();
  if (!bar_) {
    bar_ = std::make_unique<Progress>(name_, total);
    start_ = last_ = now;
  }
  if (bar_->tty()) return bar_->update(done);
  if (now - last_ < std::chrono::seconds(10) || done == total) return;
  last_ = now;
  const double s = std::chrono::duration<double>(now - start_).count();
  std::fprintf(stderr, "%s %lld of %lld %s | elapsed %s | ETA %s\n", line_.c_str(), static_cast<long long>(done),
               static_cast<long long>(total), unit_.c_str(), Progress::format_duration(s).c_str(),
               Progress::format_duration(s / static_cast<double>(done) * static_cast<double>(total - done)).c_str());
}

void ProgressReport::finish() {
  if (bar_) bar_->finish();
}

void BytesBar::operator()(uint64_t done, uint64_t total) {
  if (!bar_) bar_ = std::make_unique<Progress>(what_, static_cast<int64_t>(total));
  char note[64];
  std::snprintf(note, sizeof note, "%.1f / %.1f MiB", done / 1048576.0, total / 1048576.0);
  bar_->update(static_cast<int64_t>(done), note);
  if (done >= total) bar_->finish();
}

}  // namespace loom
