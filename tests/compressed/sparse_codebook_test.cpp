// The sparse + codebook engine (pruned, weight-shared layers) against the float layers with the
// same effective weights: the engine alone in both layouts and both batch hints, to_sparse_codebook
// and its choice, and compress(model, format::codebook) on a whole pruned, weight-shared LeNet-5
// (outputs poisoned with NaN before every forward pass).
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <vector>

#include "slimnet/core/random.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/nn/models.hpp"
#include "support/poison.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace nc = slimnet::nn::compressed;
using slimnet::testing::poison;
using slimnet::testing::poisoned_forward;
using slimnet::testing::random_tensor;

namespace {

/// Keeps `density` of the weights, each a value from a table of 2^bits - 1 nonzero centroids
/// (Deep Compression's pruning + weight sharing, zero implicit).
template <class Scalar>
void spcb_prune_and_share(nn::parameter<Scalar>& p, double density, int bits, rng& gen) {
  std::vector<Scalar> table(static_cast<std::size_t>((1 << bits) - 1));
  for (auto& c : table) c = static_cast<Scalar>(gen.uniform(0.05, 0.5) * (gen.below(2) ? 1 : -1));
  auto& v = p.value();
  for (index_t i = 0; i < v.size(); ++i) v[i] = gen.uniform() < density ? table[gen.below(table.size())] : Scalar(0);
}

/// max |a - b| / (1 + |b|).
template <class Scalar>
double spcb_worst(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i])) / (1 + std::abs(double(b[i])));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

template <class Scalar>
double spcb_tolerance() {
  return std::is_same_v<Scalar, float> ? 1e-4 : 1e-11;
}

}  // namespace

TEMPLATE_TEST_CASE("sparse codebook engine equals the weight-shared float Linear in both layouts", "[compressed][codebook][sparse]", float,
                   double) {
  rng gen(81);
  for (int bits : {2, 4, 5, 8})
    for (double density : {0.02, 0.1, 0.5})
      for (index_t batch_hint : {1, 64}) {
        nn::linear<TestType> fc(301, 77);
        fc.reset_parameters(gen);
        spcb_prune_and_share(fc.weight(), density, bits, gen);
        const row_matrix<TestType> w = nc::effective_weight(fc.weight());
        nc::sparse_codebook_engine<TestType> e(w, nc::effective_bias(fc.bias()), batch_hint);
        CHECK(e.bits() <= bits);
        CHECK(e.effective_weights() == w);
        CHECK(e.kind_prefix() == "SparseCodebook");
        nc::compressed_linear<TestType> cl(e.clone());
        for (index_t batch : {1, 2, 7, 64}) {
          const auto x = random_tensor<TestType>({batch, 301}, gen);
          tensor<TestType> y_float;
          fc.forward(x, y_float, {});
          INFO("bits " << bits << " density " << density << " hint " << batch_hint << " batch " << batch);
          CHECK(spcb_worst(poisoned_forward(cl, x), y_float) <= spcb_tolerance<TestType>());
          // The column layout: Z (out x n) = W X (in x n) + b.
          std::vector<TestType> xt(static_cast<std::size_t>(301 * batch)), z(static_cast<std::size_t>(77 * batch));
          for (index_t i = 0; i < batch; ++i)
            for (index_t j = 0; j < 301; ++j) xt[static_cast<std::size_t>(j * batch + i)] = x[i * 301 + j];
          poison(z);
          e.apply_cols(xt.data(), batch, z.data());
          tensor<TestType> zt({batch, 77});
          for (index_t i = 0; i < batch; ++i)
            for (index_t o = 0; o < 77; ++o) zt[i * 77 + o] = z[static_cast<std::size_t>(o * batch + i)];
          CHECK(spcb_worst(zt, y_float) <= spcb_tolerance<TestType>());
        }
      }
}

TEST_CASE("to_sparse_codebook: sparse layers take the sparse + codebook engine, dense ones the dense codebook", "[compressed][codebook]") {
  rng gen(82);
  nn::linear<float> sparse_fc(800, 500), dense_fc(800, 500);
  sparse_fc.reset_parameters(gen);
  dense_fc.reset_parameters(gen);
  spcb_prune_and_share(sparse_fc.weight(), 0.08, 4, gen);
  spcb_prune_and_share(dense_fc.weight(), 1.0, 4, gen);
  for (index_t batch : {1, 64}) {
    nc::sparse_options so;
    so.batch = batch;
    kernels::sparse_choice why;
    auto s = nc::to_sparse_codebook(sparse_fc, {}, so, &why);
    CHECK(s.kind() == "SparseCodebookLinear");
    CHECK(why.sparse);
    CHECK(!why.measured);
    // 4-bit indices + 1-byte columns against 4-byte values + 1-byte columns in the same layout.
    const auto& e = static_cast<const nc::sparse_codebook_engine<float>&>(s.weights());
    CHECK(e.bits() == 4);
    const nc::sparse_engine<float> float_form(nc::effective_weight(sparse_fc.weight()), std::nullopt, batch);
    CHECK(e.nnz() == float_form.nnz());
    CHECK(e.bytes() * 2 < float_form.bytes());
    auto d = nc::to_sparse_codebook(dense_fc, {}, so, &why);
    CHECK(d.kind() == "CodebookLinear");
    CHECK(!why.sparse);
    // Timed on the layer itself: a measured decision, either way the same outputs.
    so.measure = true;
    auto m = nc::to_sparse_codebook(sparse_fc, {}, so, &why);
    CHECK(why.measured);
    CHECK(why.break_even > 0);
    const auto x = random_tensor<float>({batch, 800}, gen);
    tensor<float> y_float;
    sparse_fc.forward(x, y_float, {});
    CHECK(spcb_worst(poisoned_forward(m, x), y_float) <= 1e-4);
    CHECK(spcb_worst(poisoned_forward(s, x), y_float) <= 1e-4);
  }
  nc::codebook_options two;
  two.bits = 2;
  CHECK_THROWS_WITH(nc::to_sparse_codebook(sparse_fc, two), Catch::Contains("distinct nonzero values do not fit 2-bit"));
}

TEST_CASE("compress(format::codebook): a pruned, weight-shared LeNet-5 equals the float model", "[compressed][codebook]") {
  rng gen(83);
  auto model = nn::models::lenet5<float>(gen);
  const std::map<std::string, std::pair<double, int>> plan = {
      {"conv1.weight", {0.66, 5}}, {"conv2.weight", {0.12, 5}}, {"fc1.weight", {0.08, 4}}, {"fc2.weight", {0.19, 4}}};
  model.visit_parameters([&](nn::parameter<float>& p) {
    const auto it = plan.find(p.name());
    if (it != plan.end()) spcb_prune_and_share(p, it->second.first, it->second.second, gen);
  });
  for (index_t batch : {1, 7, 64}) {
    auto compressed = model;
    nc::compress_options o;
    o.sparse.batch = batch;
    o.sparse.measure_column_order = false;  // SELL-16 against SELL-16 with codebook values below, not a timed choice
    o.input_shape = {batch, 1, 28, 28};
    const auto report = nc::compress(compressed, nc::format::codebook, o);
    INFO("batch " << batch);
    CHECK(compressed.find("fc1").kind() == "SparseCodebookLinear");
    CHECK(compressed.find("fc2").kind() == "SparseCodebookLinear");
    CHECK(compressed.find("conv2").kind() == "SparseConv2d");  // the direct sparse convolution, values as floats
    bool fc1_reported = false;
    for (const auto& line : report) fc1_reported |= line.rfind("fc1: SparseCodebookLinear", 0) == 0 && line.find("[sparse") != std::string::npos;
    CHECK(fc1_reported);
    const auto x = random_tensor<float>({batch, 1, 28, 28}, gen, 0, 1);
    tensor<float> y_float;
    model.forward(x, y_float, {});
    CHECK(spcb_worst(poisoned_forward(compressed, x), y_float) <= 1e-4);
    // Fewer weight bytes than the same model in format::sparse.
    auto sparse = model;
    nc::compress(sparse, nc::format::sparse, o);
    const auto bytes_of = [](const nn::layer<float>& l) {
      if (auto* cl = dynamic_cast<const nc::compressed_linear<float>*>(&l)) return cl->weights().bytes();
      return std::size_t{0};
    };
    CHECK(bytes_of(compressed.find("fc1")) * 2 < bytes_of(sparse.find("fc1")));
  }
}
