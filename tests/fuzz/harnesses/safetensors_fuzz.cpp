// safetensors_fuzz.cpp: read_safetensors on any bytes. A file it accepts must also survive a
// round trip: written back by write_safetensors and read again, the same metadata and tensors.
#include "engine/io/safetensors.h"
#include "fuzz_support.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace loom;
  const std::string path = fuzz::put_file("in.safetensors", {reinterpret_cast<const char*>(data), size});
  StFile f;
  if (!fuzz::accepts([&] { f = read_safetensors(path); })) return 0;
  const std::string again = fuzz::scratch() + "/again.safetensors";
  StFile g;
  fuzz::require(fuzz::accepts([&] {
                  write_safetensors(again, f);
                  g = read_safetensors(again);
                }),
                "an accepted file does not survive write_safetensors + read_safetensors");
  fuzz::require(g.metadata == f.metadata && g.tensors.size() == f.tensors.size(), "round trip changed the file");
  for (size_t i = 0; i < f.tensors.size(); ++i) {
    const StTensor &a = f.tensors[i], &b = g.tensors[i];
    fuzz::require(a.name == b.name && a.dtype == b.dtype && a.shape == b.shape && a.data == b.data,
                  "round trip changed tensor " + a.name);
  }
  return 0;
}
