// Structured magnitude pruning (Li et al. 2017) through the structure module: the units of
// smallest L1 / L2 norm are the ones removed (planted), per layer or globally, with the expected
// counts; the pruned model computes what the original computes with those units' consumer columns
// zeroed, on an MLP, a CNN with BatchNorm, an LSTM stack and DeepSense's coupled sensors; bad
// arguments raise typed errors naming the function and the value.
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <type_traits>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/structure.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

/// Multiplies rows `rows` (dim 0, each with its trailing dims) of `w` by `factor`; for a recurrent
/// weight (gates blocks of `units` rows) every gate's row of each unit.
template <class Scalar>
void structured_test_scale_units(nn::parameter<Scalar>& w, const std::set<index_t>& units, double factor, index_t gates = 1) {
  tensor<Scalar>& t = w.value();
  const index_t rows = t.dim(0), len = t.size() / rows, per_gate = rows / gates;
  for (index_t g = 0; g < gates; ++g)
    for (index_t j : units)
      for (index_t k = 0; k < len; ++k) t.data()[(g * per_gate + j) * len + k] *= static_cast<Scalar>(factor);
}

/// Zeroes input columns (dim 1, each with its trailing dims) `cols` of `w`.
template <class Scalar>
void structured_test_zero_columns(nn::parameter<Scalar>& w, const std::set<index_t>& cols) {
  tensor<Scalar>& t = w.value();
  const index_t rows = t.dim(0), in = t.dim(1), inner = t.size() / (rows * in);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c : cols)
      for (index_t k = 0; k < inner; ++k) t.data()[(r * in + c) * inner + k] = Scalar(0);
}

/// The removed units of a keep vector.
std::set<index_t> structured_test_dropped(const std::vector<bool>& keep) {
  std::set<index_t> d;
  for (std::size_t j = 0; j < keep.size(); ++j)
    if (!keep[j]) d.insert(static_cast<index_t>(j));
  return d;
}

template <class Scalar>
nn::parameter<Scalar>& structured_test_weight(nn::sequential<Scalar>& m, const std::string& layer) {
  return prune::find_parameter(m.find(layer), "weight", "test");
}

template <class Scalar>
nn::sequential<Scalar> structured_test_mlp(rng& gen) {
  nn::sequential<Scalar> m;
  m.add("fc1", nn::linear<Scalar>(6, 10));
  m.add("relu1", nn::relu<Scalar>());
  m.add("fc2", nn::linear<Scalar>(10, 8));
  m.add("relu2", nn::relu<Scalar>());
  m.add("fc3", nn::linear<Scalar>(8, 3));
  m.reset_parameters(gen);
  return m;
}

}  // namespace

TEMPLATE_TEST_CASE("structured pruning removes the units of smallest L1 norm in each layer", "[prune][structured]", float,
                   double) {
  rng gen(11);
  auto m = structured_test_mlp<TestType>(gen);
  structured_test_scale_units(structured_test_weight(m, "fc1"), {2, 5, 7}, 0.01);
  structured_test_scale_units(structured_test_weight(m, "fc2"), {1, 6}, 0.01);

  const auto keep = prune::structured_selection(m, 0.3);  // round(3.0) of 10, round(2.4) of 8
  REQUIRE(keep.size() == 2);                              // fc3 (the output) is not a candidate
  CHECK(structured_test_dropped(keep.at("fc1")) == std::set<index_t>{2, 5, 7});
  CHECK(structured_test_dropped(keep.at("fc2")) == std::set<index_t>{1, 6});

  auto small = prune::structured_prune(m, 0.3);
  CHECK(small.find("fc1").describe() == "Linear(6, 7)");
  CHECK(small.find("fc2").describe() == "Linear(7, 6)");
  CHECK(small.find("fc3").describe() == "Linear(6, 3)");

  const auto x = testing::random_tensor<TestType>({5, 6}, gen);
  structured_test_zero_columns(structured_test_weight(m, "fc2"), {2, 5, 7});
  structured_test_zero_columns(structured_test_weight(m, "fc3"), {1, 6});
  testing::check_close(testing::poisoned_forward(m, x), testing::poisoned_forward(small, x),
                       std::is_same_v<TestType, float> ? 1e-5 : 1e-12);
}

TEST_CASE("structured pruning ranks by L1 or L2 as asked, and reports the norms", "[prune][structured]") {
  nn::sequential<double> m;
  m.add("fc1", nn::linear<double>(4, 3));
  m.add("fc2", nn::linear<double>(3, 2));
  auto& w = structured_test_weight(m, "fc1").value();
  // unit 0: one weight 0.9 (L1 0.9, L2 0.9); unit 1: four of 0.3 (L1 1.2, L2 0.6); unit 2: large.
  const double rows[3][4] = {{0.9, 0, 0, 0}, {0.3, -0.3, 0.3, -0.3}, {2, 2, 2, 2}};
  for (index_t r = 0; r < 3; ++r)
    for (index_t c = 0; c < 4; ++c) w.data()[r * 4 + c] = rows[r][c];
  const auto l1 = prune::unit_norms(m, prune::norm::l1).at("fc1");
  REQUIRE(l1.size() == 3);
  CHECK(l1[0] == Approx(0.9));
  CHECK(l1[1] == Approx(1.2));
  CHECK(l1[2] == Approx(8.0));
  const auto l2 = prune::unit_norms(m, prune::norm::l2).at("fc1");
  CHECK(l2[1] == Approx(0.6));
  prune::structured_options o;
  CHECK(structured_test_dropped(prune::structured_selection(m, prune::amount::count(1), o).at("fc1")) == std::set<index_t>{0});
  o.criterion = prune::norm::l2;
  CHECK(structured_test_dropped(prune::structured_selection(m, prune::amount::count(1), o).at("fc1")) == std::set<index_t>{1});
}

TEST_CASE("structured pruning of a CNN removes filters, BatchNorm entries and the next layer's kernels", "[prune][structured]") {
  rng gen(12);
  nn::sequential<float> m;
  m.add("conv1", nn::conv2d<float>(2, 6, 3));
  m.add("bn1", nn::batch_norm<float>(6, 2, {}));
  m.add("relu1", nn::relu<float>());
  m.add("pool1", nn::max_pool2d<float>(2));
  m.add("conv2", nn::conv2d<float>(6, 4, 3));
  m.add("relu2", nn::relu<float>());
  m.add("flatten", nn::flatten<float>());
  m.add("fc", nn::linear<float>(16, 3));
  m.reset_parameters(gen);
  auto& bn = dynamic_cast<nn::batch_norm<float>&>(m.find("bn1"));
  bn.running_mean().value() = testing::random_tensor<float>({6}, gen);
  bn.running_var().value() = testing::random_tensor<float>({6}, gen, 0.5, 2.0);
  structured_test_scale_units(structured_test_weight(m, "conv1"), {0, 4}, 0.05);
  structured_test_scale_units(structured_test_weight(m, "conv2"), {3}, 0.05);

  auto small = prune::structured_prune(m, 0.25);  // round(1.5) = 2 of 6 filters, round(1.0) = 1 of 4
  CHECK(dynamic_cast<nn::conv2d<float>&>(small.find("conv1")).out_channels() == 4);
  CHECK(dynamic_cast<nn::batch_norm<float>&>(small.find("bn1")).features() == 4);
  CHECK(dynamic_cast<nn::conv2d<float>&>(small.find("conv2")).out_channels() == 3);
  CHECK(dynamic_cast<nn::linear<float>&>(small.find("fc")).in_features() == 12);

  const auto x = testing::random_tensor<float>({3, 2, 10, 10}, gen);
  structured_test_zero_columns(structured_test_weight(m, "conv2"), {0, 4});
  structured_test_zero_columns(structured_test_weight(m, "fc"), {12, 13, 14, 15});  // filter 3's 2x2 block
  testing::check_close(testing::poisoned_forward(m, x), testing::poisoned_forward(small, x), 1e-5);
}

TEST_CASE("structured pruning of an LSTM stack ranks hidden units by their rows in every gate",
          "[prune][structured][recurrent]") {
  rng gen(13);
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<float> m;
  m.add("lstm", nn::lstm<float>(4, 6, o));
  m.add("fc", nn::linear<float>(6, 3));
  m.reset_parameters(gen);
  auto& lstm = dynamic_cast<nn::lstm<float>&>(m.find("lstm"));
  structured_test_scale_units(lstm.weight_ih(0), {1, 3}, 0.02, 4);
  structured_test_scale_units(lstm.weight_hh(0), {1, 3}, 0.02, 4);
  structured_test_scale_units(lstm.weight_ih(1), {5}, 0.02, 4);
  structured_test_scale_units(lstm.weight_hh(1), {5}, 0.02, 4);
  // Only the input weights small is not enough when W_hh is large: unit 0 of layer 1 stays.
  structured_test_scale_units(lstm.weight_ih(1), {0}, 0.0, 4);

  const std::map<std::string, prune::amount> amounts{{"lstm.l0", prune::amount::count(2)}, {"lstm.l1", prune::amount::count(1)}};
  const auto keep = prune::structured_selection(m, amounts);
  CHECK(structured_test_dropped(keep.at("lstm.l0")) == std::set<index_t>{1, 3});
  CHECK(structured_test_dropped(keep.at("lstm.l1")) == std::set<index_t>{5});
  auto small = prune::structured_prune(m, amounts);
  auto& thin_lstm = dynamic_cast<nn::lstm<float>&>(small.find("lstm"));
  CHECK(thin_lstm.hidden_size(0) == 4);
  CHECK(thin_lstm.hidden_size(1) == 5);

  const auto x = testing::random_tensor<float>({3, 5, 4}, gen);
  structured_test_zero_columns(lstm.weight_hh(0), {1, 3});
  structured_test_zero_columns(lstm.weight_ih(1), {1, 3});
  structured_test_zero_columns(lstm.weight_hh(1), {5});
  structured_test_zero_columns(structured_test_weight(m, "fc"), {5});
  testing::check_close(testing::poisoned_forward(m, x), testing::poisoned_forward(small, x), 1e-5);
}

TEST_CASE("global structured pruning ranks units of all layers by norm per weight", "[prune][structured]") {
  rng gen(14);
  auto m = structured_test_mlp<float>(gen);
  // fc2's rows have 10 weights, fc1's 6: per weight, fc2's planted units are the smallest.
  structured_test_scale_units(structured_test_weight(m, "fc2"), {0, 3, 4}, 0.01);
  structured_test_scale_units(structured_test_weight(m, "fc1"), {9}, 0.1);
  prune::structured_options o;
  o.global = true;
  const auto keep = prune::structured_selection(m, prune::amount::count(4), o);
  CHECK(structured_test_dropped(keep.at("fc2")) == std::set<index_t>{0, 3, 4});
  CHECK(structured_test_dropped(keep.at("fc1")) == std::set<index_t>{9});
  // 18 units, prune 0.5: 9 go, each layer keeps at least one.
  const auto half = prune::structured_selection(m, 0.5, o);
  std::size_t dropped = 0;
  for (const auto& [key, k] : half) dropped += structured_test_dropped(k).size();
  CHECK(dropped == 9);
  // Layers restricted by name: only fc2.
  o.layers = {"fc2"};
  const auto only = prune::structured_selection(m, prune::amount::count(2), o);
  REQUIRE(only.size() == 1);
  CHECK(structured_test_dropped(only.at("fc2")).size() == 2);
}

TEST_CASE("structured pruning of DeepSense ranks coupled sensor convolutions as one group", "[prune][structured][deepsense]") {
  rng gen(15);
  nn::models::deepsense_options o;
  o.intervals = 3;
  o.channels = 6;
  o.hidden = 5;
  o.classes = 3;
  auto m = nn::models::deepsense<float>(gen, o);
  // Channel 2 small in acc's conv3 only, channel 4 small in both: the shared ranking sums both
  // sensors, so 4 goes first, then 2.
  structured_test_scale_units(structured_test_weight(m, "frames.sensors.acc.conv3"), {2, 4}, 0.01);
  structured_test_scale_units(structured_test_weight(m, "frames.sensors.gyro.conv3"), {4}, 0.01);
  const auto groups = structure::unit_groups(m);
  std::vector<std::string> first;
  for (const auto& g : groups) first.push_back(g.keys.front());
  CHECK(first == std::vector<std::string>{"frames.sensors.acc.conv1", "frames.sensors.acc.conv2", "frames.sensors.gyro.conv1",
                                          "frames.sensors.gyro.conv2", "frames.sensors.acc.conv3", "frames.conv4", "frames.conv5",
                                          "frames.conv6", "gru1.l0", "gru2.l0", "fc"});
  CHECK(groups[4].keys == std::vector<std::string>{"frames.sensors.acc.conv3", "frames.sensors.gyro.conv3"});

  const std::map<std::string, prune::amount> one{{"frames.sensors.gyro.conv3", prune::amount::count(1)}};
  auto keep = prune::structured_selection(m, one);
  CHECK(structured_test_dropped(keep.at("frames.sensors.acc.conv3")) == std::set<index_t>{4});
  CHECK(keep.at("frames.sensors.gyro.conv3") == keep.at("frames.sensors.acc.conv3"));
  keep =
      prune::structured_selection(m, std::map<std::string, prune::amount>{{"frames.sensors.acc.conv3", prune::amount::count(2)}});
  CHECK(structured_test_dropped(keep.at("frames.sensors.gyro.conv3")) == std::set<index_t>{2, 4});

  auto small = prune::structured_prune(m, 0.5);  // every block but fc loses half of its units
  CHECK(dynamic_cast<nn::conv2d<float>&>(small.find("frames.conv4")).in_channels() == 3);
  CHECK(dynamic_cast<nn::gru<float>&>(small.find("gru1")).input_size() == 3 * 8);
  CHECK(dynamic_cast<nn::gru<float>&>(small.find("gru2")).hidden_size(0) == 2);  // round(2.5) = 3 of 5 pruned (half up)
  tensor<float> x = testing::random_tensor<float>({2, 3, o.features()}, gen), y;
  std::vector<std::int32_t> lengths{3, 2};
  nn::forward_context ctx;
  ctx.lengths = &lengths;
  small.forward(x, y, ctx);
  CHECK(y.shape() == shape_t{2, 3});
  CHECK(y.flat().allFinite());
}

TEST_CASE("structured pruning refuses bad arguments with typed errors naming them", "[prune][structured]") {
  rng gen(16);
  auto m = structured_test_mlp<float>(gen);
  const char* fn = "slimnet::prune::structured_selection";
  CHECK_THROWS_AS(prune::structured_selection(m, 1.5), config_error);
  CHECK_THROWS_WITH(prune::structured_selection(m, 1.5), Contains(fn) && Contains("1.5"));
  CHECK_THROWS_WITH(prune::structured_selection(m, 1.0), Contains(fn) && Contains("leave none") && Contains("fc1"));
  CHECK_THROWS_WITH(prune::structured_selection(m, prune::amount::count(11)), Contains("cannot prune 11"));
  const std::map<std::string, prune::amount> unknown{{"fc7", prune::amount::count(1)}};
  CHECK_THROWS_AS(prune::structured_selection(m, unknown), config_error);
  CHECK_THROWS_WITH(prune::structured_selection(m, unknown), Contains("fc7") && Contains("fc1, fc2, fc3"));
  prune::structured_options o;
  o.layers = {"relu1"};
  CHECK_THROWS_WITH(prune::structured_selection(m, 0.5, o), Contains("relu1"));
  o.layers = {};
  o.global = true;
  CHECK_THROWS_WITH(prune::structured_selection(m, prune::amount::count(17), o), Contains("would leave a layer with none"));
  CHECK_THROWS_AS(prune::structured_selection(m, std::map<std::string, prune::amount>{{"fc1", 0.5}}, o), config_error);
  // The output layer, asked for by name, is refused by thin.
  const std::map<std::string, prune::amount> output{{"fc3", prune::amount::count(1)}};
  CHECK_NOTHROW(prune::structured_selection(m, output));
  CHECK_THROWS_WITH(prune::structured_prune(m, output), Contains("output would lose units"));
  // A weight under a mask transform is refused, naming it.
  prune::l1_unstructured(structured_test_weight(m, "fc2"), prune::amount::sparsity(0.5));
  CHECK_THROWS_WITH(prune::structured_prune(m, 0.3), Contains("fc2.weight") && Contains("transform"));
}
