// Checked size arithmetic: products that would wrap are errors naming the dimensions as written.
#include <catch2/catch.hpp>

#include <cstdint>
#include <vector>

#include "slimnet/core.hpp"

using namespace slimnet;
using Catch::Contains;

TEST_CASE("checked_product multiplies exactly and refuses wrapped or negative products", "[core][checked]") {
  CHECK(checked_product<shape_error>(std::vector<index_t>{}, "f") == 1);
  CHECK(checked_product<shape_error>(std::vector<index_t>{3, 5, 7}, "f") == 105);
  CHECK(checked_product<shape_error>(std::vector<index_t>{3, 0, 7}, "f") == 0);
  // 2^32 * 2^32 wraps to 0 in 64 bits; 2^31 * 2^31 * 4 wraps to 0 as well.
  CHECK_THROWS_WITH(checked_product<io_error>(std::vector<index_t>{4294967296, 4294967296}, "slimnet::x::read"),
                    Contains("slimnet::x::read") && Contains("(4294967296, 4294967296)") && Contains("64-bit"));
  CHECK_THROWS_AS(checked_product<io_error>(std::vector<index_t>{2147483648, 2147483648, 4}, "f"), io_error);
  // Unsigned dimensions as read from a file, product into a signed 64-bit size.
  const std::vector<std::uint32_t> dims{0xFFFFFFFFu, 0xFFFFFFFFu, 2};
  CHECK_THROWS_WITH(checked_product<io_error>(dims, "f"), Contains("(4294967295, 4294967295, 2)"));
  const std::vector<std::uint64_t> huge{std::uint64_t{1} << 63};
  CHECK_THROWS_AS(checked_product<io_error>(huge, "f"), io_error);
  CHECK_THROWS_WITH(checked_product<shape_error>(std::vector<index_t>{2, -3}, "g"), Contains("g:") && Contains("negative dimension -3"));
}

TEST_CASE("checked_mul and checked_add name the operands", "[core][checked]") {
  CHECK(checked_mul<io_error>(index_t{1} << 31, index_t{1} << 31, "f") == index_t{1} << 62);
  CHECK_THROWS_WITH(checked_mul<io_error>(index_t{1} << 32, index_t{1} << 31, "f", "payload"),
                    Contains("payload 4294967296 x 2147483648 overflows a 64-bit integer"));
  CHECK_THROWS_AS(checked_mul<shape_error>(index_t{-1}, index_t{2}, "f"), shape_error);
  CHECK(checked_mul<io_error>(std::size_t{6}, std::size_t{7}, "f") == 42);
  CHECK_THROWS_AS(checked_mul<io_error>(~std::size_t{0}, std::size_t{2}, "f"), io_error);
  CHECK(checked_add<io_error>(index_t{40}, index_t{2}, "f") == 42);
  CHECK_THROWS_AS(checked_add<io_error>(std::numeric_limits<index_t>::max(), index_t{1}, "f"), io_error);
}

TEST_CASE("shape_size and tensor shapes are checked", "[core][checked]") {
  CHECK(shape_size({}) == 1);
  CHECK(shape_size({2, 3, 4}) == 24);
  CHECK_THROWS_WITH(shape_size({index_t{1} << 32, index_t{1} << 32}), Contains("slimnet::shape_size") && Contains("(4294967296, 4294967296)"));
  CHECK_THROWS_WITH(shape_size({3, -1}), Contains("negative dimension -1"));
  // Wraps to exactly 0 and 16 elements: without the check the first would allocate nothing.
  CHECK_THROWS_AS(tensor<float>({index_t{1} << 32, index_t{1} << 32}), shape_error);
  CHECK_THROWS_WITH(tensor<float>({index_t{1} << 62, 4, 4}), Contains("slimnet::tensor::resize"));
  tensor<float> t({4, 4});
  CHECK_THROWS_WITH(t.reshape({index_t{1} << 32, index_t{1} << 32, 16}), Contains("slimnet::tensor::reshape"));
  CHECK_THROWS_AS(t.matrix(index_t{1} << 62, 4), shape_error);  // 2^64 wraps to 0, not 16: still refused
  CHECK_THROWS_AS(t.matrix(-4, -4), shape_error);
  CHECK(t.matrix(2, 8).cols() == 8);
}
