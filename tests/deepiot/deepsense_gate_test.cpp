// DeepIoT gates inside nested containers, on DeepSense (nn/models_deepsense.hpp): each sensor's
// conv1 / conv2 inside the TimeDistributed's SensorStack, ONE shared gate for the sensors' coupled
// conv3 (after the stack), the merge convolutions conv4-6 and the GRUs (brief items 11, 23). A gate
// inside the TimeDistributed sees (N*T, C, H, W) and repeats each sequence's mask over its T steps.
// thin(gated) must compute what the hard-masked gated model computes, through the coupled conv3
// group and the conv6 -> flatten -> gru1 columns, on padded batches of several lengths.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/structure.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

nn::models::deepsense_options dsg_options() {
  nn::models::deepsense_options o;
  o.intervals = 4;
  o.spectral_samples = 10;  // 60 features per sensor: 4 positions after conv3
  o.channels = 6;
  o.hidden = 5;
  o.classes = 3;
  return o;
}

/// A small DeepSense with random BatchNorm statistics (a removed channel leaking through a
/// BatchNorm's shift would show).
template <class Scalar>
nn::sequential<Scalar> dsg_model(rng& gen) {
  auto m = nn::models::deepsense<Scalar>(gen, dsg_options());
  m.visit_layers([&](nn::layer<Scalar>& l) {
    if (auto* bn = dynamic_cast<nn::batch_norm<Scalar>*>(&l)) {
      const index_t c = bn->features();
      bn->weight().value() = testing::random_tensor<Scalar>({c}, gen, 0.5, 1.5);
      bn->bias().value() = testing::random_tensor<Scalar>({c}, gen, -0.5, 0.5);
      bn->running_mean().value() = testing::random_tensor<Scalar>({c}, gen, -0.3, 0.3);
      bn->running_var().value() = testing::random_tensor<Scalar>({c}, gen, 0.5, 2.0);
    }
  });
  return m;
}

template <class Scalar>
tensor<Scalar> dsg_run(nn::layer<Scalar>& m, const tensor<Scalar>& x, const std::vector<std::int32_t>& lengths, bool training = false) {
  tensor<Scalar> y(m.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<Scalar>::quiet_NaN();
  rng gen(5);
  nn::forward_context ctx{training, &gen};
  ctx.lengths = &lengths;
  m.forward(x, y, ctx);
  return y;
}

template <class Scalar>
tensor<Scalar> dsg_mask(index_t n, index_t units, rng& gen) {
  tensor<Scalar> z({n, units});
  for (index_t i = 0; i < z.size(); ++i) z[i] = gen.uniform() < 0.6 ? Scalar(1) : Scalar(0);
  return z;
}

}  // namespace

TEST_CASE("attach_gates reaches DeepSense's nested layers: per-sensor convs, the shared conv3 gate, merge convs, GRUs",
          "[deepiot][deepsense]") {
  rng gen(3);
  auto m = dsg_model<double>(gen);
  auto g = deepiot::attach_gates(m);
  const std::vector<std::string> names{"frames.sensors.acc.conv1", "frames.sensors.acc.conv2", "frames.sensors.gyro.conv1",
                                       "frames.sensors.gyro.conv2", "frames.sensors.conv3",     "frames.conv4",
                                       "frames.conv5",              "frames.conv6",             "gru1.l0",
                                       "gru2.l0"};
  REQUIRE(g.layers.size() == names.size());
  for (std::size_t k = 0; k < names.size(); ++k) {
    INFO(k);
    CHECK(g.layers[k].name == names[k]);
    CHECK(g.layers[k].folded_steps == (k < 8));
    CHECK(g.layers[k].recurrent == (k >= 8));
  }
  const auto& shared = g.layers[4];
  CHECK(shared.coupled);
  CHECK(shared.keys == std::vector<std::string>{"frames.sensors.acc.conv3", "frames.sensors.gyro.conv3"});
  CHECK(shared.gate_path == "frames.sensors_gate");
  CHECK(shared.units == 6);
  CHECK(shared.fan_in == 2 * (6 * 3 + 1));  // [acc_conv3 ; gyro_conv3] with their bias rows
  CHECK(!shared.bias);
  CHECK(g.layers[0].gate_path == "frames.sensors.acc.conv1_gate");
  CHECK(g.layers[0].fan_in == 18);
  CHECK(g.layers[7].gate_path == "frames.conv6_gate");
  CHECK(g.layers[8].fan_in == 3 * (6 * 8 + 5 + 2));  // gru1: 512-analogue input 6 channels x 8
  CHECK(g.layers[5].layer == 0);                     // inside "frames"
  CHECK(g.net.local_name(g.layers[8].layer) == "gru1");
  REQUIRE_THROWS_WITH(g.weight(4), Contains("coupled group"));
  CHECK(&g.weight(5) == &dynamic_cast<nn::conv2d<double>&>(g.net.find("frames.conv4")).weight());

  // The coupled compressor matrix: unit j = [acc filter j, acc bias j, gyro filter j, gyro bias j].
  auto [w, b] = g.live_weights();
  REQUIRE(b[4] == nullptr);
  const tensor<double>& packed = *w[4];
  REQUIRE(packed.shape() == shape_t{6, 38});
  for (int s = 0; s < 2; ++s) {
    auto& conv = dynamic_cast<nn::conv2d<double>&>(g.net.find(s == 0 ? "frames.sensors.acc.conv3" : "frames.sensors.gyro.conv3"));
    for (index_t j = 0; j < 6; ++j) {
      for (index_t f = 0; f < 18; ++f) CHECK(packed.data()[j * 38 + s * 19 + f] == conv.weight().value().data()[j * 18 + f]);
      CHECK(packed.data()[j * 38 + s * 19 + 18] == conv.bias()->value()[j]);
    }
  }
  // The compressor runs on the packed matrices.
  deepiot::compressor<double> comp(g.compressor_layers(), {}, gen);
  const auto p = comp.forward(w, b);
  REQUIRE(p.size() == names.size());
  CHECK(p[4].size() == 6);

  // Gates at keep 1 in evaluation change nothing.
  for (std::size_t k = 0; k < g.layers.size(); ++k) g.gate(k).set_probabilities(column_vector<double>::Ones(g.gate(k).units()));
  const auto x = testing::random_tensor<double>({3, 4, 120}, gen);
  const std::vector<std::int32_t> lengths{4, 2, 3};
  testing::check_close(dsg_run(m, x, lengths), dsg_run(g.net, x, lengths), 1e-12);

  // The selection names both sensors' conv3 and the remaining fraction counts them.
  std::vector<column_vector<double>> probs;
  for (std::size_t k = 0; k < g.layers.size(); ++k) probs.push_back(column_vector<double>::Constant(g.layers[k].units, 0.9));
  probs[4][0] = probs[4][3] = 0.1;
  const auto keep = deepiot::selection(g, probs, 0.5);
  REQUIRE(keep.count("frames.sensors.acc.conv3"));
  CHECK(keep.at("frames.sensors.gyro.conv3") == std::vector<bool>{false, true, true, false, true, true});
  const double all = static_cast<double>(deepiot::weight_count(m));
  // conv3 x 2 sensors lose 2 of 6 filters (18 weights each), conv4 2 of 6 input channels (2 x 8 each).
  const double removed = 2 * 2 * 18 + 6 * 2 * 2 * 8;
  CHECK(deepiot::remaining_fraction(g, keep) == Approx((all - removed) / all));

  // Selecting by a key of the coupled group or by its name gates the group once.
  auto g3 = deepiot::attach_gates(m, {"frames.sensors.gyro.conv3", "gru2"});
  REQUIRE(g3.layers.size() == 2);
  CHECK(g3.layers[0].name == "frames.sensors.conv3");
  CHECK(g3.layers[1].name == "gru2.l0");
}

TEMPLATE_TEST_CASE("a gate inside a TimeDistributed repeats each sequence's mask over its steps", "[deepiot][deepsense][gate]", float,
                   double) {
  rng gen(7);
  SECTION("the gate alone: forward and backward over (N*T, C, H, W)") {
    deepiot::unit_gate<TestType> gate(3, true);
    const auto z = dsg_mask<TestType>(2, 3, gen);
    gate.transform().set_mask(z);
    for (index_t t : {3, 1, 0}) {
      INFO("T = " << t);
      const auto x = testing::random_tensor<TestType>({2 * t, 3, 1, 2}, gen);
      const auto y = testing::poisoned_forward(gate, x);  // evaluation: scale 1
      testing::check_close(x, y, 0);
      tensor<TestType> out;
      gate.forward(x, out, {true, &gen});
      const auto dy = testing::random_tensor<TestType>(x.shape(), gen);
      tensor<TestType> dx;
      gate.backward(x, out, dy, &dx);
      for (index_t i = 0; i < 2 * t; ++i)
        for (index_t j = 0; j < 3; ++j)
          for (index_t q = 0; q < 2; ++q) {
            const index_t at = (i * 3 + j) * 2 + q;
            CHECK(out[at] == x[at] * z.data()[(i / t) * 3 + j]);
            CHECK(dx[at] == dy[at] * z.data()[(i / t) * 3 + j]);
          }
    }
    tensor<TestType> out;
    REQUIRE_THROWS_WITH(gate.forward(tensor<TestType>({5, 3, 1, 2}), out, {true, &gen}), Contains("folded") && Contains("(2, 3)"));
    deepiot::unit_gate<TestType> flat(3);
    flat.transform().set_mask(z);
    REQUIRE_THROWS_AS(flat.forward(tensor<TestType>({4, 3, 1, 2}), out, {true, &gen}), shape_error);
  }
  SECTION("a model: example n's output depends on its own mask row only") {
    nn::sequential<TestType> frame;
    frame.add("conv1", nn::conv2d<TestType>(1, 4, 1, 3, {1, 0, true}));
    frame.add("relu1", nn::relu<TestType>());
    frame.add("conv2", nn::conv2d<TestType>(4, 3, 1, 3, {1, 0, true}));
    frame.add("relu2", nn::relu<TestType>());
    frame.add("flatten", nn::flatten<TestType>());
    nn::sequential<TestType> m;
    m.add("frames", nn::time_distributed<TestType>(std::move(frame), {1, 1, 6}));
    m.add("gru", nn::gru<TestType>(6, 4));
    m.add("mean", nn::sequence_mean<TestType>());
    m.add("fc", nn::linear<TestType>(4, 2));
    m.reset_parameters(gen);
    auto g = deepiot::attach_gates(m, {"frames.conv1", "frames.conv2"});
    REQUIRE(g.layers.size() == 2);
    const index_t n = 3, steps = 5;
    const std::vector<std::int32_t> lengths{5, 2, 4};
    const auto x = testing::random_tensor<TestType>({n, steps, 6}, gen);
    const auto z1 = dsg_mask<TestType>(n, 4, gen), z2 = dsg_mask<TestType>(n, 3, gen);
    g.gate(0).set_mask(z1);
    g.gate(1).set_mask(z2);
    const auto batch = dsg_run(g.net, x, lengths, true);
    for (index_t i = 0; i < n; ++i) {
      INFO("example " << i);
      g.gate(0).set_hard(z1.matrix().row(i).transpose());
      g.gate(1).set_hard(z2.matrix().row(i).transpose());
      tensor<TestType> xi({1, steps, 6});
      std::copy_n(x.data() + i * steps * 6, steps * 6, xi.data());
      const auto yi = dsg_run(g.net, xi, {lengths[static_cast<std::size_t>(i)]});
      for (index_t c = 0; c < 2; ++c) CHECK(yi[c] == Approx(batch[i * 2 + c]).margin(1e-5));
    }
  }
}

TEMPLATE_TEST_CASE("thin() of a gated DeepSense equals the hard-masked gated model", "[deepiot][deepsense][thin]", float, double) {
  rng gen(11);
  const double tol = std::is_same<TestType, float>::value ? 2e-5 : 1e-11;
  for (int trial = 0; trial < 4; ++trial) {
    INFO("trial " << trial);
    auto m = dsg_model<TestType>(gen);
    auto g = deepiot::attach_gates(m);
    std::vector<index_t> kept(g.layers.size());
    for (std::size_t k = 0; k < g.layers.size(); ++k) {
      const index_t u = g.gate(k).units();
      column_vector<TestType> s(u);
      for (index_t j = 0; j < u; ++j) {
        // Odd trials fold keep probabilities into the kept units (scales in (0.3, 1]).
        const bool drop = gen.uniform() < 0.4;
        s[j] = drop ? TestType(0) : trial % 2 ? static_cast<TestType>(0.3 + 0.7 * gen.uniform()) : TestType(1);
      }
      if (s.maxCoeff() == TestType(0)) s[u - 1] = TestType(1);
      if (s.minCoeff() != TestType(0)) s[0] = TestType(0);  // every gate removes something
      kept[k] = (s.array() != TestType(0)).count();
      g.gate(k).set_hard(s);
    }
    auto small = deepiot::thin(g);
    auto conv = [&](const char* name) -> nn::conv2d<TestType>& { return dynamic_cast<nn::conv2d<TestType>&>(small.find(name)); };
    CHECK(conv("frames.sensors.acc.conv1").out_channels() == kept[0]);
    CHECK(conv("frames.sensors.acc.conv2").in_channels() == kept[0]);
    CHECK(conv("frames.sensors.gyro.conv2").in_channels() == kept[2]);
    CHECK(conv("frames.sensors.acc.conv3").out_channels() == kept[4]);
    CHECK(conv("frames.sensors.gyro.conv3").out_channels() == kept[4]);
    CHECK(conv("frames.conv4").in_channels() == kept[4]);
    CHECK(conv("frames.conv6").out_channels() == kept[7]);
    auto& gru1 = dynamic_cast<nn::gru<TestType>&>(small.find("gru1"));
    CHECK(gru1.input_size() == kept[7] * 2 * 4);  // the flatten: 2 sensors x 4 positions per channel
    CHECK(gru1.hidden_size(0) == kept[8]);
    CHECK(dynamic_cast<nn::linear<TestType>&>(small.find("fc")).in_features() == kept[9]);
    bool gates_left = false;
    small.visit_layers([&](nn::layer<TestType>& l) { gates_left = gates_left || dynamic_cast<deepiot::unit_gate<TestType>*>(&l); });
    CHECK(!gates_left);
    CHECK(deepiot::weight_count(small) < deepiot::weight_count(m));

    for (const auto& [steps, lengths] : std::vector<std::pair<index_t, std::vector<std::int32_t>>>{
             {4, {4, 4, 4}}, {4, {4, 1, 3}}, {6, {2, 6, 5}}, {1, {1, 1, 1}}, {3, {3, 0, 2}}}) {
      INFO("T = " << steps);
      const auto x = testing::random_tensor<TestType>({3, steps, 120}, gen);
      const auto expected = dsg_run(g.net, x, lengths);
      const auto actual = dsg_run(small, x, lengths);
      REQUIRE(expected.flat().allFinite());
      testing::check_close(expected, actual, tol);
    }
  }
}

TEST_CASE("attach_gates / thin on nested containers: typed errors", "[deepiot][deepsense][errors]") {
  rng gen(13);
  auto m = dsg_model<float>(gen);
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"frames.conv9"}), Contains("attach_gates") && Contains("'frames.conv9'"));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"fc"}), Contains("output layer"));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(m, {"mean"}), Contains("not a Linear"));
  auto g = deepiot::attach_gates(m, {"frames.conv5", "frames.sensors.conv3"});
  REQUIRE(g.layers.size() == 2);
  g.gate(1).set_hard(column_vector<float>::Ones(6));
  REQUIRE_THROWS_WITH(deepiot::thin(g), Contains("thin") && Contains("'frames.sensors.conv3'") && Contains("stochastic mode"));
  // A training mask whose rows do not divide the folded batch.
  // (The gate infers T = rows / N, so it can only refuse an N that does not divide N*T: 5 of 12.)
  tensor<float> five({5, 6});
  five.set_zero();
  g.gate(0).set_mask(five);
  tensor<float> y;
  nn::forward_context ctx{true, &gen};
  const std::vector<std::int32_t> lengths{4, 4, 4};
  ctx.lengths = &lengths;
  REQUIRE_THROWS_AS(g.net.forward(testing::random_tensor<float>({3, 4, 120}, gen), y, ctx), shape_error);
  // Recurrent layers are gated only as children of the top Sequential.
  nn::sequential<float> block;
  block.add("lstm", nn::lstm<float>(3, 4));
  nn::sequential<float> outer;
  outer.add("block", std::move(block));
  outer.add("fc", nn::linear<float>(4, 2));
  REQUIRE_THROWS_WITH(deepiot::attach_gates(outer), Contains("'block.lstm'") && Contains("inside a container"));
}
