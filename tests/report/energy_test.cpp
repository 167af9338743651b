// The energy model on networks small enough to count by hand: multiply-accumulates of every layer
// type, memory levels chosen by size, sparse weights, nested containers, refusals.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/report/energy.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {

// A layer with a parameter the energy model has never heard of.
template <class Scalar>
class energy_test_unknown : public nn::cloneable<energy_test_unknown<Scalar>, Scalar> {
 public:
  energy_test_unknown() : w_("w", shape_t{2}) {}
  std::string kind() const override { return "Unknown"; }
  shape_t output_shape(const shape_t& in) const override { return in; }
  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context&) override { y = x; }
  void backward(const tensor<Scalar>&, const tensor<Scalar>&, const tensor<Scalar>& dy, tensor<Scalar>* dx) override {
    if (dx) *dx = dy;
  }
  void visit_parameters(const typename nn::layer<Scalar>::parameter_visitor& visit) override { visit(w_); }

 private:
  nn::parameter<Scalar> w_;
};

}  // namespace

TEMPLATE_TEST_CASE("energy of a Linear layer by hand", "[report][energy]", float, double) {
  nn::linear<TestType> fc(3, 2);
  fc.set_name("fc");
  const report::energy_report r = report::estimate_energy<TestType>(fc, {1, 3});
  REQUIRE(r.layers.size() == 1);
  const auto& l = r.layers[0];
  CHECK(l.macs == 6);
  CHECK(l.mults == 6);
  CHECK(l.adds == 8);               // 6 accumulations + 2 biases
  CHECK(l.weight_bytes == 32);      // 8 floats
  CHECK(l.activation_bytes == 20);  // 3 in + 2 out
  CHECK(r.weight_level == report::memory_level::sram_8k);
  CHECK(l.compute_pj == Approx(6 * (3.7 + 0.9) + 2 * 0.9));
  CHECK(l.weight_memory_pj == Approx(32.0 / 8 * 10));
  CHECK(l.activation_memory_pj == Approx(20.0 / 8 * 10));
  CHECK(r.total_mj() == Approx((29.4 + 40 + 25) * 1e-9));
  CHECK_THAT(report::summary(r), Contains("SRAM 8 KiB"));

  SECTION("int8 weights: cheaper multiply-accumulates, a quarter of the weight bytes") {
    report::energy_options o;
    o.precision = report::arithmetic::int8;
    const auto q = report::estimate_energy<TestType>(fc, {1, 3}, o);
    CHECK(q.layers[0].weight_bytes == 6 + 8);  // int8 weights, fp32 bias
    CHECK(q.layers[0].compute_pj == Approx(6 * (0.2 + 0.03) + 2 * 0.9));
  }
  SECTION("sparse weights: only nonzeros multiply, each stored with its index") {
    fc.weight().value().set_zero();
    fc.weight().value()[1] = 1;
    fc.weight().value()[4] = -2;
    report::energy_options o;
    o.sparse_weights = true;
    const auto s = report::estimate_energy<TestType>(fc, {1, 3}, o);
    CHECK(s.layers[0].macs == 2);
    CHECK(s.layers[0].weight_bytes == 2 * (4 + 2) + 8);
    // Dense counting ignores the zeros: a dense kernel multiplies them anyway.
    CHECK(report::estimate_energy<TestType>(fc, {1, 3}).layers[0].macs == 6);
  }
}

TEMPLATE_TEST_CASE("energy counts of convolution, pooling, BatchNorm and containers", "[report][energy]", float, double) {
  nn::sequential<TestType> m;
  m.add("conv", nn::conv2d<TestType>(1, 2, 3));  // (1,1,6,6) -> (1,2,4,4)
  m.add("bn", nn::batch_norm2d<TestType>(2));
  m.add("relu", nn::relu<TestType>());
  m.add("pool", nn::max_pool2d<TestType>(2));  // -> (1,2,2,2)
  m.add("drop", nn::dropout<TestType>(0.5));
  m.add("flatten", nn::flatten<TestType>());
  m.add("fc", nn::linear<TestType>(8, 3, false));
  const auto r = report::estimate_energy<TestType>(m, {1, 1, 6, 6});
  REQUIRE(r.layers.size() == 7);
  CHECK(r.layers[0].name == "conv");
  CHECK(r.layers[0].macs == 18 * 16);       // 2 filters x 9 taps x 16 positions
  CHECK(r.layers[0].adds == 18 * 16 + 32);  // + bias per output
  CHECK(r.layers[1].mults == 32);           // scale
  CHECK(r.layers[1].adds == 32);            // shift
  CHECK(r.layers[1].weight_bytes == 16);    // 2 scales + 2 shifts
  CHECK(r.layers[2].adds == 32);            // ReLU: a comparison per element
  CHECK(r.layers[3].adds == 32 - 8);        // 3 comparisons per 2x2 window
  CHECK(r.layers[4].total_pj() == 0);       // dropout at inference
  CHECK(r.layers[5].total_pj() == 0);
  CHECK(r.layers[6].macs == 24);
  CHECK(r.layers[6].adds == 24);  // no bias
  CHECK(r.total.macs == 18 * 16 + 24);
  double sum = 0;
  for (const auto& l : r.layers) sum += l.total_pj();
  CHECK(r.total.total_pj() == Approx(sum));
}

TEMPLATE_TEST_CASE("energy of LSTM, GRU, bidirectional and time-distributed layers", "[report][energy]", float, double) {
  // LSTM 3 -> 2 over 4 steps: 4 gates x 2 units x (3 + 2) = 40 MACs per step.
  nn::lstm<TestType> lstm(3, 2);
  auto r = report::estimate_energy<TestType>(lstm, {1, 4, 3});
  CHECK(r.total.macs == 4 * 40);
  CHECK(r.total.weight_bytes == 4.0 * (8 * 3 + 8 * 2 + 8 + 8));
  // Per step: 5h nonlinearities (mult + add), 3h products, h state sum + 4h gate sums; bias 2 x 8.
  CHECK(r.total.mults == 4 * (40 + 5 * 2 + 3 * 2));
  CHECK(r.total.adds == 4 * (40 + 16 + 5 * 2 + 2 + 8));

  nn::gru<TestType> gru(3, 2);
  r = report::estimate_energy<TestType>(gru, {1, 4, 3});
  CHECK(r.total.macs == 4 * 30);

  nn::bidirectional<TestType> bi(nn::lstm<TestType>(3, 2));
  CHECK(report::estimate_energy<TestType>(bi, {1, 4, 3}).total.macs == 2 * 4 * 40);

  nn::recurrent_options two;
  two.num_layers = 2;
  nn::lstm<TestType> stacked(3, 2, two);  // second layer 2 -> 2: 4 x 2 x 4 = 32 MACs per step
  CHECK(report::estimate_energy<TestType>(stacked, {1, 4, 3}).total.macs == 4 * (40 + 32));

  // A Linear applied at each of 3 steps.
  nn::time_distributed<TestType> td(nn::linear<TestType>(4, 2), {4});
  CHECK(report::estimate_energy<TestType>(td, {1, 3, 4}).total.macs == 3 * 8);
}

TEMPLATE_TEST_CASE("energy: the weights' memory level follows the model's size", "[report][energy]", float, double) {
  nn::linear<TestType> small(100, 10, false);    // 4,000 B
  nn::linear<TestType> mid(100, 50, false);      // 20,000 B
  nn::linear<TestType> large(1000, 100, false);  // 400,000 B
  nn::linear<TestType> huge(1000, 300, false);   // 1.2 MB
  CHECK(report::estimate_energy<TestType>(small, {1, 100}).weight_level == report::memory_level::sram_8k);
  CHECK(report::estimate_energy<TestType>(mid, {1, 100}).weight_level == report::memory_level::sram_32k);
  CHECK(report::estimate_energy<TestType>(large, {1, 1000}).weight_level == report::memory_level::sram_1m);
  const auto h = report::estimate_energy<TestType>(huge, {1, 1000});
  CHECK(h.weight_level == report::memory_level::dram);
  CHECK(h.total.weight_memory_pj == Approx(1.2e6 / 8 * 1300));
  // Thinning a network (fewer units) cannot cost more.
  CHECK(report::estimate_energy<TestType>(large, {1, 1000}).total_mj() < h.total_mj());
}

TEMPLATE_TEST_CASE("energy: refusals name the function and the value", "[report][energy]", float, double) {
  nn::linear<TestType> fc(3, 2);
  CHECK_THROWS_AS(report::estimate_energy<TestType>(fc, {2, 3}), shape_error);
  CHECK_THROWS_WITH(report::estimate_energy<TestType>(fc, {2, 3}),
                    Contains("slimnet::report::estimate_energy") && Contains("(2, 3)"));
  CHECK_THROWS_AS(report::estimate_energy<TestType>(fc, {1, 4}), shape_error);
  nn::sequential<TestType> m;
  m.add("odd", energy_test_unknown<TestType>());
  CHECK_THROWS_AS(report::estimate_energy<TestType>(m, {1, 2}), config_error);
  CHECK_THROWS_WITH(report::estimate_energy<TestType>(m, {1, 2}), Contains("odd") && Contains("Unknown"));
  nn::lstm<TestType> lstm(3, 2);
  CHECK_THROWS_AS(report::estimate_energy<TestType>(lstm, {1, 3}), shape_error);
  // An inference-only compressed layer keeps its weights outside parameters: refused, not
  // counted as an elementwise operation.
  nn::sequential<TestType> c;
  c.add("fc", nn::linear<TestType>(4, 3));
  nn::compressed::compress(c, nn::compressed::format::sparse);
  CHECK_THROWS_WITH(report::estimate_energy<TestType>(c, {1, 4}), Contains("fc") && Contains("changes the shape"));
}
