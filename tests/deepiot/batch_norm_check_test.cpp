// DeepIoT's stop-rule check evaluates the hard-masked network with BatchNorm statistics
// re-estimated under that mask (deepiot_options::batch_norm_batches), not with the statistics the
// critic's training passes averaged under random Bernoulli masks; the re-estimation does not
// change the compressor-critic training itself.
#include <catch2/catch.hpp>

#include <cmath>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"
#include "support/datasets.hpp"

using namespace slimnet;

namespace {
/// fc1 -> bn1 -> relu1 -> [gate] -> fc2 -> bn2 -> relu2 -> [gate] -> fc3: bn2 normalises the
/// output of fc2 on gated inputs, so its statistics depend on the mask.
nn::sequential<float> bn_mlp() {
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(2, 16));
  m.add("bn1", nn::batch_norm1d<float>(16));
  m.add("relu1", nn::relu<float>());
  m.add("fc2", nn::linear<float>(16, 16));
  m.add("bn2", nn::batch_norm1d<float>(16));
  m.add("relu2", nn::relu<float>());
  m.add("fc3", nn::linear<float>(16, 3));
  rng gen(21);
  m.reset_parameters(gen);
  return m;
}

struct bn_check_run {
  deepiot::compress_result<float> result;
  deepiot::compress_check check;
  deepiot::gated_model<float> g;
};

bn_check_run run_bn_check(const data::dataset<float>& train_set, const data::dataset<float>& heldout, index_t bn_batches) {
  bn_check_run r;
  r.g = deepiot::attach_gates(bn_mlp());
  REQUIRE(r.g.layers.size() == 2);
  deepiot::deepiot_options o;
  o.batch_size = 16;
  o.eval_batch = train_set.size();  // one re-estimation batch = the whole training set: order-free statistics
  o.batch_norm_batches = bn_batches;
  o.tau = {0.9, 0.0, 1, 0.9};  // a fresh compressor gives p well below 0.9 for most units
  o.stop = {1.0, 0.0, 1000, 5};  // one check, after the last iteration
  r.result = deepiot::compress(r.g, train_set, heldout, o, [&](const deepiot::compress_check& c) { r.check = c; });
  return r;
}

std::vector<float> bn2_statistics(deepiot::gated_model<float>& g) {
  std::vector<float> v;
  g.net.visit_parameters([&](nn::parameter<float>& p) {
    if (p.name().rfind("bn2.running_", 0) == 0)
      for (index_t i = 0; i < p.size(); ++i) v.push_back(p.value()[i]);
  });
  return v;
}
}  // namespace

TEST_CASE("DeepIoT's check re-estimates BatchNorm statistics under the hard mask", "[deepiot][batch_norm]") {
  const auto train_set = slimnet::testing::blobs<float>(150, 1), heldout = slimnet::testing::blobs<float>(90, 2);
  auto with = run_bn_check(train_set, heldout, 1);
  auto without = run_bn_check(train_set, heldout, 0);
  REQUIRE(with.check.iteration == 5);
  REQUIRE(without.check.iteration == 5);
  // The same training (the re-estimation has its own generator and the training passes normalise
  // with batch statistics): the same keep probabilities, so the same hard mask.
  for (std::size_t k = 0; k < 2; ++k) CHECK(with.result.probabilities[k] == without.result.probabilities[k]);
  CHECK(with.check.kept == without.check.kept);
  const auto kept_units = with.check.kept[0] + with.check.kept[1];
  CHECK(kept_units < 32);  // some units pruned: a hard mask unlike the training masks

  // Reference: the hard mask of the check (kept units scaled by p: harden with folding), then the
  // statistics of one pass over the whole training set.
  const auto left = bn2_statistics(with.g);
  deepiot::harden(with.g, with.result.probabilities, with.result.tau, true);
  rng gen(77);
  REQUIRE(train::recalibrate_batch_norm(with.g.net, train_set, 1, train_set.size(), gen) == 2);
  const auto reference = bn2_statistics(with.g);
  REQUIRE(left.size() == 32);
  double differs = 0;
  for (std::size_t i = 0; i < left.size(); ++i) {
    CHECK(left[i] == Approx(reference[i]).epsilon(1e-4).margin(1e-5));
    differs = std::max(differs, static_cast<double>(std::abs(bn2_statistics(without.g)[i] - reference[i])));
  }
  CHECK(differs > 1e-2);  // the random masks' statistics are another thing: the comparison above can fail
  // The accuracy the stop rule saw is the hard-masked network's with these statistics.
  const double acc = train::evaluate(with.g.net, heldout, train::cross_entropy<float>()).accuracy;
  CHECK(std::abs(acc - with.check.accuracy) <= 1.0 / static_cast<double>(heldout.size()) + 1e-12);

  deepiot::deepiot_options bad;
  bad.batch_norm_batches = -1;
  CHECK_THROWS_MATCHES(bad.validate(), config_error, Catch::Matchers::Predicate<config_error>([](const config_error& e) {
                         return std::string(e.what()).find("batch_norm_batches = -1") != std::string::npos;
                       }));
}
