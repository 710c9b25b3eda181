// command.h: the one way a `loom` subcommand is made. A command file defines a factory that
// adds its subcommand and flags to the app and returns the object holding the flag values
// (it must outlive parsing); launch/commands.def lists the factories, one line each; main.cpp
// parses and runs the one that was given. Bad input anywhere is a UserError (exit 2).
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "launch/run/config.h"

namespace CLI {
class App;
}

namespace loom {

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

}  // namespace loom
