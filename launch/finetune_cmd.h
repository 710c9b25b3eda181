// finetune_cmd.h: `loom finetune`, registered on the CLI's app by main.cpp and dispatched
// after parsing (engine/train/finetune.h does the work).
#pragma once
#include <memory>

namespace CLI {
class App;
}

namespace loom {

class FinetuneCommand {
 public:
  virtual ~FinetuneCommand() = default;
  virtual bool parsed() const = 0;
  virtual int run() = 0;
};

// Adds the subcommand and its flags to `app`; the object must outlive app.parse().
std::unique_ptr<FinetuneCommand> add_finetune_command(CLI::App& app);

}  // namespace loom
