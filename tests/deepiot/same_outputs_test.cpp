// A DeepIoT-gated network computes what it computed before its gates became unit transforms
// (nn/unit_mask.hpp): compressor-critic training for a fixed seed on a conv + fc net and on a
// two-layer LSTM ends with the same outputs and keep probabilities. The expected values were
// printed (%.17g) by this same program built on the headers of commit 6f37ef7, where the gates
// were deepiot::unit_gate layers and recurrent_gate masks, at -O1 -march=native on the x86-64
// machine of that session: the new code reproduces them there bit for bit. The checks allow a
// relative 1e-12, the size of what another CPU's kernels or FMA contraction change (without
// -march=native the same program differs in the 16th digit); a changed mask or factor moves
// them by far more (a unit dropped in one of 12 critic steps).
#include <catch2/catch.hpp>

#include <vector>

#include "slimnet/deepiot.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/train.hpp"

using namespace slimnet;

namespace {

/// n examples of shape `example`, 3 classes: entry k of an example of class c is `level` where
/// k % period == c, plus standard normal noise.
data::dataset<double> so_data(index_t n, const shape_t& example, index_t period, double level, std::uint64_t seed) {
  rng gen(seed);
  data::dataset<double> d;
  d.num_classes = 3;
  shape_t shape{n};
  shape.insert(shape.end(), example.begin(), example.end());
  d.inputs.resize(shape);
  const index_t per = n == 0 ? 0 : d.inputs.size() / n;
  for (index_t i = 0; i < n; ++i) {
    const auto c = static_cast<int>(gen.below(3));
    d.labels.push_back(c);
    for (index_t k = 0; k < per; ++k) d.inputs.data()[i * per + k] = (k % period == c ? level : 0.0) + gen.normal();
  }
  return d;
}

/// Compresses `m` for 12 iterations and checks the held-out outputs (their sum, a weighted sum of
/// squares, the first and last value) and the final keep probabilities.
void so_check(const nn::sequential<double>& m, const data::dataset<double>& tr, const data::dataset<double>& ho,
              const std::vector<double>& outputs, const std::vector<double>& probabilities) {
  auto g = deepiot::attach_gates(m);
  deepiot::deepiot_options o;
  o.batch_size = 20;
  o.stop = {0.01, 0.0, 10, 12};
  const auto r = deepiot::compress(g, tr, ho, o);
  tensor<double> y;
  g.net.forward(ho.inputs, y, nn::forward_context{});
  double s = 0, s2 = 0;
  for (index_t i = 0; i < y.size(); ++i) {
    s += y[i];
    s2 += y[i] * y[i] * static_cast<double>(1 + i % 7);
  }
  const auto same = [](double v) { return Approx(v).epsilon(1e-12).margin(0); };
  CHECK(s == same(outputs[0]));
  CHECK(s2 == same(outputs[1]));
  CHECK(y[0] == same(outputs[2]));
  CHECK(y[y.size() - 1] == same(outputs[3]));
  std::vector<double> p;
  for (const auto& pk : r.probabilities)
    for (index_t j = 0; j < pk.size(); ++j) p.push_back(pk[j]);
  REQUIRE(p.size() == probabilities.size());
  for (std::size_t j = 0; j < p.size(); ++j) CHECK(p[j] == same(probabilities[j]));
}

}  // namespace

TEST_CASE("a DeepIoT-gated network gives the same outputs as before the unit transform", "[deepiot][compress]") {
  SECTION("conv + fc gates") {
    rng gen(11);
    nn::sequential<double> m;
    m.add("conv1", nn::conv2d<double>(1, 4, 3));
    m.add("relu1", nn::relu<double>());
    m.add("flat", nn::flatten<double>());
    m.add("fc1", nn::linear<double>(64, 10));
    m.add("tanh1", nn::tanh<double>());
    m.add("fc2", nn::linear<double>(10, 3));
    m.reset_parameters(gen);
    so_check(m, so_data(200, {1, 6, 6}, 3, 1.0, 1), so_data(60, {1, 6, 6}, 3, 1.0, 2),
             {-5.211685182812011, 30.790292395674143, -0.11831173954974343, -0.21246941998758126},
             {0.49772832879735085, 0.5042298178217024, 0.5012036185509563, 0.49850791423706819, 0.49622328101363411,
              0.50167085919562382, 0.49863240775510637, 0.50699546441685928, 0.49932867746175025, 0.4977911475116753,
              0.50240709234147918, 0.50149064171113245, 0.49703762608811741, 0.49924747149852239});
  }
  SECTION("the unit masks of a two-layer LSTM") {
    rng gen(12);
    nn::sequential<double> m;
    m.add("lstm", nn::lstm<double>(4, 6, nn::recurrent_options{2, nn::sequence_output::last_step}));
    m.add("fc", nn::linear<double>(6, 3));
    m.reset_parameters(gen);
    so_check(m, so_data(200, {5, 4}, 4, 1.5, 3), so_data(60, {5, 4}, 4, 1.5, 4),
             {-1.9147973961953599, 6.0760556225841649, 0.061533959976237611, -0.13766344003842573},
             {0.50015416343390584, 0.49838733750231146, 0.49569509136173368, 0.50498638786565087, 0.4981096759698565,
              0.50718321001638678, 0.50266855416508949, 0.49597580448507722, 0.48991906467065449, 0.50649118926375702,
              0.50011501395414992, 0.49645035795699466});
  }
}
