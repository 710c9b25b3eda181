// plot_e2e_test.cpp: `loom plot` on two real tiny runs: a PNG and an SVG of the requested
// size, the SVG well-formed XML (read back by Python's parser, not ours) with each run's name
// in its text, and every option (tokens on x, log scale) drawing something different.
#include <gtest/gtest.h>

#include "tests/support/helpers.h"

namespace loom::test {
namespace {

class Plot : public ::testing::Test {
 protected:
  // Two runs that differ (learning rate and length), named as folders "alpha" and "beta".
  static void SetUpTestSuite() {
    dir_ = new TempDir;
    const std::string data = prepare_tiny_data(dir_->str(), 60000);
    std::ofstream(*dir_ / "tiny.toml") << tiny_config(data, *dir_ / "alpha", 20);
    RunResult a = run_loom({"train", "--config", *dir_ / "tiny.toml"});
    ASSERT_EQ(a.rc, 0) << a.err;
    RunResult b = run_loom({"train", "--config", *dir_ / "tiny.toml", "--log.run_dir", *dir_ / "beta",
                            "--train.steps", "30", "--optim.lr", "1e-3"});
    ASSERT_EQ(b.rc, 0) << b.err;
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string d(const std::string& s) { return *dir_ / s; }
  static RunResult plot(const std::string& out, std::vector<std::string> extra = {}) {
    std::vector<std::string> args = {"plot", d("alpha"), d("beta") + "/", "--out", d(out)};
    args.insert(args.end(), extra.begin(), extra.end());
    return run_loom(args);
  }
  static TempDir* dir_;
};
TempDir* Plot::dir_ = nullptr;

uint32_t be32(const std::string& s, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<unsigned char>(s.at(at + i));
  return v;
}

TEST_F(Plot, PngHasTheRequestedSize) {
  RunResult r = plot("curves.png", {"--width", "640", "--height", "400"});
  ASSERT_EQ(r.rc, 0) << r.err;
  const std::string png = read_bytes(d("curves.png"));
  ASSERT_GT(png.size(), 33u);
  EXPECT_EQ(png.substr(0, 8), std::string("\x89PNG\r\n\x1a\n", 8));
  EXPECT_EQ(png.substr(12, 4), "IHDR");  // the first chunk, as PNG requires
  EXPECT_EQ(be32(png, 16), 640u);
  EXPECT_EQ(be32(png, 20), 400u);
  EXPECT_EQ(png.substr(png.size() - 8, 4), "IEND");
  // Two curves with a legend compress to more than a blank page of this size (~2 KB).
  EXPECT_GT(png.size(), 10000u);
}

TEST_F(Plot, SvgIsXmlOfTheRequestedSizeNamingTheRuns) {
  RunResult r = plot("curves.svg", {"--width", "800", "--height", "500", "--x", "tokens", "--log"});
  ASSERT_EQ(r.rc, 0) << r.err;
  // Python's XML parser reads it: the root's size, and every text the picture holds (the
  // legend's names as <text>, the title).
  std::ofstream(d("read_svg.py")) << "import sys, xml.etree.ElementTree as E\n"
                                     "root = E.parse(sys.argv[1]).getroot()\n"
                                     "ns = '{http://www.w3.org/2000/svg}'\n"
                                     "assert root.tag == ns + 'svg', root.tag\n"
                                     "print('size', root.get('width'), root.get('height'))\n"
                                     "for t in root.iter(ns + 'text'): print('text', t.text)\n"
                                     "for t in root.iter(ns + 'title'): print('title', t.text)\n";
  RunResult py = run_binary("python3", {d("read_svg.py"), d("curves.svg")});
  ASSERT_EQ(py.rc, 0) << py.err;
  EXPECT_NE(py.out.find("size 800 500\n"), std::string::npos) << py.out;
  EXPECT_NE(py.out.find("text alpha\n"), std::string::npos) << py.out;
  EXPECT_NE(py.out.find("text beta\n"), std::string::npos) << py.out;
  EXPECT_NE(py.out.find("title loss curves: alpha, beta\n"), std::string::npos) << py.out;
}

TEST_F(Plot, EveryOptionChangesThePicture) {
  const std::vector<std::vector<std::string>> variants = {{}, {"--x", "tokens"}, {"--log"}};
  const std::vector<std::string> names = {"steps.svg", "tokens.svg", "log.svg"};
  std::vector<std::string> svgs;
  for (size_t i = 0; i < variants.size(); ++i) {
    const std::string& out = names[i];
    RunResult r = plot(out, variants[i]);
    ASSERT_EQ(r.rc, 0) << r.err;
    svgs.push_back(read_bytes(d(out)));
    ASSERT_FALSE(svgs.back().empty());
  }
  EXPECT_NE(svgs[0], svgs[1]);
  EXPECT_NE(svgs[0], svgs[2]);
  // The same input draws the same picture.
  ASSERT_EQ(plot("again.svg").rc, 0);
  EXPECT_EQ(read_bytes(d("again.svg")), svgs[0]);
}

}  // namespace
}  // namespace loom::test
