// Fixed point <IL,FL>: the grid, both rounding modes, saturation, integer codes, and every
// container the free functions accept.
#include "slimnet/quant/fixed_point.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <unsupported/Eigen/CXX11/Tensor>

using namespace slimnet;
using quant::fixed_point_format;
using quant::rounding;

TEST_CASE("fixed-point formats: range, resolution and invalid widths", "[quant][fixed_point]") {
  const fixed_point_format f{4, 12};
  CHECK(f.word_length() == 16);
  CHECK(f.epsilon() == std::ldexp(1.0, -12));
  CHECK(f.lowest() == -8.0);
  CHECK(f.highest() == 8.0 - std::ldexp(1.0, -12));
  CHECK(f.code_min() == -32768);
  CHECK(f.code_max() == 32767);
  CHECK(f.describe() == "<4,12>");
  const fixed_point_format q{2, 30};
  CHECK(q.code_max() == 2147483647LL);
  CHECK(q.lowest() == -2.0);

  CHECK_NOTHROW(fixed_point_format{1, 0}.validate());
  CHECK_NOTHROW(fixed_point_format{16, 16}.validate());
  CHECK_THROWS_AS((fixed_point_format{20, 13}.validate()), config_error);  // WL = 33
  CHECK_THROWS_AS((fixed_point_format{0, 0}.validate()), config_error);    // WL = 0
  CHECK_THROWS_AS((fixed_point_format{-10, 8}.validate()), config_error);  // WL < 0
  CHECK_THROWS_WITH((fixed_point_format{20, 13}.validate()),
                    Catch::Contains("<20,13>") && Catch::Contains("33"));
  CHECK_THROWS_WITH(quant::quantize_value(1.0, {8, 30}),
                    Catch::StartsWith("slimnet::quant::quantize_value"));
  // Stochastic rounding without a generator is a configuration error, not a crash.
  Eigen::MatrixXf m = Eigen::MatrixXf::Ones(2, 2);
  CHECK_THROWS_AS(quant::quantize_in_place(m, f, rounding::stochastic), config_error);

  using fp = quant::fixed_point<4, 12>;
  static_assert(fp::word_length == 16);
  static_assert(std::is_same_v<fp::code_type, std::int16_t>);
  static_assert(std::is_same_v<quant::fixed_point<2, 6>::code_type, std::int8_t>);
  static_assert(std::is_same_v<quant::fixed_point<8, 16>::code_type, std::int32_t>);
  CHECK(fp::format() == f);
}

TEMPLATE_TEST_CASE("round-to-nearest errs by at most epsilon/2 and leaves grid values alone",
                   "[quant][fixed_point]", float, double) {
  for (const fixed_point_format f :
       {fixed_point_format{4, 12}, fixed_point_format{2, 14}, fixed_point_format{8, 8},
        fixed_point_format{1, 7}, fixed_point_format{3, 0}}) {
    INFO("format " << f.describe());
    rng gen(7);
    const double eps = f.epsilon();
    for (int i = 0; i < 20000; ++i) {
      const auto x = static_cast<TestType>(gen.uniform(f.lowest(), f.highest()));
      const double q = quant::quantize_value(x, f);
      REQUIRE(std::abs(q - static_cast<double>(x)) <= eps / 2);
      // q is on the grid: an integer multiple of epsilon, and rounding it again changes nothing.
      REQUIRE(std::ldexp(q, f.fraction_bits) == std::floor(std::ldexp(q, f.fraction_bits)));
      REQUIRE(quant::quantize_value(q, f) == q);
    }
    // Ties go up, whatever the sign.
    CHECK(quant::quantize_value(eps / 2, f) == eps);
    CHECK(quant::quantize_value(-eps / 2, f) == 0.0);
    CHECK(quant::quantize_value(eps * 1.5, f) == 2 * eps);
  }
  // The classic floor(x + 0.5) pitfall: the largest double below 1/2 rounds down.
  CHECK(quant::quantize_value(std::nextafter(0.5, 0.0), fixed_point_format{4, 0}) == 0.0);
}

TEMPLATE_TEST_CASE("saturation is exact at both ends in both modes", "[quant][fixed_point]", float,
                   double) {
  const fixed_point_format f{4, 12};
  rng gen(3);
  Eigen::Matrix<TestType, Eigen::Dynamic, 1> x(8);
  x << 8.0, 100.0, 1e30, std::numeric_limits<TestType>::infinity(), -8.0, -8.1, -1e30,
      -std::numeric_limits<TestType>::infinity();
  for (rounding mode : {rounding::nearest, rounding::stochastic}) {
    auto q = x;
    quant::quantize_in_place(q, f, mode, &gen);
    for (int i = 0; i < 4; ++i) CHECK(q[i] == static_cast<TestType>(f.highest()));
    for (int i = 4; i < 8; ++i) CHECK(q[i] == static_cast<TestType>(f.lowest()));
  }
  // Just inside the range nothing saturates; NaN stays NaN.
  CHECK(quant::quantize_value(f.highest(), f) == f.highest());
  CHECK(quant::quantize_value(f.highest() + f.epsilon() / 4, f) == f.highest());
  CHECK(std::isnan(quant::quantize_value(std::nan(""), f)));
}

TEMPLATE_TEST_CASE("stochastic rounding picks a neighbour and is unbiased", "[quant][fixed_point]",
                   float, double) {
  const fixed_point_format f{2, 6};  // epsilon = 1/64: coarse, so the bias test has power
  const double eps = f.epsilon();
  rng gen(11);
  const int draws = 40000;
  for (double x : {0.3, -0.71, 1.0 / 3.0, 1.2 + eps / 10, -1.9 + 0.99 * eps}) {
    const auto v = static_cast<TestType>(x);
    const double lo = std::floor(static_cast<double>(v) / eps) * eps;
    const double p = (static_cast<double>(v) - lo) / eps;
    double sum = 0;
    int up = 0;
    for (int i = 0; i < draws; ++i) {
      const double q = quant::quantize_value(v, f, rounding::stochastic, &gen);
      REQUIRE((q == lo || q == lo + eps));
      sum += q - static_cast<double>(v);
      up += q != lo;
    }
    // Each draw's error has mean 0 and standard deviation eps sqrt(p(1-p)); the mean of `draws`
    // of them is within 5 standard errors with probability 1 - 6e-7.
    const double bound = 5.0 * eps * std::sqrt(p * (1 - p) / draws) + 1e-12;
    INFO("x = " << x << " p = " << p);
    CHECK(std::abs(sum / draws) <= bound);
    CHECK(std::abs(static_cast<double>(up) / draws - p) <=
          5.0 * std::sqrt(p * (1 - p) / draws) + 1e-12);
  }
  // Values on the grid never move.
  for (int i = 0; i < 100; ++i)
    CHECK(quant::quantize_value(0.25, f, rounding::stochastic, &gen) == 0.25);
  // Same seed, same result.
  Eigen::MatrixXd a = Eigen::MatrixXd::Constant(5, 7, 0.3), b = a;
  rng g1(5), g2(5);
  quant::quantize_in_place(a, f, rounding::stochastic, &g1);
  quant::quantize_in_place(b, f, rounding::stochastic, &g2);
  CHECK(a == b);
}

TEMPLATE_TEST_CASE("integer codes round-trip exactly", "[quant][fixed_point]", float, double) {
  SECTION("every int8 and int16 code of a format") {
    for (const fixed_point_format f :
         {fixed_point_format{3, 5}, fixed_point_format{1, 15}, fixed_point_format{8, 8}}) {
      INFO("format " << f.describe());
      const std::int64_t n = f.code_max() - f.code_min() + 1;
      quant::fixed_point_codes<std::int16_t> c;
      c.format = f;
      c.rows = 1;
      c.cols = n;
      for (std::int64_t k = f.code_min(); k <= f.code_max(); ++k)
        c.codes.push_back(static_cast<std::int16_t>(k));
      const auto values = quant::decode<TestType>(c);
      for (index_t k = 0; k < n; ++k)
        REQUIRE(static_cast<double>(values(0, k)) ==
                std::ldexp(double(c.codes[k]), -f.fraction_bits));
      const auto again = quant::encode<std::int16_t>(values, f);
      REQUIRE(again.codes == c.codes);
    }
  }
  SECTION("int32 codes of <2,22> (fits float's significand)") {
    const fixed_point_format f{2, 22};
    rng gen(9);
    quant::fixed_point_codes<std::int32_t> c;
    c.format = f;
    c.rows = 100;
    c.cols = 50;
    for (int i = 0; i < 5000; ++i)
      c.codes.push_back(static_cast<std::int32_t>(
          f.code_min() + static_cast<std::int64_t>(gen.below(1ULL << 24))));
    c.codes[0] = static_cast<std::int32_t>(f.code_min());
    c.codes[1] = static_cast<std::int32_t>(f.code_max());
    const auto values = quant::decode<TestType>(c);
    CHECK(quant::encode<std::int32_t>(values, f).codes == c.codes);
  }
  SECTION("decode(encode(x)) is the nearest rounding of x, also in stochastic mode's grid") {
    const fixed_point_format f{4, 12};
    rng gen(2);
    Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic> x(13, 9);
    for (index_t i = 0; i < x.size(); ++i) x.data()[i] = static_cast<TestType>(gen.normal(0, 4));
    const auto codes = quant::encode<std::int16_t>(x, f);
    CHECK(quant::decode<TestType>(codes) == quant::quantized(x, f));
    rng g1(4), g2(4);
    const auto sc = quant::encode<std::int16_t>(x, f, rounding::stochastic, &g1);
    CHECK(quant::decode<TestType>(sc) == quant::quantized(x, f, rounding::stochastic, &g2));
    CHECK(codes.storage_bytes() == 13 * 9 * 2);
  }
  SECTION("errors: a code type too narrow, NaN, a destination of the wrong shape") {
    Eigen::Matrix<TestType, 2, 2> x;
    x << 1, 2, 3, 4;
    CHECK_THROWS_WITH(quant::encode<std::int8_t>(x, {4, 12}),
                      Catch::Contains("int8") && Catch::Contains("16 bits"));
    x(1, 0) = std::numeric_limits<TestType>::quiet_NaN();
    CHECK_THROWS_WITH(quant::encode<std::int16_t>(x, {4, 12}),
                      Catch::Contains("(1, 0)") && Catch::Contains("NaN"));
    auto codes = quant::encode<std::int16_t>(Eigen::Matrix<TestType, 2, 3>::Zero().eval(), {4, 12});
    Eigen::Matrix<TestType, 3, 2> wrong;
    CHECK_THROWS_AS(quant::decode(codes, wrong), shape_error);
  }
}

TEST_CASE("float results beyond 25 bits are the nearest float; the codes stay exact",
          "[quant][fixed_point]") {
  const fixed_point_format f{16, 16};
  const double x = 12345.678901;  // needs 30 significant bits on this grid
  Eigen::VectorXd xd(1);
  xd << x;
  Eigen::VectorXf xf = xd.cast<float>();
  const auto cd = quant::encode<std::int32_t>(xd, f);
  CHECK(cd.codes[0] == static_cast<std::int32_t>(std::floor(x * 65536 + 0.5)));
  CHECK(quant::quantized(xf, f)(0, 0) ==
        static_cast<float>(quant::quantize_value(static_cast<double>(xf[0]), f)));
}

TEST_CASE("quantize_in_place acts on every container through its out_units x rest view",
          "[quant][fixed_point]") {
  const fixed_point_format f{3, 5};
  rng gen(1);
  Eigen::Tensor<float, 4, Eigen::RowMajor> t(3, 2, 2, 2);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<float>(gen.normal(0, 2));
  const row_matrix<float> reference = quant::quantized(t, f);  // 3 x 8

  // Row-major slimnet::tensor, column-major Eigen::Tensor, column-major matrix, block, Ref, Map.
  tensor<float> st({3, 2, 2, 2});
  std::copy(t.data(), t.data() + t.size(), st.data());
  quant::quantize_in_place(st, f);
  CHECK(st.matrix() == reference);

  Eigen::Tensor<float, 4, Eigen::ColMajor> tc =
      t.swap_layout().shuffle(Eigen::array<int, 4>{3, 2, 1, 0});
  quant::quantize_in_place(tc, f);
  for (index_t i = 0; i < 3; ++i)
    for (index_t a = 0; a < 2; ++a)
      for (index_t b = 0; b < 2; ++b)
        for (index_t c = 0; c < 2; ++c) CHECK(tc(i, a, b, c) == reference(i, (a * 2 + b) * 2 + c));

  Eigen::MatrixXf cm = Eigen::Map<const row_matrix<float>>(t.data(), 3, 8);
  quant::quantize_in_place(cm, f);
  CHECK(cm == reference);

  Eigen::MatrixXf big = Eigen::MatrixXf::Constant(6, 10, 0.01f);
  big.block(1, 1, 3, 8) = Eigen::Map<const row_matrix<float>>(t.data(), 3, 8);
  quant::quantize_in_place(big.block(1, 1, 3, 8), f);
  CHECK(big.block(1, 1, 3, 8) == reference);
  CHECK(big(0, 0) == 0.01f);  // outside the block: untouched

  Eigen::MatrixXf r = Eigen::Map<const row_matrix<float>>(t.data(), 3, 8);
  Eigen::Ref<Eigen::MatrixXf> ref(r);
  quant::quantize_in_place(ref, f);
  CHECK(r == reference);

  Eigen::ArrayXXf arr = Eigen::Map<const row_matrix<float>>(t.data(), 3, 8);
  CHECK(quant::quantized(arr, f) == reference);

  using fp = quant::fixed_point<3, 5>;
  Eigen::Tensor<float, 4, Eigen::RowMajor> t2 = t;
  fp::quantize(t2);
  CHECK(Eigen::Map<row_matrix<float>>(t2.data(), 3, 8) == reference);
  const auto codes = fp::encode(t);
  CHECK(codes.rows == 3);
  CHECK(codes.cols == 8);
  CHECK(quant::decode<float>(codes) == reference);
}
