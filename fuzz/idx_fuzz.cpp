// Fuzz target: data::read_idx on plain and gzip-compressed IDX bytes (byte_source detects gzip).
#include "harness.hpp"
#include "slimnet/data/idx.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto path = slimnet::fuzz::write_input("input.idx", data, size);
  slimnet::fuzz::expect_value_or_typed_error([&] {
    const auto a = slimnet::data::read_idx(path);
    (void)a.count();
  });
  return 0;
}
