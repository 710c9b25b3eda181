// main.cpp: the `loom` command line. Every subcommand is a Command (command.h) listed in
// commands.def; its flag table is CLI11's, so --help is generated from the parser and cannot
// drift. One error scheme ends here (core/check.h): bad input of any kind is one line
// "loom: error: <file or flag>: <problem>" and exit code 2; a lost rank of a data-parallel job
// exit code 3; an internal bug aborts with file and line where it was found.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "core/check.h"
#include "engine/comm/comm.h"
#include "launch/command.h"

namespace loom {
namespace {

int run(int argc, char** argv) {
  CLI::App app{"loom: pretrain language models with teacher forcing on CPU or GPU"};
  app.require_subcommand(1);
  app.set_help_all_flag("--help-all", "help for every subcommand");
  std::vector<std::unique_ptr<Command>> commands;
#define LOOM_COMMAND(factory) commands.push_back(factory(app));
#include "launch/commands.def"
#undef LOOM_COMMAND
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "loom: error: %s (see loom %s--help)\n", e.what(),
                 app.get_subcommands().empty() ? "" : (app.get_subcommands()[0]->get_name() + " ").c_str());
    return kUserErrorExit;
  }
  for (const auto& c : commands)
    if (c->parsed()) return c->run();
  LOOM_CHECK(false, "a subcommand was parsed that no command claims");
}

// One line on stderr, after whatever stdout holds. Messages quote what the user gave us (file
// names, tensor names, keys): control characters are escaped, so that no input can print a
// second line or move the cursor.
int report(const char* what, int code) {
  std::string line;
  for (const char* p = what; *p; ++p) {
    const unsigned char c = static_cast<unsigned char>(*p);
    if (c < 0x20 || c == 0x7f) {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      line += esc;
    } else {
      line += static_cast<char>(c);
    }
  }
  std::fflush(stdout);
  std::fprintf(stderr, "loom: error: %s\n", line.c_str());
  return code;
}

}  // namespace
}  // namespace loom

int main(int argc, char** argv) {
  try {
    return loom::run(argc, argv);
  } catch (const loom::UserError& e) {
    return loom::report(e.what(), loom::kUserErrorExit);
  } catch (const loom::CommError& e) {  // another rank was lost (loom launch tells the two apart)
    return loom::report(e.what(), loom::kCommLostExit);
  } catch (const std::bad_alloc&) {
    return loom::report("out of host memory (lower train.batch_size or the model size)", loom::kUserErrorExit);
  } catch (const std::filesystem::filesystem_error& e) {  // the environment's, not loom's
    return loom::report(e.what(), loom::kUserErrorExit);
  } catch (const std::exception& e) {  // nothing else may escape: a bug, reported as one
    std::fflush(stdout);
    std::fprintf(stderr, "loom: internal error: uncaught exception: %s\n", e.what());
    std::abort();
  }
}
