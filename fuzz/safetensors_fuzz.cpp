// Fuzz target: the safetensors reader, raw (every dtype) and typed (converted to float).
#include "harness.hpp"
#include "slimnet/io/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = slimnet::fuzz::write_input("model.safetensors", data, size);
  slimnet::fuzz::expect_value_or_typed_error([&] { (void)slimnet::io::read_safetensors_raw(path); });
  slimnet::fuzz::expect_value_or_typed_error([&] { (void)slimnet::io::read_safetensors<float>(path); });
  return 0;
}
