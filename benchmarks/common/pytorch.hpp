// The "vs PyTorch dense" column of the whole-model benchmarks: runs benchmarks/pytorch_dense_models.py
// (PyTorch 1.13, one thread, thread CPU time, median of `rounds`) for the dense models named, with
// OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE removed from that command's environment only (this
// machine sets OPENBLAS_CORETYPE=Haswell, which holds OpenBLAS, and PyTorch's BLAS with it, to
// AVX2); the script's "# ..." lines (PyTorch version, the BLAS library and the kernel OpenBLAS
// chose) are printed as they come.
#pragma once

#include <cstdio>
#include <filesystem>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "slimnet/core/tensor.hpp"

namespace slimnet::bench {

/// Seconds per call of PyTorch's dense model, keyed by (model, batch); empty when the script or
/// the interpreter is missing (a line says so). `script_dir` holds pytorch_dense_models.py.
inline std::map<std::pair<std::string, index_t>, double> pytorch_dense_latencies(const std::string& script_dir, const std::string& python,
                                                                                 int rounds, const std::vector<std::string>& models,
                                                                                 const std::vector<index_t>& batches) {
  std::map<std::pair<std::string, index_t>, double> out;
  const std::string script = script_dir + "/pytorch_dense_models.py";
  if (!std::filesystem::exists(script) || !std::filesystem::exists(python)) {
    fmt::print("PyTorch column skipped: {} or {} not found\n", python, script);
    return out;
  }
  // `env -u` removes the two variables for the peer's command only; this process keeps them.
  const std::string cmd =
      fmt::format("env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE OMP_NUM_THREADS=1 '{}' '{}' --rounds {} --models {} --batches {} 2>&1", python,
                  script, rounds, fmt::join(models, ","), fmt::join(batches, ","));
  FILE* pipe = popen(cmd.c_str(), "r");
  if (pipe == nullptr) {
    fmt::print("PyTorch column skipped: could not run {}\n", cmd);
    return out;
  }
  char buffer[4096];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) {
    std::string line(buffer);
    if (!line.empty() && line.back() == '\n') line.pop_back();
    std::istringstream in(line);
    std::string tag, model;
    index_t batch = 0;
    double seconds = 0;
    if (in >> tag >> model >> batch >> seconds && tag == "latency") {
      out[{model, batch}] = seconds;
    } else {
      fmt::print("  pytorch: {}\n", line);
    }
  }
  const int status = pclose(pipe);
  if (status != 0) fmt::print("  pytorch: {} exited with status {}\n", script, status);
  return out;
}

}  // namespace slimnet::bench
