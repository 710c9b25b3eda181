// io_cmd.h: `loom import` and `loom export`, checkpoints to and from other formats (GPT-2 in
// safetensors today). Registered on the CLI's app by main.cpp, dispatched after parsing.
#pragma once
#include <memory>
#include <string>

namespace CLI {
class App;
}

namespace loom {

class IoCommands {
 public:
  virtual ~IoCommands() = default;
  // True when `import` or `export` was the parsed subcommand.
  virtual bool parsed() const = 0;
  // Runs it; returns the exit code (bad input throws UserError, as everywhere in the CLI).
  virtual int run() = 0;
};

// Adds the subcommands and their flags to `app`; the object holds the flag values, so it
// must outlive app.parse().
std::unique_ptr<IoCommands> add_io_commands(CLI::App& app);

}  // namespace loom
