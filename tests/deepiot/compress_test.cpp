// End to end on synthetic data: an MLP whose hidden layer has a few useful units and many dead
// ones; compressor-critic training drives the dead units' keep probabilities down, and the
// thinned model keeps the accuracy.
#include <catch2/catch.hpp>

#include <type_traits>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;

// The run's options are deepiot::deepiot_options; the former name, which clashed with
// nn::compressed::compress_options (another meaning), remains as a deprecated alias of the same type.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static_assert(std::is_same_v<deepiot::compress_options, deepiot::deepiot_options>,
              "deepiot::compress_options must stay an alias of deepiot::deepiot_options.");
#pragma GCC diagnostic pop
static_assert(!std::is_same_v<deepiot::deepiot_options, nn::compressed::compress_options>,
              "DeepIoT's options and nn::compressed's conversion options are different types.");

namespace {

// 3 classes from 2 informative inputs (Gaussian blobs) and 4 noise inputs.
data::dataset<float> blobs(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<float> d;
  d.num_classes = 3;
  d.inputs.resize({n, 6});
  const double centers[3][2] = {{3, 0}, {-3, 3}, {-3, -3}};
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(gen.below(3));
    d.labels.push_back(c);
    for (index_t k = 0; k < 6; ++k) {
      d.inputs.matrix()(i, k) = static_cast<float>(k < 2 ? centers[c][k] + 0.8 * gen.normal() : gen.normal());
    }
  }
  return d;
}

}  // namespace

TEST_CASE("compressor-critic training prunes dead units and thinning keeps the accuracy", "[deepiot][slow]") {
  const auto train_set = blobs(2000, 1), test_set = blobs(600, 2);
  rng gen(3);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(6, 24));
  m.add("relu1", nn::relu<float>());
  m.add("fc2", nn::linear<float>(24, 3));
  m.reset_parameters(gen);
  // Pretrain, then kill 16 of the 24 hidden units (zero weights and bias: ReLU(0) = 0 and no
  // gradient ever reaches them again).
  train::adam<float> opt(train::adam_options{}.with_lr(0.01));
  train::fit_options fo;
  fo.epochs = 5;
  fo.progress = false;
  train::cross_entropy<float> ce;
  auto& fc1 = static_cast<nn::linear<float>&>(m[0]);
  const index_t dead = 16;
  auto kill = [&] {
    for (index_t j = 0; j < dead; ++j) {
      fc1.weight().value().matrix().row(8 + j).setZero();
      fc1.bias()->value()[8 + j] = 0;
    }
  };
  kill();
  train::fit(m, opt, ce, train_set, fo);
  kill();
  const double before = train::evaluate(m, test_set, ce).accuracy;
  REQUIRE(before > 0.95);

  auto g = deepiot::attach_gates(m);
  REQUIRE(g.layers.size() == 1);
  deepiot::deepiot_options o;
  o.critic_lr = 1e-3;
  o.tau = {0.0, 0.05, 150, 0.7};
  o.stop = {0.2, 0.9, 100, 3000};
  std::vector<deepiot::compress_check> checks;
  auto r = deepiot::compress(g, train_set, test_set, o, [&](const deepiot::compress_check& c) { checks.push_back(c); });
  REQUIRE(!checks.empty());
  const auto& p = r.probabilities[0];
  const double useful = p.head(8).mean(), useless = p.tail(dead).mean();
  INFO("p useful " << useful << " useless " << useless << " iterations " << r.iterations << " tau " << r.tau
                   << " kept " << r.last.kept[0] << " fraction " << r.last.fraction << " acc " << r.last.accuracy);
  CHECK(useful > useless + 0.2);
  const auto keep = deepiot::kept_units(p, r.tau);
  for (std::size_t j = 0; j < 8; ++j) CHECK(keep[j]);  // every useful unit survives
  CHECK(r.last.kept[0] < 24);

  deepiot::harden(g, r.probabilities, r.tau, true);
  auto thinned = deepiot::thin(g);
  const double after = train::evaluate(thinned, test_set, ce).accuracy;
  CHECK(after > 0.93);
  CHECK(static_cast<nn::linear<float>&>(thinned[0]).out_features() == r.last.kept[0]);
}
