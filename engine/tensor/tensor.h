// tensor.h: Shape and TensorView, the non-owning view every op and kernel receives.
// Views never free; memory is owned by the arena, the flat parameter buffers or the caller.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/check.h"
#include "core/dtype.h"

namespace loom {

using Shape = std::vector<int64_t>;

inline int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}
inline std::string shape_str(const Shape& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) {
    if (i) r += ',';
    r += std::to_string(s[i]);
  }
  r += ']';
  return r;
}

struct TensorView {
  void* data = nullptr;
  Shape shape;
  DType dtype = DType::F32;

  int64_t numel() const { return loom::numel(shape); }
  size_t bytes() const { return static_cast<size_t>(numel()) * dtype_size(dtype); }
  int64_t dim(int i) const { return shape[i < 0 ? shape.size() + i : i]; }
  // Product of all dimensions but the last: the "rows" of a row-major matrix view.
  int64_t rows() const { return shape.empty() ? 1 : numel() / shape.back(); }
  template <typename T>
  T* as() const { return static_cast<T*>(data); }
  explicit operator bool() const { return data != nullptr; }
};

}  // namespace loom
