// A seeded synthetic stand-in for the HHAR phone data (the real files cannot be downloaded on the
// build machines): accelerometer and gyroscope streams of several users, phones and the six HHAR
// activities, in HHAR's own form (hhar::sensor_stream, writable as HHAR CSV), so DeepSense's
// preprocessing and model run end to end. These are NOT measurements; accuracy on them says
// nothing about accuracy on HHAR. Programs that use them must say so.
//
// Signal model, per (user, device, activity) recording, in the phone's frame:
//   acc(t)  = R (g_a + sum_h L_d(h f) A_a,h sin(2 pi h f t + phi_h)) * gain_d + bias_d + noise
//   gyro(t) = R (      sum_h L_d(h f) G_a,h sin(2 pi h f t + psi_h)) * gain_d + noise
// with f = the activity's cadence (bike 1.2 Hz, walking 1.8 Hz, stairs 1.6 / 2.0 Hz, postural sway
// for sitting and standing) times per-user and per-recording factors, a per-activity posture g_a
// (gravity, 9.81 m/s^2), per-activity harmonic amplitudes A, G (3 harmonics x 3 axes) times
// per-user and per-recording factors, a random phone rotation R per recording (+-35 degrees about
// each axis by default), and per device: sampling rate, a first-order
// low-pass response L_d(f) = 1 / sqrt(1 + (f / f_c)^2) (so each device sees its own spectrum),
// gain, bias, noise level and time-stamp jitter; the gyroscope's time stamps lag by a few ms.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/data/hhar.hpp"

namespace slimnet::data {

/// One phone as the generator sees it.
struct synthetic_imu_device {
  std::string model, device;  ///< HHAR names, e.g. "nexus4", "nexus4_1"
  double rate_hz = 100;       ///< sampling rate of both sensors
  double cutoff_hz = 8;       ///< first-order low-pass corner of its motion response
  double acc_noise = 0.1;     ///< m/s^2
  double gyro_noise = 0.02;   ///< rad/s
};

struct synthetic_imu_options {
  std::vector<std::string> users{"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  std::vector<synthetic_imu_device> devices{{"nexus4", "nexus4_1", 200, 12, 0.08, 0.015},
                                            {"s3", "s3_1", 150, 9, 0.12, 0.02},
                                            {"s3mini", "s3mini_1", 100, 6, 0.2, 0.03},
                                            {"samsungold", "samsungold_1", 50, 4, 0.3, 0.05}};
  double seconds = 60;                               ///< length of each (user, device, activity) recording
  double pause_probability = 0.3;                    ///< chance of a 3 s pause mid-recording (a new HHAR segment)
  double noise_scale = 1.0;                          ///< multiplies every device's noise levels
  double orientation_degrees = 35;                   ///< the phone's random rotation per recording, about each axis
  double cadence_spread = 0.15;                      ///< per-user cadence factor in [1 - s, 1 + s] (times +-5% per recording)
  double amplitude_spread = 0.3;                     ///< per-user amplitude factor in [1 - s, 1 + s] (times +-15% per recording)
  std::int64_t start_time_ns = 1424696633000000000;  ///< Creation_Time of the first sample
  std::uint64_t seed = 2017;

  void validate() const {
    constexpr const char* fn = "slimnet::data::generate_synthetic_imu";
    if (users.empty() || devices.empty()) {
      slimnet::detail::raise<config_error>(fn, "need at least one user and one device, got {} and {}", users.size(),
                                           devices.size());
    }
    if (!(seconds > 0) || !(pause_probability >= 0 && pause_probability <= 1) || !(noise_scale >= 0)) {
      slimnet::detail::raise<config_error>(fn, "invalid options: seconds={} pause_probability={} noise_scale={}", seconds,
                                           pause_probability, noise_scale);
    }
    if (!(orientation_degrees >= 0 && orientation_degrees <= 180) || !(cadence_spread >= 0 && cadence_spread < 1) ||
        !(amplitude_spread >= 0 && amplitude_spread < 1)) {
      slimnet::detail::raise<config_error>(fn, "invalid spreads: orientation_degrees={} cadence_spread={} amplitude_spread={}",
                                           orientation_degrees, cadence_spread, amplitude_spread);
    }
    for (const auto& d : devices) {
      if (!(d.rate_hz >= 10) || !(d.cutoff_hz > 0) || !(d.acc_noise >= 0) || !(d.gyro_noise >= 0)) {
        slimnet::detail::raise<config_error>(fn, "device '{}': rate {} Hz must be >= 10, cutoff {} Hz > 0, noise >= 0", d.device,
                                             d.rate_hz, d.cutoff_hz);
      }
    }
  }
};

/// Generated streams, one per (user, device, activity) and sensor.
struct synthetic_imu {
  std::vector<hhar::sensor_stream> accelerometer, gyroscope;
};

namespace detail {

/// How one activity moves the phone: cadence, posture, harmonic amplitudes (axes: up, forward, side).
struct activity_profile {
  double cadence_hz;
  std::array<double, 3> posture;              // direction of gravity in the body frame
  std::array<std::array<double, 3>, 3> acc;   // [harmonic][axis], m/s^2
  std::array<std::array<double, 3>, 3> gyro;  // [harmonic][axis], rad/s
};

inline const std::array<activity_profile, 6>& activity_profiles() {
  // Order of hhar::activities(): bike, sit, stand, walk, stairsup, stairsdown.
  // Walking and the two stair activities share most of their gait: cadences, postures and
  // harmonics overlap once the per-user and per-recording spreads are applied, as do sitting and
  // standing once the phone's orientation varies; the other pairs are far apart.
  // Each row: cadence (Hz), posture, acc harmonics [h][axis], gyro harmonics [h][axis].
  static const std::array<activity_profile, 6> p{{
      // bike
      {1.2,
       {0.50, 0.85, 0.20},
       {{{0.8, 2.5, 0.6}, {0.3, 0.6, 0.2}, {0.1, 0.2, 0.1}}},
       {{{0.3, 0.4, 1.6}, {0.1, 0.2, 0.4}, {0.0, 0.1, 0.1}}}},
      // sit
      {0.3,
       {0.45, 0.10, 0.89},
       {{{0.06, 0.05, 0.05}, {0.0, 0.0, 0.0}, {0.0, 0.0, 0.0}}},
       {{{0.02, 0.02, 0.02}, {0.0, 0.0, 0.0}, {0.0, 0.0, 0.0}}}},
      // stand
      {0.25,
       {0.98, 0.10, 0.15},
       {{{0.08, 0.12, 0.10}, {0.02, 0.02, 0.02}, {0.0, 0.0, 0.0}}},
       {{{0.04, 0.03, 0.04}, {0.0, 0.0, 0.0}, {0.0, 0.0, 0.0}}}},
      // walk
      {1.8,
       {0.97, 0.20, 0.10},
       {{{1.8, 1.2, 0.9}, {2.0, 0.8, 0.3}, {0.6, 0.3, 0.2}}},
       {{{0.6, 0.9, 0.4}, {0.2, 0.3, 0.1}, {0.1, 0.1, 0.0}}}},
      // stairsup
      {1.6,
       {0.94, 0.32, 0.10},
       {{{2.2, 1.0, 0.8}, {1.5, 0.9, 0.3}, {0.4, 0.2, 0.1}}},
       {{{0.8, 1.0, 0.5}, {0.3, 0.3, 0.2}, {0.1, 0.1, 0.1}}}},
      // stairsdown
      {2.0,
       {0.96, -0.15, 0.15},
       {{{2.0, 1.3, 1.0}, {2.4, 1.0, 0.5}, {1.0, 0.5, 0.3}}},
       {{{0.7, 1.2, 0.5}, {0.3, 0.4, 0.2}, {0.2, 0.2, 0.1}}}},
  }};
  return p;
}

/// Rotation matrix from three small angles (x, then y, then z).
inline std::array<std::array<double, 3>, 3> rotation(double ax, double ay, double az) {
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay), cz = std::cos(az), sz = std::sin(az);
  return {{{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
           {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
           {-sy, cy * sx, cy * cx}}};
}

}  // namespace detail

/// Generates one accelerometer and one gyroscope stream per (user, device, activity); the same
/// options and seed give the same streams everywhere (slimnet::rng only).
inline synthetic_imu generate_synthetic_imu(const synthetic_imu_options& o = {}) {
  o.validate();
  rng gen(o.seed);
  const auto& profiles = detail::activity_profiles();
  struct user_traits {
    double cadence, amplitude;
  };
  std::vector<user_traits> users;
  for (std::size_t u = 0; u < o.users.size(); ++u) {
    users.push_back(
        {gen.uniform(1 - o.cadence_spread, 1 + o.cadence_spread), gen.uniform(1 - o.amplitude_spread, 1 + o.amplitude_spread)});
  }
  struct device_traits {
    std::array<double, 3> gain, bias;
    double gyro_lag_ns;
  };
  std::vector<device_traits> devices;
  for (std::size_t d = 0; d < o.devices.size(); ++d) {
    device_traits t;
    for (int k = 0; k < 3; ++k) {
      t.gain[static_cast<std::size_t>(k)] = gen.uniform(0.95, 1.05);
      t.bias[static_cast<std::size_t>(k)] = gen.uniform(-0.3, 0.3);
    }
    t.gyro_lag_ns = gen.uniform(1e6, 5e6);
    devices.push_back(t);
  }
  synthetic_imu out;
  std::int64_t clock = o.start_time_ns;
  constexpr double two_pi = 2.0 * M_PI;
  for (std::size_t u = 0; u < o.users.size(); ++u) {
    for (std::size_t d = 0; d < o.devices.size(); ++d) {
      const auto& dev = o.devices[d];
      const auto& trait = devices[d];
      for (std::int32_t a = 0; a < 6; ++a) {
        const auto& p = profiles[static_cast<std::size_t>(a)];
        const double f = p.cadence_hz * users[u].cadence * gen.uniform(0.95, 1.05);
        const double amp = users[u].amplitude * gen.uniform(0.85, 1.15);
        const double rad = o.orientation_degrees * M_PI / 180.0;
        const auto R = detail::rotation(gen.uniform(-rad, rad), gen.uniform(-rad, rad), gen.uniform(-rad, rad));
        std::array<double, 3> phase_acc{}, phase_gyro{}, response{};
        for (std::size_t h = 0; h < 3; ++h) {
          phase_acc[h] = gen.uniform(0, two_pi);
          phase_gyro[h] = gen.uniform(0, two_pi);
          const double fh = static_cast<double>(h + 1) * f;
          response[h] = 1.0 / std::sqrt(1.0 + (fh / dev.cutoff_hz) * (fh / dev.cutoff_hz));
        }
        const bool pause = gen.bernoulli(o.pause_probability);
        const double pause_at = gen.uniform(0.3, 0.7) * o.seconds, pause_len = 3.0;
        hhar::sensor_stream acc{o.users[u], dev.model, dev.device, a, {}}, gyro = acc;
        const auto samples = static_cast<std::int64_t>(o.seconds * dev.rate_hz);
        const double period_ns = 1e9 / dev.rate_hz;
        for (std::int64_t i = 0; i < samples; ++i) {
          double t = static_cast<double>(i) / dev.rate_hz;
          if (pause && t >= pause_at) t += pause_len;
          std::array<double, 3> body_acc{}, body_gyro{};
          for (std::size_t k = 0; k < 3; ++k) body_acc[k] = 9.81 * p.posture[k];
          for (std::size_t h = 0; h < 3; ++h) {
            const double w = two_pi * static_cast<double>(h + 1) * f * t;
            const double wave_acc = std::sin(w + phase_acc[h]) * response[h] * amp;
            const double wave_gyro = std::sin(w + phase_gyro[h]) * response[h] * amp;
            for (std::size_t k = 0; k < 3; ++k) {
              body_acc[k] += p.acc[h][k] * wave_acc;
              body_gyro[k] += p.gyro[h][k] * wave_gyro;
            }
          }
          std::array<double, 3> va{}, vg{};
          for (std::size_t r = 0; r < 3; ++r) {
            for (std::size_t c = 0; c < 3; ++c) {
              va[r] += R[r][c] * body_acc[c];
              vg[r] += R[r][c] * body_gyro[c];
            }
            va[r] = va[r] * trait.gain[r] + trait.bias[r] + gen.normal() * dev.acc_noise * o.noise_scale;
            vg[r] = vg[r] * trait.gain[r] + gen.normal() * dev.gyro_noise * o.noise_scale;
          }
          const double stamp = static_cast<double>(clock) + t * 1e9 + gen.normal() * 0.05 * period_ns;
          acc.samples.push_back({static_cast<std::int64_t>(stamp), static_cast<float>(va[0]), static_cast<float>(va[1]),
                                 static_cast<float>(va[2])});
          gyro.samples.push_back({static_cast<std::int64_t>(stamp + trait.gyro_lag_ns), static_cast<float>(vg[0]),
                                  static_cast<float>(vg[1]), static_cast<float>(vg[2])});
        }
        clock += static_cast<std::int64_t>((o.seconds + 10.0) * 1e9);  // recordings never overlap
        out.accelerometer.push_back(std::move(acc));
        out.gyroscope.push_back(std::move(gyro));
      }
    }
  }
  return out;
}

}  // namespace slimnet::data
