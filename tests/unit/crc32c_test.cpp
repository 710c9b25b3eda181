// crc32c_test.cpp: engine/io/crc32c.h against published values: the check value of
// "123456789" (0xE3069283), the iSCSI test vectors of RFC 3720 appendix B.4, a value computed
// in pieces equal to the value of the whole, and TFRecord's masked CRC of an 8-byte length as
// TensorFlow's own writer frames it.
#include "engine/io/crc32c.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "core/rng.h"

namespace loom {
namespace {

TEST(Crc32c, CheckValue) {
  const std::string s = "123456789";
  EXPECT_EQ(crc32c(s.data(), s.size()), 0xE3069283u);
  EXPECT_EQ(crc32c(s.data(), 0), 0u);
}

TEST(Crc32c, Rfc3720Vectors) {
  std::vector<unsigned char> b(32);
  for (auto& c : b) c = 0;
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x8A9136AAu);
  for (auto& c : b) c = 0xff;
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x62A8AB43u);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x46DD794Eu);
  for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<unsigned char>(31 - i);
  EXPECT_EQ(crc32c(b.data(), b.size()), 0x113FDB5Cu);
  // An iSCSI read command PDU (48 bytes).
  const unsigned char pdu[48] = {0x01, 0xc0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00, 0x04, 0x00,
                                 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x18, 0x28, 0x00, 0x00, 0x00,
                                 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00};
  EXPECT_EQ(crc32c(pdu, sizeof pdu), 0xD9963A56u);
}

TEST(Crc32c, PiecesContinueTheWhole) {
  Rng r(5);
  std::vector<unsigned char> b(1000);
  for (auto& c : b) c = static_cast<unsigned char>(r.below(256));
  const uint32_t whole = crc32c(b.data(), b.size());
  for (size_t cut : {size_t{0}, size_t{1}, size_t{499}, size_t{1000}})
    EXPECT_EQ(crc32c(b.data() + cut, b.size() - cut, crc32c(b.data(), cut)), whole) << cut;
}

TEST(Crc32c, MaskedAsTfRecordFramesALength) {
  // TFRecord's header for a 24-byte record: 24 as 8 little-endian bytes, then their masked CRC.
  // Both values come from Python's crc32c package (crc32c.crc32c(b"\x18" + bytes(7)), then
  // rotated right 15 bits plus 0xa282ead8 by hand).
  const unsigned char len[8] = {24, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_EQ(crc32c(len, 8), 0x4A65BFE4u);
  EXPECT_EQ(mask_crc32c(crc32c(len, 8)), 0x224B7FA3u);
  EXPECT_EQ(mask_crc32c(0x80000000u), 0x00010000u + 0xa282ead8u);  // the rotation wraps
}

}  // namespace
}  // namespace loom
