// plot.h: `loom plot`: a picture of run folders' loss curves -- train and val loss against
// steps or tokens, one colour per run, the lr schedule in a small panel below sharing the x
// axis -- drawn with cairo as PNG or SVG. It reads only metrics.jsonl (run_folder.h writes
// it), so it plots runs of every kind, finished or still running.
#pragma once
#include <limits>
#include <string>
#include <vector>

namespace loom {

// One line of metrics.jsonl; NaN where the line has no such number.
struct CurvePoint {
  static constexpr double kNone = std::numeric_limits<double>::quiet_NaN();
  double step = kNone, tokens = kNone, loss = kNone, val_loss = kNone, lr = kNone;
};

struct RunCurves {
  std::string dir;                 // the run folder as given
  std::string name;                // its name in the legend: the folder's name
  std::vector<CurvePoint> points;  // in file order
};

// Reads <dir>/metrics.jsonl. Lines that are not JSON objects with an integer "step" (a torn
// last line of a run in progress) are skipped. UserError naming the folder or file when it is
// missing or unreadable, a line is longer than kMaxMetricsLine or nested too deep, the file
// has more than kMaxMetricsLines lines, or no line has a loss or val_loss to plot.
RunCurves read_run_curves(const std::string& dir);

inline constexpr size_t kMaxMetricsLine = 64 * 1024;      // bytes; a real line is ~200
inline constexpr size_t kMaxMetricsLines = 10'000'000;    // steps of one run
inline constexpr int kMaxPlotRuns = 20;                   // what a legend can hold
inline constexpr int kMinPlotWidth = 320, kMinPlotHeight = 240, kMaxPlotSide = 8192;  // pixels

struct PlotOptions {
  std::vector<std::string> runs;  // run folders, in legend order
  std::string out;                // the picture: *.png or *.svg (the extension chooses)
  bool x_tokens = false;          // x axis: tokens seen (else steps)
  bool log_y = false;             // loss on a log scale
  int width = 960, height = 640;  // pixels (the SVG's user units)
};

// Checks the options, reads the runs, draws and writes `out` crash-safely (AtomicFile). Bad
// input is a UserError naming the file or flag; so is a loom built without cairo.
void plot_runs(const PlotOptions& opt);

}  // namespace loom
