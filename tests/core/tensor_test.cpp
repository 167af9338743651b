#include <catch2/catch.hpp>

#include "slimnet/core.hpp"

using namespace slimnet;

TEST_CASE("tensor is row-major with a dim0 x rest matrix view", "[core]") {
  tensor<float> t({2, 3, 4});
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<float>(i);
  CHECK(t.rank() == 3);
  CHECK(t.size() == 24);
  CHECK(t.matrix().rows() == 2);
  CHECK(t.matrix().cols() == 12);
  CHECK(t.matrix()(1, 0) == 12.0f);  // element [1, 0, 0]
  CHECK(t.matrix(6, 4)(2, 3) == 11.0f);
  CHECK_THROWS_AS(t.matrix(5, 5), shape_error);
  CHECK_THROWS_AS(t.reshape({5, 5}), shape_error);
  t.reshape({4, 6});
  CHECK(t[7] == 7.0f);
  const float* before = t.data();
  t.resize({6, 4});  // same size: storage kept
  CHECK(t.data() == before);
  CHECK_THROWS_AS(t.resize({-1, 2}), shape_error);
  auto d = t.cast<double>();
  CHECK(d[23] == 23.0);
}

TEST_CASE("rng is reproducible and its distributions have the right moments", "[core]") {
  rng a(7), b(7);
  for (int i = 0; i < 100; ++i) REQUIRE(a() == b());
  rng g(11);
  const int n = 200000;
  double sum = 0, sq = 0, usum = 0;
  std::array<int, 7> counts{};
  for (int i = 0; i < n; ++i) {
    const double z = g.normal();
    sum += z;
    sq += z * z;
    const double u = g.uniform();
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    usum += u;
    ++counts[g.below(7)];
  }
  CHECK(std::abs(sum / n) < 0.01);
  CHECK(std::abs(sq / n - 1.0) < 0.02);
  CHECK(std::abs(usum / n - 0.5) < 0.005);
  for (int c : counts) CHECK(std::abs(c / double(n) - 1.0 / 7) < 0.005);
  std::vector<int> v(50);
  std::iota(v.begin(), v.end(), 0);
  auto w = v;
  rng s1(3), s2(3);
  slimnet::shuffle(v.begin(), v.end(), s1);
  slimnet::shuffle(w.begin(), w.end(), s2);
  CHECK(v == w);
  std::sort(w.begin(), w.end());
  CHECK(w.front() == 0);
  CHECK(w.back() == 49);
}

TEST_CASE("errors name the function and derive from slimnet::error", "[core]") {
  try {
    slimnet::detail::raise<config_error>("slimnet::example", "fraction {} is outside [0, 1]", 1.5);
    FAIL("no exception");
  } catch (const error& e) {
    CHECK(std::string(e.what()) == "slimnet::example: fraction 1.5 is outside [0, 1]");
  }
}

TEST_CASE("slimnet's names do not collide with std's under both using-directives", "[core]") {
  using namespace std;
  using namespace slimnet;
  vector<int> v{1, 2, 3};  // std::vector: slimnet's Eigen column vector is column_vector
  column_vector<float> c = column_vector<float>::Constant(3, 2.0f);
  CHECK(v.size() == 3);
  CHECK(c.sum() == 6.0f);
}
