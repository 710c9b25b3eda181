// command.h: the one way a `loom` subcommand is made. A command file defines a factory that
// adds its subcommand and flags to the app and returns the object holding the flag values
// (it must outlive parsing); launch/commands.def lists the factories, one line each; main.cpp
// parses and runs the one that was given. Bad input anywhere is a UserError (exit 2).
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "launch/run/config.h"
#include "launch/run/knn.h"

namespace CLI {
class App;
class Option;
}

namespace loom {

struct CheckpointData;

class Command {
 public:
  // `cmd`: the subcommand the factory added to the app (it holds the flags).
  explicit Command(CLI::App* cmd) : cmd_(cmd) {}
  virtual ~Command() = default;
  // True when this command was the one on the command line.
  virtual bool parsed() const;
  // Runs it; returns the exit code.
  virtual int run() = 0;

 protected:
  CLI::App* cmd_;
};

#define LOOM_COMMAND(factory) std::unique_ptr<Command> factory(CLI::App& app);
#include "launch/commands.def"
#undef LOOM_COMMAND

// A group of subcommands (`loom bench ...`, `loom tokenizer ...`), made by the first command
// of it that asks; later ones get the same.
CLI::App& command_group(CLI::App& app, const std::string& name, const std::string& help);
// The `bench` group (loom bench train | kernels | comm).
CLI::App& bench_group(CLI::App& app);
// --section.key value | --section.key=value pairs left over after the flags.
Overrides parse_overrides(const std::vector<std::string>& extras);
// True when stdout and stderr are both a terminal (progress bars then).
bool on_terminal();

// The data folder a command reads for a checkpoint: `data_flag` (--data), or else the one its
// run's config.toml names; UserError when neither is there.
std::string checkpoint_data_path(const CheckpointData& ck, const std::string& data_flag);

// The --knn flags of `loom sample` and `loom eval` (launch/run/knn.h, `loom knn`).
struct KnnFlags {
  std::string file;
  KnnOptions options;
  // Every flag's name.
  static const std::vector<const char*>& names();
  // Adds them to `cmd`; `each` is called on each (eval makes them exclude --task).
  void add(CLI::App& cmd, const std::function<void(CLI::Option*)>& each = {});
  // UserError when a --knn-* flag was given without --knn, or a value is out of range.
  void check(const CLI::App& cmd) const;
  // The datastore for `ck` with --knn (refused when it is another checkpoint's), else nullptr.
  std::unique_ptr<KnnStore> load(const CheckpointData& ck) const;
};

}  // namespace loom
