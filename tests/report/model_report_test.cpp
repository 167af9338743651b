// The per-layer report on a model small enough to count by hand: weights, dense and effective
// FLOP, Act%, Weights%, FLOP%, totals, compression rate, accuracy, text and CSV.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/report.hpp"

using namespace slimnet;
using Catch::Matchers::Contains;

namespace {
// conv (1 -> 2 channels, 2x2 kernel) on 3x3 images -> (2, 2, 2) -> flatten 8 -> linear 8 -> 2.
template <class Scalar>
nn::sequential<Scalar> tiny() {
  nn::sequential<Scalar> m;
  m.add("conv", nn::conv2d<Scalar>(1, 2, 2));
  m.add("flatten", nn::flatten<Scalar>());
  m.add("fc", nn::linear<Scalar>(8, 2));
  auto& conv = static_cast<nn::conv2d<Scalar>&>(m[0]);
  auto& fc = static_cast<nn::linear<Scalar>&>(m[2]);
  // Filter 0 = [1 0; 0 2], filter 1 = [0 0; 3 0]: 3 of 8 nonzero; tap nnz (over filters) = 1, 0,
  // 1, 1.
  conv.weight().value().flat() << 1, 0, 0, 2, 0, 0, 3, 0;
  conv.bias()->value().set_zero();
  // fc row 0 reads inputs 0 and 7, row 1 reads input 2: 3 of 16 nonzero.
  fc.weight().value().set_zero();
  fc.weight().value().matrix()(0, 0) = 1;
  fc.weight().value().matrix()(0, 7) = 1;
  fc.weight().value().matrix()(1, 2) = 1;
  fc.bias()->value().set_zero();
  return m;
}

template <class Scalar>
data::dataset<Scalar> two_images() {
  data::dataset<Scalar> d;
  d.num_classes = 2;
  d.inputs.resize({2, 1, 3, 3});
  d.inputs.set_zero();
  // Image 0 = [1 0 2; 0 0 3; 4 5 0] (5 of 9 nonzero); image 1 is all zeros.
  const Scalar img[9] = {1, 0, 2, 0, 0, 3, 4, 5, 0};
  for (int k = 0; k < 9; ++k) d.inputs[k] = img[k];
  d.labels = {0, 1};
  return d;
}
}  // namespace

TEMPLATE_TEST_CASE("report numbers on a hand-computed model", "[report]", float, double) {
  auto m = tiny<TestType>();
  const auto d = two_images<TestType>();
  const auto r = report::analyze(m, d);
  REQUIRE(r.layers.size() == 2);
  const auto& conv = r.layers[0];
  const auto& fc = r.layers[1];
  CHECK(conv.name == "conv");
  CHECK(conv.kind == "Conv2d");
  CHECK(conv.weights == 8);
  CHECK(conv.nonzero == 3);
  CHECK(conv.flop == 2.0 * 8 * 4);  // 2 x weights x 4 output positions
  CHECK(conv.input_density == Approx(5.0 / 18));
  // Image 0, tap (0,0) reads pixels (0,0),(0,1),(1,0),(1,1): 1 nonzero; tap (1,0) reads rows 1-2,
  // cols 0-1: 2 nonzero; tap (1,1): rows 1-2, cols 1-2: 2 nonzero; each tap has one filter weight.
  // Effective = 2 * (1 + 2 + 2) = 10 FLOP for image 0, 0 for image 1: 5 per example.
  CHECK(conv.effective_flop == Approx(5.0));
  CHECK(conv.flop_density() == Approx(5.0 / 64));
  CHECK(conv.weight_density() == Approx(3.0 / 8));
  // Conv output of image 0: filter 0 = [1 6; 10 0], filter 1 = [0 0; 12 15] -> 5 of 8 nonzero.
  CHECK(fc.weights == 16);
  CHECK(fc.nonzero == 3);
  CHECK(fc.flop == 32);
  CHECK(fc.input_density == Approx(5.0 / 16));
  // Inputs 0, 2, 7 are nonzero and read by one weight each: 2 * 3 = 6 FLOP, 3 per example.
  CHECK(fc.effective_flop == Approx(3.0));
  CHECK(r.total.weights == 24);
  CHECK(r.total.nonzero == 6);
  CHECK(r.compression_rate() == Approx(4.0));
  CHECK(r.total.flop == 96);
  CHECK(r.total.effective_flop == Approx(8.0));
  CHECK(r.total.input_density == Approx((5.0 / 18 * 64 + 5.0 / 16 * 32) / 96));
  // Logits: image 0 -> (1 + 15, 10) = class 0, right; image 1 -> (0, 0) = class 0, wrong.
  CHECK(r.accuracy == Approx(0.5));
  CHECK(r.examples == 2);
}

TEMPLATE_TEST_CASE(
    "the report counts the weights the forward pass uses (W * T) and optional biases", "[report]",
    float, double) {
  auto m = tiny<TestType>();
  auto& conv = static_cast<nn::conv2d<TestType>&>(m[0]);
  // Dense conv weights, masked back to the same 3 nonzero entries through a transform.
  tensor<TestType> mask(conv.weight().value().shape());
  for (index_t k = 0; k < 8; ++k) mask[k] = conv.weight().value()[k] != 0 ? 1 : 0;
  conv.weight().value().fill(7);
  prune::restrict_mask(conv.weight(), mask);
  conv.weight().value().fill(
      7);  // junk under the mask: ignored because the forward pass uses W * T
  const auto d = two_images<TestType>();
  auto r = report::analyze(m, d);
  CHECK(r.layers[0].nonzero == 3);
  report::analyze_options o;
  o.count_biases = true;
  conv.bias()->value()[1] = TestType(0.5);
  r = report::analyze(m, d, o);
  CHECK(r.layers[0].weights == 10);
  CHECK(r.layers[0].nonzero == 4);
  CHECK(r.layers[1].weights == 18);
  CHECK(r.layers[1].nonzero == 3);
}

TEST_CASE("report text, reference columns and CSV", "[report]") {
  auto m = tiny<float>();
  auto r = report::analyze(m, two_images<float>());
  r.baseline_accuracy = 0.75;
  const std::string text = report::format(r, {{"Seed W%", {{"conv", "66%"}, {"Total", "8%"}}}});
  CHECK_THAT(text, Contains("Layer") && Contains("Weights") && Contains("FLOP") &&
                       Contains("Act%") && Contains("Weights%") && Contains("FLOP%") &&
                       Contains("Seed W%"));
  CHECK_THAT(text, Contains("conv") && Contains("37.5%") && Contains("66%") && Contains("Total"));
  CHECK_THAT(text, Contains("compression 4.0x") && Contains("75.00% -> 50.00% (-25.00 pp)") &&
                       Contains("on 2 examples"));
  const std::string csv = report::to_csv(r);
  CHECK_THAT(
      csv,
      Contains(
          "layer,kind,weights,nonzero,flop,effective_flop,act,weights_fraction,flop_fraction\n"));
  CHECK_THAT(csv, Contains("conv,Conv2d,8,3,64,5.0,0.277778,0.375000,0.078125\n"));
  CHECK_THAT(csv, Contains("Total,,24,6,96,8.0,"));
  CHECK(report::detail::human(235200) == "235.2K");
  CHECK(report::detail::human(3200000) == "3.2M");
  CHECK(report::detail::human(500) == "500");
}

TEST_CASE("report errors", "[report][errors]") {
  auto m = tiny<float>();
  data::dataset<float> empty;
  CHECK_THROWS_WITH(report::analyze(m, empty),
                    Contains("slimnet::report::analyze") && Contains("empty"));
  report::analyze_options o;
  o.batch_size = 0;
  CHECK_THROWS_WITH(report::analyze(m, two_images<float>(), o), Contains("batch_size = 0"));
  report::model_report r;
  CHECK_THROWS_AS(report::write_csv(r, "/nonexistent-dir/x.csv"), io_error);
}
