// LSTM and GRU against PyTorch 1.13: outputs, final states and gradients on padded batches,
// parameters loaded by PyTorch's names. The numbers come from rnn_pytorch_fixture.py (run once,
// output committed as rnn_pytorch_fixture.hpp), computed in double precision.
#include <catch2/catch.hpp>

#include <memory>

#include "nn/rnn_pytorch_fixture.hpp"
#include "slimnet/nn/bidirectional.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/lstm.hpp"

using namespace slimnet;

namespace {

tensor<double> to_tensor(const rnn_fixture::fixture_tensor& f) {
  tensor<double> t(shape_t(f.shape.begin(), f.shape.end()));
  for (index_t i = 0; i < t.size(); ++i) t[i] = f.values[static_cast<std::size_t>(i)];
  return t;
}

double max_difference(const tensor<double>& a, const tensor<double>& b) {
  REQUIRE(a.shape() == b.shape());
  return (a.flat() - b.flat()).cwiseAbs().maxCoeff();
}

template <class Cell>
std::unique_ptr<nn::layer<double>> make_layer(index_t input, index_t hidden, index_t layers, bool bidirectional,
                                              nn::sequence_output out) {
  nn::recurrent_options o;
  o.num_layers = layers;
  o.output = out;
  nn::recurrent<double, Cell> r(input, hidden, o);
  if (bidirectional) return std::make_unique<nn::bidirectional<double>>(r);
  return std::make_unique<nn::recurrent<double, Cell>>(r);
}

template <class Cell>
void compare_with_pytorch(const rnn_fixture::fixture_case& c) {
  const auto& tensors = c.tensors;
  const auto x = to_tensor(tensors.at("x"));
  const index_t input = x.dim(2);
  const bool bidirectional = tensors.count("weight_ih_l0_reverse") > 0;
  const index_t hidden = tensors.at("weight_hh_l0").shape[1];
  const index_t layers = tensors.count("weight_ih_l1") ? 2 : 1;
  auto every_step = make_layer<Cell>(input, hidden, layers, bidirectional, nn::sequence_output::all_steps);
  auto last_step = make_layer<Cell>(input, hidden, layers, bidirectional, nn::sequence_output::last_step);
  // PyTorch's state_dict names are slimnet's local names: the weights load with no mapping.
  index_t loaded = 0;
  for (auto* l : {every_step.get(), last_step.get()}) {
    l->visit_parameters([&](nn::parameter<double>& p) {
      INFO(p.local_name());
      REQUIRE(tensors.count(p.local_name()) == 1);
      const auto v = to_tensor(tensors.at(p.local_name()));
      REQUIRE(v.shape() == p.shape());
      p.value() = v;
      p.zero_grad();
      ++loaded;
    });
  }
  CHECK(loaded == 2 * (bidirectional ? 8 : 4 * layers));

  nn::forward_context ctx;
  ctx.lengths = &c.lengths;
  tensor<double> out, h_last, dx_out, dx_last;
  every_step->forward(x, out, ctx);
  last_step->forward(x, h_last, ctx);
  CHECK(max_difference(out, to_tensor(tensors.at("out"))) < 1e-12);
  CHECK(max_difference(h_last, to_tensor(tensors.at("h_last"))) < 1e-12);

  every_step->backward(x, out, to_tensor(tensors.at("r_out")), &dx_out);
  last_step->backward(x, h_last, to_tensor(tensors.at("r_last")), &dx_last);
  dx_out.flat() += dx_last.flat();
  CHECK(max_difference(dx_out, to_tensor(tensors.at("grad.x"))) < 1e-12);
  std::map<std::string, tensor<double>> grads;
  for (auto* l : {every_step.get(), last_step.get()}) {
    l->visit_parameters([&](nn::parameter<double>& p) {
      auto it = grads.find(p.local_name());
      if (it == grads.end()) {
        grads.emplace(p.local_name(), p.grad());
      } else {
        it->second.flat() += p.grad().flat();
      }
    });
  }
  for (const auto& [name, g] : grads) {
    INFO(name);
    CHECK(max_difference(g, to_tensor(tensors.at("grad." + name))) < 1e-12);
  }
}

}  // namespace

TEST_CASE("a two-layer LSTM matches PyTorch on a padded batch", "[nn][rnn][pytorch]") {
  compare_with_pytorch<nn::lstm_cell>(rnn_fixture::lstm_two_layers());
}

TEST_CASE("a two-layer GRU matches PyTorch on a padded batch", "[nn][rnn][pytorch]") {
  compare_with_pytorch<nn::gru_cell>(rnn_fixture::gru_two_layers());
}

TEST_CASE("a bidirectional LSTM matches PyTorch's bidirectional=True", "[nn][rnn][pytorch]") {
  compare_with_pytorch<nn::lstm_cell>(rnn_fixture::lstm_bidirectional());
}

TEST_CASE("a bidirectional GRU matches PyTorch's bidirectional=True", "[nn][rnn][pytorch]") {
  compare_with_pytorch<nn::gru_cell>(rnn_fixture::gru_bidirectional());
}
