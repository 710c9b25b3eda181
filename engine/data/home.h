// home.h: where loom finds files that live beside its sources rather than in a prepared data
// folder (scripts/fetch_kjv.sh, the GPT-2 vocabulary installed by scripts/install_deps.sh).
#pragma once
#include <filesystem>
#include <vector>

namespace loom {

// Folders that may be the loom source tree, in order of preference: $LOOM_HOME, then the
// folders around the running binary (build/loom -> .., build/tests/x -> ../..); never the
// current folder.
std::vector<std::filesystem::path> loom_home_candidates();

}  // namespace loom
