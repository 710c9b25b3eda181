// plot_cmd.cpp: `loom plot RUN... --out FILE.png|FILE.svg [--x steps|tokens] [--log]
// [--width W --height H]`: a picture of the runs' loss curves and lr schedules
// (launch/run/plot.h).
#include <CLI/CLI.hpp>

#include <cstdio>

#include "launch/command.h"
#include "launch/run/plot.h"

namespace loom {

namespace {

class PlotCommand final : public Command {
 public:
  explicit PlotCommand(CLI::App& app)
      : Command(app.add_subcommand("plot", "picture of runs' train and val loss and lr (PNG or SVG)")) {
    cmd_->add_option("runs", opt_.runs, "run folders (each with its metrics.jsonl)")->required();
    cmd_->add_option("--out", opt_.out, "picture to write: *.png or *.svg")->required();
    cmd_->add_option("--x", x_, "x axis: steps or tokens")
        ->check(CLI::IsMember({"steps", "tokens"}))
        ->capture_default_str();
    cmd_->add_flag("--log", opt_.log_y, "loss on a log scale");
    cmd_->add_option("--width", opt_.width, "width in pixels")->capture_default_str();
    cmd_->add_option("--height", opt_.height, "height in pixels")->capture_default_str();
  }
  int run() override {
    opt_.x_tokens = x_ == "tokens";
    plot_runs(opt_);
    std::printf("wrote %s (%zu run%s)\n", opt_.out.c_str(), opt_.runs.size(), opt_.runs.size() == 1 ? "" : "s");
    return 0;
  }

 private:
  PlotOptions opt_;
  std::string x_ = "steps";
};

}  // namespace

std::unique_ptr<Command> add_plot_command(CLI::App& app) { return std::make_unique<PlotCommand>(app); }

}  // namespace loom
