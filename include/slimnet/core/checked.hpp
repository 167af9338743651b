// Checked size arithmetic: every size that comes from a file or a user is multiplied here, so a
// dimension list whose product would wrap (e.g. 2^32 x 2^32 = 0 mod 2^64, which then passes a
// "payload has the right length" check) is an error naming the dimensions as written, never a
// small wrapped number. Other modules reuse these (readers raise io_error, shape code shape_error).
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slimnet/core/error.hpp"

namespace slimnet {

/// out = a * b; returns true (and leaves out unspecified) when the exact product does not fit T.
template <class T>
[[nodiscard]] constexpr bool mul_overflows(T a, T b, T& out) noexcept {
  static_assert(std::is_integral_v<T>, "mul_overflows works on integer types only.");
  return __builtin_mul_overflow(a, b, &out);
}

/// out = a + b; returns true when the exact sum does not fit T.
template <class T>
[[nodiscard]] constexpr bool add_overflows(T a, T b, T& out) noexcept {
  static_assert(std::is_integral_v<T>, "add_overflows works on integer types only.");
  return __builtin_add_overflow(a, b, &out);
}

/// a * b for sizes (both >= 0). Throws Error "function: <what> a x b ..." when either factor is
/// negative or the product does not fit T.
template <class Error = shape_error, class T>
T checked_mul(T a, T b, const char* function, const char* what = "size") {
  static_assert(std::is_base_of_v<slimnet::error, Error>, "checked_mul raises a slimnet::error subclass.");
  T out{};
  if constexpr (std::is_signed_v<T>) {
    if (a < 0 || b < 0) slimnet::detail::raise<Error>(function, "{} {} x {} has a negative factor", what, a, b);
  }
  if (mul_overflows(a, b, out)) {
    slimnet::detail::raise<Error>(function, "{} {} x {} overflows a {}-bit integer", what, a, b,
                                  std::numeric_limits<T>::digits + (std::is_signed_v<T> ? 1 : 0));
  }
  return out;
}

/// a + b for sizes (both >= 0), throwing Error when negative or when the sum does not fit T.
template <class Error = shape_error, class T>
T checked_add(T a, T b, const char* function, const char* what = "size") {
  static_assert(std::is_base_of_v<slimnet::error, Error>, "checked_add raises a slimnet::error subclass.");
  T out{};
  if constexpr (std::is_signed_v<T>) {
    if (a < 0 || b < 0) slimnet::detail::raise<Error>(function, "{} {} + {} has a negative term", what, a, b);
  }
  if (add_overflows(a, b, out)) {
    slimnet::detail::raise<Error>(function, "{} {} + {} overflows a {}-bit integer", what, a, b,
                                  std::numeric_limits<T>::digits + (std::is_signed_v<T> ? 1 : 0));
  }
  return out;
}

/// Product of the dimensions in `dims` (1 for none) as T. Throws Error naming the dimensions as
/// written, "(d0, d1, ...)", when one is negative or the product does not fit T. A zero dimension
/// gives 0 whatever the others are, but every dimension is still checked for sign; the partial
/// products are checked in order, so (2^40, 2^40, 0) is an overflow even though the true product
/// is 0: a shape like that cannot come from a well-formed file.
template <class Error = shape_error, class T = std::int64_t, class Range>
T checked_product(const Range& dims, const char* function, const char* what = "dimensions") {
  static_assert(std::is_base_of_v<slimnet::error, Error>, "checked_product raises a slimnet::error subclass.");
  T product = 1;
  for (const auto& d : dims) {
    if constexpr (std::is_signed_v<std::decay_t<decltype(d)>>) {
      if (d < 0) slimnet::detail::raise<Error>(function, "{} ({}): negative dimension {}", what, fmt::join(dims, ", "), d);
    }
    if (static_cast<std::make_unsigned_t<std::decay_t<decltype(d)>>>(d) > static_cast<std::make_unsigned_t<T>>(std::numeric_limits<T>::max()) ||
        mul_overflows(product, static_cast<T>(d), product)) {
      slimnet::detail::raise<Error>(function, "{} ({}): more elements than a {}-bit integer holds", what, fmt::join(dims, ", "),
                                    std::numeric_limits<T>::digits + (std::is_signed_v<T> ? 1 : 0));
    }
  }
  return product;
}

}  // namespace slimnet
