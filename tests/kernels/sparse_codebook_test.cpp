// Sparse + codebook kernels (SELL-16 for batch 1, column-blocked CSR for batches, values as k-bit
// indices into the nonzero centroids) against their double references and the decoded dense
// product: odd shapes, 1..8-bit indices, densities from empty to full, AVX-512 and portable paths,
// outputs poisoned with NaN before every call; the weight bytes; validation.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/sparse_codebook.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using slimnet::testing::poison;

namespace {

/// A rows x cols matrix (row-major) whose nonzeros (a `density` fraction) take values from a table
/// of 2^bits (sometimes 2^bits - 1) random nonzero centroids.
template <class Scalar>
std::vector<Scalar> spcb_random_weights(index_t rows, index_t cols, int bits, double density, rng& gen) {
  const int n = std::max(1, (1 << bits) - static_cast<int>(gen.below(2)));
  std::vector<Scalar> table(static_cast<std::size_t>(n));
  for (auto& c : table) {
    c = static_cast<Scalar>(gen.uniform(-1, 1));
    if (c == Scalar(0)) c = Scalar(0.5);
  }
  std::vector<Scalar> w(static_cast<std::size_t>(rows * cols), Scalar(0));
  for (auto& v : w)
    if (gen.uniform(0, 1) < density) v = table[gen.below(static_cast<std::uint64_t>(n))];
  return w;
}

/// |got - (W x + b)| <= (cols + 3) eps sum |terms| for each of the n columns of Y (element (i, j) at y[i * ldy + j * ys]).
template <class Scalar>
index_t spcb_mismatches(const std::vector<Scalar>& w, index_t rows, index_t cols, const std::vector<Scalar>& x, index_t n,
                        const std::vector<Scalar>& bias, const Scalar* y, index_t ldy, index_t ys) {
  const double eps = std::numeric_limits<Scalar>::epsilon();
  index_t bad = 0;
  for (index_t i = 0; i < rows; ++i)
    for (index_t j = 0; j < n; ++j) {
      double s = bias.empty() ? 0.0 : double(bias[static_cast<std::size_t>(i)]), mag = std::abs(s);
      for (index_t k = 0; k < cols; ++k) {
        const double t = double(w[static_cast<std::size_t>(i * cols + k)]) * double(x[static_cast<std::size_t>(k * n + j)]);
        s += t;
        mag += std::abs(t);
      }
      if (!(std::abs(double(y[i * ldy + j * ys]) - s) <= double(cols + 3) * eps * mag + 1e-30)) ++bad;
    }
  return bad;
}

const std::vector<std::pair<index_t, index_t>> spcb_shapes = {{1, 1}, {3, 7}, {17, 16}, {13, 33}, {31, 100}, {64, 129}, {97, 257}, {40, 600}};

}  // namespace

TEMPLATE_TEST_CASE("sparse codebook SpMV (SELL-16) equals the decoded product for 1..8-bit indices", "[kernels][codebook][sparse]", float,
                   double) {
  rng gen(71);
  for (int bits = 1; bits <= 8; ++bits)
    for (double density : {0.0, 0.04, 0.3, 1.0})
      for (const auto& [m, k] : spcb_shapes) {
        const auto w = spcb_random_weights<TestType>(m, k, bits, density, gen);
        const auto a = kernels::sell_codebook_matrix<TestType>::from_dense(kernels::row_major<const TestType>(w.data(), m, k));
        REQUIRE(a.bits() <= bits);
        // Every stored entry decodes to its weight; nothing else is stored.
        std::vector<TestType> back(w.size(), TestType(0));
        const auto r = a.ref();
        index_t stored = 0;
        for (index_t s = 0; s < r.slices; ++s)
          for (index_t b = 0; b < r.blocks; ++b)
            for (auto t = r.step_offsets[s * r.blocks + b]; t < r.step_offsets[s * r.blocks + b + 1]; ++t)
              for (index_t l = 0; l < 16; ++l)
                if ((r.step_masks[t] >> l) & 1u) {
                  const std::size_t e = static_cast<std::size_t>(t) * 16 + static_cast<std::size_t>(l);
                  back[static_cast<std::size_t>(r.lane_rows[s * 16 + l] * k + b * r.block_cols + r.col_indices[e])] = r.value(e);
                  ++stored;
                }
        CHECK(back == w);
        CHECK(stored == a.nnz());
        std::vector<TestType> x(static_cast<std::size_t>(k)), bias(static_cast<std::size_t>(m)), y(static_cast<std::size_t>(m));
        for (auto& v : x) v = static_cast<TestType>(gen.uniform(-1, 1));
        for (auto& v : bias) v = static_cast<TestType>(gen.uniform(-1, 1));
        INFO("bits " << bits << " density " << density << " shape " << m << " x " << k);
        for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable})
          for (bool with_bias : {false, true}) {
            const kernels::isa expected = std::is_same_v<TestType, float> && path == kernels::kernel_path::automatic
                                              ? kernels::codebook_path()
                                              : kernels::isa::portable;
            const auto calls = kernels::codebook_path_calls(expected);
            poison(y);
            kernels::spmv_sell_codebook(r, x.data(), y.data(), with_bias ? bias.data() : nullptr, path);
            CHECK(kernels::codebook_path_calls(expected) == calls + 1);
            CHECK(spcb_mismatches(w, m, k, x, 1, with_bias ? bias : std::vector<TestType>{}, y.data(), 1, 1) == 0);
          }
        poison(y);
        kernels::spmv_sell_codebook_reference(r, x.data(), y.data(), bias.data());
        CHECK(spcb_mismatches(w, m, k, x, 1, bias, y.data(), 1, 1) == 0);
      }
}

TEMPLATE_TEST_CASE("sparse codebook SpMM (column-blocked CSR) equals the decoded product", "[kernels][codebook][sparse]", float, double) {
  rng gen(72);
  for (int bits : {1, 3, 4, 5, 8})
    for (double density : {0.0, 0.05, 0.4, 1.0})
      for (const auto& [m, k] : spcb_shapes)
        for (index_t n : {2, 17, 64, 70}) {
          const auto w = spcb_random_weights<TestType>(m, k, bits, density, gen);
          const index_t block = gen.below(2) ? 0 : 64;  // the automatic panels, or 64-column panels
          const auto a = kernels::blocked_codebook_matrix<TestType>::from_dense(kernels::row_major<const TestType>(w.data(), m, k), 0, block);
          std::vector<TestType> x(static_cast<std::size_t>(k * n)), bias(static_cast<std::size_t>(m)), y(static_cast<std::size_t>(m * n));
          for (auto& v : x) v = static_cast<TestType>(gen.uniform(-1, 1));
          for (auto& v : bias) v = static_cast<TestType>(gen.uniform(-1, 1));
          INFO("bits " << bits << " density " << density << " shape " << m << " x " << k << " batch " << n << " panels " << a.block_cols());
          const auto xv = kernels::row_major<const TestType>(x.data(), k, n);
          for (auto path : {kernels::kernel_path::automatic, kernels::kernel_path::portable}) {
            const kernels::isa expected = std::is_same_v<TestType, float> && path == kernels::kernel_path::automatic
                                              ? kernels::codebook_path()
                                              : kernels::isa::portable;
            const auto calls = kernels::codebook_path_calls(expected);
            poison(y);
            kernels::spmm_blocked_codebook(a.ref(), xv, kernels::row_major(y.data(), m, n), bias.data(), path);
            CHECK(kernels::codebook_path_calls(expected) == calls + 1);
            CHECK(spcb_mismatches(w, m, k, x, n, bias, y.data(), n, 1) == 0);
          }
          // Y as a transposed (column-strided) view: the portable strided path.
          poison(y);
          kernels::spmm_blocked_codebook(a.ref(), xv, kernels::row_major(y.data(), n, m).transposed());
          CHECK(spcb_mismatches(w, m, k, x, n, {}, y.data(), 1, m) == 0);
          poison(y);
          kernels::spmm_blocked_codebook_reference(a.ref(), xv, kernels::row_major(y.data(), m, n), bias.data());
          CHECK(spcb_mismatches(w, m, k, x, n, bias, y.data(), n, 1) == 0);
        }
}

TEST_CASE("sparse codebook formats take index bits instead of float values", "[kernels][codebook][sparse]") {
  rng gen(73);
  const index_t m = 500, k = 800;
  const auto w = spcb_random_weights<float>(m, k, 4, 0.08, gen);
  const auto wv = kernels::row_major<const float>(w.data(), m, k);
  const auto sell = kernels::sell_matrix<float, std::uint8_t>::from_csr(kernels::csr_matrix<float, std::uint32_t>::from_dense(wv), 0, true);
  const auto sell_cb = kernels::sell_codebook_matrix<float>::from_dense(wv);
  const auto blocked = kernels::blocked_csr_matrix<float, std::uint8_t>::from_dense(wv);
  const auto blocked_cb = kernels::blocked_codebook_matrix<float>::from_dense(wv);
  CHECK(sell_cb.bits() == 4);
  CHECK(sell_cb.nnz() == sell.nnz());
  // Per stored entry 4 + 1 bytes become 0.5 + 1 (offsets, masks and lane rows are the same).
  const double stored = static_cast<double>(sell.stored());
  CHECK(static_cast<double>(sell.bytes() - sell_cb.bytes()) == Approx(3.5 * stored).margin(16 * 4 + 2));
  CHECK(static_cast<double>(blocked.bytes() - blocked_cb.bytes()) == Approx(3.5 * static_cast<double>(blocked.nnz())).margin(16 * 4 + 2));
}

TEST_CASE("sparse codebook formats refuse too many values and non-finite weights", "[kernels][codebook][sparse]") {
  std::vector<float> w = {0.0f, 1.0f, 2.0f, 3.0f, 0.0f, 4.0f};
  const auto wv = kernels::row_major<const float>(w.data(), 2, 3);
  CHECK_THROWS_AS(kernels::sell_codebook_matrix<float>::from_dense(wv, 1), config_error);
  CHECK_THROWS_WITH(kernels::blocked_codebook_matrix<float>::from_dense(wv, 1), Catch::Contains("4 distinct nonzero values"));
  CHECK(kernels::sell_codebook_matrix<float>::from_dense(wv, 2).bits() == 2);  // four nonzero centroids: zero needs none
  CHECK_THROWS_WITH(kernels::sell_codebook_matrix<float>::from_dense(wv, 9), Catch::Contains("1..8 bits"));
  w[1] = std::numeric_limits<float>::quiet_NaN();
  CHECK_THROWS_WITH(kernels::sell_codebook_matrix<float>::from_dense(wv), Catch::Contains("non-finite"));
  w[1] = std::numeric_limits<float>::infinity();
  CHECK_THROWS_AS(kernels::blocked_codebook_matrix<float>::from_dense(wv), config_error);
}
