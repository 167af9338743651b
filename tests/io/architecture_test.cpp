// Architecture JSON: every layer kind of nn/ survives architecture_of -> build_architecture with
// the same structure, names and hyper-parameters (thinned widths included); malformed JSON is an
// io_error naming the layer.
#include <catch2/catch.hpp>

#include "slimnet/io/architecture.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/nn/models_deepsense.hpp"

using namespace slimnet;

namespace {

std::vector<std::string> parameter_names(nn::layer<float>& m) {
  std::vector<std::string> names;
  m.visit_parameters([&](nn::parameter<float>& p) { names.push_back(p.name() + shape_string(p.shape())); });
  return names;
}

void check_rebuilds(nn::layer<float>& m) {
  io::extra_tensors<float> extras;
  const nlohmann::json j = io::architecture_of(m, extras);
  io::tensor_setters<float> setters;
  auto rebuilt = io::build_architecture<float>(nlohmann::json::parse(j.dump()), &setters);
  CHECK(rebuilt->describe() == m.describe());
  CHECK(parameter_names(*rebuilt) == parameter_names(m));
  REQUIRE(setters.size() == extras.size());
  for (auto& [set, name] : setters) set(extras.at(name));
  io::extra_tensors<float> again;
  CHECK(io::architecture_of(*rebuilt, again) == j);
}

}  // namespace

TEST_CASE("architecture JSON of LeNet-5 states every hyper-parameter", "[io][architecture]") {
  rng gen(1);
  auto m = nn::models::lenet5<float>(gen);
  io::extra_tensors<float> extras;
  const auto j = io::architecture_of(m, extras);
  CHECK(j["kind"] == "Sequential");
  REQUIRE(j["layers"].size() == 8);
  CHECK(j["layers"][0] == nlohmann::json{{"kind", "Conv2d"}, {"name", "conv1"}, {"in_channels", 1}, {"out_channels", 20},
                                         {"kernel", {5, 5}}, {"stride", 1}, {"padding", 0}, {"bias", true}});
  CHECK(j["layers"][1] == nlohmann::json{{"kind", "MaxPool2d"}, {"name", "pool1"}, {"kernel", 2}, {"stride", 2}, {"padding", 0}});
  CHECK(j["layers"][5]["out_features"] == 500);
  CHECK(extras.empty());
  check_rebuilds(m);
}

TEST_CASE("every layer kind rebuilds: pools, activations, BatchNorm, dropout, thinned widths", "[io][architecture]") {
  rng gen(2);
  auto vgg = nn::models::vgg_small<float>(gen, 8);
  check_rebuilds(vgg);
  auto lenet = nn::models::lenet_300_100<float>(gen);
  check_rebuilds(lenet);

  nn::sequential<float> m;
  nn::sequential<float> inner;
  inner.add("conv", nn::conv2d<float>(3, 7, 3, 2, {2, 1, false}));
  inner.add("bn", nn::batch_norm2d<float>(7, {1e-3, 0.2, true}));
  inner.add("avg", nn::avg_pool2d<float>(3, 2, 1));
  inner.add("sig", nn::sigmoid<float>());
  m.add("block", std::move(inner));
  m.add("pad", nn::zero_pad2d<float>(1, 2, 0, 3));
  m.add("max", nn::max_pool2d<float>(2, 1));
  m.add("flat", nn::flatten<float>());
  m.add("drop", nn::dropout<float>(0.25));
  m.add("fc", nn::linear<float>(33, 5, false));
  m.add("bn1", nn::batch_norm1d<float>(5));
  m.add("tanh", nn::tanh<float>());
  check_rebuilds(m);

  // A BNN block (example 07): shift-based BatchNorm and the sign activation.
  nn::sequential<float> bnn;
  bnn.add("fc", nn::linear<float>(10, 6));
  bnn.add("bn", quant::shift_batch_norm<float>(6, {2e-4, 0.3, false}));
  bnn.add("sign", quant::sign_activation<float>(quant::binarization::stochastic));
  check_rebuilds(bnn);
  io::extra_tensors<float> extras;
  const auto j = io::architecture_of(bnn, extras);
  CHECK(j["layers"][1]["eps"] == 2e-4);
  CHECK(j["layers"][1]["affine"] == false);
  CHECK(j["layers"][2]["mode"] == "stochastic");
}

TEST_CASE("recurrent layers rebuild: stacked, thinned, reversed, bidirectional, with unit masks", "[io][architecture]") {
  nn::sequential<float> m;
  nn::recurrent_options o;
  o.output = nn::sequence_output::last_step;
  o.bias = false;
  nn::lstm<float> thinned(8, std::vector<index_t>{6, 3}, nn::recurrent_options{});
  tensor<float> mask({6}, 0.5f);
  thinned.set_unit_mask(0, mask);
  auto& bi = m.add("bi", nn::bidirectional<float>(std::move(thinned)));
  bi.backward_as<nn::lstm<float>>().set_unit_mask(1, tensor<float>({3}, 0.25f));
  m.add("gru", nn::gru<float>(6, std::vector<index_t>{4}, o));
  check_rebuilds(m);
  io::extra_tensors<float> extras;
  const auto j = io::architecture_of(m, extras);
  CHECK(extras.size() == 2);
  CHECK(extras.count("bi.unit_mask_l0") == 1);
  CHECK(extras.count("bi.unit_mask_l1_reverse") == 1);
  CHECK(j["layers"][1]["hidden_sizes"] == nlohmann::json{4});
  CHECK(j["layers"][1]["output"] == "last_step");

  rng gen(3);
  nn::models::deepsense_options d;
  d.intervals = 3;
  d.channels = 4;
  d.hidden = 5;
  auto ds = nn::models::deepsense<float>(gen, d);
  check_rebuilds(ds);
}

TEST_CASE("malformed architectures are io_errors naming the layer", "[io][architecture]") {
  rng gen(4);
  auto m = nn::models::lenet5<float>(gen);
  io::extra_tensors<float> extras;
  const auto good = io::architecture_of(m, extras);
  auto j = good;
  j["layers"][2].erase("out_channels");
  CHECK_THROWS_WITH(io::build_architecture<float>(j), Catch::Contains("layer 'conv2'") && Catch::Contains("missing 'out_channels'"));
  j = good;
  j["layers"][5]["bias"] = "yes";
  CHECK_THROWS_WITH(io::build_architecture<float>(j), Catch::Contains("layer 'fc1'") && Catch::Contains("not a boolean"));
  j = good;
  j["layers"][3]["padding"] = 5;  // 2 * padding > kernel: the pool refuses
  CHECK_THROWS_AS(io::build_architecture<float>(j), io_error);
  CHECK_THROWS_WITH(io::build_architecture<float>(j), Catch::Contains("layer 'pool2'") && Catch::Contains("does not construct"));
  j = good;
  j["layers"][1]["name"] = "conv1";  // two layers named conv1
  CHECK_THROWS_AS(io::build_architecture<float>(j), io_error);
  CHECK_THROWS_WITH(io::build_architecture<float>(nlohmann::json::array()), Catch::Contains("not a JSON object"));
  nlohmann::json deep = {{"kind", "Flatten"}, {"name", "x"}};
  for (int i = 0; i < 70; ++i) deep = {{"kind", "Sequential"}, {"name", "s"}, {"layers", {deep}}};
  CHECK_THROWS_WITH(io::build_architecture<float>(deep), Catch::Contains("nested more than 64"));
}
