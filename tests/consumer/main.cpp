// A program outside the slimnet tree: installed headers, exported target, one forward pass.
#include <slimnet/slimnet.hpp>

int main() {
  slimnet::rng gen(1);
  auto model = slimnet::nn::models::lenet5<float>(gen);
  slimnet::tensor<float> x({2, 1, 28, 28}, 0.5f), y;
  model.forward(x, y, {});
  return y.shape() == slimnet::shape_t{2, 10} ? 0 : 1;
}
