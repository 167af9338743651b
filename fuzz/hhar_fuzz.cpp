// Fuzz target: the HHAR CSV reader and the preprocessing behind it. The input is written as both
// the accelerometer and the gyroscope file, so pairing, resampling and windowing run on it too.
#include "harness.hpp"
#include "slimnet/data/hhar.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace hhar = slimnet::data::hhar;
  const auto acc = slimnet::fuzz::write_input("Phones_accelerometer.csv", data, size);
  slimnet::fuzz::write_input("Phones_gyroscope.csv", data, size);
  slimnet::fuzz::expect_value_or_typed_error([&] {
    const auto recordings = hhar::read_recordings(acc.parent_path());
    (void)hhar::make_windows<float>(recordings);
  });
  return 0;
}
