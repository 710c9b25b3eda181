// gpt2_import_fuzz.cpp: `loom import --from gpt2-safetensors` on any file: names, layer count
// and sizes from tensor names, shapes, dtypes, metadata (head count, tokenizer). An accepted
// file must export (gpt2_safetensors) and import again to the same model and parameters.
#include <cstring>

#include "fuzz_support.h"
#include "launch/run/gpt2_io.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string path = fuzz::put_file("gpt2.safetensors", {reinterpret_cast<const char*>(data), size});
  Gpt2Model g;
  if (!fuzz::accepts([&] { g = read_gpt2_safetensors(path, {}); })) return 0;
  const std::string again = fuzz::scratch() + "/again.safetensors";
  Gpt2Model h;
  fuzz::require(fuzz::accepts([&] {
                  write_safetensors(again, gpt2_safetensors(g.model, g.tokenizer, g.params));
                  h = read_gpt2_safetensors(again, {});
                }),
                "an imported model does not export and import again");
  fuzz::require(h.model.n_layer == g.model.n_layer && h.model.d_model == g.model.d_model &&
                    h.model.n_head == g.model.n_head && h.model.vocab == g.model.vocab &&
                    h.model.seq_len == g.model.seq_len && h.tokenizer == g.tokenizer &&
                    h.params.size() == g.params.size() &&
                    std::memcmp(h.params.data(), g.params.data(), g.params.size() * sizeof(float)) == 0,
                "export + import changed the model");
  return 0;
}
