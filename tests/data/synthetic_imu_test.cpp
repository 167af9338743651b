// The synthetic IMU generator's heterogeneity (time-stamp jitter, bursts, rate drift, sensing
// matrices, per-user gait, overlapping activities): statistics of the generated streams against
// the options, determinism, typed errors for bad options; and the UserID split.
#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

#include "slimnet/data/hhar.hpp"
#include "slimnet/data/synthetic_imu.hpp"

using namespace slimnet;
namespace hhar = slimnet::data::hhar;

namespace {

// One user, one device at `rate` Hz with the given jitter and burst probability, no pause: the
// time-stamp tests read its streams.
data::synthetic_imu_options imu_timing_options(double rate, double jitter, double burst) {
  data::synthetic_imu_options o;
  o.users = {"a"};
  o.devices = {{"nexus4", "nexus4_1", rate, 12, 0.08, 0.015, jitter, burst}};
  o.seconds = 40;
  o.pause_probability = 0;
  return o;
}

// Population standard deviation of one acc axis (0, 1, 2) of a stream.
double imu_axis_std(const hhar::sensor_stream& s, int axis) {
  double sum = 0, sq = 0;
  for (const auto& x : s.samples) {
    const double v = axis == 0 ? x.x : axis == 1 ? x.y : x.z;
    sum += v;
    sq += v * v;
  }
  const double n = static_cast<double>(s.samples.size()), mean = sum / n;
  return std::sqrt(sq / n - mean * mean);
}

}  // namespace

TEST_CASE("synthetic IMU: time stamps carry the device's jitter around the drifted sampling grid", "[data][synthetic]") {
  for (double jitter : {0.0, 0.2, 0.4}) {
    auto o = imu_timing_options(100, jitter, 0.0);
    o.rate_drift = 0;
    const auto s = data::generate_synthetic_imu(o);
    REQUIRE(s.accelerometer.size() == 6);
    for (std::size_t r = 0; r < 6; ++r) {
      const auto& acc = s.accelerometer[r].samples;
      REQUIRE(acc.size() == 4000);
      // Residuals against the nominal grid from the recording's first (jittered) stamp: their
      // spread is jitter x period (10 ms), the first stamp's own error shifting them all alike.
      double sum = 0, sq = 0;
      for (std::size_t i = 0; i < acc.size(); ++i) {
        const double e = static_cast<double>(acc[i].time - acc[0].time) - static_cast<double>(i) * 1e7;
        sum += e;
        sq += e * e;
      }
      const double n = static_cast<double>(acc.size()), mean = sum / n, sd = std::sqrt(sq / n - mean * mean);
      CHECK(sd == Approx(jitter * 1e7).margin(0.05 * 1e7 * jitter + 2));  // +2 ns: stamps are truncated to ns
      // The gyroscope is stamped 1-5 ms after the accelerometer, sample by sample.
      const auto& gyro = s.gyroscope[r].samples;
      const auto lag = gyro[0].time - acc[0].time;
      CHECK(lag >= 1000000 - 1);
      CHECK(lag <= 5000000 + 1);
      CHECK(std::abs((gyro[1234].time - acc[1234].time) - lag) <= 1);
    }
  }
}

TEST_CASE("synthetic IMU: the true rate drifts per recording within rate_drift", "[data][synthetic]") {
  auto o = imu_timing_options(100, 0.0, 0.0);
  o.users = {"a", "b", "c"};
  for (double drift : {0.0, 0.05}) {
    o.rate_drift = drift;
    const auto s = data::generate_synthetic_imu(o);
    std::set<std::int64_t> spans;
    for (const auto& st : s.accelerometer) {
      const auto& acc = st.samples;
      // Mean period over the recording; the true rate is 100 (1 + u) Hz, |u| <= drift.
      const double period = static_cast<double>(acc.back().time - acc.front().time) / static_cast<double>(acc.size() - 1);
      CHECK(period >= 1e7 / (1 + drift) - 1);
      CHECK(period <= 1e7 / (1 - drift) + 1);
      spans.insert((acc.back().time - acc.front().time) / 1000000);  // ms
    }
    if (drift == 0) {
      CHECK(spans.size() == 1);
    } else {
      CHECK(spans.size() > 10);  // 18 recordings, each its own rate
    }
  }
}

TEST_CASE("synthetic IMU: bursts repeat the previous time stamp with the device's probability", "[data][synthetic]") {
  for (double burst : {0.0, 0.2}) {
    for (double scale : {1.0, 2.0}) {
      auto o = imu_timing_options(200, 0.1, burst);
      o.burst_scale = scale;
      const auto s = data::generate_synthetic_imu(o);
      double repeats = 0, total = 0;
      for (const auto& st : s.accelerometer) {
        for (std::size_t i = 1; i < st.samples.size(); ++i) {
          repeats += st.samples[i].time == st.samples[i - 1].time;
          total += 1;
        }
      }
      // 6 x 7999 Bernoulli draws: the standard error of the rate is below 0.006.
      CHECK(repeats / total == Approx(burst * scale).margin(0.02));
    }
  }
}

TEST_CASE("synthetic IMU: sensing matrices are a rotation times (I + cross-axis) times gains", "[data][synthetic]") {
  rng gen(3);
  // No misalignment, no cross-axis terms: diagonal gains in [0.95, 1.05].
  const auto m = data::detail::sensing_matrix(gen, 0.0, 0.0);
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      if (i == j) {
        CHECK(m[i][j] >= 0.95);
        CHECK(m[i][j] <= 1.05);
      } else {
        CHECK(m[i][j] == 0.0);
      }
    }
  }
  // Misalignment only: the columns divided by their norms (the gains) are orthonormal, and not the
  // identity.
  const auto r = data::detail::sensing_matrix(gen, 5 * M_PI / 180, 0.0);
  std::array<double, 3> norm{};
  for (std::size_t j = 0; j < 3; ++j) norm[j] = std::sqrt(r[0][j] * r[0][j] + r[1][j] * r[1][j] + r[2][j] * r[2][j]);
  double off = 0;
  for (std::size_t j = 0; j < 3; ++j) {
    CHECK(norm[j] >= 0.95);
    CHECK(norm[j] <= 1.05);
    for (std::size_t k = j + 1; k < 3; ++k) {
      CHECK((r[0][j] * r[0][k] + r[1][j] * r[1][k] + r[2][j] * r[2][k]) / (norm[j] * norm[k]) == Approx(0.0).margin(1e-12));
    }
    for (std::size_t i = 0; i < 3; ++i) off += i == j ? 0.0 : std::abs(r[i][j]);
  }
  CHECK(off > 1e-3);
  // Cross-axis only: off-diagonal terms within c x gain, not all zero.
  const auto c = data::detail::sensing_matrix(gen, 0.0, 0.04);
  double cross = 0;
  for (std::size_t i = 0; i < 3; ++i) {
    for (std::size_t j = 0; j < 3; ++j) {
      if (i != j) {
        CHECK(std::abs(c[i][j]) <= 0.04 * 1.05);
        cross += std::abs(c[i][j]);
      }
    }
  }
  CHECK(cross > 0.01);
}

TEST_CASE("synthetic IMU: activity_overlap pulls walking and stairs, and sitting and standing, together", "[data][synthetic]") {
  const auto& raw = data::detail::activity_profiles();
  const auto none = data::detail::overlapped_profiles(0.0);
  const auto half = data::detail::overlapped_profiles(0.5);
  const auto full = data::detail::overlapped_profiles(1.0);
  for (std::size_t a = 0; a < 6; ++a) {
    CHECK(none[a].cadence_hz == raw[a].cadence_hz);
    CHECK(none[a].acc[0][1] == raw[a].acc[0][1]);
  }
  // Bike is in no group.
  CHECK(full[0].cadence_hz == raw[0].cadence_hz);
  CHECK(full[0].acc[1][2] == raw[0].acc[1][2]);
  // Walk, stairs up and stairs down: one gait at overlap 1, half the distance at 0.5.
  for (std::size_t a : {4, 5}) {
    CHECK(full[a].cadence_hz == Approx(full[3].cadence_hz));
    for (std::size_t k = 0; k < 3; ++k) {
      CHECK(full[a].posture[k] == Approx(full[3].posture[k]));
      for (std::size_t h = 0; h < 3; ++h) {
        CHECK(full[a].acc[h][k] == Approx(full[3].acc[h][k]));
        CHECK(full[a].gyro[h][k] == Approx(full[3].gyro[h][k]));
        CHECK(half[a].acc[h][k] - half[3].acc[h][k] == Approx(0.5 * (raw[a].acc[h][k] - raw[3].acc[h][k])).margin(1e-12));
      }
    }
  }
  // Sitting and standing: one sway, their postures untouched.
  CHECK(full[1].cadence_hz == Approx(full[2].cadence_hz));
  for (std::size_t k = 0; k < 3; ++k) {
    CHECK(full[1].acc[0][k] == Approx(full[2].acc[0][k]));
    CHECK(full[1].posture[k] == raw[1].posture[k]);
    CHECK(full[2].posture[k] == raw[2].posture[k]);
  }
}

TEST_CASE("synthetic IMU: each user's gait signature shapes all of the user's recordings", "[data][synthetic]") {
  // Everything but the gait signature held still (no noise, rotation, spreads, wander, asymmetry,
  // device errors): the ratio of the walking acc's per-axis spreads then depends on the user only
  // through the signature (and slightly on the +-5% cadence per recording through the low-pass).
  auto axis_ratio = [](double gait_spread) {
    data::synthetic_imu_options o;
    o.users = {"a", "b", "c"};
    o.devices.resize(1);
    o.seconds = 20;
    o.pause_probability = 0;
    o.noise_scale = 0;
    o.orientation_degrees = 0;
    o.cadence_spread = o.amplitude_spread = 0;
    o.cadence_wander = o.amplitude_wander = 0;
    o.gait_asymmetry = 0;
    o.cross_axis = o.misalignment_degrees = o.gyro_bias = o.rate_drift = 0;
    o.gait_spread = gait_spread;
    const auto s = data::generate_synthetic_imu(o);
    std::vector<double> ratios;
    for (std::size_t u = 0; u < 3; ++u) {
      const auto& walk = s.accelerometer[u * 6 + 3];
      REQUIRE(walk.activity == 3);
      ratios.push_back(imu_axis_std(walk, 0) / imu_axis_std(walk, 1));
    }
    const auto [lo, hi] = std::minmax_element(ratios.begin(), ratios.end());
    return *hi / *lo - 1;
  };
  CHECK(axis_ratio(0.0) < 0.03);
  CHECK(axis_ratio(0.4) > 0.1);
}

TEST_CASE("synthetic IMU: the same options give the same streams, every option changes them", "[data][synthetic]") {
  data::synthetic_imu_options o;
  o.users = {"a", "b"};
  o.devices.resize(2);
  o.seconds = 6;
  const auto s = data::generate_synthetic_imu(o);
  const auto t = data::generate_synthetic_imu(o);
  REQUIRE(s.accelerometer.size() == t.accelerometer.size());
  for (std::size_t r = 0; r < s.accelerometer.size(); ++r) {
    REQUIRE(s.accelerometer[r].samples.size() == t.accelerometer[r].samples.size());
    for (std::size_t i = 0; i < s.accelerometer[r].samples.size(); ++i) {
      const auto &x = s.accelerometer[r].samples[i], &y = t.accelerometer[r].samples[i];
      const auto &g = s.gyroscope[r].samples[i], &h = t.gyroscope[r].samples[i];
      REQUIRE((x.time == y.time && x.x == y.x && x.y == y.y && x.z == y.z));
      REQUIRE((g.time == h.time && g.x == h.x && g.y == h.y && g.z == h.z));
    }
  }
  auto differs = [&](const data::synthetic_imu_options& changed) {
    const auto c = data::generate_synthetic_imu(changed);
    const auto &x = c.accelerometer[9].samples[300], &y = s.accelerometer[9].samples[300];
    return x.time != y.time || x.x != y.x || x.y != y.y || x.z != y.z;
  };
  auto c = o;
  c.seed = 5;
  CHECK(differs(c));
  c = o;
  c.activity_overlap = 0.35;
  CHECK(differs(c));
  c = o;
  c.gait_spread = 0.1;
  CHECK(differs(c));
  c = o;
  c.jitter_scale = 2;
  CHECK(differs(c));
  c = o;
  c.cross_axis = 0.1;
  CHECK(differs(c));
}

TEST_CASE("synthetic IMU: invalid options are config_errors naming the option and value", "[data][synthetic][errors]") {
  auto rejects = [](auto change, const std::string& text) {
    data::synthetic_imu_options o;
    o.seconds = 1;
    change(o);
    CHECK_THROWS_AS(data::generate_synthetic_imu(o), config_error);
    CHECK_THROWS_WITH(data::generate_synthetic_imu(o),
                      Catch::Contains("slimnet::data::generate_synthetic_imu") && Catch::Contains(text));
  };
  rejects([](auto& o) { o.activity_overlap = 1.5; }, "activity_overlap=1.5");
  rejects([](auto& o) { o.gait_spread = 1.0; }, "gait_spread=1");
  rejects([](auto& o) { o.gait_asymmetry = -0.1; }, "gait_asymmetry=-0.1");
  rejects([](auto& o) { o.cadence_wander = 0.5; }, "cadence_wander=0.5");
  rejects([](auto& o) { o.amplitude_wander = std::nan(""); }, "amplitude_wander=nan");
  rejects([](auto& o) { o.rate_drift = 0.3; }, "rate_drift=0.3");
  rejects([](auto& o) { o.burst_scale = -1; }, "burst_scale=-1");
  rejects([](auto& o) { o.cross_axis = 0.25; }, "cross_axis=0.25");
  rejects([](auto& o) { o.misalignment_degrees = 45; }, "misalignment_degrees=45");
  rejects([](auto& o) { o.gyro_bias = -0.01; }, "gyro_bias=-0.01");
  rejects([](auto& o) { o.devices[1].jitter = 0.5; }, "device 's3_1': jitter 0.5");
  rejects([](auto& o) { o.jitter_scale = 2; }, "jitter 0.3 x jitter_scale 2");  // samsungold: 0.3 x 2 >= 0.5
  rejects([](auto& o) { o.devices[0].burst = 1; }, "burst 1");
}

TEST_CASE("UserID split: walking windows labelled by user, a random 10% of each user's windows for the test",
          "[data][hhar][synthetic]") {
  data::synthetic_imu_options g;
  g.users = {"c", "a", "b"};  // labels follow the sorted names, not this order
  g.devices.resize(2);
  g.seconds = 20;
  const auto s = data::generate_synthetic_imu(g);
  const auto recs = hhar::pair_sensors(s.accelerometer, s.gyroscope);
  CHECK(hhar::user_names(recs) == std::vector<std::string>{"a", "b", "c"});

  const auto split = hhar::user_id_split<float>(recs);
  CHECK(split.train.num_classes == 3);
  CHECK(split.test.num_classes == 3);
  split.train.validate();
  split.test.validate();
  // Every walking window and only those: as many as make_windows gives for the walking recordings.
  std::vector<hhar::recording> walking;
  for (const auto& r : recs) {
    if (r.activity == 3) walking.push_back(r);
  }
  const auto all = hhar::make_windows<float>(walking);
  REQUIRE(split.train.size() + split.test.size() == all.data.size());
  // Labels: the window's user's rank; per user, the test side holds round(10%) of its windows.
  std::array<index_t, 3> per_user{}, per_user_test{};
  for (std::size_t i = 0; i < all.users.size(); ++i) ++per_user[all.users[i] == "a" ? 0 : all.users[i] == "b" ? 1 : 2];
  for (auto l : split.test.labels) ++per_user_test[static_cast<std::size_t>(l)];
  for (std::size_t u = 0; u < 3; ++u) {
    CHECK(std::abs(static_cast<double>(per_user_test[u]) - 0.1 * static_cast<double>(per_user[u])) <= 1.0);
  }
  // The test windows are windows of the data, unchanged: the first test window's values appear
  // among the walking windows with the same user label.
  const index_t width = 20 * 120;
  bool found = false;
  for (index_t i = 0; i < all.data.size() && !found; ++i) {
    found = std::equal(split.test.inputs.data(), split.test.inputs.data() + width, all.data.inputs.data() + i * width) &&
            all.users[static_cast<std::size_t>(i)] == hhar::user_names(recs)[static_cast<std::size_t>(split.test.labels[0])];
  }
  CHECK(found);
  // Seeded: the same seed, the same split; another seed, another one.
  hhar::user_id_options u;
  CHECK(hhar::user_id_split<float>(recs, u).test.labels == split.test.labels);
  u.seed = 9;
  const auto other = hhar::user_id_split<float>(recs, u);
  CHECK(!std::equal(other.test.inputs.data(), other.test.inputs.data() + other.test.inputs.size(), split.test.inputs.data()));
  // All activities: more windows.
  u.activities = {0, 1, 2, 3, 4, 5};
  const auto every = hhar::user_id_split<float>(recs, u);
  CHECK(every.train.size() + every.test.size() > 4 * all.data.size());

  // Errors.
  hhar::preprocess_options aug;
  aug.augment_copies = 2;
  CHECK_THROWS_WITH(hhar::user_id_split<float>(recs, {}, aug),
                    Catch::Contains("slimnet::data::hhar::user_id_split") && Catch::Contains("augment_copies = 2"));
  hhar::user_id_options bad;
  bad.test_fraction = 0;
  CHECK_THROWS_AS(hhar::user_id_split<float>(recs, bad), config_error);
  bad = {};
  bad.activities = {6};
  CHECK_THROWS_WITH(hhar::user_id_split<float>(recs, bad), Catch::Contains("activity 6"));
  CHECK_THROWS_AS(hhar::user_id_split<float>({}, {}), config_error);
}
