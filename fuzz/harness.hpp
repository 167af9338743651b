// What every fuzz target shares: the input bytes written to a file (the readers take paths), and
// the contract being fuzzed. A reader given any bytes either returns or throws a slimnet::error;
// any other exception escapes to std::terminate, and a crash, leak or sanitizer report is a bug.
// Built two ways (fuzz/CMakeLists.txt): with clang's -fsanitize=fuzzer for fuzzing, and with a
// replay main (replay_main.cpp) that ctest runs over the committed corpus on every build.
#pragma once

#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "slimnet/core/error.hpp"

namespace slimnet::fuzz {

/// A private folder for this process's files (in /dev/shm when it exists: no disk writes per input).
inline const std::filesystem::path& scratch_dir() {
  static const std::filesystem::path dir = [] {
    const std::filesystem::path shm = "/dev/shm";
    const auto base = std::filesystem::is_directory(shm) ? shm : std::filesystem::temp_directory_path();
    auto d = base / ("slimnet-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

/// Writes `size` bytes of `data` to scratch_dir()/name and returns the path.
inline std::filesystem::path write_input(const std::string& name, const std::uint8_t* data, std::size_t size) {
  const auto path = scratch_dir() / name;
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) std::abort();  // the harness itself failed: not a finding of the reader
  return path;
}

/// Runs `read`; the typed errors are the expected outcome of bad input, anything else escapes.
template <class Read>
void expect_value_or_typed_error(Read&& read) {
  try {
    read();
  } catch (const slimnet::error&) {
  }
}

}  // namespace slimnet::fuzz
