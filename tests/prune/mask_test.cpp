// Masks on plain Eigen objects: exact counts and tie-breaking, storage order and strides,
// structured rows, global ranking, masks that only shrink, and clear errors.
#include "slimnet/prune/mask.hpp"

#include "slimnet/core/eigen.hpp"  // Eigen, with GCC 12's false -Wuninitialized silenced
#include <catch2/catch.hpp>
#include <unsupported/Eigen/CXX11/Tensor>

#include "slimnet/core/random.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

/// Entries (in row-major index order) where a 2-d mask is 0.
template <class M>
std::vector<index_t> zeros_of(const M& m) {
  std::vector<index_t> z;
  for (index_t i = 0; i < m.rows(); ++i) {
    for (index_t j = 0; j < m.cols(); ++j) {
      if (m(i, j) == 0) z.push_back(i * m.cols() + j);
    }
  }
  return z;
}
}  // namespace

TEMPLATE_TEST_CASE("magnitude_mask prunes an exact count, ties broken by index", "[prune][mask]",
                   float, double) {
  row_matrix<TestType> w(2, 5);
  w << 3, -1, 1, 2, -1,  //
      0.5, 1, -3, 2, 1;
  // |w| sorted: 0.5 (5), then five 1s at indices 1, 2, 4, 6, 9 (lower index pruned first).
  auto m = prune::magnitude_mask(w, 0.3);  // round(3.0) = 3
  static_assert(std::is_same_v<decltype(m), row_matrix<TestType>>, "mask keeps the storage order");
  CHECK(zeros_of(m) == std::vector<index_t>{1, 2, 5});
  CHECK(zeros_of(prune::magnitude_mask(w, 0.35)) ==
        std::vector<index_t>{1, 2, 4, 5});  // 3.5 rounds half up to 4
  CHECK(zeros_of(prune::magnitude_mask(w, 0.34)) == std::vector<index_t>{1, 2, 5});  // 3.4 -> 3
  CHECK(zeros_of(prune::magnitude_mask(w, prune::amount::count(6))) ==
        std::vector<index_t>{1, 2, 4, 5, 6, 9});
  CHECK(zeros_of(prune::magnitude_mask(w, 0.0)).empty());
  CHECK(zeros_of(prune::magnitude_mask(w, 1.0)).size() == 10);
  // Every value is 0 or 1.
  CHECK(((m.array() == 0) || (m.array() == 1)).all());
}

TEMPLATE_TEST_CASE("all-equal and heavily tied weights still give the exact count", "[prune][mask]",
                   float, double) {
  row_matrix<TestType> same = row_matrix<TestType>::Constant(10, 10, TestType(0.25));
  const auto m = prune::magnitude_mask(same, 0.37);
  const auto z = zeros_of(m);
  REQUIRE(z.size() == 37);
  for (index_t k = 0; k < 37; ++k)
    CHECK(z[static_cast<std::size_t>(k)] == k);  // the first 37 indices

  // 1,000 weights with only 7 distinct magnitudes.
  rng gen(11);
  row_matrix<TestType> w(40, 25);
  for (index_t i = 0; i < w.rows(); ++i) {
    for (index_t j = 0; j < w.cols(); ++j)
      w(i, j) = static_cast<TestType>(static_cast<int>(gen.below(7)) - 3);
  }
  for (double s : {0.0, 0.001, 0.1, 0.333, 0.5, 0.9, 0.999, 1.0}) {
    const auto mask = prune::magnitude_mask(w, s);
    CHECK(static_cast<double>(mask.size() - mask.count()) == std::floor(s * 1000 + 0.5));
    // The kept entries are never smaller than the pruned ones.
    TestType max_pruned = -1, min_kept = 100;
    for (index_t i = 0; i < w.rows(); ++i) {
      for (index_t j = 0; j < w.cols(); ++j) {
        if (mask(i, j) == 0)
          max_pruned = std::max(max_pruned, std::abs(w(i, j)));
        else
          min_kept = std::min(min_kept, std::abs(w(i, j)));
      }
    }
    CHECK(max_pruned <= min_kept);
  }
}

TEMPLATE_TEST_CASE("masks only shrink: a previous mask is ANDed in", "[prune][mask]", float,
                   double) {
  row_matrix<TestType> w(1, 8);
  w << 8, 7, 6, 5, 4, 3, 2, 1;
  row_matrix<TestType> previous(1, 8);
  previous << 0, 0, 1, 1, 1, 1, 1, 1;  // the two largest weights were pruned before
  // Fraction of the 6 remaining: round(0.5 * 6) = 3 more, the smallest remaining ones.
  const auto m = prune::magnitude_mask(w, 0.5, previous);
  CHECK(zeros_of(m) == std::vector<index_t>{0, 1, 5, 6, 7});
  // Sparsity target over all 8: 6 pruned in all; the 2 old zeros count towards it.
  CHECK(zeros_of(prune::magnitude_mask(w, prune::amount::sparsity(0.75), previous)) ==
        std::vector<index_t>{0, 1, 4, 5, 6, 7});
  // A target below what is already pruned prunes nothing and revives nothing.
  CHECK(zeros_of(prune::magnitude_mask(w, prune::amount::sparsity(0.1), previous)) ==
        std::vector<index_t>{0, 1});
  // Threshold, quality and row masks respect it too.
  CHECK(zeros_of(prune::threshold_mask(w, 2.5, previous)) == std::vector<index_t>{0, 1, 6, 7});
  CHECK(zeros_of(prune::quality_mask(w, 0.0, previous)) == std::vector<index_t>{0, 1});
  // Applying masks in sequence: each result is a subset of the previous one's ones.
  row_matrix<TestType> current = row_matrix<TestType>::Ones(1, 8);
  for (double s : {0.2, 0.2, 0.5, 0.9}) {
    const auto next = prune::magnitude_mask(w, s, current);
    CHECK(((next.array() <= current.array())).all());
    current = next;
  }
}

TEMPLATE_TEST_CASE("Eigen::Tensor of rank 4, both layouts: the mask lands on the right weights",
                   "[prune][mask]", float, double) {
  auto check = [](auto w) {
    using W = decltype(w);
    rng gen(3);
    for (index_t k = 0; k < w.size(); ++k) w.data()[k] = static_cast<TestType>(gen.normal());
    const auto m = prune::magnitude_mask(w, 0.6);
    static_assert(std::is_same_v<std::decay_t<decltype(m)>, W>,
                  "a Tensor mask for a Tensor weight, same layout");
    CHECK(m.dimensions() == w.dimensions());
    // The kept entries are exactly those above the 60% quantile of |w|, checked by full index.
    std::vector<double> mags;
    for (index_t k = 0; k < w.size(); ++k)
      mags.push_back(std::abs(static_cast<double>(w.data()[k])));
    std::sort(mags.begin(), mags.end());
    const double cut =
        mags[static_cast<std::size_t>(std::floor(0.6 * static_cast<double>(w.size()) + 0.5)) - 1];
    index_t kept = 0;
    for (index_t a = 0; a < w.dimension(0); ++a)
      for (index_t b = 0; b < w.dimension(1); ++b)
        for (index_t c = 0; c < w.dimension(2); ++c)
          for (index_t d = 0; d < w.dimension(3); ++d) {
            CHECK((m(a, b, c, d) == 1) == (std::abs(static_cast<double>(w(a, b, c, d))) > cut));
            kept += m(a, b, c, d) == 1;
          }
    CHECK(kept ==
          w.size() - static_cast<index_t>(std::floor(0.6 * static_cast<double>(w.size()) + 0.5)));
    // Structured: rows are the first index (filters), whatever the layout.
    const auto r = prune::row_mask(w, 0.5, prune::norm::l1);
    for (index_t a = 0; a < w.dimension(0); ++a) {
      TestType row_sum = 0;
      for (index_t b = 0; b < w.dimension(1); ++b)
        for (index_t c = 0; c < w.dimension(2); ++c)
          for (index_t d = 0; d < w.dimension(3); ++d) row_sum += r(a, b, c, d);
      CHECK((row_sum == 0 || row_sum == TestType(w.size() / w.dimension(0))));
    }
    // apply_mask through a TensorMap over the same storage.
    W copy = w;
    Eigen::TensorMap<W> view(copy.data(), copy.dimensions());
    prune::apply_mask(view, m);
    for (index_t k = 0; k < w.size(); ++k) CHECK(copy.data()[k] == w.data()[k] * m.data()[k]);
  };
  check(Eigen::Tensor<TestType, 4, Eigen::RowMajor>(4, 3, 2, 5));
  check(Eigen::Tensor<TestType, 4, Eigen::ColMajor>(4, 3, 2, 5));
}

TEMPLATE_TEST_CASE("Eigen::Ref with an outer stride: masks index the block, not the raw buffer",
                   "[prune][mask]", float, double) {
  using M = Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic>;
  M big = M::Constant(7, 9, TestType(100));  // large values outside the block: never the smallest
  Eigen::Ref<M, 0, Eigen::OuterStride<>> block = big.block(2, 3, 3, 4);
  // Block values by row-major index k: |w| = k + 1, alternating signs.
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 4; ++j)
      block(i, j) = static_cast<TestType>((i * 4 + j + 1) * ((i + j) % 2 ? -1 : 1));
  REQUIRE(block.outerStride() == 7);
  const auto m = prune::magnitude_mask(block, 0.5);
  static_assert(std::is_same_v<std::decay_t<decltype(m)>, M>, "Ref's plain type");
  CHECK(zeros_of(m) == std::vector<index_t>{0, 1, 2, 3, 4, 5});
  prune::apply_mask(block, m);
  for (index_t i = 0; i < 7; ++i) {
    for (index_t j = 0; j < 9; ++j) {
      const bool inside = i >= 2 && i < 5 && j >= 3 && j < 7;
      if (!inside) CHECK(big(i, j) == 100);
      if (inside) CHECK((big(i, j) == 0) == ((i - 2) * 4 + (j - 3) < 6));
    }
  }
}

TEMPLATE_TEST_CASE("RowMajor Map over a buffer: mask entry k belongs to buffer entry k",
                   "[prune][mask]", float, double) {
  std::vector<TestType> buffer = {5, 1, 9, 2, 7, 3, 8, 4, 6, 0.5, 10, 11};
  Eigen::Map<row_matrix<TestType>> w(buffer.data(), 3, 4);
  const auto m = prune::magnitude_mask(w, 0.25);  // 3 smallest: 0.5 (9), 1 (1), 2 (3)
  static_assert(std::is_same_v<std::decay_t<decltype(m)>, row_matrix<TestType>>, "RowMajor mask");
  const std::vector<TestType> expected = {1, 0, 1, 0, 1, 1, 1, 1, 1, 0, 1, 1};
  for (std::size_t k = 0; k < buffer.size(); ++k) CHECK(m.data()[k] == expected[k]);
  // The same buffer seen column-major (4 x 3): the mask is ColMajor and again follows the buffer.
  Eigen::Map<Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic>> cm(buffer.data(), 4, 3);
  const auto mc = prune::magnitude_mask(cm, 0.25);
  for (std::size_t k = 0; k < buffer.size(); ++k) CHECK(mc.data()[k] == expected[k]);
  // A slimnet::tensor gives a slimnet::tensor mask.
  tensor<TestType> t({3, 4});
  for (index_t k = 0; k < 12; ++k) t[k] = buffer[static_cast<std::size_t>(k)];
  const auto mt = prune::magnitude_mask(t, 0.25);
  CHECK(mt.shape() == shape_t{3, 4});
  for (index_t k = 0; k < 12; ++k) CHECK(mt[k] == expected[static_cast<std::size_t>(k)]);
}

TEMPLATE_TEST_CASE("row_mask zeroes whole rows, ranked by L1 or L2 norm", "[prune][mask]", float,
                   double) {
  row_matrix<TestType> w(4, 4);
  w << 3, 0, 0, 0,  // L1 3, L2 3
      1, 1, 1, 1,   // L1 4, L2 2
      5, 5, 5, 5,   // L1 20, L2 10
      -4, 4, 0, 0;  // L1 8, L2 5.66
  const auto l1 = prune::row_mask(w, prune::amount::count(1), prune::norm::l1);
  const auto l2 = prune::row_mask(w, prune::amount::count(1), prune::norm::l2);
  CHECK(zeros_of(l1) == std::vector<index_t>{0, 1, 2, 3});
  CHECK(zeros_of(l2) == std::vector<index_t>{4, 5, 6, 7});
  const auto half = prune::row_mask(w, 0.5, prune::norm::l2);
  CHECK(zeros_of(half) == std::vector<index_t>{0, 1, 2, 3, 4, 5, 6, 7});
  // With a previous mask the row norm is taken over kept entries: row 2 loses three 5s.
  row_matrix<TestType> previous = row_matrix<TestType>::Ones(4, 4);
  previous.row(2) << 0, 0, 0, 1;
  const auto again = prune::row_mask(w, prune::amount::count(1), prune::norm::l2, previous);
  // Row norms now: 3, 2, 5, 5.66 -> row 1 goes; row 2 keeps its previous zeros.
  CHECK(zeros_of(again) == std::vector<index_t>{4, 5, 6, 7, 8, 9, 10});
  // Fully pruned rows are not candidates: pruning 1 more row after 3 are gone prunes the last.
  row_matrix<TestType> three_gone = row_matrix<TestType>::Zero(4, 4);
  three_gone.row(3).setOnes();
  CHECK(prune::row_mask(w, prune::amount::count(1), prune::norm::l2, three_gone).sum() == 0);
}

TEMPLATE_TEST_CASE("global masks rank all weights together", "[prune][mask]", float, double) {
  row_matrix<TestType> small(2, 3);
  small << 0.1, -0.2, 0.3, 0.4, -0.5, 0.6;
  Eigen::Tensor<TestType, 3, Eigen::RowMajor> large(2, 2, 2);
  large.setValues({{{1, -2}, {3, 4}}, {{-5, 6}, {0.35, 8}}});
  const auto [a, b] = prune::global_magnitude_masks(0.5, small, large);  // 7 of 14
  CHECK(zeros_of(a) == std::vector<index_t>{0, 1, 2, 3, 4, 5});
  CHECK(b(1, 1, 0) == 0);  // 0.35 is among the 7 smallest
  index_t pruned_in_b = 0;
  for (index_t k = 0; k < b.size(); ++k) pruned_in_b += b.data()[k] == 0;
  CHECK(pruned_in_b == 1);
  // Ties across weights go to the earlier weight.
  row_matrix<TestType> x = row_matrix<TestType>::Constant(1, 3, 1),
                      y = row_matrix<TestType>::Constant(1, 3, 1);
  const auto [mx, my] = prune::global_magnitude_masks(prune::amount::count(4), x, y);
  CHECK(mx.sum() == 0);
  CHECK(zeros_of(my) == std::vector<index_t>{0});
}

TEMPLATE_TEST_CASE("quality and threshold masks follow Han et al.'s q * std rule", "[prune][mask]",
                   float, double) {
  row_matrix<TestType> w(1, 4);
  w << -2, -1, 1, 2;  // mean 0, population std sqrt(2.5)
  CHECK(prune::weight_std(w) == Approx(std::sqrt(2.5)));
  // q = 1: threshold 1.58 -> keeps the two 2s.
  CHECK(zeros_of(prune::quality_mask(w, 1.0)) == std::vector<index_t>{1, 2});
  CHECK(zeros_of(prune::quality_mask(w, 0.5)).empty());  // threshold 0.79
  CHECK(zeros_of(prune::threshold_mask(w, 1.0)) ==
        std::vector<index_t>{1, 2});  // |w| <= t is pruned
  CHECK(prune::sparsity(w) == 0.0);
  CHECK(prune::count_nonzero(w) == 4);
}

TEST_CASE("bad amounts, q, thresholds and shapes give clear errors", "[prune][mask][errors]") {
  row_matrix<float> w = row_matrix<float>::Random(3, 4);
  CHECK_THROWS_AS(prune::magnitude_mask(w, 1.5), config_error);
  CHECK_THROWS_WITH(prune::magnitude_mask(w, 1.5), Contains("slimnet::prune::magnitude_mask") &&
                                                       Contains("fraction = 1.5") &&
                                                       Contains("[0, 1]"));
  CHECK_THROWS_WITH(prune::magnitude_mask(w, -0.1), Contains("-0.1"));
  CHECK_THROWS_AS(prune::magnitude_mask(w, std::nan("")), config_error);
  CHECK_THROWS_WITH(prune::magnitude_mask(w, prune::amount::sparsity(2.0)),
                    Contains("sparsity = 2"));
  CHECK_THROWS_WITH(prune::magnitude_mask(w, prune::amount::count(13)),
                    Contains("cannot prune 13 units: 12 of 12"));
  CHECK_THROWS_WITH(prune::magnitude_mask(w, prune::amount::count(-1)),
                    Contains("cannot prune -1"));
  CHECK_THROWS_WITH(prune::quality_mask(w, -1.0),
                    Contains("slimnet::prune::quality_mask") && Contains("q = -1"));
  CHECK_THROWS_AS(prune::quality_mask(w, std::numeric_limits<double>::infinity()), config_error);
  CHECK_THROWS_WITH(prune::threshold_mask(w, -0.5), Contains("threshold = -0.5"));
  CHECK_THROWS_WITH(prune::row_mask(w, 1.01), Contains("slimnet::prune::row_mask"));

  row_matrix<float> wrong_shape = row_matrix<float>::Ones(4, 3);
  CHECK_THROWS_AS(prune::magnitude_mask(w, 0.5, wrong_shape), shape_error);
  CHECK_THROWS_WITH(prune::magnitude_mask(w, 0.5, wrong_shape),
                    Contains("default_mask has shape (4, 3)") && Contains("(3, 4)"));
  CHECK_THROWS_AS(prune::apply_mask(w, wrong_shape), shape_error);
  Eigen::Tensor<float, 3, Eigen::RowMajor> t(3, 2, 2), t_other(3, 4, 1);
  t.setConstant(1);
  t_other.setConstant(1);
  CHECK_THROWS_AS(prune::magnitude_mask(t, 0.5, t_other),
                  shape_error);  // same 3 x 4 view, different dims

  row_matrix<float> not_binary = row_matrix<float>::Ones(3, 4);
  not_binary(1, 2) = 0.5f;
  CHECK_THROWS_WITH(prune::magnitude_mask(w, 0.5, not_binary),
                    Contains("0.5 at (1, 2)") && Contains("only 0 and 1"));

  row_matrix<float> with_nan = w;
  with_nan(2, 1) = std::nanf("");
  CHECK_THROWS_WITH(prune::magnitude_mask(with_nan, 0.5), Contains("weight (2, 1) is NaN"));
}
