// The fast compressed forms of issue 15 against the float model: the direct sparse convolution
// with fused ReLU / max-pool (csr16_engine inside compressed_conv2d), the compact CSR Linear, the
// dense form, compress() on nested Sequentials, and whole pruned LeNet-5 / LeNet-300-100 models at
// batch 1 and 7. Every output is poisoned with NaN before the call.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <map>
#include <limits>
#include <memory>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poisoned_forward;
using slimnet::testing::random_tensor;

namespace {

/// Zeros each weight of the named layers with probability 1 - density (pruned weights baked in).
template <class Scalar>
void prune_weights(nn::layer<Scalar>& model, const std::map<std::string, double>& density, rng& gen) {
  model.visit_parameters([&](nn::parameter<Scalar>& p) {
    for (const auto& [layer, d] : density) {
      if (p.name() != (layer.empty() ? std::string("weight") : layer + ".weight")) continue;
      for (index_t i = 0; i < p.size(); ++i)
        if (!(gen.uniform() < d)) p.value()[i] = Scalar(0);
    }
  });
}

/// y_compressed == y_float within float rounding: |a - b| <= tol (1 + |b|), NaN fails.
template <class Scalar>
void check_close(const tensor<Scalar>& a, const tensor<Scalar>& b, const char* what) {
  REQUIRE(a.shape() == b.shape());
  const double tol = std::is_same_v<Scalar, float> ? 2e-5 : 1e-12;
  index_t bad = 0;
  double worst = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    const double err = std::abs(double(a[i]) - double(b[i])) / (1 + std::abs(double(b[i])));
    worst = std::max(worst, std::isnan(err) ? INFINITY : err);
    if (!(err <= tol)) ++bad;
  }
  INFO(what << ": worst relative difference " << worst);
  CHECK(bad == 0);
}

}  // namespace

TEMPLATE_TEST_CASE("direct sparse Conv2d (+ ReLU + max-pool) equals the float layers", "[compressed][sparse][conv]", float, double) {
  rng gen(3);
  struct geometry {
    index_t in, out, kernel, stride, padding, h, w;
  };
  for (const geometry g : {geometry{1, 20, 5, 1, 0, 28, 28}, geometry{20, 50, 5, 1, 0, 12, 12}, geometry{3, 7, 3, 1, 1, 11, 13},
                           geometry{2, 5, 3, 2, 1, 9, 10}}) {
    for (double density : {0.0, 0.01, 0.1, 0.5, 1.0}) {
      nn::conv2d<TestType> conv(g.in, g.out, g.kernel, {g.stride, g.padding, true});
      conv.reset_parameters(gen);
      prune_weights<TestType>(conv, {{"", density}}, gen);  // an unnamed layer's parameter is "weight"
      nn::relu<TestType> relu;
      nn::max_pool2d<TestType> pool(2);
      nc::sparse_options o;
      o.force_sparse = true;
      for (int fused = 0; fused < 3; ++fused) {  // none, ReLU, ReLU + pool
        auto c = nc::to_sparse(conv, o);
        CHECK(c.kind() == "SparseConv2d");
        CHECK((g.stride != 1 || dynamic_cast<const nc::csr16_engine<TestType>*>(&c.weights()) != nullptr));
        if (fused > 0) c.fuse({true, fused == 2 ? index_t{2} : index_t{0}, fused == 2 ? index_t{2} : index_t{0}});
        for (index_t batch : {1, 7}) {
          const auto x = random_tensor<TestType>({batch, g.in, g.h, g.w}, gen);
          tensor<TestType> yf, yr, yp;
          conv.forward(x, yf, {});
          const tensor<TestType>* expected = &yf;
          if (fused > 0) {
            relu.forward(yf, yr, {});
            expected = &yr;
          }
          if (fused == 2) {
            pool.forward(yr, yp, {});
            expected = &yp;
          }
          INFO("conv " << g.in << "->" << g.out << " k" << g.kernel << " s" << g.stride << " p" << g.padding << " density " << density
                       << " fused " << fused << " batch " << batch);
          check_close(poisoned_forward(c, x), *expected, "sparse conv");
          check_close(poisoned_forward(c, x), *expected, "sparse conv, second call");
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("compact sparse Linear (CSR, 16-bit indices) equals the float Linear, memory ~ nnz x 6 bytes",
                   "[compressed][sparse]", float, double) {
  rng gen(4);
  for (double density : {0.0, 0.005, 0.01, 0.1, 0.5}) {
    nn::linear<TestType> fc(800, 500);
    fc.reset_parameters(gen);
    prune_weights<TestType>(fc, {{"", density}}, gen);
    nc::sparse_options o;
    o.force_sparse = true;
    o.batch = 1;
    auto s = nc::to_sparse(fc, o);
    index_t nnz = 0;
    for (index_t i = 0; i < fc.weight().size(); ++i) nnz += fc.weight().value()[i] != TestType(0);
    INFO("density " << density << ": " << s.describe());
    CHECK(s.weights().bytes() <= static_cast<std::size_t>(1.5 * 8 * static_cast<double>(nnz)) + 4 * 501);
    for (index_t batch : {1, 3, 64}) {
      const auto x = random_tensor<TestType>({batch, 800}, gen);
      tensor<TestType> yf;
      fc.forward(x, yf, {});
      check_close(poisoned_forward(s, x), yf, "compact sparse linear");
    }
  }
}

TEST_CASE("compress: a pruned LeNet-5 (fused, direct convolutions) equals the float model at batch 1 and 7", "[compressed][sparse]") {
  for (const auto& densities : {std::map<std::string, double>{{"conv1", 0.66}, {"conv2", 0.12}, {"fc1", 0.08}, {"fc2", 0.19}},
                                std::map<std::string, double>{{"conv1", 0.14}, {"conv2", 0.03}, {"fc1", 0.005}, {"fc2", 0.04}},
                                std::map<std::string, double>{}}) {
    rng gen(11);
    auto model = nn::models::lenet5<float>(gen);
    prune_weights<float>(model, densities, gen);
    for (index_t batch : {1, 7}) {
      auto compressed = model;
      nc::compress_options o;
      o.sparse.batch = batch;
      const auto report = nc::compress(compressed, nc::format::sparse, o);
      INFO(compressed.describe());
      CHECK(compressed.size() == 4);  // conv1+pool1, conv2+pool2, flatten+fc1+relu1, fc2
      CHECK(report.size() == 8);
      CHECK(std::find(report.begin(), report.end(), "flatten: fused into fc1") != report.end());
      CHECK(std::find(report.begin(), report.end(), "pool1: fused into conv1") != report.end());
      CHECK(std::find(report.begin(), report.end(), "pool2: fused into conv2") != report.end());
      CHECK(std::find(report.begin(), report.end(), "relu1: fused into fc1") != report.end());
      CHECK(compressed.find("fc1").describe().find("+ ReLU") != std::string::npos);
      CHECK(compressed.find("fc1").describe().rfind("Flatten + ", 0) == 0);
      if (!densities.empty()) CHECK(compressed[1].kind() == "SparseConv2d");  // conv2; conv1 at 66% may stay dense
      const auto x = random_tensor<float>({batch, 1, 28, 28}, gen, 0, 1);
      tensor<float> yf;
      model.forward(x, yf, {});
      check_close(poisoned_forward(compressed, x), yf, "LeNet-5");
      auto copy = compressed;  // clones keep the fused epilogue
      check_close(poisoned_forward(copy, x), yf, "LeNet-5 copy");
    }
  }
}

TEST_CASE("direct sparse convolutions at batch > 1: both batch layouts give the float outputs, compress times them", "[compressed][sparse]") {
  rng gen(21);
  auto model = nn::models::lenet5<float>(gen);
  prune_weights<float>(model, {{"conv1", 0.14}, {"conv2", 0.03}, {"fc1", 0.005}, {"fc2", 0.04}}, gen);
  const index_t batch = 5;
  auto compressed = model;
  nc::compress_options o;
  o.sparse.batch = batch;
  o.input_shape = {batch, 1, 28, 28};
  const auto report = nc::compress(compressed, nc::format::sparse, o);
  INFO(compressed.describe());
  for (const std::string layer : {"conv1: ", "conv2: "}) {  // one line each: the layout timed
    const auto n = std::count_if(report.begin(), report.end(), [&](const std::string& l) {
      return l.rfind(layer, 0) == 0 && l.find("batch innermost") != std::string::npos && l.find("measured") != std::string::npos;
    });
    CHECK(n == 1);
  }
  const auto x = random_tensor<float>({batch, 1, 28, 28}, gen, 0, 1);
  tensor<float> yf;
  model.forward(x, yf, {});
  check_close(poisoned_forward(compressed, x), yf, "LeNet-5, measured layouts");
  for (auto layout : {kernels::conv_batch_layout::batch_innermost, kernels::conv_batch_layout::image_at_a_time}) {
    for (std::size_t i : {std::size_t{0}, std::size_t{1}}) {
      auto& conv = dynamic_cast<nc::compressed_conv2d<float>&>(compressed[i]);
      auto& direct = dynamic_cast<nc::csr16_engine<float>&>(conv.weights());
      direct.set_batch_layout(layout);
      CHECK((conv.describe().find("one image at a time") != std::string::npos) == (layout == kernels::conv_batch_layout::image_at_a_time));
    }
    auto copy = compressed;  // clones keep the layout
    for (auto* m : {&compressed, &copy}) {
      check_close(poisoned_forward(*m, x), yf, "LeNet-5, one layout");
      const auto one = random_tensor<float>({1, 1, 28, 28}, gen, 0, 1);  // and a single image through the same layers
      tensor<float> y1;
      model.forward(one, y1, {});
      check_close(poisoned_forward(*m, one), y1, "LeNet-5, one image");
    }
  }
  // Without the input shape, or with measure_batch_layout off, nothing is timed.
  auto unmeasured = model;
  o.sparse.measure_batch_layout = false;
  const auto plain = nc::compress(unmeasured, nc::format::sparse, o);
  CHECK(std::none_of(plain.begin(), plain.end(), [](const std::string& l) { return l.find("batch innermost") != std::string::npos; }));
}

TEST_CASE("compress folds the Flatten and ReLUs around compressed Linears (LeNet-300-100): float outputs, NaN to 0",
          "[compressed][sparse]") {
  rng gen(31);
  auto model = nn::models::lenet_300_100<float>(gen);
  prune_weights<float>(model, {{"fc1", 0.08}, {"fc2", 0.09}, {"fc3", 0.26}}, gen);
  for (index_t batch : {1, 3}) {
    auto compressed = model;
    nc::compress_options o;
    o.sparse.batch = batch;
    const auto report = nc::compress(compressed, nc::format::sparse, o);
    INFO(compressed.describe());
    CHECK(compressed.size() == 3);  // flatten+fc1+relu1, fc2+relu2, fc3
    CHECK(std::find(report.begin(), report.end(), "flatten: fused into fc1") != report.end());
    CHECK(std::find(report.begin(), report.end(), "relu1: fused into fc1") != report.end());
    CHECK(std::find(report.begin(), report.end(), "relu2: fused into fc2") != report.end());
    const auto x = random_tensor<float>({batch, 1, 28, 28}, gen, 0, 1);
    tensor<float> yf;
    model.forward(x, yf, {});
    check_close(poisoned_forward(compressed, x), yf, "LeNet-300-100, ReLUs fused");
    auto copy = compressed;  // clones keep the fused ReLU
    check_close(poisoned_forward(copy, x), yf, "LeNet-300-100 copy");
    o.fuse_linear = false;
    auto unfused = model;
    nc::compress(unfused, nc::format::sparse, o);
    CHECK(unfused.size() == 6);
    check_close(poisoned_forward(unfused, x), yf, "LeNet-300-100, ReLUs as layers");
  }
  // The fused ReLU alone: negative outputs and NaN become 0, positive ones pass.
  row_matrix<float> w(3, 2);
  w << 1, 0, -1, 0, 0, 1;
  nc::compressed_linear<float> fc(std::make_unique<nc::sparse_engine<float>>(w, std::nullopt, 1));  // zeros skipped: 0 x NaN not formed
  fc.fuse_relu();
  tensor<float> x({1, 2});
  x[0] = 2.0f;
  x[1] = std::numeric_limits<float>::quiet_NaN();
  const auto y = poisoned_forward(fc, x);
  CHECK(y[0] == 2.0f);
  CHECK(y[1] == 0.0f);
  CHECK(y[2] == 0.0f);
}

TEST_CASE("compress converts nested Sequentials and fuses inside them", "[compressed][sparse]") {
  rng gen(12);
  nn::sequential<float> block;
  block.add("conv", nn::conv2d<float>(1, 6, 3));
  block.add("relu", nn::relu<float>());
  block.add("pool", nn::max_pool2d<float>(2));
  nn::sequential<float> model;
  model.add("features", std::move(block));
  model.add("flatten", nn::flatten<float>());
  model.add("fc", nn::linear<float>(6 * 5 * 5, 10));
  model.reset_parameters(gen);
  prune_weights<float>(model, {{"features.conv", 0.3}, {"fc", 0.2}}, gen);
  auto compressed = model;
  const auto report = nc::compress(compressed, nc::format::sparse);
  REQUIRE(report.size() == 5);
  CHECK(report[4] == "flatten: fused into fc");
  CHECK(report[0].rfind("features.conv: SparseConv2d", 0) == 0);
  CHECK(report[1] == "features.relu: fused into features.conv");
  CHECK(report[2] == "features.pool: fused into features.conv");
  CHECK(report[3].rfind("fc: SparseLinear", 0) == 0);
  CHECK(compressed.find("features.conv").kind() == "SparseConv2d");
  CHECK(compressed.find("features.conv").describe().find("+ ReLU + MaxPool2d(2, stride=2)") != std::string::npos);
  for (index_t batch : {1, 7}) {
    const auto x = random_tensor<float>({batch, 1, 12, 12}, gen);
    tensor<float> yf;
    model.forward(x, yf, {});
    check_close(poisoned_forward(compressed, x), yf, "nested");
  }
  // fuse = false keeps the layers.
  auto unfused = model;
  nc::compress_options o;
  o.fuse = false;
  CHECK(nc::compress(unfused, nc::format::sparse, o).size() == 2);
}

TEST_CASE("the dense compressed form and fused int8 convolutions give the float outputs", "[compressed]") {
  rng gen(13);
  auto model = nn::models::lenet5<float>(gen);
  auto dense = model;
  nc::compress(dense, nc::format::sparse);
  CHECK(dense[0].kind() == "DenseConv2d");
  CHECK(dense.size() == 4);  // flatten and relu1 fused into fc1
  const auto x = random_tensor<float>({5, 1, 28, 28}, gen, 0, 1);
  tensor<float> yf;
  model.forward(x, yf, {});
  check_close(poisoned_forward(dense, x), yf, "dense form");
  auto int8 = model;
  nc::compress(int8, nc::format::int8);
  CHECK(int8.size() == 4);
  const auto yi = poisoned_forward(int8, x);
  double worst = 0;
  for (index_t i = 0; i < yf.size(); ++i) worst = std::max(worst, std::abs(double(yi[i]) - double(yf[i])));
  CHECK(worst < 0.05);  // dynamic int8 activations: close, not equal
}

TEST_CASE("a fused max-pool that does not fit the output is a shape_error", "[compressed]") {
  rng gen(14);
  nn::conv2d<float> conv(1, 2, 3);
  nc::sparse_options o;
  o.force_sparse = true;
  auto c = nc::to_sparse(conv, o);
  c.fuse({false, 4, 4});
  CHECK_THROWS_WITH(c.output_shape({1, 1, 5, 5}), Catch::Contains("compressed_conv2d") && Catch::Contains("max-pool"));
  CHECK_THROWS_AS(c.fuse({false, 2, 0}), config_error);
}

TEST_CASE("compress with measure times each convolution at its own input size", "[compressed][sparse][slow]") {
  rng gen(15);
  auto model = nn::models::lenet5<float>(gen);
  prune_weights<float>(model, {{"conv1", 0.14}, {"conv2", 0.03}, {"fc1", 0.005}, {"fc2", 0.04}}, gen);
  auto compressed = model;
  nc::compress_options o;
  o.sparse.measure = true;
  o.input_shape = {1, 1, 28, 28};
  const auto report = nc::compress(compressed, nc::format::sparse, o);
  INFO(compressed.describe());
  for (const std::string layer : {"conv1: ", "conv2: ", "fc1: ", "fc2: "}) {
    const auto it = std::find_if(report.begin(), report.end(), [&](const std::string& l) { return l.rfind(layer, 0) == 0; });
    REQUIRE(it != report.end());
    CHECK(it->find("measured") != std::string::npos);
  }
  const auto x = random_tensor<float>({2, 1, 28, 28}, gen, 0, 1);
  tensor<float> yf;
  model.forward(x, yf, {});
  check_close(poisoned_forward(compressed, x), yf, "measured LeNet-5");
}
