// Model-file encodings: bit packing, canonical Huffman, relative indices, and every tensor encoding
// round-tripping bitwise on odd shapes (empty rows, all zero, gaps past the index width), plus the
// decoder's errors on corrupt parts.
#include <catch2/catch.hpp>

#include <cstring>

#include "slimnet/core/random.hpp"
#include "slimnet/io/tensor_codec.hpp"

using namespace slimnet;
using namespace slimnet::io;

namespace {

raw_file as_file(const encoded_tensor& e) {
  raw_file f;
  for (const auto& [name, t] : e.parts) f.tensors[name] = t;
  return f;
}

bool bitwise_equal(const tensor<float>& a, const std::vector<float>& b) {
  return static_cast<std::size_t>(a.size()) == b.size() && (b.empty() || std::memcmp(a.data(), b.data(), b.size() * 4) == 0);
}

/// +0 instead of -0: the sparse encodings store zero without its sign.
std::vector<float> positive_zeros(std::vector<float> v) {
  for (auto& x : v)
    if (x == 0.0f) x = 0.0f;
  return v;
}

/// rows x cols values: each nonzero with probability `density`, drawn from `k` centroids (k = 0: any float).
std::vector<float> make_values(rng& gen, std::int64_t rows, std::int64_t cols, double density, int k) {
  std::vector<float> centroids;
  for (int i = 0; i < k; ++i) centroids.push_back(static_cast<float>(gen.normal()) + (i % 2 ? 0.01f : -0.01f));
  std::vector<float> v(static_cast<std::size_t>(rows * cols), 0.0f);
  for (auto& x : v) {
    if (!gen.bernoulli(density)) continue;
    x = k > 0 ? centroids[gen.below(static_cast<std::uint64_t>(k))] : static_cast<float>(gen.normal());
    if (x == 0.0f) x = 1.0f;
  }
  return v;
}

tensor<float> round_trip(const std::string& name, const shape_t& shape, const std::vector<float>& v, tensor_encode_options o,
                         std::string* chosen = nullptr) {
  const encoded_tensor e = encode_tensor(name, shape, v.data(), o);
  if (chosen) *chosen = e.descriptor["encoding"].get<std::string>();
  std::set<std::string> used;
  tensor<float> out = decode_tensor(name, e.descriptor, as_file(e), &used);
  CHECK(used.size() == e.parts.size());
  CHECK(out.shape() == shape);
  return out;
}

}  // namespace

TEST_CASE("pack_bits round trips every width and rejects bad lengths and padding", "[io][encoding]") {
  rng gen(1);
  for (int bits = 1; bits <= 16; ++bits) {
    for (std::size_t n : {0u, 1u, 7u, 13u, 100u}) {
      std::vector<std::uint32_t> s(n);
      for (auto& x : s) x = static_cast<std::uint32_t>(gen.below(std::uint64_t{1} << bits));
      const auto bytes = encoding::pack_bits(s, bits);
      CHECK(bytes.size() == (n * static_cast<std::size_t>(bits) + 7) / 8);
      CHECK(encoding::unpack_bits(bytes, bits, n, "t") == s);
    }
  }
  CHECK_THROWS_AS(encoding::pack_bits({16}, 4), config_error);
  auto bytes = encoding::pack_bits({1, 2, 3}, 3);  // 9 bits: 2 bytes, 7 padding bits
  CHECK_THROWS_WITH(encoding::unpack_bits(bytes, 3, 6, "t"), Catch::Contains("do not fit a stream of 2 bytes"));
  bytes.back() |= 0x80;
  CHECK_THROWS_WITH(encoding::unpack_bits(bytes, 3, 3, "t"), Catch::Contains("padding bit"));
  CHECK_THROWS_AS(encoding::unpack_bits(bytes, 3, std::size_t{1} << 62, "t"), io_error);
}

TEST_CASE("canonical Huffman: skewed, single-symbol and empty streams round trip", "[io][encoding]") {
  rng gen(2);
  std::vector<std::uint32_t> skewed;
  for (int i = 0; i < 5000; ++i) {
    const double u = gen.uniform();
    skewed.push_back(u < 0.7 ? 0u : u < 0.9 ? 1u : static_cast<std::uint32_t>(2 + gen.below(14)));
  }
  const auto h = encoding::huffman_encode(skewed, 16);
  CHECK(encoding::huffman_decode(h.lengths, h.bytes, skewed.size(), 16, "t") == skewed);
  CHECK(h.bytes.size() + h.lengths.size() < encoding::pack_bits(skewed, 4).size() * 3 / 4);  // entropy ~ 1.6 of 4 bits
  CHECK(h.lengths[0] == 1);  // 70% of the stream: the shortest code

  const std::vector<std::uint32_t> single(37, 5u);
  const auto s = encoding::huffman_encode(single, 8);
  CHECK(s.lengths == std::vector<std::uint8_t>{0, 0, 0, 0, 0, 1});
  CHECK(s.bytes.size() == 5);
  CHECK(encoding::huffman_decode(s.lengths, s.bytes, single.size(), 8, "t") == single);

  const auto e = encoding::huffman_encode({}, 4);
  CHECK(e.bytes.empty());
  CHECK(encoding::huffman_decode(e.lengths, e.bytes, 0, 4, "t").empty());

  // Very skewed counts (Fibonacci-like) need the length limit.
  std::vector<std::uint64_t> freq(40);
  std::uint64_t a = 1, b = 1;
  for (auto& f : freq) {
    f = a;
    a = b;
    b += f;
  }
  const auto lengths = encoding::huffman_code_lengths(freq);
  std::uint64_t kraft = 0;
  for (auto l : lengths) {
    CHECK(l >= 1);
    CHECK(l <= encoding::max_huffman_length);
    kraft += std::uint64_t{1} << (encoding::max_huffman_length - l);
  }
  CHECK(kraft <= std::uint64_t{1} << encoding::max_huffman_length);
}

TEST_CASE("Huffman decoder rejects tables that are no prefix code and streams that do not decode", "[io][encoding]") {
  const std::vector<std::uint32_t> symbols{0, 1, 2, 3, 0, 0};
  const auto h = encoding::huffman_encode(symbols, 4);
  // Over-subscribed: three codes of length 1.
  CHECK_THROWS_WITH(encoding::huffman_decode({1, 1, 1}, h.bytes, symbols.size(), 4, "w.codes"),
                    Catch::Contains("w.codes") && Catch::Contains("not a prefix code"));
  CHECK_THROWS_WITH(encoding::huffman_decode({30, 1}, h.bytes, 1, 4, "t"), Catch::Contains("exceeds"));
  // (padding bits may decode as symbols, but not 10 of them)
  CHECK_THROWS_WITH(encoding::huffman_decode(h.lengths, h.bytes, symbols.size() + 10, 4, "t"), Catch::Contains("of 16 symbols"));
  CHECK_THROWS_WITH(encoding::huffman_decode({0, 0, 0, 0, 0, 1}, h.bytes, 1, 4, "t"), Catch::Contains("alphabet"));
  // Incomplete code {0 -> "0"}: a 1 bit is no code.
  CHECK_THROWS_WITH(encoding::huffman_decode({1}, {0x02}, 2, 4, "t"), Catch::Contains("does not decode"));
  CHECK_THROWS_WITH(encoding::huffman_decode(h.lengths, h.bytes, 1000, 4, "t"), Catch::Contains("cannot be coded"));
  auto trailing = h.bytes;
  trailing.push_back(0);
  CHECK_THROWS_WITH(encoding::huffman_decode(h.lengths, trailing, symbols.size(), 4, "t"), Catch::Contains("bytes follow"));
}

TEST_CASE("relative indices: fillers where a gap overflows, positions checked against the matrix", "[io][encoding]") {
  const std::vector<std::uint64_t> positions{0, 3, 18, 19, 300, 301, 1000};
  const auto s4 = encoding::encode_relative_indices(positions, 4);
  // gap 0, 2, 14, 0, 280 = 18 fillers of 15 + 10, 0, 698 = 46 fillers + 8
  CHECK(s4.size() == 7 + 18 + 46);
  CHECK(s4[2] == 14);
  CHECK(s4[4] == 15);  // a filler
  CHECK(encoding::relative_index_count(positions, 4) == s4.size());
  CHECK(encoding::decode_relative_indices(s4, 4, 1001, 7, "t") == positions);
  const auto s8 = encoding::encode_relative_indices(positions, 8);
  CHECK(s8.size() == 7 + 1 + 2);
  CHECK(encoding::decode_relative_indices(s8, 8, 1001, 7, "t") == positions);
  CHECK_THROWS_WITH(encoding::decode_relative_indices(s8, 8, 1000, 7, "w.indices"),
                    Catch::Contains("w.indices") && Catch::Contains("outside the 1000 entries"));
  CHECK_THROWS_WITH(encoding::decode_relative_indices(s8, 8, 1001, 6, "t"), Catch::Contains("more than the 6 nonzeros"));
  CHECK_THROWS_WITH(encoding::decode_relative_indices(s8, 8, 1001, 8, "t"), Catch::Contains("holds 7 nonzeros"));
  CHECK_THROWS_WITH(encoding::decode_relative_indices({255}, 8, 1001, 0, "t"), Catch::Contains("ends in a filler"));
  CHECK_THROWS_WITH(encoding::decode_relative_indices({16}, 4, 1001, 1, "t"), Catch::Contains("does not fit 4 bits"));
}

TEST_CASE("every tensor encoding round trips bitwise on odd shapes", "[io][encoding]") {
  rng gen(3);
  const std::vector<std::pair<std::int64_t, std::int64_t>> shapes{{1, 1}, {7, 13}, {31, 17}, {3, 600}, {0, 5}, {64, 1}};
  for (const auto& [rows, cols] : shapes) {
    for (double density : {0.0, 0.02, 0.3, 1.0}) {
      CAPTURE(rows, cols, density);
      const shape_t shape{rows, cols};
      // Free floats: dense and sparse.
      const auto free = make_values(gen, rows, cols, density, 0);
      for (auto enc : {tensor_encoding::automatic, tensor_encoding::dense_f32, tensor_encoding::sparse}) {
        for (int bits : {4, 8}) {
          for (auto hm : {huffman_mode::never, huffman_mode::always}) {
            tensor_encode_options o;
            o.encoding = enc;
            o.index_bits = bits;
            o.huffman = hm;
            CAPTURE(encoding_name(enc), bits);
            CHECK(bitwise_equal(round_trip("w", shape, free, o), positive_zeros(free)));
          }
        }
      }
      // Clustered values: 1-bit (2 centroids) and 8-bit (200 centroids) codebooks, dense and sparse.
      for (int k : {2, 200}) {
        const auto clustered = make_values(gen, rows, cols, density, k);
        for (auto enc : {tensor_encoding::codebook, tensor_encoding::sparse_codebook, tensor_encoding::automatic}) {
          for (auto hm : {huffman_mode::never, huffman_mode::always, huffman_mode::automatic}) {
            tensor_encode_options o;
            o.encoding = enc;
            o.huffman = hm;
            CAPTURE(encoding_name(enc), k);
            CHECK(bitwise_equal(round_trip("w", shape, clustered, o), positive_zeros(clustered)));
          }
        }
      }
    }
  }
}

TEST_CASE("automatic encoding picks what the values are", "[io][encoding]") {
  rng gen(4);
  std::string chosen;
  // Dense random floats: F32.
  auto dense = make_values(gen, 20, 30, 1.0, 0);
  CHECK(bitwise_equal(round_trip("w", {20, 30}, dense, {}, &chosen), dense));
  CHECK(chosen == "dense_f32");
  // 5% of the weights from 16 centroids: sparse codebook, far below 4 bytes a weight.
  auto pruned = make_values(gen, 300, 784, 0.05, 16);
  const auto e = encode_tensor("fc1.weight", {300, 784}, pruned.data());
  CHECK(e.descriptor["encoding"] == "sparse_codebook");
  std::uint64_t bytes = 0;
  for (const auto& [n, t] : e.parts) bytes += t.bytes.size();
  CHECK(bytes * 40 < 300 * 784 * 4);
  CHECK(bitwise_equal(decode_tensor("fc1.weight", e.descriptor, as_file(e)), pruned));
  // +-alpha per row: sign bits.
  std::vector<float> binary(50 * 70);
  for (std::size_t i = 0; i < binary.size(); ++i) binary[i] = (gen.bernoulli(0.5) ? 1.0f : -1.0f) * (0.25f + static_cast<float>(i / 70) * 0.01f);
  CHECK(bitwise_equal(round_trip("w", {50, 70}, binary, {}, &chosen), binary));
  CHECK(chosen == "sign_bits");
  // A 6-bit fixed-point grid <2, 4> of 7 x 300: fixed point (6 bits) beats a 64-entry codebook.
  std::vector<float> fixed(7 * 300);
  for (auto& x : fixed) x = static_cast<float>(static_cast<int>(gen.below(64)) - 32) / 16.0f;
  tensor_encode_options no_huffman;
  no_huffman.huffman = huffman_mode::never;
  const auto f = encode_tensor("w", {7, 300}, fixed.data(), no_huffman);
  CHECK(f.descriptor["encoding"] == "fixed_point");
  CHECK(f.descriptor["fixed_point"]["integer_bits"] == 2);
  CHECK(f.descriptor["fixed_point"]["fraction_bits"] == 4);
  CHECK(bitwise_equal(decode_tensor("w", f.descriptor, as_file(f)), fixed));
}

TEST_CASE("fixed point, int8 rows, sign bits and half precision round trip or refuse", "[io][encoding]") {
  rng gen(5);
  // int8 codes with a non-power-of-two scale per row.
  std::vector<float> q(9 * 33);
  for (std::int64_t j = 0; j < 9; ++j) {
    const float s = 0.0137f * static_cast<float>(j + 1);
    for (std::int64_t k = 0; k < 33; ++k) {
      const int c = k == 0 ? 127 : static_cast<int>(gen.below(255)) - 127;
      q[static_cast<std::size_t>(j * 33 + k)] = static_cast<float>(c) * s;
    }
  }
  tensor_encode_options o;
  o.encoding = tensor_encoding::int8_rows;
  CHECK(bitwise_equal(round_trip("w", {9, 33}, q, o), q));
  o.encoding = tensor_encoding::sign_bits;
  CHECK_THROWS_WITH(encode_tensor("layer.w", {9, 33}, q.data(), o), Catch::Contains("'layer.w'") && Catch::Contains("sign_bits"));
  o.encoding = tensor_encoding::fixed_point;
  std::vector<float> fp{0.5f, -0.25f, 3.0f, 0.0f, -4.0f, 0.125f};
  const auto e = encode_tensor("w", {2, 3}, fp.data(), o);
  CHECK(e.descriptor["fixed_point"]["integer_bits"] == 3);
  CHECK(e.descriptor["fixed_point"]["fraction_bits"] == 3);
  CHECK(bitwise_equal(decode_tensor("w", e.descriptor, as_file(e)), fp));
  std::vector<float> irrational{0.1f, 0.3f};
  o.max_fixed_point_bits = 8;
  CHECK_THROWS_AS(encode_tensor("w", {2}, irrational.data(), o), config_error);
  // F16 / BF16: lossy when asked for, exact on values they hold.
  std::vector<float> halves{1.5f, -2.0f, 0.0f, 65504.0f};
  o.encoding = tensor_encoding::dense_f16;
  CHECK(bitwise_equal(round_trip("w", {4}, halves, o), halves));
  std::vector<float> thirds{1.0f / 3.0f};
  o.encoding = tensor_encoding::dense_bf16;
  const auto t = round_trip("w", {1}, thirds, o);
  CHECK(t[0] != thirds[0]);
  CHECK(std::abs(t[0] - thirds[0]) < 2e-3f);
}

TEST_CASE("decode_tensor reports corrupt parts as io_error naming the tensor", "[io][encoding]") {
  rng gen(6);
  auto v = make_values(gen, 40, 50, 0.1, 8);
  tensor_encode_options o;
  o.encoding = tensor_encoding::sparse_codebook;
  o.index_bits = 4;
  o.huffman = huffman_mode::always;
  const auto e = encode_tensor("fc.weight", {40, 50}, v.data(), o);
  {
    auto f = as_file(e);
    f.tensors.erase("fc.weight.codebook");
    CHECK_THROWS_WITH(decode_tensor("fc.weight", e.descriptor, f), Catch::Contains("'fc.weight'") && Catch::Contains("codebook' is missing"));
  }
  {
    auto f = as_file(e);
    auto& idx = f.tensors["fc.weight.indices"];
    idx.bytes.resize(idx.bytes.size() / 2);
    idx.shape = {static_cast<index_t>(idx.bytes.size())};
    CHECK_THROWS_WITH(decode_tensor("fc.weight", e.descriptor, f), Catch::Contains("'fc.weight'") && Catch::Contains("indices"));
  }
  {
    auto f = as_file(e);
    f.tensors["fc.weight.indices.huffman"].bytes.assign(f.tensors["fc.weight.indices.huffman"].bytes.size(), 1);
    CHECK_THROWS_WITH(decode_tensor("fc.weight", e.descriptor, f), Catch::Contains("not a prefix code"));
  }
  {
    auto f = as_file(e);
    for (auto& b : f.tensors["fc.weight.indices"].bytes) b ^= 0x5a;
    CHECK_THROWS_AS(decode_tensor("fc.weight", e.descriptor, f), io_error);
  }
  {
    auto f = as_file(e);
    f.tensors["fc.weight.codebook"].bytes[0] ^= 1;  // a changed centroid still decodes: the CRC catches it
    CHECK_THROWS_WITH(decode_tensor("fc.weight", e.descriptor, f), Catch::Contains("CRC-32"));
  }
  {
    auto d = e.descriptor;
    d["nonzeros"] = 5;
    CHECK_THROWS_WITH(decode_tensor("fc.weight", d, as_file(e)), Catch::Contains("'fc.weight'"));
    d = e.descriptor;
    d["shape"] = {1u << 20, 1u << 20};
    CHECK_THROWS_WITH(decode_tensor("fc.weight", d, as_file(e)), Catch::Contains("exceeds the limit"));
    d = e.descriptor;
    d["encoding"] = "zip";
    CHECK_THROWS_WITH(decode_tensor("fc.weight", d, as_file(e)), Catch::Contains("unknown encoding 'zip'"));
    d = e.descriptor;
    d["codes"]["count"] = 3;
    CHECK_THROWS_WITH(decode_tensor("fc.weight", d, as_file(e)), Catch::Contains("stream 'codes' states 3 symbols"));
  }
  // A codebook index past the table.
  tensor_encode_options c;
  c.encoding = tensor_encoding::codebook;
  c.huffman = huffman_mode::never;
  std::vector<float> three{1.0f, 2.0f, 3.0f, 1.0f};
  const auto cb = encode_tensor("w", {4}, three.data(), c);
  auto f = as_file(cb);
  f.tensors["w.codes"].bytes[0] = 0xff;  // index 3 of 3 centroids
  CHECK_THROWS_WITH(decode_tensor("w", cb.descriptor, f), Catch::Contains("outside the 3 centroids"));
}
