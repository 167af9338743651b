// structure::thin on DeepSense (nn/models_deepsense.hpp): per-sensor convolutions, the coupling
// across the sensor stack into the first merge convolution, the merge convolutions, the per-step
// flatten into gru1's input columns (channel-major: c * H*W + position) and the GRUs. The thinned
// model computes what the original computes with the removed units' consumer columns zeroed, on
// padded batches of several sequence lengths.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <limits>
#include <map>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/structure.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

nn::models::deepsense_options ds_thin_options() {
  nn::models::deepsense_options o;
  o.intervals = 4;
  o.spectral_samples = 10;  // 60 features per sensor: 4 positions after conv3, as the reference
  o.channels = 6;
  o.hidden = 5;
  o.classes = 3;
  return o;
}

/// A small DeepSense with random weights and random BatchNorm statistics (so removed channels
/// would show if they leaked through a BatchNorm's shift).
nn::sequential<float> ds_thin_model(rng& gen) {
  auto m = nn::models::deepsense<float>(gen, ds_thin_options());
  m.visit_layers([&](nn::layer<float>& l) {
    if (auto* bn = dynamic_cast<nn::batch_norm<float>*>(&l)) {
      const index_t c = bn->features();
      bn->weight().value() = testing::random_tensor<float>({c}, gen, 0.5, 1.5);
      bn->bias().value() = testing::random_tensor<float>({c}, gen, -0.5, 0.5);
      bn->running_mean().value() = testing::random_tensor<float>({c}, gen, -0.3, 0.3);
      bn->running_var().value() = testing::random_tensor<float>({c}, gen, 0.5, 2.0);
    }
  });
  return m;
}

tensor<float> ds_thin_eval(nn::layer<float>& m, const tensor<float>& x, const std::vector<std::int32_t>& lengths) {
  tensor<float> y(m.output_shape(x.shape()));
  for (index_t i = 0; i < y.size(); ++i) y[i] = std::numeric_limits<float>::quiet_NaN();
  nn::forward_context ctx;
  ctx.lengths = &lengths;
  m.forward(x, y, ctx);
  return y;
}

/// Multiplies input columns `cols` (dim 1, each with its trailing kernel block) of `w` by zero.
void ds_thin_zero_columns(nn::parameter<float>& w, const std::vector<index_t>& cols) {
  tensor<float>& t = w.value();
  const index_t rows = t.dim(0), in = t.dim(1), inner = t.size() / (rows * in);
  for (index_t r = 0; r < rows; ++r)
    for (index_t c : cols)
      for (index_t k = 0; k < inner; ++k) t.data()[(r * in + c) * inner + k] = 0.0f;
}

nn::conv2d<float>& ds_thin_conv(nn::sequential<float>& m, const std::string& name) {
  return dynamic_cast<nn::conv2d<float>&>(m.find(name));
}
nn::gru<float>& ds_thin_gru(nn::sequential<float>& m, const std::string& name) {
  return dynamic_cast<nn::gru<float>&>(m.find(name));
}

/// A random set of at least one and at most n - 1 of n units.
std::set<index_t> ds_thin_random_drop(index_t n, rng& gen) {
  std::set<index_t> drop;
  const index_t count = 1 + static_cast<index_t>(gen.uniform(0, 1) * static_cast<double>(n - 1)) % (n - 1);
  while (static_cast<index_t>(drop.size()) < count)
    drop.insert(static_cast<index_t>(gen.uniform(0, 1) * static_cast<double>(n)) % n);
  return drop;
}

std::vector<bool> ds_thin_keep(index_t n, const std::set<index_t>& drop) {
  std::vector<bool> k(static_cast<std::size_t>(n), true);
  for (index_t j : drop) k[static_cast<std::size_t>(j)] = false;
  return k;
}

std::set<std::string> ds_thin_parameter_names(nn::layer<float>& m) {
  std::set<std::string> names;
  m.visit_parameters([&](nn::parameter<float>& p) { names.insert(p.name()); });
  return names;
}

}  // namespace

TEST_CASE("thinning DeepSense removes units of every block, coupled across the sensor stack and the flatten",
          "[structure][deepsense]") {
  rng gen(41);
  const auto o = ds_thin_options();
  const index_t c = o.channels, h = o.hidden, positions = 8;  // 2 sensors x 4 positions per merge channel
  for (int trial = 0; trial < 6; ++trial) {
    INFO("trial " << trial);
    auto m = ds_thin_model(gen);
    // Trial 0 thins every block; later trials a random subset of blocks.
    auto pick = [&] { return trial == 0 || gen.uniform(0, 1) < 0.5; };
    std::map<std::string, std::set<index_t>> drop;
    for (const char* name : {"frames.sensors.acc.conv1", "frames.sensors.gyro.conv1", "frames.sensors.acc.conv2",
                             "frames.sensors.gyro.conv2", "frames.conv4", "frames.conv5", "frames.conv6"})
      if (pick()) drop[name] = ds_thin_random_drop(c, gen);
    if (pick()) drop["conv3"] = ds_thin_random_drop(c, gen);  // one channel set for both sensors
    for (const char* name : {"gru1.l0", "gru2.l0"})
      if (pick()) drop[name] = ds_thin_random_drop(h, gen);

    structure::unit_selection keep;
    for (const auto& [name, d] : drop) {
      if (name == "conv3") {
        keep["frames.sensors.acc.conv3"] = keep["frames.sensors.gyro.conv3"] = ds_thin_keep(c, d);
      } else {
        keep[name] = ds_thin_keep(name[0] == 'g' ? h : c, d);
      }
    }
    auto small = structure::thin(m, keep);
    CHECK(ds_thin_parameter_names(small) == ds_thin_parameter_names(m));  // same names: files load by name

    // Reference: the original with each removed unit's consumer columns zeroed.
    auto zero = [&](const std::string& producer, nn::parameter<float>& consumer, index_t block) {
      if (!drop.count(producer)) return;
      std::vector<index_t> cols;
      for (index_t j : drop.at(producer))
        for (index_t b = 0; b < block; ++b) cols.push_back(j * block + b);
      ds_thin_zero_columns(consumer, cols);
    };
    for (const std::string s : {"acc", "gyro"}) {
      zero("frames.sensors." + s + ".conv1", ds_thin_conv(m, "frames.sensors." + s + ".conv2").weight(), 1);
      zero("frames.sensors." + s + ".conv2", ds_thin_conv(m, "frames.sensors." + s + ".conv3").weight(), 1);
    }
    zero("conv3", ds_thin_conv(m, "frames.conv4").weight(), 1);
    zero("frames.conv4", ds_thin_conv(m, "frames.conv5").weight(), 1);
    zero("frames.conv5", ds_thin_conv(m, "frames.conv6").weight(), 1);
    zero("frames.conv6", ds_thin_gru(m, "gru1").weight_ih(0), positions);
    zero("gru1.l0", ds_thin_gru(m, "gru1").weight_hh(0), 1);
    zero("gru1.l0", ds_thin_gru(m, "gru2").weight_ih(0), 1);
    zero("gru2.l0", ds_thin_gru(m, "gru2").weight_hh(0), 1);
    zero("gru2.l0", prune::find_parameter(m.find("fc"), "weight", "test"), 1);

    // Sizes: each block lost its units, each consumer their columns.
    auto kept = [&](const std::string& name, index_t n) {
      return n - static_cast<index_t>(drop.count(name) ? drop.at(name).size() : 0);
    };
    for (const std::string s : {"acc", "gyro"}) {
      const std::string p = "frames.sensors." + s;
      CHECK(ds_thin_conv(small, p + ".conv1").out_channels() == kept(p + ".conv1", c));
      CHECK(ds_thin_conv(small, p + ".conv2").in_channels() == kept(p + ".conv1", c));
      CHECK(ds_thin_conv(small, p + ".conv3").out_channels() == kept("conv3", c));
      CHECK(dynamic_cast<nn::batch_norm<float>&>(small.find(p + ".bn3")).features() == kept("conv3", c));
    }
    CHECK(ds_thin_conv(small, "frames.conv4").in_channels() == kept("conv3", c));
    CHECK(ds_thin_conv(small, "frames.conv6").out_channels() == kept("frames.conv6", c));
    CHECK(ds_thin_gru(small, "gru1").input_size() == positions * kept("frames.conv6", c));
    CHECK(ds_thin_gru(small, "gru1").hidden_size(0) == kept("gru1.l0", h));
    CHECK(ds_thin_gru(small, "gru2").input_size() == kept("gru1.l0", h));
    CHECK(dynamic_cast<nn::linear<float>&>(small.find("fc")).in_features() == kept("gru2.l0", h));

    for (const auto& [steps, lengths] : std::vector<std::pair<index_t, std::vector<std::int32_t>>>{
             {4, {4, 4, 4}}, {4, {4, 1, 3}}, {7, {2, 7, 5}}, {1, {1, 1, 1}}}) {
      INFO("T = " << steps);
      const auto x = testing::random_tensor<float>({3, steps, o.features()}, gen);
      const auto expected = ds_thin_eval(m, x, lengths);
      const auto actual = ds_thin_eval(small, x, lengths);
      REQUIRE(expected.flat().allFinite());
      testing::check_close(expected, actual, 1e-5);
    }
  }
}

TEST_CASE("removing a merge channel of DeepSense removes exactly its parameters and gru1's columns", "[structure][deepsense]") {
  rng gen(42);
  auto m = ds_thin_model(gen);
  const index_t c = ds_thin_options().channels;
  auto count = [](nn::layer<float>& l) {
    index_t n = 0;
    l.visit_parameters([&](nn::parameter<float>& p) { n += p.size(); });
    return n;
  };
  // Removing one merge channel of conv6 removes its 2x4 kernel x 6 inputs, its bias, its 4 BN
  // entries (gamma, beta, running mean and variance)
  // and 8 of gru1's input columns in each of its 3 gate blocks of 5 units.
  auto small = structure::thin(m, {{"frames.conv6", ds_thin_keep(c, {2})}});
  CHECK(count(m) - count(small) == (2 * 4 * c + 1 + 4) + 8 * 3 * 5);
}

TEST_CASE("thinning DeepSense refuses sensors thinned apart and bad unit lists, naming them", "[structure][deepsense]") {
  rng gen(43);
  auto m = ds_thin_model(gen);
  const index_t c = ds_thin_options().channels;
  using structure::thin;
  // conv3's channels are stacked channel by channel: both sensors must keep the same ones.
  CHECK_THROWS_AS(thin(m, {{"frames.sensors.acc.conv3", ds_thin_keep(c, {1})}}), config_error);
  CHECK_THROWS_WITH(thin(m, {{"frames.sensors.acc.conv3", ds_thin_keep(c, {1})}}),
                    Contains("slimnet::structure::thin") && Contains("acc") && Contains("gyro") && Contains("frames.sensors"));
  CHECK_THROWS_AS(
      thin(m, {{"frames.sensors.acc.conv3", ds_thin_keep(c, {1})}, {"frames.sensors.gyro.conv3", ds_thin_keep(c, {2})}}),
      config_error);
  // Per-sensor convolutions before conv3 are independent.
  CHECK_NOTHROW(
      thin(m, {{"frames.sensors.acc.conv1", ds_thin_keep(c, {1})}, {"frames.sensors.gyro.conv2", ds_thin_keep(c, {0, 3})}}));
  CHECK_THROWS_AS(thin(m, {{"frames.conv4", ds_thin_keep(c + 1, {1})}}), shape_error);
  CHECK_THROWS_WITH(thin(m, {{"frames.conv4", ds_thin_keep(c + 1, {1})}}), Contains("frames.conv4") && Contains("7 entries"));
  CHECK_THROWS_WITH(thin(m, {{"frames.sensors.magnet.conv1", ds_thin_keep(c, {1})}}), Contains("frames.sensors.magnet.conv1"));
  CHECK_THROWS_WITH(thin(m, {{"frames.conv6", ds_thin_keep(c, {0, 1, 2, 3, 4, 5})}}), Contains("keep no unit"));
  CHECK_THROWS_WITH(thin(m, {{"gru1", ds_thin_keep(5, {1})}}), Contains("gru1"));  // the key is gru1.l0
  CHECK_THROWS_WITH(thin(m, {{"fc", ds_thin_keep(3, {1})}}), Contains("output would lose units"));
  CHECK_THROWS_WITH(thin(m, {{"frames.pad4", ds_thin_keep(c, {1})}}), Contains("not a Linear"));
}

TEST_CASE("dead units of DeepSense: channels nothing reads, across the sensor stack and the flatten",
          "[structure][deepsense][dead]") {
  rng gen(44);
  auto m = ds_thin_model(gen);
  auto& gru1 = ds_thin_gru(m, "gru1");
  // Nothing reads the stack's channel 1 (conv4's input channel 1: conv3's unit 1 in both sensors),
  // conv6's channel 4 (its 8 columns of gru1) or gru1's unit 2 (its W_hh column, gru2's column).
  ds_thin_zero_columns(ds_thin_conv(m, "frames.conv4").weight(), {1});
  ds_thin_zero_columns(gru1.weight_ih(0), {32, 33, 34, 35, 36, 37, 38, 39});
  ds_thin_zero_columns(gru1.weight_hh(0), {2});
  ds_thin_zero_columns(ds_thin_gru(m, "gru2").weight_ih(0), {2});
  // acc's conv3 filter 3 has no weight and no bias, but bn3 shifts it: not zero, not dead.
  auto& acc3 = ds_thin_conv(m, "frames.sensors.acc.conv3");
  const index_t filter = acc3.weight().size() / acc3.weight().value().dim(0);
  std::fill_n(acc3.weight().value().data() + 3 * filter, filter, 0.0f);
  acc3.bias()->value()[3] = 0.0f;
  const auto dead = structure::dead_units(m);
  auto dropped = [&](const std::string& key) {
    std::set<index_t> d;
    const auto& k = dead.at(key);
    for (std::size_t j = 0; j < k.size(); ++j)
      if (!k[j]) d.insert(static_cast<index_t>(j));
    return d;
  };
  CHECK(dead.size() == 4);
  CHECK(dropped("frames.sensors.acc.conv3") == std::set<index_t>{1});
  CHECK(dropped("frames.sensors.gyro.conv3") == std::set<index_t>{1});
  CHECK(dropped("frames.conv6") == std::set<index_t>{4});
  CHECK(dropped("gru1.l0") == std::set<index_t>{2});

  auto small = m;
  CHECK(structure::remove_dead_units(small) == 4);
  CHECK(ds_thin_gru(small, "gru1").input_size() == 8 * 5);
  const auto x = testing::random_tensor<float>({3, 5, ds_thin_options().features()}, gen);
  const std::vector<std::int32_t> lengths{5, 2, 4};
  testing::check_close(ds_thin_eval(m, x, lengths), ds_thin_eval(small, x, lengths), 1e-5);
}
