// Checkpoints: a run stopped midway (an exception in the middle of an epoch, as a crash would),
// destroyed, rebuilt from scratch and resumed from its last checkpoint ends with the same bits as
// a run never stopped: parameters, masks, DNS draws and counters, optimizer moments and
// generators. Each case also checks that the resumed part did train (the final state differs from
// the checkpoint's), so a resume that silently restarted or skipped epochs cannot pass. Then the
// errors (every damaged or mismatched checkpoint is refused, naming the problem, and leaves the
// model untouched) and the atomic write (an existing checkpoint survives a write that fails
// midway). DeepIoT's compressor-critic run resumes the same way.
#include <catch2/catch.hpp>

#include <signal.h>
#include <sys/resource.h>

#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../support/datasets.hpp"
#include "../support/files.hpp"
#include "../support/temp_dir.hpp"
#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/prune.hpp"
#include "slimnet/quant.hpp"
#include "slimnet/train.hpp"
#include "slimnet/train/checkpoint.hpp"

using namespace slimnet;

namespace ckpt_fixture {

/// Thrown by stop_at to stop a run in the middle of an epoch.
struct stopped {};

/// Stops fit after step `step` of epoch `epoch` (both from 0), checkpoint of epoch-1 already on disk.
template <class Scalar>
struct stop_at : train::callback<Scalar> {
  int epoch;
  index_t step;
  stop_at(int e, index_t s) : epoch(e), step(s) {}
  void after_step(train::train_state<Scalar>& s) override {
    if (s.epoch == epoch && s.batch_in_epoch == step) throw stopped{};
  }
};

/// Everything a run leaves behind: parameters, transform states, optimizer state, by name.
template <class Scalar>
nn::state_dict<Scalar> full_state(nn::layer<Scalar>& model, const train::optimizer<Scalar>& opt) {
  nn::state_dict<Scalar> d;
  nn::state_writer<Scalar> w(d);
  train::detail::write_model_state(model, w, "test");
  auto o = w.scope("optimizer");
  opt.save_state(model, o);
  return d;
}

template <class Scalar>
bool same_bits(const tensor<Scalar>& a, const tensor<Scalar>& b) {
  return a.shape() == b.shape() && std::memcmp(a.data(), b.data(), sizeof(Scalar) * static_cast<std::size_t>(a.size())) == 0;
}

/// Bitwise equality of two state dicts; reports the first differing key.
template <class Scalar>
bool same_state(const nn::state_dict<Scalar>& a, const nn::state_dict<Scalar>& b) {
  if (a.keys() != b.keys()) {
    UNSCOPED_INFO("the key sets differ");
    return false;
  }
  for (const auto& [k, t] : a.tensors) {
    if (!same_bits(t, b.tensors.at(k))) {
      UNSCOPED_INFO("tensor " << k << " differs");
      return false;
    }
  }
  for (const auto& [k, v] : a.reals) {
    if (std::memcmp(&v, &b.reals.at(k), sizeof v) != 0) {
      UNSCOPED_INFO("real " << k << " differs");
      return false;
    }
  }
  return a.integer_arrays == b.integer_arrays && a.integers == b.integers && a.generators == b.generators && a.texts == b.texts;
}

/// 8x8 images of 3 classes: a bright band in the top, middle or bottom rows, plus noise.
template <class Scalar>
data::dataset<Scalar> bands(index_t n, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<Scalar> d;
  d.num_classes = 3;
  d.inputs.resize({n, 1, 8, 8});
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(i % 3);
    d.labels.push_back(c);
    for (index_t p = 0; p < 64; ++p) {
      const bool band = p / 8 >= 1 + 2 * c && p / 8 < 3 + 2 * c;
      d.inputs[i * 64 + p] = static_cast<Scalar>((band ? 1.0 : 0.0) + 0.3 * gen.normal());
    }
  }
  return d;
}

template <class Scalar>
nn::sequential<Scalar> mlp(std::uint64_t seed, index_t hidden = 16) {
  rng gen(seed);
  nn::sequential<Scalar> m;
  m.add("fc1", nn::linear<Scalar>(2, hidden));
  m.add("relu1", nn::relu<Scalar>());
  m.add("drop", nn::dropout<Scalar>(0.3));
  m.add("fc2", nn::linear<Scalar>(hidden, 3));
  m.reset_parameters(gen);
  return m;
}

template <class Scalar>
nn::sequential<Scalar> cnn(std::uint64_t seed) {
  rng gen(seed);
  nn::sequential<Scalar> m;
  m.add("conv1", nn::conv2d<Scalar>(1, 4, 3));
  m.add("relu1", nn::relu<Scalar>());
  m.add("pool1", nn::max_pool2d<Scalar>(2));
  m.add("flatten", nn::flatten<Scalar>());
  m.add("fc1", nn::linear<Scalar>(36, 16));
  m.add("relu2", nn::relu<Scalar>());
  m.add("drop", nn::dropout<Scalar>(0.2));
  m.add("fc2", nn::linear<Scalar>(16, 3));
  m.reset_parameters(gen);
  return m;
}

/// Runs `epochs` epochs uninterrupted, then the same run stopped at (stop_epoch, stop_step) with a
/// checkpoint every o.checkpoint_every epochs, everything destroyed, rebuilt by `build` /
/// `make_opt` and resumed (from epoch `resume_epoch`, stop_epoch by default). Checks that both
/// end with the same bits and that the resumed part trained.
template <class Scalar, class Build, class MakeOpt>
void check_resume(const std::string& name, const Build& build, const MakeOpt& make_opt, const data::dataset<Scalar>& d,
                  train::fit_options o, int stop_epoch, index_t stop_step, int resume_epoch = -1) {
  if (resume_epoch < 0) resume_epoch = stop_epoch;
  const auto dir = testing::temp_dir("slimnet_checkpoint_" + name);
  const auto path = dir / "run.ckpt";
  o.progress = false;
  o.checkpoint_path.clear();
  train::cross_entropy<Scalar> loss;

  nn::state_dict<Scalar> uninterrupted;
  {
    auto m = build();
    auto opt = make_opt();
    const auto h = train::fit(m, *opt, loss, d, o);
    REQUIRE(static_cast<int>(h.epochs.size()) == o.epochs);
    uninterrupted = full_state(m, *opt);
  }
  {
    auto m = build();
    auto opt = make_opt();
    auto stopping = o;
    stopping.checkpoint_path = path;
    stop_at<Scalar> stop(stop_epoch, stop_step);
    REQUIRE_THROWS_AS(train::fit(m, *opt, loss, d, stopping, {&stop}), stopped);
  }  // model and optimizer destroyed: only the file remains
  REQUIRE(std::filesystem::exists(path));
  nn::state_dict<Scalar> at_checkpoint, resumed;
  {
    auto m = build();
    auto opt = make_opt();
    train::load_checkpoint<Scalar>(path, m, opt.get());
    at_checkpoint = full_state(m, *opt);
  }
  {
    auto m = build();
    auto opt = make_opt();
    auto resuming = o;
    resuming.resume_from = path;
    const auto h = train::fit(m, *opt, loss, d, resuming);
    REQUIRE(static_cast<int>(h.epochs.size()) == o.epochs - resume_epoch);
    CHECK(h.epochs.front().epoch == resume_epoch);
    resumed = full_state(m, *opt);
  }
  CHECK(same_state(uninterrupted, resumed));
  CHECK_FALSE(same_state(at_checkpoint, resumed));  // the resumed epochs did train
}

template <class Scalar>
std::unique_ptr<train::optimizer<Scalar>> momentum_sgd() {
  return std::make_unique<train::sgd<Scalar>>(train::sgd_options{}.with_lr(0.05).with_momentum(0.9));
}

template <class Scalar>
train::fit_options small_run(int epochs) {
  train::fit_options o;
  o.epochs = epochs;
  o.batch_size = 8;
  o.seed = 21;
  o.progress = false;
  return o;
}

/// The message of the `Error` that `f` throws ("" when it throws nothing; another type escapes).
template <class Error, class F>
std::string error_of(const F& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

/// A file whose every tensor and metadata entry is as written, except one byte.
inline void flip_byte(const std::filesystem::path& path, std::size_t offset_from_end) {
  auto bytes = testing::read_bytes(path);
  REQUIRE(bytes.size() > offset_from_end);
  bytes[bytes.size() - 1 - offset_from_end] ^= 0x10;
  testing::write_bytes(path, bytes);
}

}  // namespace ckpt_fixture

using namespace ckpt_fixture;

TEST_CASE("rng state round trip continues the stream, cached normal deviate included", "[train][checkpoint]") {
  rng a(99);
  a.normal();  // leaves the pair's second deviate cached
  rng b(1);
  b.set_state(a.state());
  CHECK(b.state() == a.state());
  for (int i = 0; i < 5; ++i) {
    const double x = a.normal(), y = b.normal();
    CHECK(std::memcmp(&x, &y, sizeof x) == 0);
    CHECK(a() == b());
  }
  rng::state_type zero;
  CHECK_FALSE(rng::valid_state(zero));
  CHECK(rng::valid_state(a.state()));
}

TEMPLATE_TEST_CASE("an MLP with dropout, momentum SGD and a step schedule resumes bitwise", "[train][checkpoint]", float, double) {
  const auto d = testing::blobs<TestType>(60, 4);
  auto o = small_run<TestType>(4);
  o.learning_rate = train::step_lr(0.05, 2, 0.5);  // the resumed run must pick up the schedule at epoch 2
  check_resume<TestType>("mlp", [] { return mlp<TestType>(7); }, [] { return momentum_sgd<TestType>(); }, d, o, 2, 3);
}

TEST_CASE("a conv net with Adam resumes bitwise", "[train][checkpoint]") {
  const auto d = bands<float>(48, 5);
  const auto adam = [] { return std::make_unique<train::adam<float>>(train::adam_options{}.with_lr(0.01)); };
  check_resume<float>("cnn", [] { return cnn<float>(11); }, adam, d, small_run<float>(3), 1, 2);
}

TEMPLATE_TEST_CASE("DNS resumes bitwise: masks, surgery draws, counters, shared group", "[train][checkpoint][dns]", float, double) {
  const auto d = bands<TestType>(48, 6);
  const auto build = [] {
    auto m = cnn<TestType>(12);
    prune::dns_options o;
    o.c_rate = 0.5;
    o.gamma = 0.05;
    o.iter_stop = 40;
    prune::attach_dns(m, std::map<std::string, prune::dns_options>{{"conv1", o}, {"fc1", o}, {"fc2", o}});
    return m;
  };
  check_resume<TestType>("dns", build, [] { return momentum_sgd<TestType>(); }, d, small_run<TestType>(3), 2, 1);

  // The group is restored in place: weight and bias still share it, and it holds the draws.
  const auto dir = testing::temp_dir("slimnet_checkpoint_dns_group");
  auto m = build();
  auto opt = momentum_sgd<TestType>();
  auto o = small_run<TestType>(2);
  o.checkpoint_path = dir / "dns.ckpt";
  train::fit(m, *opt, train::cross_entropy<TestType>(), d, o);
  auto fresh = build();
  auto fresh_opt = momentum_sgd<TestType>();
  train::load_checkpoint<TestType>(o.checkpoint_path, fresh, fresh_opt.get());
  auto& w = static_cast<nn::linear<TestType>&>(fresh[4]).weight();
  auto& b = *static_cast<nn::linear<TestType>&>(fresh[4]).bias();
  auto* tw = dynamic_cast<prune::dns_transform<TestType>*>(w.transforms().at(0).get());
  auto* tb = dynamic_cast<prune::dns_transform<TestType>*>(b.transforms().at(0).get());
  REQUIRE(tw != nullptr);
  REQUIRE(tb != nullptr);
  CHECK(&tw->group() == &tb->group());
  CHECK(tw->group().iteration() == 2 * 6);  // 48 examples / batch 8 = 6 steps per epoch
  auto* orig = dynamic_cast<prune::dns_transform<TestType>*>(static_cast<nn::linear<TestType>&>(m[4]).weight().transforms().at(0).get());
  CHECK(tw->group().surgeries() == orig->group().surgeries());
  CHECK(tw->group().totals().pruned == orig->group().totals().pruned);
  CHECK(same_bits(tw->mask(), orig->mask()));
  CHECK(prune::count_nonzero(tw->mask()) < tw->mask().size());  // surgery did prune
}

TEST_CASE("stochastic BinaryConnect and stochastic fixed point resume bitwise", "[train][checkpoint][binary]") {
  const auto d = bands<float>(48, 7);
  const auto build = [] {
    auto m = cnn<float>(13);
    quant::binary_connect_options o;
    o.mode = quant::binarization::stochastic;
    quant::attach_binary_connect(static_cast<nn::linear<float>&>(m[4]).weight(), o);
    quant::fixed_point_weight_options f;
    f.format = quant::fixed_point_format{2, 6};
    f.mode = quant::rounding::stochastic;
    f.keep_real_copy = false;  // after_step rounds with the transform's own generator
    f.seed = 3;
    quant::attach_fixed_point(static_cast<nn::linear<float>&>(m[7]).weight(), f);
    return m;
  };
  check_resume<float>("binary", build, [] { return momentum_sgd<float>(); }, d, small_run<float>(3), 1, 4);
}

TEST_CASE("a magnitude mask, a k-means codebook and int8 weights resume bitwise", "[train][checkpoint][quant]") {
  const auto d = bands<double>(48, 8);
  const auto build = [] {
    auto m = cnn<double>(15);
    prune::l1_unstructured(static_cast<nn::conv2d<double>&>(m[0]).weight(), 0.5);
    auto& fc1 = static_cast<nn::linear<double>&>(m[4]).weight();
    quant::share_weights(fc1, quant::kmeans(fc1.value(), 4));
    quant::attach_int8(static_cast<nn::linear<double>&>(m[7]).weight());
    return m;
  };
  check_resume<double>("compose", build, [] { return momentum_sgd<double>(); }, d, small_run<double>(3), 2, 2);
}

TEST_CASE("checkpoint_every: a run stopped between checkpoints resumes from the last one", "[train][checkpoint]") {
  const auto d = testing::blobs<float>(60, 8);
  auto o = small_run<float>(5);
  o.checkpoint_every = 2;  // after 2 and 4 epochs: stopped in the 4th (index 3), it resumes at index 2
  const auto dir = testing::temp_dir("slimnet_checkpoint_every");
  o.checkpoint_path = dir / "run.ckpt";
  {
    auto m = mlp<float>(3);
    auto opt = momentum_sgd<float>();
    stop_at<float> stop(3, 1);
    REQUIRE_THROWS_AS(train::fit(m, *opt, train::cross_entropy<float>(), d, o, {&stop}), stopped);
  }
  auto m = mlp<float>(3);
  auto opt = momentum_sgd<float>();
  int epoch = -1;
  train::load_checkpoint<float>(o.checkpoint_path, m, opt.get(),
                                [&](const nn::state_reader<float>& in) { epoch = static_cast<int>(in.get_integer("epoch")); });
  CHECK(epoch == 2);
  check_resume<float>("every_resume", [] { return mlp<float>(3); }, [] { return momentum_sgd<float>(); }, d, o, 3, 1, 2);
}

TEST_CASE("optimizer state is saved and loaded by parameter name, with named errors", "[train][checkpoint]") {
  const auto d = testing::blobs<double>(30, 9);
  auto a = mlp<double>(1);
  train::rmsprop<double> opt(train::rmsprop_options{}.with_lr(0.01).with_alpha(0.9).with_momentum(0.5));
  auto o = small_run<double>(1);
  train::fit(a, opt, train::cross_entropy<double>(), d, o);
  nn::state_dict<double> saved;
  nn::state_writer<double> w(saved);
  opt.save_state(a, w);
  REQUIRE(saved.tensors.count("fc1.weight/a") == 1);
  REQUIRE(saved.tensors.count("fc2.bias/b") == 1);

  // Into a rebuilt model (new parameter identities): the same next step.
  auto b = mlp<double>(1);
  b.visit_parameters([&](nn::parameter<double>& p) {
    a.visit_parameters([&](nn::parameter<double>& q) {
      if (q.name() == p.name()) p.value() = q.value();
    });
  });
  train::rmsprop<double> opt_b(
      train::rmsprop_options{}.with_lr(0.5).with_alpha(0.9).with_momentum(0.5));  // another rate: restored from the state
  opt_b.load_state(b, nn::state_reader<double>(saved));
  CHECK(opt_b.learning_rate() == opt.learning_rate());
  auto o2 = small_run<double>(1);
  o2.seed = 77;
  train::fit(a, opt, train::cross_entropy<double>(), d, o2);
  train::fit(b, opt_b, train::cross_entropy<double>(), d, o2);
  CHECK(same_state(full_state(a, opt), full_state(b, opt_b)));

  // A model with another width: the buffer of the wrong size is named.
  auto wide = mlp<double>(1, 17);
  train::rmsprop<double> opt_w(train::rmsprop_options{}.with_lr(0.01).with_alpha(0.9).with_momentum(0.5));
  CHECK_THAT(error_of<config_error>([&] { opt_w.load_state(wide, nn::state_reader<double>(saved)); }), Catch::Matchers::Contains("fc1.weight/a") && Catch::Matchers::Contains("shape"));
  // A model with a parameter the state does not have.
  auto more = mlp<double>(1);
  more.add("fc3", nn::linear<double>(3, 3));
  CHECK_THAT(error_of<io_error>([&] { opt_w.load_state(more, nn::state_reader<double>(saved)); }), Catch::Matchers::Contains("fc3.weight/present"));
  // Another kind of optimizer.
  train::adam<double> adam(train::adam_options{});
  CHECK_THAT(error_of<config_error>([&] { adam.load_state(a, nn::state_reader<double>(saved)); }), Catch::Matchers::Contains("RMSProp") && Catch::Matchers::Contains("Adam"));
}

TEST_CASE("a damaged or mismatched checkpoint is refused, naming the problem, and changes nothing", "[train][checkpoint]") {
  const auto d = bands<float>(24, 10);
  const auto dir = testing::temp_dir("slimnet_checkpoint_errors");
  const auto path = dir / "good.ckpt";
  const auto build = [] {
    auto m = cnn<float>(14);
    prune::dns_options o;
    o.c_rate = 0.5;
    prune::attach_dns(static_cast<nn::linear<float>&>(m[4]), o);
    return m;
  };
  {
    auto m = build();
    auto opt = momentum_sgd<float>();
    auto o = small_run<float>(1);
    o.checkpoint_path = path;
    train::fit(m, *opt, train::cross_entropy<float>(), d, o);
  }
  const auto copy_to = [&](const std::string& name) {
    const auto p = dir / name;
    std::filesystem::copy_file(path, p, std::filesystem::copy_options::overwrite_existing);
    return p;
  };
  // The target model starts from other weights: a failed load must leave exactly these.
  auto target = build();
  auto target_opt = momentum_sgd<float>();
  const auto before = full_state(target, *target_opt);
  const auto unchanged = [&] { return same_state(before, full_state(target, *target_opt)); };
  using Catch::Matchers::Contains;

  SECTION("the good file loads") {
    train::load_checkpoint<float>(path, target, target_opt.get());
    CHECK_FALSE(unchanged());
  }
  SECTION("a flipped byte in the last tensor fails its checksum") {
    const auto p = copy_to("flipped.ckpt");
    flip_byte(p, 3);
    CHECK_THAT(error_of<io_error>([&] { train::load_checkpoint<float>(p, target, target_opt.get()); }), Contains("CRC-32") && Contains("tensor"));
    CHECK(unchanged());
  }
  SECTION("a truncated file") {
    const auto p = copy_to("truncated.ckpt");
    auto bytes = testing::read_bytes(p);
    bytes.resize(bytes.size() - 100);
    testing::write_bytes(p, bytes);
    CHECK_THROWS_AS(train::load_checkpoint<float>(p, target, target_opt.get()), io_error);
    CHECK(unchanged());
  }
  SECTION("not a checkpoint: plain saved parameters") {
    const auto p = dir / "params.safetensors";
    io::save_parameters(target, p);
    CHECK_THAT(error_of<io_error>([&] { train::load_checkpoint<float>(p, target, target_opt.get()); }), Contains("not a slimnet checkpoint"));
  }
  SECTION("a layer of another width: the entry and both shapes are named") {
    rng gen(1);
    nn::sequential<float> m;
    m.add("conv1", nn::conv2d<float>(1, 4, 3));
    m.add("relu1", nn::relu<float>());
    m.add("pool1", nn::max_pool2d<float>(2));
    m.add("flatten", nn::flatten<float>());
    m.add("fc1", nn::linear<float>(36, 15));
    m.add("relu2", nn::relu<float>());
    m.add("drop", nn::dropout<float>(0.2));
    m.add("fc2", nn::linear<float>(15, 3));
    m.reset_parameters(gen);
    prune::dns_options o;
    o.c_rate = 0.5;
    prune::attach_dns(static_cast<nn::linear<float>&>(m[4]), o);
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<config_error>([&] { train::load_checkpoint<float>(path, m, opt.get()); }), Contains("parameters/fc1.weight") && Contains("(16, 36)") && Contains("(15, 36)"));
  }
  SECTION("a model without the DNS transform") {
    auto m = cnn<float>(14);
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<config_error>([&] { train::load_checkpoint<float>(path, m, opt.get()); }), Contains("fc1.weight") && Contains("1 weight transform(s) there but 0"));
  }
  SECTION("DNS with other options") {
    auto m = cnn<float>(14);
    prune::dns_options o;
    o.c_rate = 0.7;
    prune::attach_dns(static_cast<nn::linear<float>&>(m[4]), o);
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<config_error>([&] { train::load_checkpoint<float>(path, m, opt.get()); }), Contains("options") && Contains("c_rate=0.7"));
  }
  SECTION("a model with an extra layer: the missing entry is named") {
    auto m = build();
    m.add("fc3", nn::linear<float>(3, 3));
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<io_error>([&] { train::load_checkpoint<float>(path, m, opt.get()); }), Contains("parameters/fc3.weight"));
  }
  SECTION("a model missing a layer: the unclaimed entries are named") {
    rng gen(1);
    nn::sequential<float> m;
    m.add("conv1", nn::conv2d<float>(1, 4, 3));
    m.add("relu1", nn::relu<float>());
    m.add("pool1", nn::max_pool2d<float>(2));
    m.add("flatten", nn::flatten<float>());
    m.add("fc1", nn::linear<float>(36, 16));
    m.reset_parameters(gen);
    prune::dns_options o;
    o.c_rate = 0.5;
    prune::attach_dns(static_cast<nn::linear<float>&>(m[4]), o);
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<io_error>([&] { train::load_checkpoint<float>(path, m, opt.get()); }), Contains("nothing in the model claims") && Contains("fc2"));
  }
  SECTION("another optimizer") {
    train::adam<float> adam(train::adam_options{});
    CHECK_THAT(error_of<config_error>([&] { train::load_checkpoint<float>(path, target, &adam); }), Contains("optimizer/kind"));
    CHECK(unchanged());
  }
  SECTION("a float checkpoint into a double model") {
    auto m = cnn<double>(14);
    prune::dns_options o;
    o.c_rate = 0.5;
    prune::attach_dns(static_cast<nn::linear<double>&>(m[4]), o);
    auto opt = momentum_sgd<double>();
    CHECK_THAT(error_of<config_error>([&] { train::load_checkpoint<double>(path, m, opt.get()); }), Contains("F32") && Contains("F64"));
  }
  SECTION("fit refuses to resume a run with another seed or batch size") {
    auto o = small_run<float>(2);
    o.resume_from = path;
    o.seed = 22;
    CHECK_THAT(error_of<config_error>([&] { train::fit(target, *target_opt, train::cross_entropy<float>(), d, o); }), Contains("seed = 21, not 22"));
    CHECK(unchanged());
    o.seed = 21;
    o.batch_size = 4;
    CHECK_THAT(error_of<config_error>([&] { train::fit(target, *target_opt, train::cross_entropy<float>(), d, o); }), Contains("batch_size"));
    CHECK(unchanged());
  }
  SECTION("a transform that does not implement save_state cannot be checkpointed") {
    struct opaque : nn::parameter_transform<float> {
      std::string name() const override { return "opaque"; }
      void forward(const tensor<float>& w, tensor<float>& w_eff, bool, rng&) override { w_eff.flat() = w.flat(); }
      std::shared_ptr<nn::parameter_transform<float>> clone(nn::clone_memo&) const override { return std::make_shared<opaque>(*this); }
    };
    auto m = build();
    static_cast<nn::linear<float>&>(m[7]).weight().add_transform(std::make_shared<opaque>());
    auto opt = momentum_sgd<float>();
    CHECK_THAT(error_of<config_error>([&] { train::save_checkpoint<float>(dir / "opaque.ckpt", m, opt.get()); }), Contains("'opaque'") && Contains("save_state"));
    CHECK_FALSE(std::filesystem::exists(dir / "opaque.ckpt"));
  }
}

TEST_CASE("a checkpoint write that fails midway leaves the existing checkpoint intact", "[train][checkpoint]") {
  const auto dir = testing::temp_dir("slimnet_checkpoint_atomic");
  const auto path = dir / "run.ckpt";
  auto small = mlp<float>(1, 4);
  auto opt = momentum_sgd<float>();
  train::save_checkpoint<float>(path, small, opt.get());
  const auto old_bytes = testing::read_bytes(path);
  REQUIRE(old_bytes.size() < 4096);

  // A bigger model's checkpoint, written under a file-size limit below its size: write() fails
  // with EFBIG part way through the temporary file (SIGXFSZ ignored), as a full disk would.
  auto big = mlp<float>(2, 256);
  struct rlimit saved {};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &saved) == 0);
  const auto old_handler = signal(SIGXFSZ, SIG_IGN);
  struct rlimit limited = saved;
  limited.rlim_cur = 4096;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &limited) == 0);
  bool threw_io_error = false;
  try {
    train::save_checkpoint<float>(path, big, opt.get());
  } catch (const io_error& e) {
    threw_io_error = true;
    INFO(e.what());
  }
  setrlimit(RLIMIT_FSIZE, &saved);
  signal(SIGXFSZ, old_handler);
  CHECK(threw_io_error);
  CHECK(testing::read_bytes(path) == old_bytes);  // the old checkpoint, byte for byte
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) files += e.is_regular_file() ? 1 : 0;
  CHECK(files == 1);  // no temporary left behind
  auto again = mlp<float>(1, 4);
  auto again_opt = momentum_sgd<float>();
  CHECK_NOTHROW(train::load_checkpoint<float>(path, again, again_opt.get()));
  // And without the limit the same write succeeds and replaces it.
  train::save_checkpoint<float>(path, big, opt.get());
  CHECK(testing::read_bytes(path).size() > 4096);
}

TEST_CASE("DeepIoT's compressor-critic training resumes bitwise (compressor, critic, baseline, batch streams)", "[train][checkpoint][deepiot]") {
  const auto d = testing::blobs<float>(100, 12);  // 6 batches of 16 per pass: the streams wrap
  const auto dir = testing::temp_dir("slimnet_checkpoint_deepiot");
  const auto build = [] {
    rng gen(5);
    nn::sequential<float> m;
    m.add("fc1", nn::linear<float>(2, 12));
    m.add("relu1", nn::relu<float>());
    m.add("fc2", nn::linear<float>(12, 3));
    m.reset_parameters(gen);
    return deepiot::attach_gates(m);
  };
  deepiot::deepiot_options o;
  o.batch_size = 16;
  o.critic_lr = 1e-2;
  o.compressor.hidden = 8;
  o.tau = {0.0, 0.05, 4, 0.5};
  o.stop = {0.01, 1.0, 5, 14};  // checks at 5 and 10, never satisfied: 14 iterations
  o.checkpoint_every = 4;
  o.eval_batch = 50;
  using result_t = deepiot::compress_result<float>;
  const auto probabilities_equal = [](const result_t& a, const result_t& b) {
    if (a.probabilities.size() != b.probabilities.size()) return false;
    for (std::size_t k = 0; k < a.probabilities.size(); ++k) {
      const auto& x = a.probabilities[k];
      const auto& y = b.probabilities[k];
      if (x.size() != y.size() || std::memcmp(x.data(), y.data(), sizeof(float) * static_cast<std::size_t>(x.size())) != 0) return false;
    }
    return true;
  };

  auto whole_opt = o;
  whole_opt.checkpoint_path = dir / "whole.ckpt";
  auto g1 = build();
  const auto whole = deepiot::compress(g1, d, d, whole_opt);
  REQUIRE(whole.iterations == 14);

  auto stopped_opt = o;
  stopped_opt.checkpoint_path = dir / "stopped.ckpt";
  {
    auto g2 = build();
    // Stopped at the check after iteration 10: the last checkpoint is the one after 8.
    REQUIRE_THROWS_AS(deepiot::compress(g2, d, d, stopped_opt,
                                        [](const deepiot::compress_check& c) {
                                          if (c.iteration == 10) throw stopped{};
                                        }),
                      stopped);
  }
  const auto at_stop = testing::read_bytes(stopped_opt.checkpoint_path);

  auto resumed_opt = o;
  resumed_opt.resume_from = stopped_opt.checkpoint_path;
  resumed_opt.checkpoint_path = dir / "resumed.ckpt";
  auto g3 = build();
  const auto resumed = deepiot::compress(g3, d, d, resumed_opt);
  CHECK(resumed.iterations == 14);
  CHECK(resumed.tau == whole.tau);
  CHECK(probabilities_equal(whole, resumed));
  // The final checkpoints hold everything (W, Adam, φ, RMSProp, baseline, p, generators, batch
  // positions): byte for byte the same file.
  const auto whole_bytes = testing::read_bytes(whole_opt.checkpoint_path);
  CHECK(testing::read_bytes(resumed_opt.checkpoint_path) == whole_bytes);
  CHECK(at_stop != whole_bytes);  // the resumed iterations did change the state
  CHECK(same_state(full_state(g1.net, train::adam<float>(train::adam_options{})),
                   full_state(g3.net, train::adam<float>(train::adam_options{}))));

  // Another seed: refused, naming it.
  auto other = resumed_opt;
  other.seed = 2;
  auto g4 = build();
  CHECK_THAT(error_of<config_error>([&] { deepiot::compress(g4, d, d, other); }), Catch::Matchers::Contains("seed = 1, not 2"));
}
