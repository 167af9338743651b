// Prints and writes the result of prune::sensitivity_analysis: one row per parameter, one column
// per sparsity level, cells = accuracy with that parameter alone pruned to that level.
#pragma once

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>

#include "slimnet/prune/sensitivity.hpp"
#include "slimnet/report/model_report.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::report {

/// The table as text, accuracies in percent, e.g.
///   sparsity        0%     50%     90%     95%
///   conv1.weight  99.05   99.00   97.60   88.35
/// and, under it, the highest sparsity of each row whose accuracy stays within `tolerance_pp`
/// percentage points of the row's 0% value (when 0 is one of the levels).
template <class = void>
std::string format(const prune::sensitivity_result& r, double tolerance_pp = 0.5) {
  std::size_t width = 8;
  for (const auto& p : r.parameters) width = std::max(width, p.size());
  std::string s = fmt::format("{:<{}}", r.structured ? "rows pruned" : "sparsity", width);
  for (double x : r.sparsities) s += fmt::format(" {:>6}", fmt::format("{:.0f}%", 100 * x));
  s += "\n";
  for (std::size_t i = 0; i < r.parameters.size(); ++i) {
    s += fmt::format("{:<{}}", r.parameters[i], width);
    for (double a : r.accuracy[i]) s += fmt::format(" {:>6.2f}", 100 * a);
    s += "\n";
  }
  std::size_t zero = r.sparsities.size();
  for (std::size_t j = 0; j < r.sparsities.size(); ++j) {
    if (r.sparsities[j] == 0.0) zero = j;
  }
  if (zero < r.sparsities.size()) {
    s += fmt::format("highest sparsity within {} pp of the unpruned accuracy:", tolerance_pp);
    for (std::size_t i = 0; i < r.parameters.size(); ++i) {
      double best = 0;
      for (std::size_t j = 0; j < r.sparsities.size(); ++j) {
        if (100 * (r.accuracy[i][zero] - r.accuracy[i][j]) <= tolerance_pp)
          best = std::max(best, r.sparsities[j]);
      }
      s += fmt::format(" {} {:.0f}%{}", r.parameters[i], 100 * best,
                       i + 1 < r.parameters.size() ? "," : "");
    }
    s += "\n";
  }
  return s;
}

template <class = void>
void print(const prune::sensitivity_result& r, double tolerance_pp = 0.5,
                  std::FILE* out = stdout) {
  fmt::print(out, "{}", format(r, tolerance_pp));
}

/// parameter,sparsity,accuracy,loss: one line per point.
template <class = void>
std::string to_csv(const prune::sensitivity_result& r) {
  std::string s = "parameter,sparsity,accuracy,loss\n";
  for (std::size_t i = 0; i < r.parameters.size(); ++i) {
    for (std::size_t j = 0; j < r.sparsities.size(); ++j) {
      s += fmt::format("{},{:.4f},{:.6f},{:.6f}\n", r.parameters[i], r.sparsities[j],
                       r.accuracy[i][j], r.loss[i][j]);
    }
  }
  return s;
}

template <class = void>
void write_csv(const prune::sensitivity_result& r, const std::filesystem::path& path) {
  write_text(path, to_csv(r), "slimnet::report::write_csv");
}

}  // namespace slimnet::report
