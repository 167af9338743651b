// compress() reaches layers inside containers that are not Sequentials: DeepSense's per-interval
// frames (time_distributed) and per-sensor branches (sensor_stack) as well as its GRUs; the pruned
// model, converted, gives the float model's outputs (poisoned outputs, sequence lengths given).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::random_tensor;

namespace {

/// Keeps the largest |w| `density` of every weight matrix / filter bank (magnitude pruning, DyNS's criterion).
void nested_magnitude_prune(nn::layer<float>& m, double density) {
  m.visit_parameters([&](nn::parameter<float>& p) {
    if (p.value().rank() < 2 || p.local_name().rfind("weight", 0) != 0) return;
    auto& v = p.value();
    std::vector<float> mags(static_cast<std::size_t>(v.size()));
    for (index_t i = 0; i < v.size(); ++i) mags[static_cast<std::size_t>(i)] = std::abs(v[i]);
    const auto keep = static_cast<std::size_t>(std::ceil(density * static_cast<double>(mags.size())));
    std::nth_element(mags.begin(), mags.begin() + static_cast<std::ptrdiff_t>(mags.size() - keep), mags.end());
    const float cut = mags[mags.size() - keep];
    for (index_t i = 0; i < v.size(); ++i)
      if (std::abs(v[i]) < cut) v[i] = 0.0f;
  });
}

}  // namespace

TEST_CASE("compress(format::sparse) converts DeepSense's frames, sensor branches and GRUs", "[compressed][deepsense]") {
  nn::models::deepsense_options o;
  o.intervals = 5;
  o.channels = 16;
  o.hidden = 24;
  rng gen(91);
  auto model = nn::models::deepsense<float>(gen, o);
  nested_magnitude_prune(model, 0.1);
  auto count = [](nn::layer<float>& m) {
    std::map<std::string, int> n;
    m.visit_layers([&](nn::layer<float>& l) {
      if (dynamic_cast<nc::compressed_conv2d<float>*>(&l)) ++n["compressed conv"];
      if (dynamic_cast<nn::conv2d<float>*>(&l)) ++n["float conv"];
      if (dynamic_cast<nc::compressed_gru<float>*>(&l)) ++n["compressed gru"];
      if (dynamic_cast<nn::gru<float>*>(&l)) ++n["float gru"];
      if (dynamic_cast<nc::compressed_linear<float>*>(&l)) ++n["compressed linear"];
    });
    return n;
  };
  CHECK(count(model)["float conv"] == 9);
  for (index_t batch : {1, 3}) {
    auto compressed = model;
    nc::compress_options co;
    co.sparse.batch = batch;
    co.input_shape = {batch, o.intervals, o.features()};
    const auto report = nc::compress(compressed, nc::format::sparse, co);
    auto n = count(compressed);
    CHECK(n["compressed conv"] == 9);  // conv1..3 of both sensors, conv4..6
    CHECK(n["float conv"] == 0);
    CHECK(n["compressed gru"] == 2);
    CHECK(n["float gru"] == 0);
    CHECK(n["compressed linear"] == 1);
    bool named = false;
    for (const auto& line : report) named |= line.rfind("frames.sensors.gyro.conv2: ", 0) == 0;
    CHECK(named);
    const auto x = random_tensor<float>({batch, o.intervals, o.features()}, gen);
    std::vector<std::int32_t> lengths(static_cast<std::size_t>(batch), static_cast<std::int32_t>(o.intervals));
    lengths[0] = static_cast<std::int32_t>(o.intervals - 2);
    nn::forward_context ctx;
    ctx.lengths = &lengths;
    tensor<float> y_float, y({batch, o.classes}, std::numeric_limits<float>::quiet_NaN());
    model.forward(x, y_float, ctx);
    compressed.forward(x, y, ctx);
    REQUIRE(y.shape() == y_float.shape());
    double worst = 0;
    for (index_t i = 0; i < y.size(); ++i) worst = std::max(worst, std::isnan(y[i]) ? INFINITY : std::abs(double(y[i]) - double(y_float[i])));
    INFO("batch " << batch);
    CHECK(worst <= 1e-4);
  }
}
