// crc32c.h: CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of TFRecord
// files (TensorBoard's event files, launch/run/tensorboard.h), and TFRecord's masked form of it.
// Debian 12 packages no CRC-32C library for C++ (google's crc32c is not in it; Abseil gained
// one only after the version it ships), so this is the plain table method, checked against the
// published check values (RFC 3720, appendix B.4) in tests/unit/crc32c_test.cpp. Event files
// are a few hundred bytes a step: a byte at a time is fast enough.
#pragma once
#include <cstddef>
#include <cstdint>

namespace loom {

// The CRC-32C of n bytes, continuing from `crc` (the CRC of the bytes before them; 0 to start).
uint32_t crc32c(const void* data, size_t n, uint32_t crc = 0);

// TFRecord stores a CRC rotated right by 15 bits plus a constant, so that the CRC of a buffer
// that holds CRCs of its own does not degenerate.
inline uint32_t mask_crc32c(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

}  // namespace loom
