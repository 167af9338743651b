// A small, fast, seeded random generator with its own distributions, so that a seed gives
// the same numbers with every compiler and standard library (std::normal_distribution does not).
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <limits>

namespace slimnet {

/// xoshiro256** (Blackman & Vigna), seeded through splitmix64.
/// Satisfies UniformRandomBitGenerator, so it also works with <random> and <algorithm>.
class rng {
 public:
  using result_type = std::uint64_t;

  /// Everything the generator's future output depends on: the xoshiro256** words and the second
  /// deviate of the last polar-method pair (normal() returns it next). Restoring it with
  /// set_state continues the stream exactly (checkpoints, train/checkpoint.hpp).
  struct state_type {
    std::array<std::uint64_t, 4> words{};
    double spare_normal = 0.0;
    bool has_spare_normal = false;
    friend bool operator==(const state_type& a, const state_type& b) {
      // The spare is compared bit for bit only when it will be used.
      return a.words == b.words && a.has_spare_normal == b.has_spare_normal &&
             (!a.has_spare_normal || a.spare_normal == b.spare_normal);
    }
    friend bool operator!=(const state_type& a, const state_type& b) { return !(a == b); }
  };

  explicit rng(std::uint64_t seed = 0x5eed) { reseed(seed); }

  void reseed(std::uint64_t seed) {
    std::uint64_t z = seed;
    for (auto& word : state_) word = splitmix64(z);
    has_spare_normal_ = false;
  }

  state_type state() const {
    state_type s;
    for (int i = 0; i < 4; ++i) s.words[static_cast<std::size_t>(i)] = state_[i];
    s.spare_normal = spare_normal_;
    s.has_spare_normal = has_spare_normal_;
    return s;
  }
  /// Requires: s.words not all zero (xoshiro's one fixed point: it would output 0 forever), which
  /// no generator's state() ever is; readers of untrusted state check it (valid_state).
  void set_state(const state_type& s) {
    for (int i = 0; i < 4; ++i) state_[i] = s.words[static_cast<std::size_t>(i)];
    spare_normal_ = s.spare_normal;
    has_spare_normal_ = s.has_spare_normal;
  }
  static bool valid_state(const state_type& s) {
    return (s.words[0] | s.words[1] | s.words[2] | s.words[3]) != 0 && (!s.has_spare_normal || std::isfinite(s.spare_normal));
  }

  static constexpr result_type min() { return 0; }
  static constexpr result_type max() { return std::numeric_limits<result_type>::max(); }

  result_type operator()() {
    const std::uint64_t result = rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = rotl(state_[3], 45);
    return result;
  }

  /// Uniform double in [0, 1) with 53 random bits.
  double uniform() { return static_cast<double>((*this)() >> 11) * 0x1.0p-53; }

  /// Uniform double in [lo, hi).
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

  /// Uniform integer in [0, n) without modulo bias (Lemire's method). n must be > 0.
  std::uint64_t below(std::uint64_t n) {
    __uint128_t product = static_cast<__uint128_t>((*this)()) * n;
    auto low = static_cast<std::uint64_t>(product);
    if (low < n) {
      const std::uint64_t threshold = (0 - n) % n;
      while (low < threshold) {
        product = static_cast<__uint128_t>((*this)()) * n;
        low = static_cast<std::uint64_t>(product);
      }
    }
    return static_cast<std::uint64_t>(product >> 64);
  }

  /// Standard normal by the Marsaglia polar method (two values per accepted pair).
  double normal() {
    if (has_spare_normal_) {
      has_spare_normal_ = false;
      return spare_normal_;
    }
    double u, v, s;
    do {
      u = 2.0 * uniform() - 1.0;
      v = 2.0 * uniform() - 1.0;
      s = u * u + v * v;
    } while (s >= 1.0 || s == 0.0);
    const double factor = std::sqrt(-2.0 * std::log(s) / s);
    spare_normal_ = v * factor;
    has_spare_normal_ = true;
    return u * factor;
  }

  double normal(double mean, double stddev) { return mean + stddev * normal(); }

  /// True with probability p.
  bool bernoulli(double p) { return uniform() < p; }

  /// A new generator whose stream is independent of this one (for per-worker streams).
  rng split() { return rng((*this)() ^ 0x9e3779b97f4a7c15ULL); }

 private:
  static std::uint64_t rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  static std::uint64_t splitmix64(std::uint64_t& x) {
    std::uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }

  std::uint64_t state_[4];
  double spare_normal_ = 0.0;
  bool has_spare_normal_ = false;
};

/// Fisher-Yates shuffle with slimnet::rng (std::shuffle's result depends on the library).
template <class RandomIt>
void shuffle(RandomIt first, RandomIt last, rng& gen) {
  const auto n = last - first;
  for (auto i = n - 1; i > 0; --i) {
    const auto j = static_cast<decltype(i)>(gen.below(static_cast<std::uint64_t>(i) + 1));
    using std::swap;
    swap(first[i], first[j]);
  }
}

}  // namespace slimnet
