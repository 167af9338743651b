// A seeded synthetic stand-in for the HHAR phone data (the real files cannot be downloaded on the
// build machines): accelerometer and gyroscope streams of several users, phones and the six HHAR
// activities, in HHAR's own form (hhar::sensor_stream, writable as HHAR CSV), so DeepSense's
// preprocessing and model run end to end. These are NOT measurements; accuracy on them says
// nothing about accuracy on HHAR. Programs that use them must say so.
//
// Signal model, per (user, device, activity) recording, in the phone's frame:
//   acc(t)  = M_d R (g_a + sum_h L_d(h f) A_a,h U_u,h a(t) sin(h phi(t) + phi_h)) + bias_d + noise
//   gyro(t) = N_d R (      sum_h L_d(h f) G_a,h U_u,h a(t) sin(h phi(t) + psi_h)) + gbias_d + noise
// plus a stride term at f/2 of weight s_u (below). phi(t) = 2 pi int f(t) dt with
// f(t) = f0 (1 + w_c x(t)) and a(t) = amp (1 + w_a y(t)), x and y independent Ornstein-Uhlenbeck
// processes (unit variance, time constant 4 s): cadence and effort wander within a recording, so
// its windows are not copies of one period. f0 = the activity's cadence (bike 1.2 Hz, walking
// 1.8 Hz, stairs 1.6 / 2.0 Hz before the overlap, postural sway for sitting and standing) times a
// per-user factor and +-5% per recording; g_a the activity's posture (gravity, 9.81 m/s^2); A, G its harmonic
// amplitudes (3 harmonics x 3 axes); R a random phone rotation per recording (+-35 degrees about
// each axis: the pouch is never worn the same way twice).
//
// The heterogeneity HHAR was built to show (Stisen et al., "Smart Devices are Different",
// SenSys 2015), each an option below with its assumed default:
// - devices: sampling rate (50-200 Hz), a first-order low-pass response
//   L_d(f) = 1 / sqrt(1 + (f / f_c)^2), noise, per-axis gain and bias; a sensing matrix
//   M_d = S_d (I + C_d) diag(gain_d) (separately N_d for the gyroscope) with a mounting
//   misalignment S_d (a small rotation) and cross-axis sensitivity C_d (off-diagonal terms);
//   a gyroscope bias; sampling instability: the true rate is off the nominal one by up to
//   `rate_drift` per recording, time stamps carry Gaussian jitter (a device's fraction of its
//   period) and some samples are delivered in bursts that share one time stamp (HHAR's repeated
//   Creation_Times; the preprocessing keeps such a stamp once);
// - users: cadence and amplitude factors, a gait signature U_u (a factor per harmonic and axis
//   shared by all of the user's activities), a left/right asymmetry s_u (a stride component at
//   f/2, as a limp or a heavier step makes), and fixed harmonic phase relations;
// - activities that overlap: `activity_overlap` pulls walking, stairs up and stairs down toward
//   their common gait (they then differ subtly in cadence, tilt and the vertical harmonics), and
//   sitting and standing toward one sway, so that they differ mainly by the direction of gravity.
#pragma once

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/data/hhar.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::data {

/// One phone as the generator sees it.
struct synthetic_imu_device {
  std::string model, device;  ///< HHAR names, e.g. "nexus4", "nexus4_1"
  double rate_hz = 100;       ///< nominal sampling rate of both sensors
  double cutoff_hz = 8;       ///< first-order low-pass corner of its motion response
  double acc_noise = 0.1;     ///< m/s^2
  double gyro_noise = 0.02;   ///< rad/s
  double jitter = 0.1;        ///< standard deviation of a time stamp's error, as a fraction of the period
  double burst = 0.0;         ///< probability that a sample is delivered with (and stamped as) the previous one
};

struct synthetic_imu_options {
  std::vector<std::string> users{"a", "b", "c", "d", "e", "f", "g", "h", "i"};
  // Assumed device traits, ordered as Stisen et al. describe the phones: the newer ones sample
  // faster and more regularly, the older and cheaper ones slower, noisier and with more unstable
  // time stamps (jitter, bursts of samples that share one stamp).
  std::vector<synthetic_imu_device> devices{{"nexus4", "nexus4_1", 200, 12, 0.08, 0.015, 0.05, 0.0},
                                            {"s3", "s3_1", 150, 9, 0.12, 0.02, 0.1, 0.05},
                                            {"s3mini", "s3mini_1", 100, 6, 0.2, 0.03, 0.2, 0.1},
                                            {"samsungold", "samsungold_1", 50, 4, 0.3, 0.05, 0.3, 0.2}};
  double seconds = 60;                               ///< length of each (user, device, activity) recording
  double pause_probability = 0.3;                    ///< chance of a 3 s pause mid-recording (a new HHAR segment)
  double noise_scale = 1.0;                          ///< multiplies every device's noise levels
  double orientation_degrees = 35;                   ///< the phone's random rotation per recording, about each axis
  double cadence_spread = 0.15;                      ///< per-user cadence factor in [1 - s, 1 + s] (times +-5% per recording)
  double amplitude_spread = 0.3;                     ///< per-user amplitude factor in [1 - s, 1 + s] (times +-15% per recording)
  /// Per-user gait signature: a factor in [1 - s, 1 + s] per harmonic and axis, for all activities.
  double gait_spread = 0.4;
  /// Per-user left/right asymmetry: the stride component at f/2 has a weight in [0, s] of the
  /// fundamental's amplitudes.
  double gait_asymmetry = 0.3;
  /// Within-recording wander (standard deviations, relative): cadence and amplitude.
  double cadence_wander = 0.06, amplitude_wander = 0.25;
  /// 0 keeps the activity profiles apart, 1 makes walking and both stairs one gait and sitting and
  /// standing one sway (then only posture tells them apart). The default is a calibration, not a
  /// measurement: with it and every other default, a dense DeepSense (example 09, 12 epochs) scores
  /// 91.4% leave-one-user-out on average (users a, b, c: 94.4%, 88.7%, 91.0%; at 0.25: 89.6%; at
  /// 0.5, user a: 84.2%), near what DeepSense reaches on the real HHAR (94.6% in DeepIoT's
  /// Table 5); walking and the stairs carry most of the errors.
  double activity_overlap = 0.2;
  double rate_drift = 0.02;            ///< true rate = nominal x (1 + u), u in [-d, d] per recording
  double jitter_scale = 1.0;           ///< multiplies every device's time-stamp jitter
  double burst_scale = 1.0;            ///< multiplies every device's burst probability (capped at 0.9)
  double cross_axis = 0.03;            ///< off-diagonal sensitivities of M_d, N_d in [-c, c]
  double misalignment_degrees = 3;     ///< sensor mounting rotation per device, about each axis
  double gyro_bias = 0.02;             ///< rad/s, per device and axis in [-b, b]
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
    if (!(gait_spread >= 0 && gait_spread < 1) || !(gait_asymmetry >= 0 && gait_asymmetry <= 1) ||
        !(cadence_wander >= 0 && cadence_wander <= 0.3) || !(amplitude_wander >= 0 && amplitude_wander <= 1) ||
        !(activity_overlap >= 0 && activity_overlap <= 1)) {
      slimnet::detail::raise<config_error>(fn,
                                           "invalid gait options: gait_spread={} (in [0, 1)) gait_asymmetry={} (in [0, 1]) "
                                           "cadence_wander={} (in [0, 0.3]) amplitude_wander={} (in [0, 1]) "
                                           "activity_overlap={} (in [0, 1])",
                                           gait_spread, gait_asymmetry, cadence_wander, amplitude_wander, activity_overlap);
    }
    if (!(rate_drift >= 0 && rate_drift <= 0.2) || !(jitter_scale >= 0) || !(burst_scale >= 0) ||
        !(cross_axis >= 0 && cross_axis <= 0.2) || !(misalignment_degrees >= 0 && misalignment_degrees <= 30) ||
        !(gyro_bias >= 0)) {
      slimnet::detail::raise<config_error>(fn,
                                           "invalid device options: rate_drift={} (in [0, 0.2]) jitter_scale={} burst_scale={} "
                                           "(>= 0) cross_axis={} (in [0, 0.2]) misalignment_degrees={} (in [0, 30]) gyro_bias={}",
                                           rate_drift, jitter_scale, burst_scale, cross_axis, misalignment_degrees, gyro_bias);
    }
    for (const auto& d : devices) {
      if (!(d.rate_hz >= 10) || !(d.cutoff_hz > 0) || !(d.acc_noise >= 0) || !(d.gyro_noise >= 0)) {
        slimnet::detail::raise<config_error>(fn, "device '{}': rate {} Hz must be >= 10, cutoff {} Hz > 0, noise >= 0", d.device,
                                             d.rate_hz, d.cutoff_hz);
      }
      // A stamp error of half a period or more reorders samples; the pairing tolerance (10 ms)
      // also assumes acc and gyro stamps stay close.
      if (!(d.jitter >= 0 && d.jitter * jitter_scale < 0.5) || !(d.burst >= 0 && d.burst < 1)) {
        slimnet::detail::raise<config_error>(fn, "device '{}': jitter {} x jitter_scale {} must be in [0, 0.5), burst {} in [0, 1)",
                                             d.device, d.jitter, jitter_scale, d.burst);
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

/// The profiles with `overlap` in [0, 1] applied: walking and both stairs move toward their mean
/// gait (cadence, posture, harmonics), sitting and standing toward their mean sway (cadence and
/// harmonics only: their postures stay apart). p' = (1 - overlap) p + overlap mean(group).
inline std::array<activity_profile, 6> overlapped_profiles(double overlap) {
  auto p = activity_profiles();
  auto blend = [&](std::initializer_list<std::size_t> group, bool posture) {
    activity_profile mean{};
    const double n = static_cast<double>(group.size());
    for (std::size_t a : group) {
      mean.cadence_hz += p[a].cadence_hz / n;
      for (std::size_t k = 0; k < 3; ++k) {
        mean.posture[k] += p[a].posture[k] / n;
        for (std::size_t h = 0; h < 3; ++h) {
          mean.acc[h][k] += p[a].acc[h][k] / n;
          mean.gyro[h][k] += p[a].gyro[h][k] / n;
        }
      }
    }
    auto mix = [&](double& x, double m) { x = (1 - overlap) * x + overlap * m; };
    for (std::size_t a : group) {
      mix(p[a].cadence_hz, mean.cadence_hz);
      for (std::size_t k = 0; k < 3; ++k) {
        if (posture) mix(p[a].posture[k], mean.posture[k]);
        for (std::size_t h = 0; h < 3; ++h) {
          mix(p[a].acc[h][k], mean.acc[h][k]);
          mix(p[a].gyro[h][k], mean.gyro[h][k]);
        }
      }
    }
  };
  blend({3, 4, 5}, true);   // walk, stairsup, stairsdown
  blend({1, 2}, false);     // sit, stand
  return p;
}

using matrix3 = std::array<std::array<double, 3>, 3>;

/// Rotation matrix from three small angles (x, then y, then z).
inline matrix3 rotation(double ax, double ay, double az) {
  const double cx = std::cos(ax), sx = std::sin(ax), cy = std::cos(ay), sy = std::sin(ay), cz = std::cos(az), sz = std::sin(az);
  return {{{cz * cy, cz * sy * sx - sz * cx, cz * sy * cx + sz * sx},
           {sz * cy, sz * sy * sx + cz * cx, sz * sy * cx - cz * sx},
           {-sy, cy * sx, cy * cx}}};
}

inline matrix3 multiply(const matrix3& a, const matrix3& b) {
  matrix3 c{};
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      for (std::size_t k = 0; k < 3; ++k) c[i][j] += a[i][k] * b[k][j];
    }
  }
  return c;
}

/// A sensor's sensing matrix S (I + C) diag(gain): mounting misalignment S (a rotation of up to
/// `misalign` rad about each axis), cross-axis sensitivities C_ij in [-cross, cross] (i != j), and
/// per-axis gains in [0.95, 1.05].
inline matrix3 sensing_matrix(rng& gen, double misalign, double cross) {
  const auto S = rotation(gen.uniform(-misalign, misalign), gen.uniform(-misalign, misalign), gen.uniform(-misalign, misalign));
  matrix3 m{};
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t j = 0; j < 3; ++j) m[i][j] = i == j ? 1.0 : gen.uniform(-cross, cross);
  }
  for (std::size_t j = 0; j < 3; ++j) {
    const double gain = gen.uniform(0.95, 1.05);
    for (std::size_t i = 0; i < 3; ++i) m[i][j] *= gain;
  }
  return multiply(S, m);
}

}  // namespace detail

/// Generates one accelerometer and one gyroscope stream per (user, device, activity); the same
/// options and seed give the same streams everywhere (slimnet::rng only). Each stream holds
/// seconds x rate_hz samples (the nominal rate; the true one drifts by up to rate_drift).
template <class = void>
synthetic_imu generate_synthetic_imu(const synthetic_imu_options& o = {}) {
  o.validate();
  rng gen(o.seed);
  const auto profiles = detail::overlapped_profiles(o.activity_overlap);
  constexpr double two_pi = 2.0 * M_PI, degree = M_PI / 180.0;
  struct user_traits {
    double cadence, amplitude, asymmetry;
    std::array<std::array<double, 3>, 3> gait;  // [harmonic][axis]
    std::array<double, 3> phase_acc, phase_gyro;
  };
  std::vector<user_traits> users;
  for (std::size_t u = 0; u < o.users.size(); ++u) {
    user_traits t;
    t.cadence = gen.uniform(1 - o.cadence_spread, 1 + o.cadence_spread);
    t.amplitude = gen.uniform(1 - o.amplitude_spread, 1 + o.amplitude_spread);
    t.asymmetry = gen.uniform(0, o.gait_asymmetry);
    for (std::size_t h = 0; h < 3; ++h) {
      for (std::size_t k = 0; k < 3; ++k) t.gait[h][k] = gen.uniform(1 - o.gait_spread, 1 + o.gait_spread);
      t.phase_acc[h] = gen.uniform(0, two_pi);
      t.phase_gyro[h] = gen.uniform(0, two_pi);
    }
    users.push_back(t);
  }
  struct device_traits {
    detail::matrix3 acc_sensing, gyro_sensing;
    std::array<double, 3> bias, gyro_bias;
    std::int64_t gyro_lag_ns;
  };
  std::vector<device_traits> devices;
  for (std::size_t d = 0; d < o.devices.size(); ++d) {
    device_traits t;
    t.acc_sensing = detail::sensing_matrix(gen, o.misalignment_degrees * degree, o.cross_axis);
    t.gyro_sensing = detail::sensing_matrix(gen, o.misalignment_degrees * degree, o.cross_axis);
    for (std::size_t k = 0; k < 3; ++k) {
      t.bias[k] = gen.uniform(-0.3, 0.3);
      t.gyro_bias[k] = gen.uniform(-o.gyro_bias, o.gyro_bias);
    }
    t.gyro_lag_ns = std::llround(gen.uniform(1e6, 5e6));
    devices.push_back(t);
  }
  // Ornstein-Uhlenbeck step over dt for a unit-variance process of time constant 4 s.
  constexpr double wander_seconds = 4.0;
  synthetic_imu out;
  std::int64_t clock = o.start_time_ns;
  for (std::size_t u = 0; u < o.users.size(); ++u) {
    const auto& user = users[u];
    for (std::size_t d = 0; d < o.devices.size(); ++d) {
      const auto& dev = o.devices[d];
      const auto& trait = devices[d];
      for (std::int32_t a = 0; a < 6; ++a) {
        const auto& p = profiles[static_cast<std::size_t>(a)];
        const double f0 = p.cadence_hz * user.cadence * gen.uniform(0.95, 1.05);
        const double amp = user.amplitude * gen.uniform(0.85, 1.15);
        const double rad = o.orientation_degrees * degree;
        const auto R = detail::rotation(gen.uniform(-rad, rad), gen.uniform(-rad, rad), gen.uniform(-rad, rad));
        const auto acc_map = detail::multiply(trait.acc_sensing, R), gyro_map = detail::multiply(trait.gyro_sensing, R);
        // The user's harmonic phase relations, shifted by a random start of the gait cycle.
        const double start = gen.uniform(0, two_pi), stride_phase = gen.uniform(0, two_pi);
        std::array<double, 3> phase_acc{}, phase_gyro{}, response{};
        for (std::size_t h = 0; h < 3; ++h) {
          phase_acc[h] = user.phase_acc[h] + static_cast<double>(h + 1) * start;
          phase_gyro[h] = user.phase_gyro[h] + static_cast<double>(h + 1) * start;
          const double fh = static_cast<double>(h + 1) * f0;
          response[h] = 1.0 / std::sqrt(1.0 + (fh / dev.cutoff_hz) * (fh / dev.cutoff_hz));
        }
        const double response_stride = 1.0 / std::sqrt(1.0 + (0.5 * f0 / dev.cutoff_hz) * (0.5 * f0 / dev.cutoff_hz));
        const bool pause = gen.bernoulli(o.pause_probability);
        const double pause_at = gen.uniform(0.3, 0.7) * o.seconds, pause_len = 3.0;
        const double true_rate = dev.rate_hz * (1 + gen.uniform(-o.rate_drift, o.rate_drift));
        const double dt = 1.0 / true_rate, rho = std::exp(-dt / wander_seconds), kick = std::sqrt(1 - rho * rho);
        const double jitter_ns = dev.jitter * o.jitter_scale * 1e9 / dev.rate_hz;
        const double burst = std::min(0.9, dev.burst * o.burst_scale);
        double cadence_state = gen.normal(), effort_state = gen.normal(), phase = 0;
        std::int64_t last_stamp = 0;
        hhar::sensor_stream acc{o.users[u], dev.model, dev.device, a, {}}, gyro = acc;
        const auto samples = static_cast<std::int64_t>(o.seconds * dev.rate_hz);
        for (std::int64_t i = 0; i < samples; ++i) {
          double t = static_cast<double>(i) * dt;
          if (pause && t >= pause_at) t += pause_len;
          cadence_state = rho * cadence_state + kick * gen.normal();
          effort_state = rho * effort_state + kick * gen.normal();
          phase += two_pi * f0 * std::max(0.2, 1 + o.cadence_wander * cadence_state) * dt;
          const double level = amp * std::max(0.1, 1 + o.amplitude_wander * effort_state);
          std::array<double, 3> body_acc{}, body_gyro{};
          for (std::size_t k = 0; k < 3; ++k) body_acc[k] = 9.81 * p.posture[k];
          for (std::size_t h = 0; h < 3; ++h) {
            const double w = static_cast<double>(h + 1) * phase;
            const double wave_acc = std::sin(w + phase_acc[h]) * response[h] * level;
            const double wave_gyro = std::sin(w + phase_gyro[h]) * response[h] * level;
            for (std::size_t k = 0; k < 3; ++k) {
              body_acc[k] += p.acc[h][k] * user.gait[h][k] * wave_acc;
              body_gyro[k] += p.gyro[h][k] * user.gait[h][k] * wave_gyro;
            }
          }
          // Left and right steps differ: a component at the stride frequency f/2.
          const double stride = std::sin(0.5 * phase + stride_phase) * response_stride * level * user.asymmetry;
          for (std::size_t k = 0; k < 3; ++k) {
            body_acc[k] += p.acc[0][k] * stride;
            body_gyro[k] += p.gyro[0][k] * stride;
          }
          std::array<double, 3> va{}, vg{};
          for (std::size_t r = 0; r < 3; ++r) {
            for (std::size_t c = 0; c < 3; ++c) {
              va[r] += acc_map[r][c] * body_acc[c];
              vg[r] += gyro_map[r][c] * body_gyro[c];
            }
            va[r] += trait.bias[r] + gen.normal() * dev.acc_noise * o.noise_scale;
            vg[r] += trait.gyro_bias[r] + gen.normal() * dev.gyro_noise * o.noise_scale;
          }
          // A burst delivers the sample with the previous one's stamp; otherwise the stamp is the
          // true sampling time plus the device's jitter.
          // (Offsets are rounded before they are added to the clock: a double near 1.4e18 ns only
          // resolves 256 ns.)
          const bool in_burst = i > 0 && gen.bernoulli(burst);
          const std::int64_t stamp = in_burst ? last_stamp : clock + std::llround(t * 1e9 + gen.normal() * jitter_ns);
          last_stamp = stamp;
          acc.samples.push_back({stamp, static_cast<float>(va[0]), static_cast<float>(va[1]), static_cast<float>(va[2])});
          gyro.samples.push_back(
              {stamp + trait.gyro_lag_ns, static_cast<float>(vg[0]), static_cast<float>(vg[1]), static_cast<float>(vg[2])});
        }
        clock += static_cast<std::int64_t>((o.seconds / (1 - o.rate_drift) + 10.0) * 1e9);  // recordings never overlap
        out.accelerometer.push_back(std::move(acc));
        out.gyroscope.push_back(std::move(gyro));
      }
    }
  }
  return out;
}

}  // namespace slimnet::data
