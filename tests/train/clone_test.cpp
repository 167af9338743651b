// A cloned model carrying weight transforms is independent of the original: training the copy
// moves none of the original's weights, masks, centroids, DNS state or random streams, and the
// copy trains exactly as the original would have (its transforms' state was copied, not reset).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/train.hpp"
#include "support/datasets.hpp"

using namespace slimnet;

namespace {

/// Everything a model's training can change: each parameter's value, the transforms' view of it
/// (forward_value in evaluation) and the support of each pruned parameter.
std::vector<std::vector<float>> clone_test_snapshot(nn::layer<float>& model) {
  std::vector<std::vector<float>> s;
  model.visit_parameters([&](nn::parameter<float>& p) {
    s.emplace_back(p.value().data(), p.value().data() + p.size());
    const tensor<float>& eff = p.forward_value(nn::forward_context{});
    s.emplace_back(eff.data(), eff.data() + eff.size());
    if (auto sup = p.support()) s.emplace_back(sup->data(), sup->data() + sup->size());
  });
  return s;
}

nn::sequential<float> clone_test_mlp() {
  rng gen(3);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(2, 16));
  m.add("relu", nn::relu<float>());
  m.add("fc2", nn::linear<float>(16, 3));
  m.reset_parameters(gen);
  return m;
}

void clone_test_train(nn::layer<float>& model, std::uint64_t seed) {
  const auto data = testing::blobs<float>(96, 5);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit_options o;
  o.epochs = 3;
  o.batch_size = 16;
  o.seed = seed;
  o.progress = false;
  train::fit(model, opt, train::cross_entropy<float>{}, data, o);
}

struct clone_test_case {
  std::string name;
  std::function<void(nn::sequential<float>&)> attach;
};

std::vector<clone_test_case> clone_test_cases() {
  auto weight = [](nn::sequential<float>& m, const char* layer) -> nn::parameter<float>& {
    return prune::find_parameter(m.find(layer), "weight", "clone_test");
  };
  return {
      {"magnitude mask", [=](nn::sequential<float>& m) { prune::l1_unstructured(weight(m, "fc1"), prune::amount::sparsity(0.5)); }},
      {"DNS (weight and bias share a group)",
       [=](nn::sequential<float>& m) {
         prune::dns_options o;
         o.c_rate = 0.2;
         o.gamma = 1e-4;
         prune::attach_dns(m.find("fc1"), o);
       }},
      {"k-means codebook on a pruned weight",
       [=](nn::sequential<float>& m) {
         auto& p = weight(m, "fc1");
         prune::l1_unstructured(p, prune::amount::sparsity(0.5));
         quant::share_weights(p, quant::kmeans(p.value(), 4, quant::kmeans_options{}, quant::support_of(p)));
       }},
      {"fixed point, stochastic rounding",
       [=](nn::sequential<float>& m) {
         quant::fixed_point_weight_options o;
         o.format = {2, 6};
         quant::attach_fixed_point(weight(m, "fc1"), o);
       }},
      {"BinaryConnect, stochastic", [=](nn::sequential<float>& m) {
         quant::binary_connect_options o;
         o.mode = quant::binarization::stochastic;
         quant::attach_binary_connect(weight(m, "fc2"), o);
       }},
      {"int8", [=](nn::sequential<float>& m) { quant::attach_int8(weight(m, "fc2")); }},
  };
}

}  // namespace

TEST_CASE("training a cloned model leaves the original unchanged, for every weight transform", "[train][clone]") {
  for (const auto& c : clone_test_cases()) {
    for (const bool by_clone : {true, false}) {
      INFO(c.name << (by_clone ? ", layer::clone()" : ", copy constructor"));
      auto original = clone_test_mlp();
      c.attach(original);
      const auto before = clone_test_snapshot(original);

      std::unique_ptr<nn::layer<float>> copy = by_clone ? original.clone() : std::make_unique<nn::sequential<float>>(original);
      CHECK(clone_test_snapshot(*copy) == before);
      // No transform object is shared between the copy and the original.
      std::vector<const void*> mine, theirs;
      original.visit_parameters([&](nn::parameter<float>& p) {
        for (const auto& t : p.transforms()) mine.push_back(t.get());
      });
      copy->visit_parameters([&](nn::parameter<float>& p) {
        for (const auto& t : p.transforms()) theirs.push_back(t.get());
      });
      REQUIRE(mine.size() == theirs.size());
      REQUIRE(!mine.empty());
      for (const void* t : theirs) CHECK(std::find(mine.begin(), mine.end(), t) == mine.end());

      clone_test_train(*copy, 7);
      CHECK(clone_test_snapshot(*copy) != before);  // the copy did train
      CHECK(clone_test_snapshot(original) == before);

      // The copy carried the transforms' state: the original, trained the same way now, ends
      // where the copy did (same masks, centroids, DNS draws, rounding streams).
      clone_test_train(original, 7);
      CHECK(clone_test_snapshot(original) == clone_test_snapshot(*copy));
    }
  }
}

TEST_CASE("a cloned DNS layer keeps one group for its weight and bias, apart from the original's", "[train][clone][dns]") {
  auto original = clone_test_mlp();
  prune::dns_options o;
  o.c_rate = 0.2;
  auto group = prune::attach_dns(original.find("fc1"), o);
  auto copy = original.clone();
  std::vector<prune::dns_group<float>*> groups;
  copy->visit_parameters([&](nn::parameter<float>& p) {
    for (const auto& t : p.transforms())
      if (auto* d = dynamic_cast<prune::dns_transform<float>*>(t.get())) groups.push_back(&d->group());
  });
  REQUIRE(groups.size() == 2);  // fc1.weight and fc1.bias
  CHECK(groups[0] == groups[1]);
  CHECK(groups[0] != group.get());
  clone_test_train(*copy, 2);
  CHECK(groups[0]->iteration() == 18);  // 3 epochs x 6 batches
  CHECK(group->iteration() == 0);
}

TEST_CASE("the step context counts a training run's steps", "[train][step]") {
  struct recorder : nn::parameter_transform<float> {
    std::shared_ptr<std::vector<std::int64_t>> seen = std::make_shared<std::vector<std::int64_t>>();
    std::string name() const override { return "recorder"; }
    void forward(const tensor<float>& w, tensor<float>& w_eff, bool, rng&) override { w_eff.flat() = w.flat(); }
    void after_step(tensor<float>&, const nn::step_context& s) override { seen->push_back(s.step); }
    std::shared_ptr<nn::parameter_transform<float>> clone(nn::clone_memo&) const override { return std::make_shared<recorder>(*this); }
  };
  auto model = clone_test_mlp();
  auto r = std::make_shared<recorder>();
  prune::find_parameter(model.find("fc2"), "weight", "clone_test").add_transform(r);
  clone_test_train(model, 1);
  REQUIRE(r->seen->size() == 18);
  for (std::size_t i = 0; i < r->seen->size(); ++i) CHECK((*r->seen)[i] == static_cast<std::int64_t>(i + 1));
}

TEST_CASE("the step context reaches the unit (output) transforms too", "[train][step]") {
  struct unit_recorder : nn::unit_transform<float> {
    std::shared_ptr<std::vector<std::int64_t>> seen = std::make_shared<std::vector<std::int64_t>>();
    std::string name() const override { return "UnitRecorder"; }
    index_t units() const override { return 0; }
    void forward(const tensor<float>& x, tensor<float>& y, const nn::forward_context&) override { y = x; }
    void backward(const tensor<float>&, const tensor<float>& dy, tensor<float>& dx) override { dx = dy; }
    void after_step(const nn::step_context& s) override { seen->push_back(s.step); }
    std::shared_ptr<nn::unit_transform<float>> clone(nn::clone_memo&) const override {
      return std::make_shared<unit_recorder>(*this);
    }
  };
  auto model = clone_test_mlp();
  auto r = std::make_shared<unit_recorder>();
  model.add("recorder", nn::unit_transform_layer<float, unit_recorder>(r));
  clone_test_train(model, 1);
  REQUIRE(r->seen->size() == 18);  // 3 epochs x 6 batches, one call per optimizer step
  for (std::size_t i = 0; i < r->seen->size(); ++i) CHECK((*r->seen)[i] == static_cast<std::int64_t>(i + 1));
}
