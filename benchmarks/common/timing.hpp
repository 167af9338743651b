// Timing shared by the kernel benchmarks. The machine is shared and its clock moves, so variants
// are timed side by side in one run and the fastest sample counts (other programs only add time).
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <ctime>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

namespace slimnet::bench {

/// Seconds of CPU time of the calling thread (not wall time): on a shared machine other programs
/// preempt the benchmark, which would inflate wall times (long kernels more than short ones) and
/// skew the ratios. Single-thread kernels are timed this way; the thread tables use wall time.
inline double thread_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

/// Wall time of the fastest of `samples` single calls: for the thread tables on a shared machine, a
/// call of 0.1-2 ms often runs without preemption on both cores even when other programs are
/// running, so the minimum approximates the speed on an idle machine (one and two threads alike).
inline double best_single_call(const std::function<void()>& f, int samples = 300) {
  f();
  double best = INFINITY;
  for (int s = 0; s < samples; ++s) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

/// Seconds per call of each function, one sample per round: each function is calibrated to samples
/// of >= min_sample seconds, then sampled `rounds` times, the functions interleaved within each round.
inline std::vector<std::vector<double>> sample_side_by_side(const std::vector<std::function<void()>>& fs, int rounds,
                                                             double min_sample = 2e-3, bool cpu_time = true) {
  auto now = [cpu_time] {
    return cpu_time ? thread_seconds() : std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
  };
  std::vector<long> reps(fs.size(), 1);
  for (std::size_t v = 0; v < fs.size(); ++v) {
    fs[v]();  // warm caches and lazily sized buffers
    for (;;) {
      const double t0 = now();
      for (long r = 0; r < reps[v]; ++r) fs[v]();
      const double s = now() - t0;
      if (s >= min_sample) break;
      reps[v] = std::max(reps[v] * 2, static_cast<long>(static_cast<double>(reps[v]) * min_sample / std::max(s, 1e-9) * 1.2));
    }
  }
  std::vector<std::vector<double>> samples(fs.size());
  for (int round = 0; round < rounds; ++round) {
    for (std::size_t v = 0; v < fs.size(); ++v) {
      const double t0 = now();
      for (long r = 0; r < reps[v]; ++r) fs[v]();
      samples[v].push_back((now() - t0) / static_cast<double>(reps[v]));
    }
  }
  return samples;
}

/// The fastest sample of each function (kernel benchmarks: other programs only add time).
inline std::vector<double> time_side_by_side(const std::vector<std::function<void()>>& fs, int rounds,
                                             double min_sample = 2e-3, bool cpu_time = true) {
  std::vector<double> best;
  for (const auto& s : sample_side_by_side(fs, rounds, min_sample, cpu_time)) best.push_back(*std::min_element(s.begin(), s.end()));
  return best;
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n == 0 ? NAN : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The median sample of each function, thread CPU time (the whole-model benchmarks).
inline std::vector<double> median_side_by_side(const std::vector<std::function<void()>>& fs, int rounds, double min_sample = 2e-3) {
  std::vector<double> out;
  for (auto& s : sample_side_by_side(fs, rounds, min_sample)) out.push_back(median(s));
  return out;
}

/// The 1-minute load average, printed with results so a reader can judge how busy the machine was.
inline std::string load_average() {
  std::ifstream in("/proc/loadavg");
  std::string a;
  in >> a;
  return a;
}

}  // namespace slimnet::bench
