// structure::thin removes units exactly: the thinned model computes what the original computes when
// the consumers' input columns of the removed units are zero (scaled by folded multipliers), for
// Linear, Conv2d + BatchNorm + pooling + Flatten, nested Sequentials, stacked LSTM / GRU and
// Bidirectional layers; and it refuses what it cannot do.
#include <catch2/catch.hpp>
#include <cmath>
#include <set>
#include <string>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/structure.hpp"
#include "slimnet/train.hpp"
#include "support/datasets.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

/// keep vector of `n` units without those in `drop`.
std::vector<bool> thin_test_keep(index_t n, std::set<index_t> drop) {
  std::vector<bool> k(static_cast<std::size_t>(n), true);
  for (index_t j : drop) k[static_cast<std::size_t>(j)] = false;
  return k;
}

/// Zeroes (or scales) input columns `cols` of a weight whose dim 1 is the input (each column with
/// its trailing kernel block).
void thin_test_scale_columns(nn::parameter<float>& w, const std::vector<index_t>& cols, float factor = 0.0f) {
  tensor<float>& t = w.value();
  const index_t rows = t.dim(0), in = t.dim(1), inner = t.size() / (rows * in);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c : cols)
      for (index_t k = 0; k < inner; ++k) t.data()[(r * in + c) * inner + k] *= factor;
}

tensor<float> thin_test_eval(nn::layer<float>& m, const tensor<float>& x) { return testing::poisoned_forward(m, x); }

void thin_test_compare(nn::layer<float>& reference, nn::layer<float>& thinned, const tensor<float>& x) {
  testing::check_close(thin_test_eval(reference, x), thin_test_eval(thinned, x), 1e-5);
}

}  // namespace

TEST_CASE("thinning an MLP removes rows, biases and the next layer's columns", "[structure]") {
  rng gen(1);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(6, 8));
  m.add("relu1", nn::relu<float>());
  m.add("drop", nn::dropout<float>(0.5));
  m.add("fc2", nn::linear<float>(8, 5));
  m.add("relu2", nn::relu<float>());
  m.add("fc3", nn::linear<float>(5, 3));
  m.reset_parameters(gen);
  const auto x = testing::random_tensor<float>({4, 6}, gen);
  const auto before = thin_test_eval(m, x);

  auto small = structure::thin(m, {{"fc1", thin_test_keep(8, {1, 4, 6})}, {"fc2", thin_test_keep(5, {0, 3})}});
  CHECK(small.find("fc1").describe() == "Linear(6, 5)");
  CHECK(small.find("fc2").describe() == "Linear(5, 3)");
  CHECK(small.find("fc3").describe() == "Linear(3, 3)");
  CHECK(thin_test_eval(m, x).flat() == before.flat());  // the original is untouched

  thin_test_scale_columns(prune::find_parameter(m.find("fc2"), "weight", "test"), {1, 4, 6});
  thin_test_scale_columns(prune::find_parameter(m.find("fc3"), "weight", "test"), {0, 3});
  thin_test_compare(m, small, x);
}

TEST_CASE("thinning convolutions carries BatchNorm entries, pooling and Flatten blocks", "[structure]") {
  rng gen(2);
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
  for (auto* p : {&bn.weight(), &bn.bias(), &bn.running_mean()}) p->value() = testing::random_tensor<float>({6}, gen);
  bn.running_var().value() = testing::random_tensor<float>({6}, gen, 0.5, 2.0);
  const auto x = testing::random_tensor<float>({3, 2, 10, 10}, gen);

  auto small = structure::thin(m, {{"conv1", thin_test_keep(6, {0, 5})}, {"conv2", thin_test_keep(4, {2})}});
  CHECK(dynamic_cast<nn::conv2d<float>&>(small.find("conv1")).out_channels() == 4);
  CHECK(dynamic_cast<nn::batch_norm<float>&>(small.find("bn1")).features() == 4);
  CHECK(dynamic_cast<nn::conv2d<float>&>(small.find("conv2")).in_channels() == 4);
  CHECK(dynamic_cast<nn::linear<float>&>(small.find("fc")).in_features() == 12);

  thin_test_scale_columns(prune::find_parameter(m.find("conv2"), "weight", "test"), {0, 5});
  thin_test_scale_columns(prune::find_parameter(m.find("fc"), "weight", "test"), {8, 9, 10, 11});  // channel 2's 2x2 block
  thin_test_compare(m, small, x);
}

TEST_CASE("thinning follows nested Sequentials and folds per-unit multipliers", "[structure]") {
  rng gen(3);
  nn::sequential<float> block;
  block.add("fc1", nn::linear<float>(5, 7));
  block.add("scale", nn::batch_norm<float>(7, 1, {}));  // eval mode, mean 0, var 1 - eps: y = gamma x
  nn::sequential<float> m;
  m.add("block", std::move(block));
  m.add("relu", nn::relu<float>());
  m.add("fc2", nn::linear<float>(7, 2));
  m.reset_parameters(gen);
  auto& bn = dynamic_cast<nn::batch_norm<float>&>(m.find("block.scale"));
  const auto gamma = testing::random_tensor<float>({7}, gen, 0.5, 2.0);
  bn.weight().value() = gamma;
  bn.bias().value().set_zero();
  bn.running_mean().value().set_zero();
  bn.running_var().value() = tensor<float>({7}, static_cast<float>(1.0 - bn.opts().eps));
  const auto x = testing::random_tensor<float>({3, 5}, gen);

  std::vector<float> s(gamma.data(), gamma.data() + 7);
  auto small = structure::thin(m, {{"block.fc1", thin_test_keep(7, {2, 3})}}, {{"block.scale", s}});
  auto& inner = dynamic_cast<nn::sequential<float>&>(small.find("block"));
  CHECK(inner.size() == 1);  // the multiplier is folded into fc2 and gone
  CHECK(dynamic_cast<nn::linear<float>&>(small.find("fc2")).in_features() == 5);
  thin_test_scale_columns(prune::find_parameter(m.find("fc2"), "weight", "test"), {2, 3});
  thin_test_compare(m, small, x);
}

TEST_CASE("thinning a Bi-LSTM removes hidden units of each stacked layer and direction", "[structure][recurrent]") {
  rng gen(4);
  nn::recurrent_options o;
  o.num_layers = 2;
  o.output = nn::sequence_output::last_step;
  nn::sequential<float> m;
  m.add("bilstm", nn::bidirectional<float>(nn::lstm<float>(5, 6, o), 7));
  m.add("fc", nn::linear<float>(12, 3));
  m.reset_parameters(gen);
  const auto x = testing::random_tensor<float>({3, 4, 5}, gen);

  auto small = structure::thin(m, {{"bilstm.l0", thin_test_keep(6, {1})},
                                   {"bilstm.l1", thin_test_keep(6, {0, 4})},
                                   {"bilstm.l1_reverse", thin_test_keep(6, {5})}});
  auto& bi = dynamic_cast<nn::bidirectional<float>&>(small.find("bilstm"));
  CHECK(bi.forward_layer().hidden_size(0) == 5);
  CHECK(bi.forward_layer().hidden_size(1) == 4);
  CHECK(bi.backward_layer().hidden_size(0) == 6);
  CHECK(bi.backward_layer().hidden_size(1) == 5);
  CHECK(dynamic_cast<nn::linear<float>&>(small.find("fc")).in_features() == 9);

  // Reference: nothing reads the removed units (their recurrent and outgoing columns are zero).
  auto& ref = dynamic_cast<nn::bidirectional<float>&>(m.find("bilstm"));
  auto& f = ref.forward_as<nn::lstm<float>>();
  auto& b = ref.backward_as<nn::lstm<float>>();
  thin_test_scale_columns(f.weight_hh(0), {1});
  thin_test_scale_columns(f.weight_ih(1), {1});
  thin_test_scale_columns(f.weight_hh(1), {0, 4});
  thin_test_scale_columns(b.weight_hh(1), {5});
  thin_test_scale_columns(prune::find_parameter(m.find("fc"), "weight", "test"), {0, 4, 6 + 5});
  thin_test_compare(m, small, x);
}

TEST_CASE("thinning an LSTM that feeds a GRU and a Linear", "[structure][recurrent]") {
  rng gen(5);
  nn::sequential<float> m;
  m.add("lstm", nn::lstm<float>(4, 6));  // all steps
  nn::recurrent_options last;
  last.output = nn::sequence_output::last_step;
  m.add("gru", nn::gru<float>(6, 5, last));
  m.add("fc", nn::linear<float>(5, 2));
  m.reset_parameters(gen);
  const auto x = testing::random_tensor<float>({2, 5, 4}, gen);

  auto small = structure::thin(m, {{"lstm.l0", thin_test_keep(6, {2, 3})}, {"gru.l0", thin_test_keep(5, {1})}});
  auto& lstm = dynamic_cast<nn::lstm<float>&>(m.find("lstm"));
  auto& gru = dynamic_cast<nn::gru<float>&>(m.find("gru"));
  thin_test_scale_columns(lstm.weight_hh(0), {2, 3});
  thin_test_scale_columns(gru.weight_ih(0), {2, 3});
  thin_test_scale_columns(gru.weight_hh(0), {1});
  thin_test_scale_columns(prune::find_parameter(m.find("fc"), "weight", "test"), {1});
  thin_test_compare(m, small, x);
  CHECK(dynamic_cast<nn::gru<float>&>(small.find("gru")).input_size() == 4);
}

TEST_CASE("thinning refuses what it cannot do, naming the layer", "[structure]") {
  rng gen(6);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(3, 4));
  m.add("tanh", nn::tanh<float>());
  m.add("fc2", nn::linear<float>(4, 2));
  m.reset_parameters(gen);
  using structure::thin;
  CHECK_THROWS_AS(thin(m, {{"fc9", thin_test_keep(4, {})}}), config_error);
  CHECK_THROWS_WITH(thin(m, {{"fc9", thin_test_keep(4, {})}}), Contains("slimnet::structure::thin") && Contains("fc9"));
  CHECK_THROWS_AS(thin(m, {{"fc1", thin_test_keep(5, {})}}), shape_error);
  CHECK_THROWS_WITH(thin(m, {{"fc1", thin_test_keep(4, {0, 1, 2, 3})}}), Contains("keep no unit"));
  CHECK_THROWS_WITH(thin(m, {{"fc2", thin_test_keep(2, {0})}}), Contains("output would lose units"));
  CHECK_THROWS_WITH(thin(m, {{"tanh", thin_test_keep(4, {0})}}), Contains("not a Linear"));
  prune::l1_unstructured(prune::find_parameter(m.find("fc1"), "weight", "test"), prune::amount::sparsity(0.5));
  CHECK_THROWS_WITH(thin(m, {{"fc1", thin_test_keep(4, {0})}}), Contains("fc1.weight") && Contains("transform"));
}

TEST_CASE("a thinned model is an ordinary model: pruning and BinaryConnect attach to it and train", "[structure][compose]") {
  rng gen(7);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(2, 12));
  m.add("relu", nn::relu<float>());
  m.add("fc2", nn::linear<float>(12, 8));
  m.add("relu2", nn::relu<float>());
  m.add("fc3", nn::linear<float>(8, 3));
  m.reset_parameters(gen);
  auto small = structure::thin(m, {{"fc1", thin_test_keep(12, {0, 5, 7})}, {"fc2", thin_test_keep(8, {3})}});
  auto& w1 = prune::find_parameter(small.find("fc1"), "weight", "test");
  auto& w2 = prune::find_parameter(small.find("fc2"), "weight", "test");
  prune::l1_unstructured(w2, prune::amount::sparsity(0.5));
  quant::binary_connect_options bc;
  quant::attach_binary_connect(w1, bc);
  const auto mask = prune::mask_of(w2);
  const auto data = testing::blobs<float>(60, 8);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit_options o;
  o.epochs = 2;
  o.batch_size = 10;
  o.progress = false;
  train::fit(small, opt, train::cross_entropy<float>{}, data, o);
  for (index_t i = 0; i < w2.size(); ++i)
    if (mask[i] == 0.0f) CHECK(w2.value()[i] == 0.0f);
  const auto& eff = w1.forward_value(nn::forward_context{});
  for (index_t i = 0; i < eff.size(); ++i) CHECK(std::abs(eff[i]) == Approx(1.0f));
  CHECK(train::evaluate(small, data, train::cross_entropy<float>{}).accuracy > 0.5);
}
