// Fixed-width packing of small unsigned symbols (k-bit codebook indices, 4-bit relative indices,
// sign bits) into bytes, and the bit reader every index stream of a model file is decoded with.
//
// Convention, written once: symbol i occupies stream bits [i k, (i + 1) k), least significant bit
// first; stream bit t is bit (t mod 8) of byte t / 8. A stream of n symbols is exactly
// ceil(n k / 8) bytes and its unused high bits of the last byte are zero (a decoder rejects
// anything else, so every valid stream has exactly one encoding).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io::encoding {

/// Largest symbol width a packed stream holds (fixed-point codes use up to 16, int8 codes 8).
inline constexpr int max_pack_bits = 24;

/// Bytes of n symbols of `bits` bits.
inline std::size_t packed_bytes(std::size_t n, int bits) { return (n * static_cast<std::size_t>(bits) + 7) / 8; }

/// Packs `symbols` (each < 2^bits) LSB first. Throws config_error on a symbol that does not fit.
inline std::vector<std::uint8_t> pack_bits(const std::vector<std::uint32_t>& symbols, int bits) {
  constexpr const char* fn = "slimnet::io::encoding::pack_bits";
  if (bits < 1 || bits > max_pack_bits) slimnet::detail::raise<config_error>(fn, "bits = {} outside [1, {}]", bits, max_pack_bits);
  std::vector<std::uint8_t> out(packed_bytes(symbols.size(), bits), 0);
  std::size_t t = 0;
  for (std::size_t i = 0; i < symbols.size(); ++i) {
    const std::uint32_t s = symbols[i];
    if (s >> bits) slimnet::detail::raise<config_error>(fn, "symbol {} = {} does not fit in {} bits", i, s, bits);
    for (int b = 0; b < bits; ++b, ++t) out[t >> 3] |= static_cast<std::uint8_t>(((s >> b) & 1u) << (t & 7));
  }
  return out;
}

/// Unpacks n symbols of `bits` bits from `bytes`; io_error (naming `what`) if the length is not
/// exactly ceil(n bits / 8) or a padding bit is set.
inline std::vector<std::uint32_t> unpack_bits(const std::vector<std::uint8_t>& bytes, int bits, std::size_t n, const std::string& what) {
  constexpr const char* fn = "slimnet::io::encoding::unpack_bits";
  if (bits < 1 || bits > max_pack_bits) slimnet::detail::raise<io_error>(fn, "{}: symbol width {} outside [1, {}]", what, bits, max_pack_bits);
  if (n > bytes.size() * 8 || bytes.size() != packed_bytes(n, bits)) {  // the first test keeps n * bits from overflowing
    slimnet::detail::raise<io_error>(fn, "{}: {} symbols of {} bits do not fit a stream of {} bytes (need exactly {})", what, n, bits,
                                     bytes.size(), n > bytes.size() * 8 ? std::string("more") : std::to_string(packed_bytes(n, bits)));
  }
  std::vector<std::uint32_t> out(n, 0);
  std::size_t t = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t s = 0;
    for (int b = 0; b < bits; ++b, ++t) s |= static_cast<std::uint32_t>((bytes[t >> 3] >> (t & 7)) & 1u) << b;
    out[i] = s;
  }
  for (; t < bytes.size() * 8; ++t) {
    if ((bytes[t >> 3] >> (t & 7)) & 1u) slimnet::detail::raise<io_error>(fn, "{}: padding bit {} after the last symbol is set", what, t);
  }
  return out;
}

/// Appends bits LSB first to a byte vector (what the Huffman encoder writes with).
class bit_writer {
 public:
  void put(std::uint32_t bit) {
    if ((count_ & 7) == 0) bytes_.push_back(0);
    bytes_.back() |= static_cast<std::uint8_t>((bit & 1u) << (count_ & 7));
    ++count_;
  }
  std::size_t bits() const { return count_; }
  std::vector<std::uint8_t> take() { return std::move(bytes_); }

 private:
  std::vector<std::uint8_t> bytes_;
  std::size_t count_ = 0;
};

/// Reads bits LSB first; never reads past the end (get() reports exhaustion instead).
class bit_reader {
 public:
  explicit bit_reader(const std::vector<std::uint8_t>& bytes) : bytes_(bytes) {}
  /// The next bit, or -1 at the end of the stream.
  int get() {
    if (pos_ >= bytes_.size() * 8) return -1;
    const int b = (bytes_[pos_ >> 3] >> (pos_ & 7)) & 1;
    ++pos_;
    return b;
  }
  std::size_t position() const { return pos_; }
  std::size_t size() const { return bytes_.size() * 8; }

 private:
  const std::vector<std::uint8_t>& bytes_;
  std::size_t pos_ = 0;
};

}  // namespace slimnet::io::encoding
