// spmv_sell skipping column blocks whose inputs are all +-0 (kernels/sparse_sell.hpp): over odd
// shapes, weight densities and inputs with whole zero blocks (none, some, all; +0 and -0 mixed),
// both paths and every lookup width (16, 32, 64 and a gathered 7), outputs poisoned first, against
// a dense double product; all-zero inputs give the bias exactly; inf and NaN inputs are not skipped.
// Every family this CPU runs (portable, avx2, avx512: forced with set_isa) takes each case, and the
// path that actually ran is checked by sell_path_calls.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/kernels/cpu_features.hpp"
#include "slimnet/kernels/sparse_sell.hpp"
#include "support/poison.hpp"

using namespace slimnet;
using slimnet::testing::poison;

namespace {

/// Calls f() once under each instruction-set family this CPU runs (set_isa; reset afterwards), and
/// once with kernel_path::portable requested under the best family; f gets the params path to use
/// and the family that must compute a float product.
template <class F>
void for_each_sell_family(F&& f) {
  struct reset_on_exit {
    ~reset_on_exit() { kernels::reset_isa(); }
  } reset;
  for (kernels::isa family : {kernels::isa::portable, kernels::isa::avx2, kernels::isa::avx512}) {
    if (!kernels::isa_supported(family)) continue;
    kernels::set_isa(family);
    f(kernels::kernel_path::automatic, kernels::sell_path());
  }
  kernels::reset_isa();
  f(kernels::kernel_path::portable, kernels::isa::portable);
}

/// x with each block of `block` columns all zero with probability `zero_blocks` (+0 and -0
/// alternating), and single zeros elsewhere.
template <class Scalar>
std::vector<Scalar> sell_skip_input(index_t cols, index_t block, double zero_blocks, rng& gen) {
  std::vector<Scalar> x(static_cast<std::size_t>(cols));
  bool negative = false;
  for (index_t b0 = 0; b0 < cols; b0 += block) {
    const bool blank = gen.uniform() < zero_blocks;
    for (index_t j = b0; j < std::min(cols, b0 + block); ++j) {
      if (blank || gen.uniform() < 0.3) {
        x[static_cast<std::size_t>(j)] = negative ? -Scalar(0) : Scalar(0);
        negative = !negative;
      } else {
        x[static_cast<std::size_t>(j)] = static_cast<Scalar>(gen.uniform(-1, 1));
      }
    }
  }
  return x;
}

template <class Scalar>
void check_sell_skip(index_t rows, index_t cols, double density, double zero_blocks, index_t block, std::uint64_t seed) {
  rng gen(seed);
  std::vector<Scalar> w(static_cast<std::size_t>(rows * cols), Scalar(0)), bias(static_cast<std::size_t>(rows));
  for (auto& v : w)
    if (gen.uniform() < density) v = static_cast<Scalar>(gen.uniform(-1, 1));
  for (auto& v : bias) v = static_cast<Scalar>(gen.uniform(-1, 1));
  const auto x = sell_skip_input<Scalar>(cols, block, zero_blocks, gen);
  const auto wv = kernels::row_major<const Scalar>(w.data(), rows, cols);
  const double eps = std::numeric_limits<Scalar>::epsilon();
  for (bool sorted : {false, true}) {
    const auto s = kernels::sell_matrix<Scalar, std::uint8_t>::from_dense(wv, block, sorted);
    for_each_sell_family([&](kernels::kernel_path path, kernels::isa family) {
      if (!std::is_same_v<Scalar, float>) family = kernels::isa::portable;
      kernels::sparse_params<Scalar> params;
      params.bias = bias.data();
      params.path = path;
      std::vector<Scalar> y(static_cast<std::size_t>(rows));
      poison(y);
      const auto calls = kernels::sell_path_calls(family);
      kernels::spmv_sell(s.ref(), x.data(), y.data(), params);
      CHECK(kernels::sell_path_calls(family) == calls + 1);
      index_t bad = 0;
      for (index_t i = 0; i < rows; ++i) {
        double sum = bias[static_cast<std::size_t>(i)], mag = std::abs(sum);
        index_t terms = 1;
        for (index_t j = 0; j < cols; ++j) {
          const double t = double(w[static_cast<std::size_t>(i * cols + j)]) * double(x[static_cast<std::size_t>(j)]);
          terms += w[static_cast<std::size_t>(i * cols + j)] != Scalar(0);
          sum += t;
          mag += std::abs(t);
        }
        if (!(std::abs(double(y[static_cast<std::size_t>(i)]) - sum) <= double(terms + 2) * eps * mag)) ++bad;
      }
      INFO(rows << " x " << cols << " at " << density << ", " << zero_blocks << " zero blocks of " << block << ", sorted "
                << sorted << ", family " << kernels::isa_name(family));
      CHECK(bad == 0);
      // All inputs zero: every block skipped, the outputs are the bias exactly.
      if (zero_blocks == 1.0) {
        for (index_t i = 0; i < rows; ++i) CHECK(y[static_cast<std::size_t>(i)] == bias[static_cast<std::size_t>(i)]);
      }
    });
  }
}

}  // namespace

TEMPLATE_TEST_CASE("spmv_sell skips blocks of zero inputs and equals the dense product", "[kernels][sparse][sell]", float, double) {
  std::uint64_t seed = 900;
  for (const index_t block : {index_t{16}, index_t{32}, index_t{64}, index_t{7}})
    for (const auto& [rows, cols] : {std::pair<index_t, index_t>{1, 1}, {17, 31}, {33, 200}, {300, 784}, {5, 64}, {129, 65}})
      for (const double density : {0.0, 0.08, 0.5, 1.0})
        for (const double zero_blocks : {0.0, 0.5, 1.0}) check_sell_skip<TestType>(rows, cols, density, zero_blocks, block, ++seed);
  // More than 64 slices: the AVX-512 path then runs slice by slice instead of block by block.
  for (const index_t block : {index_t{32}, index_t{64}})
    for (const double zero_blocks : {0.0, 0.5}) check_sell_skip<TestType>(1041, 150, 0.05, zero_blocks, block, ++seed);
}

TEST_CASE("spmv_sell: block by block (<= 64 slices) and slice by slice give bitwise the same result", "[kernels][sparse][sell]") {
  // 1041 rows = 66 slices: one thread runs them slice by slice, two threads each run <= 64 slices
  // block by block; each lane sums the same products in the same order either way.
  rng gen(77);
  const index_t rows = 1041, cols = 200;
  std::vector<float> w(static_cast<std::size_t>(rows * cols), 0.0f), bias(static_cast<std::size_t>(rows));
  for (auto& v : w)
    if (gen.uniform() < 0.07) v = static_cast<float>(gen.uniform(-1, 1));
  for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
  const auto x = sell_skip_input<float>(cols, 64, 0.3, gen);
  for (bool sorted : {false, true}) {
    const auto s = kernels::sell_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), rows, cols), 64, sorted);
    REQUIRE(s.ref().slices > kernels::detail::avx512_sell_block_outer_slices());
    kernels::sparse_params<float> one, two;
    one.bias = two.bias = bias.data();
    two.threads = 2;
    std::vector<float> y1(static_cast<std::size_t>(rows)), y2(y1.size());
    poison(y1);
    poison(y2);
    kernels::spmv_sell(s.ref(), x.data(), y1.data(), one);
    kernels::spmv_sell(s.ref(), x.data(), y2.data(), two);
    index_t differ = 0;
    for (std::size_t i = 0; i < y1.size(); ++i) differ += !(y1[i] == y2[i]);
    INFO("sorted " << sorted);
    CHECK(differ == 0);
  }
}

TEST_CASE("spmv_sell: an inf or NaN input block is not skipped", "[kernels][sparse][sell]") {
  const index_t rows = 20, cols = 70;
  std::vector<float> w(static_cast<std::size_t>(rows * cols), 0.0f), x(static_cast<std::size_t>(cols), 0.0f), y(static_cast<std::size_t>(rows));
  for (index_t i = 0; i < rows; ++i) w[static_cast<std::size_t>(i * cols + 65)] = 1.0f;  // the last (partial) 64-column block
  const auto s = kernels::sell_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), rows, cols), 64, true);
  for_each_sell_family([&](kernels::kernel_path path, kernels::isa family) {
    INFO("family " << kernels::isa_name(family));
    kernels::sparse_params<float> params;
    params.path = path;
    x[65] = std::numeric_limits<float>::infinity();
    poison(y);
    kernels::spmv_sell(s.ref(), x.data(), y.data(), params);
    for (const float v : y) CHECK(std::isinf(v));
    x[65] = std::numeric_limits<float>::quiet_NaN();
    poison(y);
    y.assign(y.size(), 0.0f);
    kernels::spmv_sell(s.ref(), x.data(), y.data(), params);
    for (const float v : y) CHECK(std::isnan(v));
    x[65] = 0.0f;
    poison(y);
    kernels::spmv_sell(s.ref(), x.data(), y.data(), params);
    for (const float v : y) CHECK(v == 0.0f);
  });
}

TEST_CASE("spmv_sell: unmasked steps (finite blocks) and masked steps (a block holding an inf) agree", "[kernels][sparse][sell]") {
  // Column 5 is empty, so an inf there changes no output; but it turns its 64-column block onto the
  // masked path (padding lanes never multiplied) while the other blocks run unmasked.
  rng gen(78);
  for (const auto& [rows, cols] : {std::pair<index_t, index_t>{37, 150}, {300, 485}, {16, 64}, {3, 200}}) {
    std::vector<float> w(static_cast<std::size_t>(rows * cols), 0.0f), bias(static_cast<std::size_t>(rows));
    for (index_t i = 0; i < rows; ++i)
      for (index_t j = 0; j < cols; ++j)
        if (j != 5 && gen.uniform() < 0.08) w[static_cast<std::size_t>(i * cols + j)] = static_cast<float>(gen.uniform(-1, 1));
    for (auto& v : bias) v = static_cast<float>(gen.uniform(-1, 1));
    std::vector<float> x(static_cast<std::size_t>(cols));
    for (auto& v : x) v = gen.uniform() < 0.3 ? 0.0f : static_cast<float>(gen.uniform(-1, 1));
    const auto s = kernels::sell_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), rows, cols), 64, true);
    kernels::sparse_params<float> params;
    params.bias = bias.data();
    std::vector<float> reference(static_cast<std::size_t>(rows));
    kernels::spmv_sell_reference(s.ref(), x.data(), reference.data(), params);
    for_each_sell_family([&](kernels::kernel_path path, kernels::isa family) {
      params.path = path;
      std::vector<float> finite(static_cast<std::size_t>(rows)), with_inf(finite.size());
      poison(finite);
      poison(with_inf);
      x[5] = 0.5f;
      kernels::spmv_sell(s.ref(), x.data(), finite.data(), params);
      x[5] = std::numeric_limits<float>::infinity();
      kernels::spmv_sell(s.ref(), x.data(), with_inf.data(), params);
      for (index_t i = 0; i < rows; ++i) {
        INFO(rows << " x " << cols << " row " << i << ", family " << kernels::isa_name(family));
        const auto k = static_cast<std::size_t>(i);
        CHECK(finite[k] == Approx(reference[k]).margin(1e-5));
        CHECK(with_inf[k] == Approx(reference[k]).margin(1e-5));
      }
    });
  }
}

TEST_CASE("gather_columns: out[k] = x[order[k]] for any length", "[kernels][sparse][sell]") {
  rng gen(79);
  for (const index_t n : {index_t{0}, index_t{5}, index_t{16}, index_t{37}, index_t{485}}) {
    std::vector<float> x(600);
    for (auto& v : x) v = static_cast<float>(gen.uniform(-1, 1));
    std::vector<std::int32_t> order(static_cast<std::size_t>(n));
    for (auto& j : order) j = static_cast<std::int32_t>(gen.uniform() * 599.0);
    std::vector<float> out(static_cast<std::size_t>(n) + 1);
    poison(out);
    kernels::gather_columns(x.data(), order.data(), n, out.data());
    for (index_t k = 0; k < n; ++k) CHECK(out[static_cast<std::size_t>(k)] == x[static_cast<std::size_t>(order[static_cast<std::size_t>(k)])]);
    CHECK(std::isnan(out[static_cast<std::size_t>(n)]));  // nothing written past n
  }
}
