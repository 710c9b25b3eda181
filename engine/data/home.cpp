// home.cpp: the candidate loom source folders (see home.h).
//
// Engine code cannot know where the sources were at build time (the binary may be copied or
// installed), so the user's explicit LOOM_HOME wins, then the folders around the binary.
// Never the current folder: whoever controls the folder a user runs loom in could plant a
// GPT-2 vocabulary there, or a scripts/fetch_kjv.sh that `loom prepare --corpus kjv` would run.
#include "engine/data/home.h"

#include <cstdlib>

namespace loom {

std::vector<std::filesystem::path> loom_home_candidates() {
  namespace fs = std::filesystem;
  std::vector<fs::path> roots;
  if (const char* home = std::getenv("LOOM_HOME"); home && *home) roots.emplace_back(home);
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    roots.push_back(exe.parent_path() / "..");
    roots.push_back(exe.parent_path() / ".." / "..");
  }
  return roots;
}

}  // namespace loom
