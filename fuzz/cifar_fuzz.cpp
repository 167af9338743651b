// Fuzz target: data::load_cifar10_bin on one file of CIFAR-10 binary records (plain or gzip).
#include "harness.hpp"
#include "slimnet/data/cifar.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = slimnet::fuzz::write_input("data_batch.bin", data, size);
  slimnet::fuzz::expect_value_or_typed_error([&] { (void)slimnet::data::load_cifar10_bin<float>({path}); });
  return 0;
}
