// slimnet::core alone: magnitude-prune a LeNet-5 and run it (nn, prune, quant, kernels, structure).
#include <slimnet/kernels.hpp>
#include <slimnet/nn.hpp>
#include <slimnet/prune.hpp>
#include <slimnet/quant.hpp>
#include <slimnet/structure.hpp>

int main() {
  slimnet::rng gen(1);
  auto model = slimnet::nn::models::lenet5<float>(gen);
  auto& fc1 = dynamic_cast<slimnet::nn::linear<float>&>(model.find("fc1"));
  const auto mask = slimnet::prune::magnitude_mask(fc1.weight().value(), 0.9);
  slimnet::index_t kept = 0;
  for (slimnet::index_t i = 0; i < mask.size(); ++i) kept += mask[i] != 0;
  const slimnet::tensor<float> x({2, 1, 28, 28}, 0.5f);
  const auto y = model(x);
  const bool ok = y.shape() == slimnet::shape_t{2, 10} && kept > 0 && kept < mask.size() / 5;
  return ok ? 0 : 1;
}
