// LSTM, GRU, the bidirectional wrapper and time-average pooling: finite-difference gradients with
// padded batches (lengths < T), padding that changes nothing, reversal, unit masks, thinning,
// PyTorch's parameter names, and errors that name the function and the bad value.
#include <catch2/catch.hpp>

#include <array>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/lstm.hpp"
#include "slimnet/nn/sequence_pool.hpp"
#include "support/gradient_check.hpp"
#include "support/sequence_lengths.hpp"

using namespace slimnet;
using slimnet::testing::gradient_check_options;
using slimnet::testing::require_gradients;
using slimnet::testing::with_lengths;

namespace {

nn::recurrent_options make_options(index_t layers, nn::sequence_output out, bool reverse = false, bool bias = true) {
  nn::recurrent_options o;
  o.num_layers = layers;
  o.output = out;
  o.reverse = reverse;
  o.bias = bias;
  return o;
}

template <class Scalar>
tensor<Scalar> random_tensor(const shape_t& shape, rng& gen, double scale = 1.0) {
  tensor<Scalar> t(shape);
  for (index_t i = 0; i < t.size(); ++i) t[i] = static_cast<Scalar>(gen.normal() * scale);
  return t;
}

template <class Scalar>
tensor<Scalar> run(nn::layer<Scalar>& l, const tensor<Scalar>& x, const std::vector<std::int32_t>* lengths = nullptr) {
  tensor<Scalar> y;
  nn::forward_context ctx;
  ctx.lengths = lengths;
  l.forward(x, y, ctx);
  return y;
}

// Sequence n of x, steps [0, len), as a batch of one.
template <class Scalar>
tensor<Scalar> slice_sequence(const tensor<Scalar>& x, index_t n, index_t len) {
  const index_t t_len = x.dim(1), f = x.dim(2);
  tensor<Scalar> s({1, len, f});
  std::copy_n(x.data() + n * t_len * f, len * f, s.data());
  return s;
}

}  // namespace

TEMPLATE_TEST_CASE("recurrent layers pass the gradient check with padded batches", "[nn][rnn][gradient]", nn::lstm_cell,
                   nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  const std::vector<std::int32_t> lengths{4, 6, 1, 3};  // T = 7: even the longest is padded
  const shape_t in{4, 7, 3};
  for (bool reverse : {false, true}) {
    for (auto out : {nn::sequence_output::all_steps, nn::sequence_output::last_step}) {
      for (index_t layers : {1, 2}) {
        DYNAMIC_SECTION("reverse " << reverse << " last_step " << (out == nn::sequence_output::last_step) << " layers "
                                   << layers) {
          with_lengths<double> l(layer_t(3, 5, make_options(layers, out, reverse)), lengths);
          rng gen(7);
          l.inner().reset_parameters(gen);
          require_gradients(l, in);
        }
      }
    }
  }
  SECTION("no bias, a sequence of length 0, and no lengths at all") {
    with_lengths<double> l(layer_t(3, 4, make_options(1, nn::sequence_output::all_steps, false, false)), {0, 7, 2, 5});
    require_gradients(l, in);
    layer_t plain(3, 4, make_options(2, nn::sequence_output::last_step));
    require_gradients(plain, {2, 5, 3});
  }
  SECTION("thinned: stacked layers of different widths") {
    layer_t t(3, 6, make_options(2, nn::sequence_output::all_steps));
    t.keep_hidden_units(0, {0, 2, 5});
    t.keep_hidden_units(1, {1, 2, 3, 4});
    REQUIRE(t.hidden_size(0) == 3);
    REQUIRE(t.hidden_size(1) == 4);
    with_lengths<double> l(t, lengths);
    require_gradients(l, in);
  }
}

TEMPLATE_TEST_CASE("recurrent layers with DeepIoT unit masks pass the gradient check", "[nn][rnn][gradient][mask]", nn::lstm_cell,
                   nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  layer_t r(3, 5, make_options(2, nn::sequence_output::all_steps));
  tensor<double> per_sequence({4, 5});
  per_sequence.flat() << 1, 0, 1, 1, 0,  //
      0, 1, 1, 0, 1,                     //
      1, 1, 1, 1, 1,                     //
      0, 0, 1, 0, 0;
  tensor<double> shared({5});
  shared.flat() << 0.8, 0.5, 0.0, 1.0, 0.3;  // keep probabilities, as DeepIoT evaluates
  r.set_unit_mask(0, per_sequence);
  r.set_unit_mask(1, shared);
  with_lengths<double> l(r, {4, 6, 1, 3});
  require_gradients(l, {4, 7, 3});
}

TEST_CASE("bidirectional and sequence_mean pass the gradient check", "[nn][rnn][gradient]") {
  const std::vector<std::int32_t> lengths{4, 6, 1, 3};
  SECTION("bidirectional LSTM, every step") {
    with_lengths<double> l(nn::bidirectional<double>(nn::lstm<double>(3, 4)), lengths);
    require_gradients(l, {4, 7, 3});
  }
  SECTION("bidirectional GRU, two stacked layers, last step") {
    with_lengths<double> l(nn::bidirectional<double>(nn::gru<double>(3, 4, make_options(2, nn::sequence_output::last_step))),
                           lengths);
    require_gradients(l, {4, 7, 3});
  }
  SECTION("sequence_mean") {
    with_lengths<double> l(nn::sequence_mean<double>(), {4, 7, 0, 3});
    require_gradients(l, {4, 7, 3});
    nn::sequence_mean<double> plain;
    require_gradients(plain, {2, 3, 5});
  }
  SECTION("GRU -> GRU -> mean -> linear, as DeepSense's head") {
    nn::sequential<double> m;
    m.add("gru1", nn::gru<double>(3, 5));
    m.add("gru2", nn::gru<double>(5, 4));
    m.add("mean", nn::sequence_mean<double>());
    m.add("fc", nn::linear<double>(4, 2));
    with_lengths<double> l(m, lengths);
    require_gradients(l, {4, 7, 3});
  }
}

TEMPLATE_TEST_CASE("padded steps change nothing: each sequence runs as if alone", "[nn][rnn]", nn::lstm_cell, nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  rng gen(11);
  const std::vector<std::int32_t> lengths{3, 6, 1, 6, 4};
  for (bool reverse : {false, true}) {
    layer_t all(4, 5, make_options(2, nn::sequence_output::all_steps, reverse));
    all.reset_parameters(gen);
    layer_t last = all;
    last.clear_unit_masks();
    auto x = random_tensor<double>({5, 6, 4}, gen);
    const auto y = run<double>(all, x, &lengths);
    // Garbage in the padding must not leak anywhere.
    auto noisy = x;
    for (index_t n = 0; n < 5; ++n)
      for (index_t t = lengths[static_cast<std::size_t>(n)]; t < 6; ++t)
        for (index_t f = 0; f < 4; ++f) noisy[(n * 6 + t) * 4 + f] = 1e3 * gen.normal();
    const auto y_noisy = run<double>(all, noisy, &lengths);
    CHECK((y.flat() - y_noisy.flat()).cwiseAbs().maxCoeff() == 0.0);
    for (index_t n = 0; n < 5; ++n) {
      const index_t len = lengths[static_cast<std::size_t>(n)];
      const auto alone = run<double>(all, slice_sequence(x, n, len));
      for (index_t t = 0; t < 6; ++t) {
        for (index_t j = 0; j < 5; ++j) {
          const double got = y[(n * 6 + t) * 5 + j];
          const double want = t < len ? alone[t * 5 + j] : 0.0;
          CHECK(got == Approx(want).margin(1e-12));
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("the last step is the state after each sequence's last valid step", "[nn][rnn]", nn::lstm_cell, nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  rng gen(12);
  const std::vector<std::int32_t> lengths{2, 5, 4};
  layer_t all(3, 4, make_options(1, nn::sequence_output::all_steps));
  all.reset_parameters(gen);
  auto o = all.options();
  o.output = nn::sequence_output::last_step;
  layer_t last(3, {4}, o);
  all.visit_parameters([&, i = 0](nn::parameter<double>& p) mutable {
    index_t k = 0;
    last.visit_parameters([&](nn::parameter<double>& q) {
      if (k++ == i) q.value() = p.value();
    });
    ++i;
  });
  const auto x = random_tensor<double>({3, 5, 3}, gen);
  const auto y = run<double>(all, x, &lengths);
  const auto h = run<double>(last, x, &lengths);
  REQUIRE(h.shape() == shape_t{3, 4});
  for (index_t n = 0; n < 3; ++n)
    for (index_t j = 0; j < 4; ++j)
      CHECK(h[n * 4 + j] == Approx(y[(n * 5 + lengths[static_cast<std::size_t>(n)] - 1) * 4 + j]).margin(1e-14));
}

TEMPLATE_TEST_CASE("the reversed direction runs over each sequence's valid steps reversed", "[nn][rnn]", nn::lstm_cell,
                   nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  rng gen(13);
  layer_t fwd(3, 4, make_options(2, nn::sequence_output::all_steps));
  fwd.reset_parameters(gen);
  auto rev_ptr = fwd.make_reversed(gen);
  auto& rev = static_cast<layer_t&>(*rev_ptr);
  CHECK(rev.reversed());
  CHECK(rev.weight_ih(1).local_name() == "weight_ih_l1_reverse");
  for (index_t l = 0; l < 2; ++l) {
    rev.weight_ih(l).value() = fwd.weight_ih(l).value();
    rev.weight_hh(l).value() = fwd.weight_hh(l).value();
    rev.bias_ih(l)->value() = fwd.bias_ih(l)->value();
    rev.bias_hh(l)->value() = fwd.bias_hh(l)->value();
  }
  const std::vector<std::int32_t> lengths{4, 2};
  const auto x = random_tensor<double>({2, 5, 3}, gen);
  const auto y = run<double>(rev, x, &lengths);
  for (index_t n = 0; n < 2; ++n) {
    const index_t len = lengths[static_cast<std::size_t>(n)];
    tensor<double> flipped({1, len, 3});
    for (index_t t = 0; t < len; ++t)
      for (index_t f = 0; f < 3; ++f) flipped[t * 3 + f] = x[(n * 5 + len - 1 - t) * 3 + f];
    const auto z = run<double>(fwd, flipped);
    for (index_t t = 0; t < len; ++t)
      for (index_t j = 0; j < 4; ++j) CHECK(y[(n * 5 + t) * 4 + j] == Approx(z[(len - 1 - t) * 4 + j]).margin(1e-14));
  }
}

TEMPLATE_TEST_CASE("a bidirectional layer concatenates the forward and the reversed direction", "[nn][rnn]", nn::lstm_cell,
                   nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  rng gen(14);
  nn::bidirectional<double> bi(layer_t(3, 4, make_options(1, nn::sequence_output::last_step)));
  bi.set_name("rnn");
  std::vector<std::string> names;
  bi.visit_parameters([&](nn::parameter<double>& p) { names.push_back(p.name()); });
  CHECK(names == std::vector<std::string>{"rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0", "rnn.bias_hh_l0",
                                          "rnn.weight_ih_l0_reverse", "rnn.weight_hh_l0_reverse", "rnn.bias_ih_l0_reverse",
                                          "rnn.bias_hh_l0_reverse"});
  const std::vector<std::int32_t> lengths{3, 5};
  const auto x = random_tensor<double>({2, 5, 3}, gen);
  const auto y = run<double>(bi, x, &lengths);
  REQUIRE(y.shape() == shape_t{2, 8});
  const auto yf = run<double>(bi.forward_layer(), x, &lengths);
  const auto yb = run<double>(bi.backward_layer(), x, &lengths);
  for (index_t n = 0; n < 2; ++n)
    for (index_t j = 0; j < 4; ++j) {
      CHECK(y[n * 8 + j] == yf[n * 4 + j]);
      CHECK(y[n * 8 + 4 + j] == yb[n * 4 + j]);
    }
  auto copy = bi;  // deep copy with the same names
  CHECK(copy.name() == "rnn");
  CHECK((run<double>(copy, x, &lengths).flat() - y.flat()).cwiseAbs().maxCoeff() == 0.0);
  CHECK_THROWS_AS(nn::bidirectional<double>(layer_t(3, 4, make_options(1, nn::sequence_output::all_steps, true))), config_error);
}

TEMPLATE_TEST_CASE("unit masks: one per sequence, on the input and the recurrent path", "[nn][rnn][mask]", nn::lstm_cell,
                   nn::gru_cell) {
  using layer_t = nn::recurrent<double, TestType>;
  rng gen(15);
  layer_t r(3, 4, make_options(2, nn::sequence_output::all_steps));
  r.reset_parameters(gen);
  const auto x = random_tensor<double>({3, 5, 3}, gen);
  const std::vector<std::int32_t> lengths{5, 2, 4};
  const auto plain = run<double>(r, x, &lengths);

  SECTION("a mask of ones changes nothing; (H) and (N, H) masks agree") {
    r.set_unit_mask(0, tensor<double>({4}, 1.0));
    r.set_unit_mask(1, tensor<double>({3, 4}, 1.0));
    CHECK((run<double>(r, x, &lengths).flat() - plain.flat()).cwiseAbs().maxCoeff() == 0.0);
    tensor<double> shared({4});
    shared.flat() << 1, 0, 0.5, 1;
    tensor<double> rows({3, 4});
    for (index_t n = 0; n < 3; ++n) rows.matrix().row(n) = shared.flat().transpose();
    r.set_unit_mask(0, shared);
    const auto a = run<double>(r, x, &lengths);
    r.set_unit_mask(0, rows);
    CHECK((run<double>(r, x, &lengths).flat() - a.flat()).cwiseAbs().maxCoeff() == 0.0);
  }
  SECTION("a masked top unit outputs 0 at every step of that sequence only") {
    tensor<double> m({3, 4}, 1.0);
    m[1 * 4 + 2] = 0.0;  // sequence 1, unit 2
    r.set_unit_mask(1, m);
    const auto y = run<double>(r, x, &lengths);
    for (index_t t = 0; t < 5; ++t) {
      CHECK(y[(1 * 5 + t) * 4 + 2] == 0.0);
      if (t < 4) CHECK(y[(2 * 5 + t) * 4 + 2] != 0.0);
    }
  }
  SECTION("masking a unit equals removing it: the mask acts on both paths") {
    // Zeroing hidden unit 1 of layer 0 for every sequence (its output to layer 1 and to its own
    // recurrence) must equal the thinned network without that unit.
    tensor<double> m({4}, 1.0);
    m[1] = 0.0;
    r.set_unit_mask(0, m);
    const auto masked = run<double>(r, x, &lengths);
    layer_t thin = r;
    thin.clear_unit_masks();
    thin.keep_hidden_units(0, {0, 2, 3});
    CHECK(thin.weight_ih(1).value().dim(1) == 3);
    CHECK((run<double>(thin, x, &lengths).flat() - masked.flat()).cwiseAbs().maxCoeff() < 1e-13);
    CHECK((masked.flat() - plain.flat()).cwiseAbs().maxCoeff() > 1e-3);
  }
  SECTION("masks are checked against the layer and the batch") {
    CHECK_THROWS_AS(r.set_unit_mask(0, tensor<double>({5})), shape_error);
    CHECK_THROWS_AS(r.set_unit_mask(2, tensor<double>({4})), config_error);
    r.set_unit_mask(0, tensor<double>({2, 4}, 1.0));
    tensor<double> y;
    CHECK_THROWS_WITH(r.forward(x, y, {}), Catch::Contains("2 rows for a batch of 3"));
  }
}

TEMPLATE_TEST_CASE("recurrent layers compute the same in float and double", "[nn][rnn]", nn::lstm_cell, nn::gru_cell) {
  rng gen(16);
  // Sizes that exercise the AVX-512 float GEMM's edges: 37 inputs, 21 hidden units, 70 sequences.
  nn::recurrent<double, TestType> d(37, 21, make_options(2, nn::sequence_output::all_steps));
  d.reset_parameters(gen);
  nn::recurrent<float, TestType> f(37, 21, make_options(2, nn::sequence_output::all_steps));
  std::vector<nn::parameter<double>*> dp;
  d.visit_parameters([&](nn::parameter<double>& p) { dp.push_back(&p); });
  std::size_t k = 0;
  f.visit_parameters([&](nn::parameter<float>& p) { p.value() = dp[k++]->value().template cast<float>(); });
  std::vector<std::int32_t> lengths(70);
  for (std::size_t i = 0; i < lengths.size(); ++i) lengths[i] = static_cast<std::int32_t>(1 + gen.below(9));
  const auto x = random_tensor<double>({70, 9, 37}, gen);
  const auto yd = run<double>(d, x, &lengths);
  const auto yf = run<float>(f, x.template cast<float>(), &lengths);
  CHECK((yd.flat() - yf.flat().template cast<double>()).cwiseAbs().maxCoeff() < 2e-5);
  // Gradients too.
  tensor<double> dyd = random_tensor<double>(yd.shape(), gen), dxd;
  tensor<float> dyf = dyd.template cast<float>(), dxf;
  d.backward(x, yd, dyd, &dxd);
  f.backward(x.template cast<float>(), yf, dyf, &dxf);
  CHECK((dxd.flat() - dxf.flat().template cast<double>()).cwiseAbs().maxCoeff() < 1e-4);
  std::vector<nn::parameter<float>*> fp;
  f.visit_parameters([&](nn::parameter<float>& p) { fp.push_back(&p); });
  for (std::size_t i = 0; i < dp.size(); ++i) {
    const double scale = std::max(1.0, dp[i]->grad().flat().cwiseAbs().maxCoeff());
    CHECK((dp[i]->grad().flat() - fp[i]->grad().flat().template cast<double>()).cwiseAbs().maxCoeff() / scale < 1e-4);
  }
}

TEST_CASE("recurrent layers follow PyTorch's parameter names and shapes", "[nn][rnn]") {
  nn::lstm<float> l(28, 128, make_options(2, nn::sequence_output::all_steps));
  nn::sequential<float> m;
  m.add("lstm", l);
  m.add("gru", nn::gru<float>(128, 64, make_options(1, nn::sequence_output::last_step, true, false)));
  std::vector<std::pair<std::string, shape_t>> got;
  m.visit_parameters([&](nn::parameter<float>& p) { got.emplace_back(p.name(), p.shape()); });
  const std::vector<std::pair<std::string, shape_t>> want{{"lstm.weight_ih_l0", {512, 28}},
                                                          {"lstm.weight_hh_l0", {512, 128}},
                                                          {"lstm.bias_ih_l0", {512}},
                                                          {"lstm.bias_hh_l0", {512}},
                                                          {"lstm.weight_ih_l1", {512, 128}},
                                                          {"lstm.weight_hh_l1", {512, 128}},
                                                          {"lstm.bias_ih_l1", {512}},
                                                          {"lstm.bias_hh_l1", {512}},
                                                          {"gru.weight_ih_l0_reverse", {192, 128}},
                                                          {"gru.weight_hh_l0_reverse", {192, 64}}};
  CHECK(got == want);
  CHECK(m.parameter_count() == 4 * 128 * (28 + 128 + 2) + 4 * 128 * (128 + 128 + 2) + 3 * 64 * (128 + 64));
  CHECK(m[0].describe() == "LSTM(28, 128, num_layers=2)");
  CHECK(m[1].describe() == "GRU(128, 64, output=last_step, reverse, bias=false)");
  // PyTorch's init: U(-1/sqrt(H), 1/sqrt(H)).
  const float bound = 1.0f / std::sqrt(128.0f);
  CHECK(l.weight_hh(0).value().flat().cwiseAbs().maxCoeff() <= bound);
  CHECK(l.weight_hh(0).value().flat().cwiseAbs().maxCoeff() > 0.9f * bound);
}

TEST_CASE("recurrent layers reject bad shapes, lengths and options with the bad value", "[nn][rnn][errors]") {
  nn::lstm<float> l(4, 3);
  tensor<float> y;
  CHECK_THROWS_WITH(l.forward(tensor<float>({2, 5, 3}), y, {}),
                    Catch::Contains("slimnet::nn::lstm::forward") && Catch::Contains("(2, 5, 3)"));
  CHECK_THROWS_AS(l.forward(tensor<float>({2, 4}), y, {}), shape_error);
  std::vector<std::int32_t> bad{3, 6};
  nn::forward_context ctx;
  ctx.lengths = &bad;
  CHECK_THROWS_WITH(l.forward(tensor<float>({2, 5, 4}), y, ctx),
                    Catch::Contains("slimnet::nn::lstm::forward") && Catch::Contains("length 6"));
  std::vector<std::int32_t> short_list{3};
  ctx.lengths = &short_list;
  CHECK_THROWS_AS(l.forward(tensor<float>({2, 5, 4}), y, ctx), shape_error);
  nn::recurrent_options o;
  o.num_layers = 0;
  CHECK_THROWS_WITH(nn::gru<float>(4, 3, o), Catch::Contains("slimnet::nn::gru") && Catch::Contains("num_layers = 0"));
  CHECK_THROWS_AS(nn::gru<float>(4, 0), config_error);
  CHECK_THROWS_AS(l.keep_hidden_units(0, {2, 1}), config_error);
  CHECK_THROWS_AS(l.keep_hidden_units(0, {}), config_error);
  nn::sequence_mean<float> mean;
  CHECK_THROWS_WITH(mean.forward(tensor<float>({2, 5, 4}), y, ctx), Catch::Contains("slimnet::nn::sequence_mean::forward"));
}

TEMPLATE_TEST_CASE("backward accumulates parameter gradients", "[nn][rnn]", nn::lstm_cell, nn::gru_cell) {
  rng gen(17);
  nn::recurrent<double, TestType> r(3, 4);
  const auto x = random_tensor<double>({2, 3, 3}, gen);
  const auto y = run<double>(r, x);
  const auto dy = random_tensor<double>(y.shape(), gen);
  r.backward(x, y, dy, nullptr);
  const auto once = r.weight_hh(0).grad();
  r.backward(x, y, dy, nullptr);
  CHECK((r.weight_hh(0).grad().flat() - 2.0 * once.flat()).cwiseAbs().maxCoeff() < 1e-14);
}
