// dtype.h: element types of loom tensors. F64 exists so that whole graphs can run in
// double for finite-difference gradient checks; BF16 is the CUDA backend's working type.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace loom {

enum class DType : uint8_t { F32, F64, I32, BF16 };

constexpr size_t dtype_size(DType t) {
  switch (t) {
    case DType::F32: return 4;
    case DType::F64: return 8;
    case DType::I32: return 4;
    case DType::BF16: return 2;
  }
  return 0;
}
constexpr const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "f32";
    case DType::F64: return "f64";
    case DType::I32: return "i32";
    case DType::BF16: return "bf16";
  }
  return "?";
}

// bfloat16 storage, layout-compatible with CUDA's __nv_bfloat16 (kernels reinterpret it), so
// headers shared by host code and kernels need no CUDA include.
struct bf16 {
  uint16_t bits;
};

// Round to nearest even; NaN stays NaN.
inline bf16 to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<uint16_t>((u >> 16) | 0x40)};
  u += 0x7fffu + ((u >> 16) & 1u);
  return bf16{static_cast<uint16_t>(u >> 16)};
}
inline float from_bf16(bf16 b) {
  const uint32_t u = static_cast<uint32_t>(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

}  // namespace loom
