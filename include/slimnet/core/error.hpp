// Typed exceptions thrown by slimnet. Messages start with the function name and quote the
// offending values, e.g. "slimnet::nn::linear::forward: input has 783 features, expected 784".
#pragma once

#include <stdexcept>
#include <string>

#include <fmt/format.h>

namespace slimnet {

/// Base class of every exception slimnet throws on bad input.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Tensor shapes that do not fit together (wrong rank, mismatched dimensions).
class shape_error : public error {
 public:
  using error::error;
};

/// Options or arguments outside their valid range (fractions outside [0,1], bit widths...).
class config_error : public error {
 public:
  using error::error;
};

/// Malformed, truncated or unreadable files.
class io_error : public error {
 public:
  using error::error;
};

namespace detail {

/// Throws `Error` with a message formatted by fmt: "function: message".
template <class Error, class... Args>
[[noreturn]] void raise(const char* function, fmt::format_string<Args...> format, Args&&... args) {
  throw Error(std::string(function) + ": " + fmt::format(format, std::forward<Args>(args)...));
}

}  // namespace detail
}  // namespace slimnet
