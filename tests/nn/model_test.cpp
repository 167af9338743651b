// Containers, names, parameter counts and weight transforms.
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"

using namespace slimnet;

TEST_CASE("LeNet models have the paper's parameter counts and PyTorch names", "[nn]") {
  rng gen(1);
  auto lenet5 = nn::models::lenet5<float>(gen);
  CHECK(lenet5.parameter_count() == 431080);
  auto lenet300 = nn::models::lenet_300_100<float>(gen);
  CHECK(lenet300.parameter_count() == 266610);
  std::vector<std::string> names;
  lenet5.visit_parameters([&](nn::parameter<float>& p) { names.push_back(p.name()); });
  CHECK(names == std::vector<std::string>{"conv1.weight", "conv1.bias", "conv2.weight", "conv2.bias", "fc1.weight",
                                          "fc1.bias", "fc2.weight", "fc2.bias"});
  CHECK(lenet5.output_shape({7, 1, 28, 28}) == shape_t{7, 10});
}

TEST_CASE("the VGG-style model has VGG's 3x3 blocks at a quarter width and maps 28x28 to 10", "[nn]") {
  rng gen(1);
  auto vgg = nn::models::vgg_small<float>(gen);
  CHECK(vgg.output_shape({3, 1, 28, 28}) == shape_t{3, 10});
  index_t weights = 0;
  std::vector<std::string> weighted;
  vgg.visit_layers([&](nn::layer<float>& l) {
    nn::parameter<float>* w = nullptr;
    if (auto* conv = dynamic_cast<nn::conv2d<float>*>(&l)) w = &conv->weight();
    if (auto* lin = dynamic_cast<nn::linear<float>*>(&l)) w = &lin->weight();
    if (w == nullptr) return;
    weights += w->size();
    weighted.push_back(w->name());
  });
  // 1-16-32-64-64-128-128 channels of 3x3 kernels, then 128-256-10.
  CHECK(weights == 9 * (16 + 16 * 32 + 32 * 64 + 64 * 64 + 64 * 128 + 128 * 128) + 128 * 256 + 256 * 10);
  CHECK(weights == 316560);
  CHECK(weighted == std::vector<std::string>{"conv1.weight", "conv2.weight", "conv3.weight", "conv4.weight",
                                             "conv5.weight", "conv6.weight", "fc1.weight", "fc2.weight"});
  tensor<float> x({2, 1, 28, 28}), y;
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.normal());
  vgg.forward(x, y, {true, &gen});
  CHECK(y.shape() == shape_t{2, 10});
  CHECK(y.flat().allFinite());
  CHECK(nn::models::vgg_small<float>(gen, 2).output_shape({1, 1, 28, 28}) == shape_t{1, 10});
  CHECK_THROWS_AS(nn::models::vgg_small<float>(gen, 3), config_error);
  CHECK_THROWS_AS(nn::models::vgg_small<float>(gen, 0), config_error);
}

TEST_CASE("nested sequential containers prefix names; duplicate names are refused", "[nn]") {
  nn::sequential<float> inner;
  inner.add("fc", nn::linear<float>(3, 2));
  nn::sequential<float> outer;
  outer.add("block", std::move(inner));
  outer.add(nn::relu<float>());
  std::vector<std::string> names;
  outer.visit_parameters([&](nn::parameter<float>& p) { names.push_back(p.name()); });
  CHECK(names == std::vector<std::string>{"block.fc.weight", "block.fc.bias"});
  CHECK(outer.find("block.fc").kind() == "Linear");
  CHECK(outer.local_name(1) == "1");
  CHECK_THROWS_AS(outer.add("block", nn::relu<float>()), config_error);
  CHECK_THROWS_AS(outer.find("nope"), config_error);
}

TEST_CASE("a cloned model is independent and has new parameter identities", "[nn]") {
  rng gen(2);
  auto a = nn::models::lenet_300_100<float>(gen);
  nn::sequential<float> b(a);
  std::vector<std::uint64_t> ids_a, ids_b;
  a.visit_parameters([&](nn::parameter<float>& p) { ids_a.push_back(p.id()); });
  b.visit_parameters([&](nn::parameter<float>& p) { ids_b.push_back(p.id()); });
  for (std::size_t i = 0; i < ids_a.size(); ++i) CHECK(ids_a[i] != ids_b[i]);
  tensor<float> x({2, 784}, 0.5f), ya, yb;
  a.forward(x, ya, {});
  b.forward(x, yb, {});
  CHECK(ya.flat() == yb.flat());
  static_cast<nn::linear<float>&>(b.find("fc3")).weight().value().set_zero();
  a.forward(x, ya, {});
  b.forward(x, yb, {});
  CHECK(ya.flat() != yb.flat());
}

namespace {
// A transform for the test: W_eff = 2 W, so dL/dW = 2 dL/dW_eff; after_step clips to [-1, 1].
struct doubling : nn::parameter_transform<double> {
  std::string name() const override { return "doubling"; }
  void forward(const tensor<double>& w, tensor<double>& w_eff, bool, rng&) override { w_eff.flat() = 2.0 * w.flat(); }
  void backward(const tensor<double>&, tensor<double>& grad) override { grad.flat() *= 2.0; }
  void after_step(tensor<double>& w, const nn::step_context&) override { w.flat() = w.flat().cwiseMax(-1.0).cwiseMin(1.0); }
  std::shared_ptr<nn::parameter_transform<double>> clone(nn::clone_memo&) const override { return std::make_shared<doubling>(*this); }
};
}  // namespace

TEST_CASE("weight transforms change the forward value, the gradient and the step", "[nn]") {
  nn::linear<double> l(2, 1, false);
  l.weight().value().flat() << 0.5, -0.25;
  l.weight().add_transform(std::make_shared<doubling>());
  tensor<double> x({1, 2}), y;
  x.flat() << 3, 4;
  l.forward(x, y, {});
  CHECK(y[0] == Approx(2 * (0.5 * 3 - 0.25 * 4)));
  tensor<double> dy({1, 1}, 1.0);
  l.backward(x, y, dy, nullptr);
  CHECK(l.weight().grad()[0] == Approx(3));  // dL/dW_eff
  l.weight().transform_gradient();
  CHECK(l.weight().grad()[0] == Approx(6));  // dL/dW
  l.weight().value()[0] = 5;
  l.weight().after_step();
  CHECK(l.weight().value()[0] == 1);
  CHECK(l.weight().value()[0] == 1);
}

TEST_CASE("model(x) runs inference in evaluation mode", "[nn]") {
  rng gen(21);
  auto m = nn::models::lenet_300_100<float>(gen);
  tensor<float> x({3, 1, 28, 28});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.uniform());
  tensor<float> y;
  m.forward(x, y, nn::forward_context{});
  const tensor<float> z = m(x);
  CHECK(z.shape() == shape_t{3, 10});
  CHECK(z.flat() == y.flat());
}
