// Masks on model parameters: the transform's forward / backward / after-step rules, pruned
// weights staying exactly zero through fit() with SGD momentum and Adam, the PyTorch-shaped
// functional API, global and structured pruning of a model, and remove().
#include <catch2/catch.hpp>

#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/train.hpp"
#include "support/datasets.hpp"

using namespace slimnet;
using slimnet::testing::blobs;
using Catch::Matchers::Contains;

namespace {

// Three Gaussian blobs in 2-d, separable with a margin.

template <class Scalar>
nn::sequential<Scalar> mlp(std::uint64_t seed) {
  rng gen(seed);
  nn::sequential<Scalar> m;
  m.add("fc1", nn::linear<Scalar>(2, 32));
  m.add("relu", nn::relu<Scalar>());
  m.add("fc2", nn::linear<Scalar>(32, 16));
  m.add("relu2", nn::relu<Scalar>());
  m.add("fc3", nn::linear<Scalar>(16, 3));
  m.reset_parameters(gen);
  return m;
}

/// Checks after every backward and every step that pruned entries have zero gradient and value.
template <class Scalar>
struct zero_watch : train::callback<Scalar> {
  std::vector<nn::parameter<Scalar>*> params;
  index_t checked_steps = 0, violations = 0, grad_violations = 0;
  void after_backward(train::train_state<Scalar>&) override {
    for (auto* p : params) {
      if (!prune::is_pruned(*p)) continue;
      const auto m = prune::mask_of(*p);
      for (index_t k = 0; k < m.size(); ++k) grad_violations += m[k] == 0 && p->grad()[k] != 0;
    }
  }
  void after_step(train::train_state<Scalar>&) override {
    bool any = false;
    for (auto* p : params) {
      if (!prune::is_pruned(*p)) continue;
      any = true;
      const auto m = prune::mask_of(*p);
      for (index_t k = 0; k < m.size(); ++k) violations += m[k] == 0 && p->value()[k] != 0;
    }
    checked_steps += any;
  }
};

/// A masking rule without the after-step re-mask, for contrast: the gradient is masked, but the
/// momentum buffer still holds gradient from before pruning and moves pruned weights.
template <class Scalar>
struct no_after_step_mask : nn::parameter_transform<Scalar> {
  tensor<Scalar> mask;
  std::string name() const override { return "no_after_step"; }
  std::shared_ptr<nn::parameter_transform<Scalar>> clone(nn::clone_memo&) const override {
    return std::make_shared<no_after_step_mask>(*this);
  }
  void forward(const tensor<Scalar>& w, tensor<Scalar>& out, bool, rng&) override {
    out.flat() = w.flat().cwiseProduct(mask.flat());
  }
  void backward(const tensor<Scalar>&, tensor<Scalar>& grad) override {
    grad.flat().array() *= mask.flat().array();
  }
};

template <class Scalar>
train::fit_options quiet(int epochs, index_t batch = 16) {
  train::fit_options o;
  o.epochs = epochs;
  o.batch_size = batch;
  o.progress = false;
  return o;
}

}  // namespace

TEMPLATE_TEST_CASE("mask transform: forward W*T, backward grad*T, after the step W*=T",
                   "[prune][transform]", float, double) {
  nn::linear<TestType> fc(4, 3);
  auto& w = fc.weight();
  const tensor<TestType> original = w.value();
  auto& mt = prune::l1_unstructured(w, 0.5);  // 6 of 12
  CHECK(mt.kept() == 6);
  CHECK(prune::count_nonzero(w.value()) == 6);  // pruned weights are zeroed at once
  for (index_t k = 0; k < 12; ++k) CHECK(w.value()[k] == original[k] * mt.mask()[k]);

  tensor<TestType> x({5, 4}), y;
  rng gen(5);
  for (index_t k = 0; k < x.size(); ++k) x[k] = static_cast<TestType>(gen.normal());
  // Put junk into a pruned weight: the forward pass must still use W*T.
  index_t pruned = 0;
  while (mt.mask()[pruned] != 0) ++pruned;
  w.value()[pruned] = 123;
  fc.forward(x, y, nn::forward_context{true, &gen});
  const auto& used = w.used_value();
  CHECK(used[pruned] == 0);
  tensor<TestType> dy(y.shape(), TestType(1)), dx;
  w.zero_grad();
  fc.backward(x, y, dy, &dx);
  CHECK(w.grad()[pruned] != 0);  // dL/dW_eff is dense
  w.transform_gradient();
  for (index_t k = 0; k < 12; ++k) {
    if (mt.mask()[k] == 0) CHECK(w.grad()[k] == 0);
  }
  w.after_step();
  CHECK(w.value()[pruned] == 0);
}

TEMPLATE_TEST_CASE("pruned weights stay exactly zero through fit() with SGD momentum and Adam",
                   "[prune][transform][fit]", float, double) {
  const auto data = blobs<TestType>(240, 1);
  for (int which = 0; which < 2; ++which) {
    auto model = mlp<TestType>(2);
    std::unique_ptr<train::optimizer<TestType>> opt;
    if (which == 0) {
      opt = std::make_unique<train::sgd<TestType>>(
          train::sgd_options{}.with_lr(0.05).with_momentum(0.9).with_weight_decay(1e-3).with_nesterov());
    } else {
      opt = std::make_unique<train::adam<TestType>>(train::adam_options{}.with_lr(0.01).with_weight_decay(1e-3));
    }
    // Epoch 0 builds momentum / Adam moments on the dense weights; pruning happens at epoch 1.
    auto params = prune::prunable_parameters(model);
    prune::one_shot<TestType> pruning(prune::magnitude_pruner<TestType>::uniform(params, 0.8), 1);
    zero_watch<TestType> watch;
    watch.params = params;
    train::fit(model, *opt, train::cross_entropy<TestType>(), data, quiet<TestType>(4),
               {&pruning, &watch});
    CHECK(watch.checked_steps == 3 * 15);
    CHECK(watch.violations == 0);
    CHECK(watch.grad_violations == 0);
    for (auto* p : params) {
      CHECK(prune::count_nonzero(p->value()) ==
            p->size() -
                static_cast<index_t>(std::floor(0.8 * static_cast<double>(p->size()) + 0.5)));
    }
    // Still learns the task with 80% of the weights gone.
    CHECK(train::evaluate(model, data, train::cross_entropy<TestType>()).accuracy > 0.95);
  }
}

TEST_CASE("the invariant test can fail: without the after-step mask, momentum revives weights",
          "[prune][transform][fit]") {
  const auto data = blobs<float>(240, 1);
  auto model = mlp<float>(2);
  train::sgd<float> opt(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
  train::fit(model, opt, train::cross_entropy<float>(), data, quiet<float>(1));
  auto& w = prune::find_parameter(model, std::string("fc2.weight"));
  auto t = std::make_shared<no_after_step_mask<float>>();
  t->mask = prune::magnitude_mask(w.value(), 0.8);
  prune::apply_mask(w.value(), t->mask);
  w.add_transform(t);
  train::fit(model, opt, train::cross_entropy<float>(), data, quiet<float>(1));
  index_t revived = 0;
  for (index_t k = 0; k < w.size(); ++k) revived += t->mask[k] == 0 && w.value()[k] != 0;
  CHECK(revived > 0);
}

TEMPLATE_TEST_CASE("PyTorch semantics: amounts are fractions of what remains; masks only shrink",
                   "[prune][functional]", float, double) {
  nn::linear<TestType> fc(10, 10);
  auto& w = fc.weight();
  prune::l1_unstructured(fc, "weight", 0.5);
  CHECK(prune::count_nonzero(w.value()) == 50);
  prune::l1_unstructured(fc, "weight", 0.5);
  CHECK(prune::count_nonzero(w.value()) == 25);
  CHECK(w.transforms().size() == 1);  // one mask, restricted twice
  // A pruned weight that somehow became the largest stays pruned.
  const auto before = prune::mask_of(w);
  index_t pruned = 0;
  while (before[pruned] != 0) ++pruned;
  w.value()[pruned] = 1000;
  prune::l1_unstructured(w, prune::amount::count(5));
  const auto after = prune::mask_of(w);
  CHECK(after[pruned] == 0);
  CHECK(w.value()[pruned] == 0);
  for (index_t k = 0; k < after.size(); ++k) CHECK(after[k] <= before[k]);
  CHECK(prune::count_nonzero(w.value()) == 20);
  CHECK(prune::sparsity(w) == Approx(0.8));
  CHECK_THROWS_WITH(
      prune::l1_unstructured(fc, "weights", 0.1),
      Contains("slimnet::prune::l1_unstructured") && Contains("no parameter 'weights'"));
  CHECK_THROWS_WITH(prune::l1_unstructured(w, 2.0),
                    Contains("slimnet::prune::l1_unstructured") && Contains("fraction = 2"));
}

TEMPLATE_TEST_CASE("method objects compute masks on plain Eigen objects and apply to parameters",
                   "[prune][functional]", float, double) {
  Eigen::Matrix<TestType, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor> w(2, 3), previous(2, 3);
  w << 1, -5, 2, 6, -3, 4;
  previous << 1, 1, 1, 0, 1, 1;
  const auto m =
      prune::l1_unstructured_method{0.4}.compute_mask(w, previous);  // round(0.4 * 5) = 2 more
  CHECK(m == (std::decay_t<decltype(m)>(2, 3) << 0, 1, 0, 0, 1, 1).finished());
  const auto rows =
      prune::ln_structured_method{prune::amount::count(1), prune::norm::l1}.compute_mask(w,
                                                                                         previous);
  // L1 over kept entries: row 0 = 8, row 1 = 3 + 4 = 7 (its 6 is already pruned): row 1 goes.
  CHECK(rows == (std::decay_t<decltype(m)>(2, 3) << 1, 1, 1, 0, 0, 0).finished());
  const auto t = prune::threshold_method{3.0}.compute_mask(w, previous);
  CHECK(t == (std::decay_t<decltype(m)>(2, 3) << 0, 1, 0, 0, 0, 1).finished());

  nn::linear<TestType> fc(3, 2);
  fc.weight().value().flat() << 1, -5, 2, 6, -3, 4;
  prune::apply(fc.weight(), prune::threshold_method{2.5});
  CHECK(prune::count_nonzero(fc.weight().value()) == 4);
  prune::remove(fc, "weight");
  CHECK_FALSE(prune::is_pruned(fc.weight()));
}

TEMPLATE_TEST_CASE("quality pruning keeps the std of the dense weights across rounds",
                   "[prune][functional]", float, double) {
  nn::linear<TestType> fc(50, 40);
  auto& w = fc.weight();
  const double dense_std = prune::weight_std(w.value());
  auto& mt = prune::quality_unstructured(w, 1.0);
  REQUIRE(mt.reference_std);
  CHECK(*mt.reference_std == Approx(dense_std));
  for (index_t k = 0; k < w.size(); ++k) {
    if (mt.mask()[k] == 1) CHECK(std::abs(static_cast<double>(w.value()[k])) > dense_std);
  }
  const index_t kept = mt.kept();
  // Same q again: same threshold (the std is not recomputed over the zeros), nothing more pruned.
  prune::quality_unstructured(w, 1.0);
  CHECK(mt.kept() == kept);
  CHECK_THROWS_WITH(prune::quality_unstructured(w, -0.5), Contains("q = -0.5"));
}

TEMPLATE_TEST_CASE("structured pruning of a Conv2d weight zeroes whole filters",
                   "[prune][functional]", float, double) {
  nn::conv2d<TestType> conv(3, 8, 3);
  auto& w = conv.weight();
  prune::ln_structured(conv, "weight", 0.25, prune::norm::l1);  // 2 of 8 filters
  const auto m = prune::mask_of(w);
  const index_t per_filter = 3 * 3 * 3;
  index_t dead = 0;
  for (index_t f = 0; f < 8; ++f) {
    const TestType s = m.matrix().row(f).sum();
    CHECK((s == 0 || s == per_filter));
    dead += s == 0;
    if (s == 0) CHECK(w.value().matrix().row(f).cwiseAbs().sum() == 0);
  }
  CHECK(dead == 2);
}

TEMPLATE_TEST_CASE("global_unstructured({&a.weight(), &b.weight()}, amount) deduces the scalar type",
                   "[prune][functional]", float, double) {
  // The documented call: a braced list of weight addresses, no explicit template argument.
  nn::linear<TestType> a(6, 4), b(4, 3);  // 24 + 12 = 36 weights
  for (index_t k = 0; k < 24; ++k) a.weight().value()[k] = TestType(0.01) * static_cast<TestType>(k + 1);
  for (index_t k = 0; k < 12; ++k) b.weight().value()[k] = -static_cast<TestType>(k + 1);  // |b| > every |a|
  prune::global_unstructured({&a.weight(), &b.weight()}, 0.5);  // half of 36: a's 18 smallest
  const auto ma = prune::mask_of(a.weight()), mb = prune::mask_of(b.weight());
  for (index_t k = 0; k < 24; ++k) CHECK(ma[k] == (k < 18 ? TestType(0) : TestType(1)));
  for (index_t k = 0; k < 12; ++k) CHECK(mb[k] == TestType(1));
  // A sparsity target counts both parameters together: 27 of 36 means all of a and b's 3 smallest.
  prune::global_unstructured({&a.weight(), &b.weight()}, prune::amount::sparsity(0.75));
  CHECK(prune::sparsity(a.weight()) == 1.0);
  const auto mb2 = prune::mask_of(b.weight());
  for (index_t k = 0; k < 12; ++k) CHECK(mb2[k] == (k < 3 ? TestType(0) : TestType(1)));
  CHECK_THROWS_WITH(prune::global_unstructured({&a.weight(), &a.weight()}, 0.1), Contains("listed twice"));
}

TEMPLATE_TEST_CASE("global_unstructured ranks the whole model; existing masks stay",
                   "[prune][functional]", float, double) {
  auto model = mlp<TestType>(3);
  auto params = prune::prunable_parameters(model);
  REQUIRE(params.size() == 3);
  CHECK(params[0]->name() == "fc1.weight");
  // Scale fc2 up so that global ranking must take from fc1 and fc3 first.
  params[1]->value().flat() *= TestType(100);
  index_t total = 0;
  for (auto* p : params) total += p->size();
  std::vector<tensor<TestType>> saved;
  for (auto* p : params) saved.push_back(p->value());
  prune::global_unstructured(params, prune::amount::sparsity(0.5));
  index_t zeros = 0;
  for (auto* p : params) zeros += p->size() - prune::count_nonzero(p->value());
  CHECK(zeros == total / 2);
  // One ranking: no pruned weight (of any parameter) is larger than a kept one (of any parameter),
  // and the scaled-up fc2 loses a smaller share than fc1 and fc3.
  double max_pruned = 0, min_kept = 1e30;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto m = prune::mask_of(*params[i]);
    for (index_t k = 0; k < m.size(); ++k) {
      const double a = std::abs(static_cast<double>(saved[i][k]));
      if (m[k] == 0)
        max_pruned = std::max(max_pruned, a);
      else
        min_kept = std::min(min_kept, a);
    }
  }
  CHECK(max_pruned <= min_kept);
  CHECK(prune::sparsity(*params[1]) < 0.5);
  CHECK(prune::sparsity(*params[0]) > 0.9);
  // PyTorch fraction semantics: half of what remains, over all parameters.
  prune::global_unstructured(params, 0.5);
  zeros = 0;
  for (auto* p : params) zeros += p->size() - prune::count_nonzero(p->value());
  CHECK(total == 624);
  CHECK(zeros == 312 + 156);
  CHECK_THROWS_WITH(
      prune::global_unstructured(std::vector<nn::parameter<TestType>*>{params[0], params[0]}, 0.1),
      Contains("listed twice"));
  // A braced list deduces the scalar type: half of what remains again.
  prune::global_unstructured({params[0], params[1], params[2]}, 0.5);
  zeros = 0;
  for (auto* p : params) zeros += p->size() - prune::count_nonzero(p->value());
  CHECK(zeros == 312 + 156 + 78);
}

TEMPLATE_TEST_CASE("remove bakes W*T and drops only the mask", "[prune][functional]", float,
                   double) {
  auto model = mlp<TestType>(4);
  auto& w = prune::find_parameter(model, std::string("fc2.weight"));
  prune::l1_unstructured(w, 0.7);
  tensor<TestType> x({3, 2}, TestType(0.5)), before, after;
  model.forward(x, before, {});
  prune::remove(w);
  CHECK_FALSE(prune::is_pruned(w));
  CHECK(w.transforms().empty());
  model.forward(x, after, {});
  CHECK(after.flat() == before.flat());
  CHECK(prune::sparsity(w) == Approx(0.7).margin(1.0 / static_cast<double>(w.size())));
  CHECK_THROWS_WITH(prune::remove(w), Contains("slimnet::prune::remove") &&
                                          Contains("'fc2.weight' has no pruning mask"));
  prune::l1_unstructured(w, 0.1);
  prune::l1_unstructured(prune::find_parameter(model, std::string("fc1.weight")), 0.1);
  CHECK(prune::remove_all(model) == 2);
  CHECK_THROWS_WITH(prune::find_parameter(model, std::string("fc9.weight")),
                    Contains("no parameter named 'fc9.weight'") && Contains("fc1.weight"));
}

TEST_CASE("masks refuse weights resized under them and DNS-masked parameters",
          "[prune][transform][errors]") {
  nn::linear<float> fc(4, 3);
  prune::l1_unstructured(fc.weight(), 0.5);
  fc.weight().assign(tensor<float>({2, 4}, 1.0f));
  tensor<float> x({1, 4}, 1.0f), y;
  CHECK_THROWS_AS(fc.forward(x, y, {}), shape_error);

  nn::linear<float> other(4, 3);
  prune::attach_dns(other.weight(), other.bias(), prune::dns_options{});
  CHECK_THROWS_WITH(prune::l1_unstructured(other.weight(), 0.5), Contains("carries a 'dns' mask"));
}

TEST_CASE("a cloned pruned model owns its masks", "[prune]") {
  rng gen(4);
  auto model = nn::models::lenet_300_100<float>(gen);
  auto& fc1 = static_cast<nn::linear<float>&>(model.find("fc1"));
  prune::l1_unstructured(fc1, "weight", 0.5);
  nn::sequential<float> copy(model);
  auto& fc1_copy = static_cast<nn::linear<float>&>(copy.find("fc1"));
  prune::l1_unstructured(fc1_copy, "weight", 0.5);  // prunes the copy further
  CHECK(prune::sparsity(prune::mask_of(fc1.weight())) == Approx(0.5).margin(1e-6));
  CHECK(prune::sparsity(prune::mask_of(fc1_copy.weight())) == Approx(0.75).margin(1e-6));
}

TEST_CASE("prune first, then quantize: the reversed order is refused", "[prune][transform][compose]") {
  nn::linear<float> fc(8, 6);
  quant::share_weights(fc.weight(), quant::kmeans(fc.weight().value(), 4));
  CHECK_THROWS_WITH(prune::l1_unstructured(fc.weight(), 0.5),
                    Contains("slimnet::prune::l1_unstructured") && Contains("'weight'") &&
                        Contains("codebook(k-means k=4)") && Contains("prune before quantizing"));
  nn::linear<float> bc(8, 6);
  quant::attach_binary_connect(bc.weight());
  CHECK_THROWS_WITH(prune::global_unstructured(prune::prunable_parameters(bc),
                                               prune::amount::sparsity(0.5)),
                    Contains("binary_connect") && Contains("prune before quantizing"));
  // The refused prune changed nothing: no mask, W still on the codebook.
  CHECK_FALSE(prune::is_pruned(fc.weight()));
  CHECK(!fc.weight().support());
}

TEST_CASE("a mask is the parameter's support; freeze turns DNS surgery into a fixed mask",
          "[prune][transform][compose]") {
  rng gen(2);
  nn::linear<double> fc(10, 8);
  fc.reset_parameters(gen);
  CHECK(!fc.weight().support());
  prune::l1_unstructured(fc.weight(), 0.5);
  REQUIRE(fc.weight().support());
  CHECK(fc.weight().support()->flat() == prune::mask_of(fc.weight()).flat());

  nn::linear<double> d(10, 8);
  d.reset_parameters(gen);
  prune::dns_options o;
  o.c_rate = 0.0;  // t = mean |w|: prunes a good part of the weights at once
  prune::attach_dns(d.weight(), nullptr, o);
  REQUIRE(prune::count_nonzero(prune::mask_of(d.weight())) < d.weight().size());
  // A codebook on the running DNS mask: the mask changes (a surgery pruning one more weight),
  // and the forward pass refuses to share centroids with it.
  {
    nn::linear<double> running(d);
    auto cb = quant::kmeans(running.weight().value(), 4, {}, quant::support_of(running.weight()));
    quant::share_weights(running.weight(), cb);
    auto* dns = dynamic_cast<prune::dns_transform<double>*>(running.weight().transforms()[0].get());
    REQUIRE(dns != nullptr);
    index_t survivor = 0;
    while (dns->mask()[survivor] == 0 ||
           running.weight().value()[survivor] == 0.0)
      ++survivor;
    dns->mutable_mask()[survivor] = 0;
    tensor<double> x({2, 10}, 1.0), y;
    CHECK_THROWS_WITH(running.forward(x, y, {}),
                      Contains("codebook_transform::forward") && Contains("prune::freeze"));
  }
  // freeze: one magnitude mask with DNS's T, W zeroed where T = 0; then quantizing works. (The
  // copy above shares its DNS transform with `d`, so T here includes the weight it pruned.)
  const tensor<double> dns_mask = prune::mask_of(d.weight());
  REQUIRE(prune::count_nonzero(dns_mask) > 0);
  prune::freeze(d.weight());
  REQUIRE(d.weight().transforms().size() == 1);
  CHECK(dynamic_cast<prune::mask_transform<double>*>(d.weight().transforms()[0].get()) != nullptr);
  CHECK(prune::mask_of(d.weight()).flat() == dns_mask.flat());
  for (index_t i = 0; i < d.weight().size(); ++i)
    if (dns_mask[i] == 0) CHECK(d.weight().value()[i] == 0.0);
  quant::share_weights(d.weight(),
                       quant::kmeans(d.weight().value(), 4, {}, quant::support_of(d.weight())));
  tensor<double> x({2, 10}, 1.0), y;
  CHECK_NOTHROW(d.forward(x, y, {}));
  CHECK_THROWS_WITH(prune::freeze(*fc.bias()), Contains("has no pruning mask"));
}
