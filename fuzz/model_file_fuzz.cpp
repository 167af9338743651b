// Fuzz target: the compressed model file (io/model_file.hpp): the container, the architecture JSON,
// every encoding's decoder (sparse deltas, packed codebook indices, Huffman streams, ...), both as
// compressed layers and decoded to float, and a forward pass of whatever loads.
#include "harness.hpp"
#include "slimnet/io/model_file.hpp"

namespace {

void run_once(slimnet::nn::layer<float>& model) {
  // An input the loaded model accepts is not known in general; try the shapes the library's models
  // take and ignore the shape errors of the others.
  const slimnet::shape_t shapes[] = {{1, 784}, {1, 1, 28, 28}, {1, 28, 28}};
  for (const auto& s : shapes) {
    slimnet::fuzz::expect_value_or_typed_error([&] {
      slimnet::tensor<float> x(s), y;
      x.flat().setConstant(0.5f);
      model.forward(x, y, slimnet::nn::forward_context{});
    });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = slimnet::fuzz::write_input("model.safetensors", data, size);
  for (const bool decode : {false, true}) {
    slimnet::fuzz::expect_value_or_typed_error([&] {
      slimnet::io::load_model_options o;
      o.decode = decode;
      auto model = slimnet::io::load_model<float>(path, o);
      if (model) run_once(*model);
    });
  }
  slimnet::fuzz::expect_value_or_typed_error([&] { (void)slimnet::io::describe_model_file(path); });
  return 0;
}
