// The VGG-style net (nn::models::vgg_small: six 3x3 conv + BatchNorm + ReLU blocks, two fc layers):
// a gate after every conv block and fc1, and thinning that removes a pruned conv channel together
// with its BatchNorm entries and the next layer's input channels computes what the hard-gated
// model computes (issue #14, Table 3's network).
#include <catch2/catch.hpp>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"

using namespace slimnet;

namespace {

/// Random weights and BatchNorm statistics (running variances in [0.5, 1.5]), so that a wrongly
/// dropped or misaligned BatchNorm entry changes the output.
template <class Scalar>
void vgg_random_parameters(nn::layer<Scalar>& m, std::uint64_t seed) {
  rng gen(seed);
  m.visit_parameters([&](nn::parameter<Scalar>& p) {
    for (index_t i = 0; i < p.size(); ++i) {
      p.value()[i] = static_cast<Scalar>(p.local_name() == "running_var" ? 0.5 + gen.uniform() : 0.3 * gen.normal());
    }
  });
}

}  // namespace

TEMPLATE_TEST_CASE("thin() of a gated vgg_small equals the hard-gated model, BatchNorm thinned with its conv",
                   "[deepiot][thin][vgg]", float, double) {
  const double tol = std::is_same_v<TestType, float> ? 1e-4 : 1e-10;
  rng init(3);
  auto m = nn::models::vgg_small<TestType>(init);
  vgg_random_parameters(m, 5);
  auto g = deepiot::attach_gates(m);
  // Gates after conv1..conv6 (each after its BatchNorm, ReLU and pooling) and after fc1; fc2 is
  // the output layer.
  REQUIRE(g.layers.size() == 7);
  const char* names[] = {"conv1", "conv2", "conv3", "conv4", "conv5", "conv6", "fc1"};
  const index_t units[] = {16, 32, 64, 64, 128, 128, 256};
  for (std::size_t k = 0; k < 7; ++k) {
    INFO(k);
    REQUIRE(g.layers[k].name == names[k]);
    REQUIRE(g.layers[k].units == units[k]);
    REQUIRE(g.layers[k].conv == (k < 6));
  }
  REQUIRE(g.layers[1].fan_in == 16 * 9);
  // conv1's gate comes after bn1, relu1 and pool1: the BatchNorm sees the ungated channel.
  REQUIRE(g.net.local_name(g.layers[0].gate) == "conv1_gate");
  REQUIRE(g.net.local_name(g.layers[0].gate - 1) == "pool1");

  for (const bool fold : {false, true}) {
    DYNAMIC_SECTION("probabilities folded " << fold) {
      rng gen(11);
      std::vector<column_vector<TestType>> p;
      for (const auto& l : g.layers) {
        column_vector<TestType> v(l.units);
        for (index_t j = 0; j < v.size(); ++j) v[j] = static_cast<TestType>(gen.uniform());
        v[0] = 1;  // at least one unit per layer survives τ = 0.5
        p.push_back(v);
      }
      const auto keep = deepiot::harden(g, p, 0.5, fold);
      auto thinned = deepiot::thin(g);
      INFO(thinned.describe());
      // Each BatchNorm keeps as many channels as its conv.
      for (int i = 1; i <= 6; ++i) {
        const auto& kk = keep.at("conv" + std::to_string(i));
        const auto kept = static_cast<index_t>(std::count(kk.begin(), kk.end(), true));
        auto* bn = dynamic_cast<nn::batch_norm<TestType>*>(&thinned.find("bn" + std::to_string(i)));
        REQUIRE(bn != nullptr);
        REQUIRE(bn->weight().size() == kept);
        REQUIRE(bn->running_var().size() == kept);
      }
      REQUIRE(deepiot::weight_count(thinned) < deepiot::weight_count(g.net));
      tensor<TestType> x({3, 1, 28, 28}), y_gated, y_thin;
      for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<TestType>(gen.normal());
      nn::forward_context ctx{false, &gen};
      g.net.forward(x, y_gated, ctx);
      thinned.forward(x, y_thin, ctx);
      REQUIRE(y_thin.shape() == shape_t{3, 10});
      REQUIRE(y_gated.shape() == y_thin.shape());
      const auto scale = std::max<TestType>(1, y_gated.flat().cwiseAbs().maxCoeff());
      REQUIRE((y_thin.flat() - y_gated.flat()).cwiseAbs().maxCoeff() <= tol * scale);
    }
  }
}

TEST_CASE("thinned vgg_small weight counts follow the formula", "[deepiot][thin][vgg]") {
  rng gen(1);
  auto m = nn::models::vgg_small<float>(gen);
  REQUIRE(deepiot::weight_count(m) == 316560);
  const auto first = [](index_t units, index_t kept) {
    std::vector<bool> v(static_cast<std::size_t>(units), false);
    for (index_t j = 0; j < kept; ++j) v[static_cast<std::size_t>(j)] = true;
    return v;
  };
  // conv widths 16-32-64-64-128-128, fc1 256 -> k1..k7 kept
  const index_t k[] = {4, 8, 10, 12, 20, 24, 30};
  auto t = deepiot::thin(m, {{"conv1", first(16, k[0])},
                             {"conv2", first(32, k[1])},
                             {"conv3", first(64, k[2])},
                             {"conv4", first(64, k[3])},
                             {"conv5", first(128, k[4])},
                             {"conv6", first(128, k[5])},
                             {"fc1", first(256, k[6])}});
  const index_t expected =
      9 * (1 * k[0] + k[0] * k[1] + k[1] * k[2] + k[2] * k[3] + k[3] * k[4] + k[4] * k[5]) + k[5] * k[6] + k[6] * 10;
  REQUIRE(deepiot::weight_count(t) == expected);
  tensor<float> x({2, 1, 28, 28}, 0.5f), y;
  t.forward(x, y, {});
  REQUIRE(y.shape() == shape_t{2, 10});
}
