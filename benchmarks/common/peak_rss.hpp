// Peak resident memory of running one model, for the whole-model benchmarks' RSS columns: each
// model is loaded, converted and run in a fresh process (the benchmark re-executes itself with a
// child flag), which reports getrusage(RUSAGE_SELF).ru_maxrss, so that no other model, data set or
// interpreter of the parent counts. An idle child (the program started, nothing loaded) gives the
// floor every figure includes: the executable, its libraries and the C++ runtime.
#pragma once

#include <sys/resource.h>

#include <cstdio>
#include <filesystem>
#include <optional>
#include <sstream>
#include <string>

#include <fmt/format.h>

namespace slimnet::bench {

/// This process's peak resident set in KiB (Linux: ru_maxrss is in kilobytes).
inline long peak_rss_kib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss;
}

/// The line a child prints last; what child_peak_rss_kib parses.
inline void print_peak_rss() { fmt::print("peak_rss_kib {}\n", peak_rss_kib()); }

/// Runs this executable again (the target of /proc/self/exe) with `arguments` and returns the peak RSS in KiB the
/// child printed (print_peak_rss), or nothing when it did not (its output is then echoed).
inline std::optional<long> child_peak_rss_kib(const std::string& arguments) {
  // Resolved here: inside popen's shell /proc/self/exe would be the shell.
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (error) return std::nullopt;
  const std::string cmd = "'" + self.string() + "' " + arguments + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) return std::nullopt;
  std::optional<long> kib;
  std::string all;
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) {
    std::istringstream in(buffer);
    std::string tag;
    long value = 0;
    if (in >> tag >> value && tag == "peak_rss_kib") {
      kib = value;
    } else {
      all += buffer;
    }
  }
  const int status = pclose(pipe);
  if (!kib || status != 0) fmt::print("peak RSS child `{}` failed (status {}):\n{}", cmd, status, all);
  return status == 0 ? kib : std::nullopt;
}

}  // namespace slimnet::bench
