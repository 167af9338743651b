// Same seed, one thread: bitwise identical training for a convolutional net, DNS and stochastic
// BinaryConnect (their random draws come from the fit's generator, never from a global one), and
// kernels give the same bits on two threads as on one (each output row is written by one thread,
// with no reduction across threads). Each test also checks that another seed changes the result,
// so an equality that holds for every seed (a model that never trains) cannot pass unnoticed.
#include <catch2/catch.hpp>

#include <cmath>
#include <limits>
#include <map>
#include <vector>

#include "slimnet/kernels/sparse.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using quant::binarization;

namespace {

/// 3 classes of 8x8 images: a bright bar in the top, middle or bottom rows, plus noise.
data::dataset<float> bars(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<float> d;
  d.num_classes = 3;
  d.inputs.resize({n, 1, 8, 8});
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    for (index_t p = 0; p < 64; ++p) {
      const bool bar = p / 8 >= 1 + 2 * c && p / 8 < 3 + 2 * c;
      d.inputs[i * 64 + p] = static_cast<float>((bar ? 1.0 : 0.0) + 0.3 * gen.normal());
    }
  }
  return d;
}

nn::sequential<float> small_cnn(std::uint64_t seed) {
  rng gen(seed);
  nn::sequential<float> m;
  m.add("conv1", nn::conv2d<float>(1, 4, 3));
  m.add("relu1", nn::relu<float>());
  m.add("pool1", nn::max_pool2d<float>(2));
  m.add("flatten", nn::flatten<float>());
  m.add("fc1", nn::linear<float>(36, 16));
  m.add("relu2", nn::relu<float>());
  m.add("drop", nn::dropout<float>(0.2));
  m.add("fc2", nn::linear<float>(16, 3));
  m.reset_parameters(gen);
  return m;
}

/// Every parameter's effective value (what forward uses) and its stored value, concatenated.
std::vector<float> snapshot(nn::sequential<float>& m) {
  std::vector<float> v;
  rng unused(0);
  m.visit_parameters([&](nn::parameter<float>& p) {
    v.insert(v.end(), p.value().data(), p.value().data() + p.size());
    const auto& eff = p.forward_value({false, &unused});
    v.insert(v.end(), eff.data(), eff.data() + eff.size());
  });
  return v;
}

/// Trains a fresh small CNN (decorated by `attach`) for 3 epochs with fit seed `seed`.
template <class Attach>
std::vector<float> train_once(std::uint64_t seed, const Attach& attach) {
  const auto d = bars(90, 3);
  auto m = small_cnn(11);
  attach(m);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit_options o;
  o.epochs = 3;
  o.batch_size = 10;
  o.seed = seed;
  o.progress = false;
  train::fit(m, opt, train::cross_entropy<float>(), d, o);
  return snapshot(m);
}

}  // namespace

TEST_CASE("a conv net trains bitwise identically with the same seed", "[train][determinism]") {
  const auto none = [](nn::sequential<float>&) {};
  const auto a = train_once(5, none), b = train_once(5, none), c = train_once(6, none);
  CHECK(a == b);
  CHECK(a != c);  // the seed drives shuffling and dropout
}

TEST_CASE("DNS trains bitwise identically with the same seed (surgery draws and masks included)", "[train][determinism][dns]") {
  const auto dns = [](nn::sequential<float>& m) {
    prune::dns_options o;
    o.c_rate = 1.0;
    o.gamma = 0.05;
    o.iter_stop = 20;
    prune::attach_dns(m, std::map<std::string, prune::dns_options>{{"conv1", o}, {"fc1", o}, {"fc2", o}});
  };
  const auto a = train_once(5, dns), b = train_once(5, dns), c = train_once(6, dns);
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("stochastic BinaryConnect trains bitwise identically with the same seed", "[train][determinism][binary]") {
  const auto bc = [](nn::sequential<float>& m) {
    quant::binary_connect_options o;
    o.mode = binarization::stochastic;
    quant::attach_binary_connect(static_cast<nn::linear<float>&>(m[4]).weight(), o);
  };
  const auto a = train_once(5, bc), b = train_once(5, bc), c = train_once(6, bc);
  CHECK(a == b);
  CHECK(a != c);
}

TEST_CASE("sparse products give the same bits on one, two and three threads", "[kernels][determinism]") {
  rng gen(8);
  const index_t m = 301, k = 257, n = 37;
  std::vector<float> w(static_cast<std::size_t>(m * k)), x(static_cast<std::size_t>(k * n));
  for (auto& v : w) v = gen.uniform() < 0.1 ? static_cast<float>(gen.normal()) : 0.0f;
  for (auto& v : x) v = static_cast<float>(gen.normal());
  const auto a = kernels::csr_matrix<float>::from_dense(kernels::row_major<const float>(w.data(), m, k));
  std::vector<std::vector<float>> outputs;
  for (int threads : {1, 2, 3}) {
    kernels::sparse_params<float> p;
    p.threads = threads;
    std::vector<float> y(static_cast<std::size_t>(m * n), std::numeric_limits<float>::quiet_NaN()),
        y1(static_cast<std::size_t>(m), std::numeric_limits<float>::quiet_NaN());
    kernels::spmm_csr(a.ref(), kernels::row_major<const float>(x.data(), k, n), kernels::row_major(y.data(), m, n), p);
    kernels::spmv_csr(a.ref(), x.data(), y1.data(), p);  // x's first k values as a vector
    y.insert(y.end(), y1.begin(), y1.end());
    outputs.push_back(y);
  }
  for (const auto& y : outputs) {
    bool finite = true;
    for (float v : y) finite &= std::isfinite(v);
    CHECK(finite);  // every output written
  }
  CHECK(outputs[0] == outputs[1]);
  CHECK(outputs[0] == outputs[2]);
}
