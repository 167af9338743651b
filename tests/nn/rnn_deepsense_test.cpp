// DeepSense's building blocks (time_distributed, sensor_stack, zero_pad2d) and the whole model:
// gradients with padded sequences, shapes, and the per-layer parameter counts of the reference.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "support/gradient_check.hpp"
#include "support/sequence_lengths.hpp"

using namespace slimnet;
using slimnet::testing::gradient_check_options;
using slimnet::testing::require_gradients;
using slimnet::testing::with_lengths;

TEST_CASE("zero_pad2d pads as TensorFlow's SAME and passes the gradient check", "[nn][deepsense][gradient]") {
  auto pad = nn::zero_pad2d<double>::same_padding(2, 8);
  CHECK(pad.describe() == "ZeroPad2d((3, 4, 0, 1))");
  CHECK(pad.output_shape({5, 3, 2, 4}) == shape_t{5, 3, 3, 11});
  nn::conv2d<double> conv(3, 2, 2, 8, {1, 0, true});
  CHECK(conv.output_shape(pad.output_shape({5, 3, 2, 4})) == shape_t{5, 2, 2, 4});  // SAME keeps 2 x 4
  tensor<double> x({1, 1, 2, 2}), y;
  x.flat() << 1, 2, 3, 4;
  nn::zero_pad2d<double>(1, 0, 0, 1).forward(x, y, {});
  REQUIRE(y.shape() == shape_t{1, 1, 3, 3});
  tensor<double> want({1, 1, 3, 3});
  want.flat() << 0, 1, 2, 0, 3, 4, 0, 0, 0;
  CHECK(y.flat() == want.flat());
  require_gradients(pad, {2, 3, 2, 4});
  CHECK_THROWS_AS(nn::zero_pad2d<double>(-1, 0, 0, 0), config_error);
}

TEST_CASE("sensor_stack runs one sub-network per sensor and stacks them on the height axis", "[nn][deepsense][gradient]") {
  nn::sensor_stack<double> s;
  s.add("acc", nn::conv2d<double>(1, 3, 1, 4, {2, 0, true}));
  s.add("gyro", nn::conv2d<double>(1, 3, 1, 4, {2, 0, true}));
  s.set_name("sensors");
  CHECK(s[1].name() == "sensors.gyro");
  CHECK(s.output_shape({5, 1, 1, 20}) == shape_t{5, 3, 2, 4});
  rng gen(3);
  s.reset_parameters(gen);
  tensor<double> x({2, 1, 1, 20}), y, ya, yg;
  for (index_t i = 0; i < x.size(); ++i) x[i] = gen.normal();
  s.forward(x, y, {});
  // Each sensor alone on its half of the input.
  tensor<double> xa({2, 1, 1, 10}), xg({2, 1, 1, 10});
  for (index_t n = 0; n < 2; ++n)
    for (index_t k = 0; k < 10; ++k) {
      xa[n * 10 + k] = x[n * 20 + k];
      xg[n * 10 + k] = x[n * 20 + 10 + k];
    }
  s[0].forward(xa, ya, {});
  s[1].forward(xg, yg, {});
  for (index_t n = 0; n < 2; ++n)
    for (index_t c = 0; c < 3; ++c)
      for (index_t w = 0; w < 4; ++w) {
        CHECK(y[((n * 3 + c) * 2 + 0) * 4 + w] == ya[(n * 3 + c) * 4 + w]);
        CHECK(y[((n * 3 + c) * 2 + 1) * 4 + w] == yg[(n * 3 + c) * 4 + w]);
      }
  require_gradients(s, {3, 1, 1, 20});
  CHECK_THROWS_AS(s.forward(tensor<double>({2, 1, 1, 21}), y, {}), shape_error);
}

TEST_CASE("time_distributed folds the steps into the batch and passes the gradient check", "[nn][deepsense][gradient]") {
  nn::sequential<double> per_step;
  per_step.add("conv", nn::conv2d<double>(1, 2, 1, 3, {1, 0, true}));
  per_step.add("tanh", nn::tanh<double>());
  per_step.add("flatten", nn::flatten<double>());
  nn::time_distributed<double> td(per_step, {1, 1, 6});
  td.set_name("frames");
  CHECK(td.inner().name() == "frames");
  std::vector<std::string> names;
  td.visit_parameters([&](nn::parameter<double>& p) { names.push_back(p.name()); });
  CHECK(names == std::vector<std::string>{"frames.conv.weight", "frames.conv.bias"});
  CHECK(td.output_shape({3, 5, 6}) == shape_t{3, 5, 8});
  with_lengths<double> l(td, {5, 2, 4});  // lengths are not the inner layer's business
  require_gradients(l, {3, 5, 6});
  CHECK_THROWS_AS(td.output_shape({3, 5, 7}), shape_error);
}

TEST_CASE("a small DeepSense passes the gradient check with padded windows", "[nn][deepsense][gradient]") {
  nn::models::deepsense_options o;
  o.intervals = 4;
  o.channels = 3;
  o.hidden = 4;
  o.classes = 3;
  rng gen(5);
  auto m = nn::models::deepsense<double>(gen, o);
  with_lengths<double> l(m, {4, 2, 3, 1});
  SECTION("evaluation mode") { require_gradients(l, {4, 4, 120}); }
  SECTION("training mode: batch statistics and fixed dropout masks") {
    gradient_check_options train;
    train.training = true;
    train.tolerance = 1e-5;  // 16 ReLUs between input and output: a kink now and then
    require_gradients(l, {4, 4, 120}, train);
  }
}

TEST_CASE("DeepSense has the reference's layer shapes and parameter counts", "[nn][deepsense]") {
  rng gen(1);
  auto m = nn::models::deepsense<float>(gen);
  CHECK(m.output_shape({64, 20, 120}) == shape_t{64, 6});
  auto weights = [&](const std::string& layer) {
    index_t n = 0;
    m.find(layer).visit_parameters([&](nn::parameter<float>& p) {
      if (p.local_name().rfind("weight", 0) == 0) n += p.size();
    });
    return n;
  };
  // DeepIoT Table 5 (weights, no biases): conv1 1.1K per sensor, conv2 and conv3 12.3K per sensor,
  // conv4 65.5K, gru1 227.5K, gru2 86.4K, fc 0.7K. conv5 and conv6 are 2x6 and 2x4 over 64
  // channels in the authors' code (49.2K, 32.8K); the paper's table lists 24.6K and 16.4K.
  CHECK(weights("frames.sensors.acc.conv1") == 1152);
  CHECK(weights("frames.sensors.gyro.conv1") == 1152);
  CHECK(weights("frames.sensors.acc.conv2") == 12288);
  CHECK(weights("frames.sensors.gyro.conv3") == 12288);
  CHECK(weights("frames.conv4") == 65536);
  CHECK(weights("frames.conv5") == 49152);
  CHECK(weights("frames.conv6") == 32768);
  CHECK(weights("gru1") == 227520);
  CHECK(weights("gru2") == 86400);
  CHECK(weights("fc") == 720);
  rng data_gen(2);
  tensor<float> x({3, 20, 120}), y;
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(data_gen.normal());
  std::vector<std::int32_t> lengths{20, 7, 12};
  nn::forward_context ctx;
  ctx.lengths = &lengths;
  m.forward(x, y, ctx);
  REQUIRE(y.shape() == shape_t{3, 6});
  CHECK(y.flat().allFinite());
  auto copy = m;  // deep copy, same names, same outputs
  tensor<float> y2;
  copy.forward(x, y2, ctx);
  CHECK(y2.flat() == y.flat());
  CHECK(copy.find("frames.sensors.gyro.conv1").name() == "frames.sensors.gyro.conv1");
}
