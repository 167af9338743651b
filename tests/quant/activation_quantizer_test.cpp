// The activation quantizer as a unit transform (nn/unit_transform.hpp): bit-identical to the
// quantize_activation layer it replaced (whose forward and backward are kept below as the
// reference) on random inputs, in training and evaluation, with and without gradient rounding;
// and a clone rounds with its own generator.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/quant/fixed_point_training.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
using quant::fixed_point_format;
using quant::rounding;

namespace {

/// The former quant::quantize_activation layer's arithmetic (commit 6f37ef7), verbatim.
template <class Scalar>
struct former_quantize_activation {
  quant::activation_quantization_options opt_;
  rng gen_;
  explicit former_quantize_activation(quant::activation_quantization_options opt) : opt_(std::move(opt)), gen_(opt_.seed) {}

  void forward(const tensor<Scalar>& x, tensor<Scalar>& y, const nn::forward_context& ctx) {
    y.resize(x.shape());
    y.flat() = x.flat();
    if (!opt_.activations) return;
    if (ctx.training && opt_.activation_mode == rounding::stochastic) {
      quant::quantize_in_place(y, *opt_.activations, rounding::stochastic, &ctx.generator());
    } else {
      quant::quantize_in_place(y, *opt_.activations, rounding::nearest);
    }
  }
  void backward(const tensor<Scalar>& x, const tensor<Scalar>&, const tensor<Scalar>& dy, tensor<Scalar>* dx) {
    dx->resize(x.shape());
    if (opt_.activations && opt_.clip_gradient) {
      const auto lo = static_cast<Scalar>(opt_.activations->lowest()), hi = static_cast<Scalar>(opt_.activations->highest());
      dx->flat() = (x.flat().array() >= lo && x.flat().array() <= hi).select(dy.flat().array(), Scalar(0)).matrix();
    } else {
      dx->flat() = dy.flat();
    }
    if (opt_.gradients) quant::quantize_in_place(*dx, *opt_.gradients, opt_.gradient_mode, &gen_);
  }
};

bool aq_same_bits(const tensor<float>& a, const tensor<float>& b) {
  return a.shape() == b.shape() && std::equal(a.data(), a.data() + a.size(), b.data());
}

}  // namespace

TEST_CASE("the activation quantizer through the unit transform is bit-identical to the former layer", "[quant][fixed_point]") {
  std::vector<quant::activation_quantization_options> settings(4);
  settings[0].activations = fixed_point_format{2, 5};  // stochastic in training, clipped gradient
  settings[1].activations = fixed_point_format{3, 4};
  settings[1].activation_mode = rounding::nearest;
  settings[1].gradients = fixed_point_format{4, 6};  // stochastic gradient rounding, its own generator
  settings[1].seed = 5;
  settings[2].activations = fixed_point_format{1, 7};
  settings[2].clip_gradient = false;
  settings[2].gradients = fixed_point_format{2, 3};
  settings[2].gradient_mode = rounding::nearest;
  settings[3].activations.reset();  // real activations, rounded errors
  settings[3].gradients = fixed_point_format{3, 5};
  rng data(17);
  for (std::size_t k = 0; k < settings.size(); ++k) {
    INFO("setting " << k);
    quant::quantize_activation<float> layer(settings[k]);
    former_quantize_activation<float> former(settings[k]);
    for (int pass = 0; pass < 6; ++pass) {
      const bool training = pass % 3 != 2;
      const auto x = testing::random_tensor<float>({5, 7, 3}, data, -5, 5);
      const auto dy = testing::random_tensor<float>(x.shape(), data, -2, 2);
      rng g1(100 + static_cast<std::uint64_t>(pass)), g2(100 + static_cast<std::uint64_t>(pass));
      tensor<float> y1, y2, dx1, dx2;
      layer.forward(x, y1, {training, &g1});
      former.forward(x, y2, {training, &g2});
      REQUIRE(aq_same_bits(y1, y2));
      layer.backward(x, y1, dy, &dx1);
      former.backward(x, y2, dy, &dx2);
      REQUIRE(aq_same_bits(dx1, dx2));
    }
  }
}

TEST_CASE("a cloned activation quantizer rounds with its own generator", "[quant][fixed_point][clone]") {
  quant::activation_quantization_options o;
  o.gradients = fixed_point_format{2, 2};  // stochastic: draws from the quantizer's generator
  quant::quantize_activation<float> original(o), twin(o);
  auto copy = original.clone();
  rng data(3);
  const auto x = testing::random_tensor<float>({4, 6}, data);
  const auto dy = testing::random_tensor<float>(x.shape(), data);
  tensor<float> y, dx_copy, dx_original, dx_twin;
  copy->forward(x, y, {});
  for (int i = 0; i < 3; ++i) copy->backward(x, y, dy, &dx_copy);  // advances the copy's generator only
  original.forward(x, y, {});
  original.backward(x, y, dy, &dx_original);
  twin.forward(x, y, {});
  twin.backward(x, y, dy, &dx_twin);
  CHECK(aq_same_bits(dx_original, dx_twin));
  CHECK(copy->kind() == "QuantizeActivation");
  CHECK(&dynamic_cast<quant::quantize_activation<float>&>(*copy).transform() != &original.transform());
}
