// dtype.h: element types of loom tensors. F64 exists so that whole graphs can run in
// double for finite-difference gradient checks; BF16 is the CUDA backend's working type.
#pragma once
#include <cstddef>
#include <cstdint>

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

}  // namespace loom
