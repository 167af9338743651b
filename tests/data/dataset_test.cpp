// Dataset helpers: subsets, standardisation, stratified splits.
#include <catch2/catch.hpp>

#include "slimnet/data/dataset.hpp"

using namespace slimnet;

TEST_CASE("standardize gives zero mean and unit variance with the given statistics", "[data]") {
  data::dataset<float> d;
  d.inputs = tensor<float>({4, 2});
  d.inputs.flat() << 0, 1, 2, 3, 4, 5, 6, 7;
  const auto [mean, stddev] = data::input_mean_std(d);
  CHECK(mean == Approx(3.5));
  CHECK(stddev == Approx(std::sqrt(5.25)));
  data::standardize(d, mean, stddev);
  const auto [m2, s2] = data::input_mean_std(d);
  CHECK(m2 == Approx(0.0).margin(1e-6));
  CHECK(s2 == Approx(1.0));
  CHECK_THROWS_WITH(data::standardize(d, 0.0, 0.0), Catch::Contains("slimnet::data::standardize") && Catch::Contains("stddev > 0"));
  data::dataset<float> empty;
  CHECK_THROWS_AS(data::input_mean_std(empty), config_error);
}

TEST_CASE("stratified split keeps class proportions and is seeded", "[data]") {
  std::vector<std::int32_t> labels;
  for (int c = 0; c < 3; ++c) labels.insert(labels.end(), static_cast<std::size_t>(10 * (c + 1)), c);  // 10, 20, 30
  const auto [train, test] = data::stratified_split(labels, 3, 0.2, 5);
  CHECK(test.size() == 12);
  CHECK(train.size() == 48);
  std::array<int, 3> per_class{};
  for (index_t i : test) ++per_class[static_cast<std::size_t>(labels[static_cast<std::size_t>(i)])];
  CHECK(per_class == std::array<int, 3>{2, 4, 6});
  CHECK(data::stratified_split(labels, 3, 0.2, 5).second == test);
  CHECK(data::stratified_split(labels, 3, 0.2, 6).second != test);
  CHECK_THROWS_AS(data::stratified_split(labels, 3, 1.5, 5), config_error);
  CHECK_THROWS_AS(data::stratified_split({0, 7}, 3, 0.5, 5), config_error);
}

TEST_CASE("subset carries labels and sequence lengths; validate checks lengths", "[data]") {
  data::dataset<float> d;
  d.num_classes = 2;
  d.inputs = tensor<float>({3, 4, 1});
  for (index_t i = 0; i < 12; ++i) d.inputs[i] = static_cast<float>(i);
  d.labels = {0, 1, 0};
  d.lengths = {4, 2, 3};
  const auto s = d.subset({2, 0});
  CHECK(s.labels == std::vector<std::int32_t>{0, 0});
  CHECK(s.lengths == std::vector<std::int32_t>{3, 4});
  CHECK(s.inputs[0] == 8.0f);
  d.lengths[1] = 5;
  CHECK_THROWS_WITH(d.validate(), Catch::Contains("sequence 1 has length 5"));
}
