// Quantizing a pruned parameter (Deep Compression's prune -> cluster -> fine-tune, and fixed point
// or BinaryConnect of a pruned weight) through the one weight-transform mechanism: pruned weights
// stay exactly 0, are not clustered and are not a centroid; the centroids move by the gradients of
// their surviving weights only.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <memory>
#include <set>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

/// A small Linear (12 x 20) or Conv2d (6 x 3 x 3 x 3) with its default initialisation.
template <class Scalar>
std::unique_ptr<nn::layer<Scalar>> small_layer(bool conv, std::uint64_t seed) {
  rng gen(seed);
  std::unique_ptr<nn::layer<Scalar>> l;
  if (conv) {
    l = std::make_unique<nn::conv2d<Scalar>>(3, 6, 3);
  } else {
    l = std::make_unique<nn::linear<Scalar>>(20, 12);
  }
  l->reset_parameters(gen);
  return l;
}

template <class Scalar>
nn::parameter<Scalar>& weight_of(nn::layer<Scalar>& l) {
  return prune::find_parameter(l, "weight", "compose_test");
}

template <class Scalar>
tensor<Scalar> random_input(bool conv, std::uint64_t seed) {
  rng gen(seed);
  tensor<Scalar> x(conv ? shape_t{4, 3, 7, 7} : shape_t{4, 20});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<Scalar>(gen.normal());
  return x;
}

/// One training step by hand: forward, dL/dy random, backward; returns dL/dW_eff (the gradient
/// the layer accumulated, before the transforms turn it into the gradient for W); then
/// transform_gradient, a plain SGD step and the after_step hooks.
template <class Scalar>
tensor<Scalar> sgd_step(nn::layer<Scalar>& l, bool conv, double lr, std::uint64_t seed) {
  rng gen(seed);
  nn::forward_context ctx{true, &gen};
  l.visit_parameters([](nn::parameter<Scalar>& p) { p.zero_grad(); });
  const tensor<Scalar> x = random_input<Scalar>(conv, seed);
  tensor<Scalar> y;
  l.forward(x, y, ctx);
  tensor<Scalar> dy(y.shape());
  for (index_t i = 0; i < dy.size(); ++i) dy[i] = static_cast<Scalar>(gen.normal());
  l.backward(x, y, dy, nullptr);
  const tensor<Scalar> grad_eff = weight_of(l).grad();
  l.visit_parameters([](nn::parameter<Scalar>& p) { p.transform_gradient(); });
  train::sgd<Scalar> opt(train::sgd_options{}.with_lr(lr));
  opt.step(l);
  l.visit_parameters([](nn::parameter<Scalar>& p) { p.after_step(); });
  return grad_eff;
}

template <class Scalar>
double smallest_surviving_magnitude(const tensor<Scalar>& w, const std::vector<std::uint8_t>& s) {
  double m = std::numeric_limits<double>::infinity();
  for (index_t i = 0; i < w.size(); ++i)
    if (s[static_cast<std::size_t>(i)]) m = std::min(m, std::abs(static_cast<double>(w[i])));
  return m;
}

}  // namespace

TEMPLATE_TEST_CASE("prune + k-means + fine-tuning keeps the mask and moves centroids by their "
                   "surviving weights' gradients",
                   "[quant][compose]", float, double) {
  for (const bool conv : {false, true}) {
    for (const double sparsity : {0.5, 0.9}) {
      for (const int bits : {2, 5}) {
        INFO((conv ? "Conv2d" : "Linear") << ", sparsity " << sparsity << ", " << bits << " bits");
        auto layer = small_layer<TestType>(conv, 3);
        auto& p = weight_of(*layer);
        prune::l1_unstructured(p, prune::amount::sparsity(sparsity));
        const auto support = quant::support_of(p);
        REQUIRE(support.size() == static_cast<std::size_t>(p.size()));
        index_t alive = 0;
        for (auto v : support) alive += v;
        REQUIRE(alive == p.size() - static_cast<index_t>(std::llround(sparsity * p.size())));
        const index_t k = index_t{1} << bits;
        if (k > alive) continue;  // 32 clusters for 16 survivors of the 90%-pruned Conv2d
        const tensor<TestType> pruned_w = p.value();
        const double tau = smallest_surviving_magnitude(pruned_w, support);

        quant::kmeans_options o;
        o.init = quant::kmeans_init::linear;
        auto cb = quant::kmeans(p.value(), k, o, support);
        CHECK(cb.support == support);
        CHECK(cb.storage().index_bits == static_cast<std::uint64_t>(alive * bits));

        // The clustering: every centroid of a used cluster is the mean of its members, which are
        // surviving weights only. 1-d k-means clusters are intervals of the sorted values and
        // magnitude pruning left no survivor in (-tau, tau), so a cluster whose members share a
        // sign has |c| >= tau: 0 is a centroid only if surviving weights of both signs average
        // to it, never because the pruned zeros were clustered.
        std::vector<double> sum(static_cast<std::size_t>(k), 0.0);
        std::vector<index_t> members(static_cast<std::size_t>(k), 0);
        std::vector<int> signs(static_cast<std::size_t>(k), 0);  // bit 1: negative, bit 2: positive
        const auto& idx = cb.indices_of(0, 0);
        for (index_t i = 0; i < p.size(); ++i) {
          if (!support[static_cast<std::size_t>(i)]) continue;
          const auto j = static_cast<std::size_t>(idx[static_cast<std::size_t>(i)]);
          const double v = static_cast<double>(pruned_w[i]);
          sum[j] += v;
          ++members[j];
          signs[j] |= v < 0 ? 1 : 2;
        }
        index_t clustered = 0;
        for (index_t j = 0; j < k; ++j) {
          const auto ju = static_cast<std::size_t>(j);
          clustered += members[ju];
          if (members[ju] == 0) continue;
          const double c = static_cast<double>(cb.centroids_of(0, 0)(j, 0));
          CHECK(c == Approx(sum[ju] / static_cast<double>(members[ju])).epsilon(1e-5));
          if (signs[ju] != 3) CHECK(std::abs(c) >= tau * (1 - 1e-6));
        }
        CHECK(clustered == alive);

        const auto t = quant::share_weights(p, cb);
        for (int step = 0; step < 4; ++step) {
          const auto before = t->book().centroids_of(0, 0);
          const double lr = 0.05;
          const tensor<TestType> g = sgd_step(*layer, conv, lr, 100 + step);
          // Han et al. 2016, sec. 3.1: c_j <- c_j - lr * sum_{surviving i in j} dL/dW_eff[i].
          std::vector<double> gsum(static_cast<std::size_t>(k), 0.0);
          for (index_t i = 0; i < p.size(); ++i) {
            if (support[static_cast<std::size_t>(i)])
              gsum[static_cast<std::size_t>(idx[static_cast<std::size_t>(i)])] +=
                  static_cast<double>(g[i]);
          }
          const auto& after = t->book().centroids_of(0, 0);
          for (index_t j = 0; j < k; ++j) {
            const double expected =
                static_cast<double>(before(j, 0)) - lr * gsum[static_cast<std::size_t>(j)];
            CHECK(static_cast<double>(after(j, 0)) ==
                  Approx(expected).epsilon(1e-5).margin(1e-6));
          }
          CHECK(t->book().indices_of(0, 0) == idx);
          // Pruned weights exactly 0 in W and W_eff; at most k distinct nonzero values.
          rng gen(7);
          const tensor<TestType>& eff = p.forward_value(nn::forward_context{false, &gen});
          std::set<TestType> distinct;
          for (index_t i = 0; i < p.size(); ++i) {
            if (!support[static_cast<std::size_t>(i)]) {
              CHECK(p.value()[i] == TestType(0));
              CHECK(eff[i] == TestType(0));
            } else if (eff[i] != TestType(0)) {
              distinct.insert(eff[i]);
            }
          }
          CHECK(static_cast<index_t>(distinct.size()) <= k);
        }
      }
    }
  }
}

TEST_CASE("the bug this fixes: k-means of a pruned weight without its support makes 0 a centroid",
          "[quant][compose]") {
  auto layer = small_layer<double>(false, 3);
  auto& p = weight_of(*layer);
  prune::l1_unstructured(p, prune::amount::sparsity(0.8));
  const auto support = quant::support_of(p);
  const double tau = smallest_surviving_magnitude(p.value(), support);
  quant::kmeans_options o;
  o.init = quant::kmeans_init::linear;
  const auto blind = quant::kmeans(p.value(), 8, o);  // the zeros are 80% of the points
  bool zero_centroid = false;
  for (index_t j = 0; j < 8; ++j)
    zero_centroid = zero_centroid || std::abs(blind.centroids_of(0, 0)(j, 0)) < tau / 2;
  CHECK(zero_centroid);
  // share_weights refuses it: the parameter is pruned and the codebook ignores its mask.
  CHECK_THROWS_WITH(quant::share_weights(p, blind),
                    Contains("slimnet::quant::share_weights") && Contains("is pruned") &&
                        Contains("every weight"));
  const auto aware = quant::kmeans(p.value(), 8, o, support);
  for (index_t j = 0; j < 8; ++j) CHECK(std::abs(aware.centroids_of(0, 0)(j, 0)) >= tau * 0.999);
  // More clusters than survivors is a clear error.
  CHECK_THROWS_WITH(quant::kmeans(p.value(), 49, o, support),
                    Contains("clusters = 49") && Contains("48 surviving weights"));
  std::vector<std::uint8_t> wrong(support.begin(), support.end() - 1);
  CHECK_THROWS_AS(quant::kmeans(p.value(), 4, o, wrong), shape_error);
}

TEMPLATE_TEST_CASE("prune + product and residual codebooks: survivors only, pruned stay 0",
                   "[quant][compose]", float, double) {
  for (int method = 0; method < 2; ++method) {
    INFO((method == 0 ? "PQ" : "RQ"));
    auto layer = small_layer<TestType>(false, 5);
    auto& p = weight_of(*layer);
    prune::l1_unstructured(p, prune::amount::sparsity(0.7));
    const auto support = quant::support_of(p);
    const tensor<TestType> w0 = p.value();
    const auto cb = method == 0 ? quant::product_quantize(p.value(), 4, 4, {}, support)
                                : quant::residual_quantize(p.value(), 2, 4, {}, support);
    const auto recon = cb.reconstruct();
    for (index_t i = 0; i < p.size(); ++i)
      if (!support[static_cast<std::size_t>(i)]) CHECK(recon.data()[i] == TestType(0));
    if (method == 0) {
      // Each centroid coordinate is the mean of the members' surviving values at that coordinate.
      for (index_t b = 0; b < cb.blocks(); ++b) {
        const auto& idx = cb.indices_of(0, b);
        const index_t off = cb.block_offsets[static_cast<std::size_t>(b)];
        for (index_t j = 0; j < 4; ++j) {
          for (index_t q = 0; q < cb.block_width(b); ++q) {
            double s = 0;
            index_t n = 0;
            for (index_t r = 0; r < 12; ++r) {
              const index_t e = r * 20 + off + q;
              if (idx[static_cast<std::size_t>(r)] == j && support[static_cast<std::size_t>(e)]) {
                s += static_cast<double>(w0[e]);
                ++n;
              }
            }
            if (n > 0)
              CHECK(static_cast<double>(cb.centroids_of(0, b)(j, q)) ==
                    Approx(s / static_cast<double>(n)).epsilon(1e-5));
          }
        }
      }
    }
    const auto t = quant::share_weights(p, cb);
    for (int step = 0; step < 3; ++step) {
      const tensor<TestType> g = sgd_step(*layer, false, 0.01, 300 + step);
      // The gradient handed to W: per surviving weight, the sum over stages of its centroid's
      // gradient, summed over surviving members only; 0 at pruned weights.
      const auto& book = t->book();
      row_matrix<double> expected = row_matrix<double>::Zero(12, 20);
      for (int s = 0; s < book.stages; ++s) {
        for (index_t b = 0; b < book.blocks(); ++b) {
          const auto& idx = book.indices_of(s, b);
          const index_t off = book.block_offsets[static_cast<std::size_t>(b)],
                        wd = book.block_width(b);
          row_matrix<double> sums = row_matrix<double>::Zero(4, wd);
          for (index_t r = 0; r < 12; ++r)
            for (index_t q = 0; q < wd; ++q)
              if (support[static_cast<std::size_t>(r * 20 + off + q)])
                sums(idx[static_cast<std::size_t>(r)], q) +=
                    static_cast<double>(g[r * 20 + off + q]);
          for (index_t r = 0; r < 12; ++r)
            for (index_t q = 0; q < wd; ++q)
              if (support[static_cast<std::size_t>(r * 20 + off + q)])
                expected(r, off + q) += sums(idx[static_cast<std::size_t>(r)], q);
        }
      }
      CHECK((p.grad().matrix().template cast<double>() - expected).cwiseAbs().maxCoeff() < 1e-4);
      CHECK(p.value().matrix() == t->book().reconstruct());
      for (index_t i = 0; i < p.size(); ++i)
        if (!support[static_cast<std::size_t>(i)]) CHECK(p.value()[i] == TestType(0));
    }
  }
}

TEST_CASE("prune + 3-bit k-means fine-tuned by fit(): masks hold through SGD momentum and Adam",
          "[quant][compose]") {
  rng gen(11);
  data::dataset<float> d;
  d.num_classes = 3;
  d.inputs.resize({240, 10});
  for (index_t i = 0; i < 240; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    for (index_t j = 0; j < 10; ++j)
      d.inputs.matrix()(i, j) = static_cast<float>((j % 3 == c ? 2.0 : 0.0) + gen.normal());
  }
  for (int which = 0; which < 2; ++which) {
    nn::sequential<float> m;
    m.add("fc1", nn::linear<float>(10, 32));
    m.add("relu", nn::relu<float>());
    m.add("fc2", nn::linear<float>(32, 3));
    m.reset_parameters(gen);
    std::vector<std::vector<std::uint8_t>> supports;
    for (auto* p : prune::prunable_parameters(m)) {
      prune::l1_unstructured(*p, prune::amount::sparsity(0.75));
      supports.push_back(quant::support_of(*p));
      quant::share_weights(*p, quant::kmeans(p->value(), 8, {}, supports.back()));
    }
    std::unique_ptr<train::optimizer<float>> opt;
    if (which == 0) {
      opt = std::make_unique<train::sgd<float>>(train::sgd_options{}.with_lr(0.05).with_momentum(0.9).with_weight_decay(1e-3));
    } else {
      opt = std::make_unique<train::adam<float>>(train::adam_options{}.with_lr(1e-2));
    }
    train::fit_options o;
    o.epochs = 3;
    o.batch_size = 16;
    o.progress = false;
    train::fit(m, *opt, train::cross_entropy<float>(), d, o);
    std::size_t n = 0;
    for (auto* p : prune::prunable_parameters(m)) {
      const auto& s = supports[n++];
      std::set<float> distinct;
      for (index_t i = 0; i < p->size(); ++i) {
        if (!s[static_cast<std::size_t>(i)]) {
          CHECK(p->value()[i] == 0.0f);
        } else if (p->value()[i] != 0.0f) {
          distinct.insert(p->value()[i]);
        }
      }
      CHECK(distinct.size() <= 8);
      CHECK(distinct.size() >= 2);
    }
  }
}

TEMPLATE_TEST_CASE("fixed point, BinaryConnect and int8 of a pruned weight: zero stays zero",
                   "[quant][compose]", float, double) {
  for (const bool conv : {false, true}) {
    for (int kind = 0; kind < 5; ++kind) {
      INFO((conv ? "Conv2d" : "Linear") << ", quantizer " << kind);
      auto layer = small_layer<TestType>(conv, 9);
      auto& p = weight_of(*layer);
      prune::l1_unstructured(p, prune::amount::sparsity(0.6));
      const auto support = quant::support_of(p);
      quant::fixed_point_weight_options fp;
      fp.format = {2, 6};
      if (kind == 0) {
        fp.mode = quant::rounding::stochastic;  // stochastic rounding of W stored on the grid
        quant::attach_fixed_point(p, fp);
      } else if (kind == 1) {
        fp.mode = quant::rounding::stochastic;
        fp.keep_real_copy = true;
        quant::attach_fixed_point(p, fp);
      } else if (kind == 4) {
        quant::attach_int8(p);
      } else {
        quant::binary_connect_options bc;
        bc.mode = kind == 2 ? quant::binarization::deterministic : quant::binarization::stochastic;
        bc.scale = 0.25;
        quant::attach_binary_connect(p, bc);
      }
      for (int step = 0; step < 4; ++step) {
        sgd_step(*layer, conv, 0.05, 500 + step);
        for (const bool training : {true, false}) {
          rng gen(static_cast<std::uint64_t>(step));
          const tensor<TestType>& eff = p.forward_value(nn::forward_context{training, &gen});
          index_t nonzero = 0;
          for (index_t i = 0; i < p.size(); ++i) {
            if (!support[static_cast<std::size_t>(i)]) {
              CHECK(p.value()[i] == TestType(0));
              CHECK(eff[i] == TestType(0));
              continue;
            }
            if (eff[i] != TestType(0)) ++nonzero;
            if (kind == 4) {
              // s_r * code with |code| <= 127, s_r = max |surviving W of row r| / 127.
              const index_t row = i / (p.size() / p.shape()[0]);
              double largest = 0;
              for (index_t c = row * (p.size() / p.shape()[0]);
                   c < (row + 1) * (p.size() / p.shape()[0]); ++c)
                largest = std::max(largest, std::abs(static_cast<double>(p.value()[c])));
              const double code = static_cast<double>(eff[i]) / (largest / 127.0);
              CHECK(code == Approx(std::round(code)).margin(1e-3));
              CHECK(std::abs(code) <= 127.0 + 1e-3);
            } else if (kind >= 2) {
              CHECK(std::abs(static_cast<double>(eff[i])) == 0.25);
            } else {
              const double scaled = static_cast<double>(eff[i]) * 64.0;  // FL = 6: multiples of 2^-6
              CHECK(scaled == std::round(scaled));
            }
          }
          if (kind == 2 || kind == 3) CHECK(nonzero == static_cast<index_t>(std::count(support.begin(), support.end(), 1)));
        }
      }
    }
  }
}
