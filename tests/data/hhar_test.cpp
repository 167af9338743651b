// The HHAR reader and DeepSense's preprocessing on small generated CSV files (pairing, intervals,
// interpolation + FFT against the direct formulas, segments, windows, leave-one-user-out), every
// kind of malformed file, and the seeded synthetic IMU generator.
#include <catch2/catch.hpp>

#include <cmath>
#include <complex>
#include <fstream>

#include "slimnet/data/hhar.hpp"
#include "slimnet/data/synthetic_imu.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
namespace fs = std::filesystem;
namespace hhar = slimnet::data::hhar;

namespace {

constexpr std::int64_t t0 = 1424696633000000000;  // ns; one time unit = 1e8 ns = 0.1 s

// acc(t) = (1 + 0.5 t, -2 + 0.25 t, 9.8), gyro(t) = (0.1 t, 0.2, -0.05 t), t in time units from t0:
// linear, so interpolation is exact away from the interval ends.
std::array<double, 6> signal(double t) { return {1 + 0.5 * t, -2 + 0.25 * t, 9.8, 0.1 * t, 0.2, -0.05 * t}; }

// Samples every `step` units over [begin, end), gyro stamps 3 ms after acc.
void add_samples(hhar::sensor_stream& acc, hhar::sensor_stream& gyro, double begin, double end, double step) {
  for (int k = 0;; ++k) {
    const double t = begin + k * step;
    if (t >= end - 1e-9) break;
    const auto v = signal(t);
    const auto ns = t0 + static_cast<std::int64_t>(std::llround(t * 1e8));
    acc.samples.push_back({ns, static_cast<float>(v[0]), static_cast<float>(v[1]), static_cast<float>(v[2])});
    gyro.samples.push_back({ns + 3000000, static_cast<float>(v[3]), static_cast<float>(v[4]), static_cast<float>(v[5])});
  }
}

std::pair<hhar::sensor_stream, hhar::sensor_stream> streams(const std::string& user, const std::string& device,
                                                            std::int32_t activity) {
  hhar::sensor_stream a{user, "nexus4", device, activity, {}};
  return {a, a};
}

// The 120 features of an interval starting at `start` with samples every `step` (< interval), from
// the definitions: linear signal on the grid 5m/9, except that the grid's last point (time 5) holds
// the last sample's value (the interval is extended with it), FFT by the direct sum.
std::vector<double> expected_features(double start, double step) {
  const int last = static_cast<int>(std::floor(5.0 / step - 1e-9));
  std::vector<double> out(120);
  for (int sensor = 0; sensor < 2; ++sensor) {
    for (int a = 0; a < 3; ++a) {
      double grid[10];
      for (int m = 0; m < 10; ++m) {
        const double rel = m == 9 ? last * step : 5.0 * m / 9.0;
        grid[m] = static_cast<float>(signal(start + rel)[static_cast<std::size_t>(sensor * 3 + a)]);
      }
      for (int k = 0; k < 10; ++k) {
        std::complex<double> s = 0;
        for (int m = 0; m < 10; ++m) s += grid[m] * std::exp(std::complex<double>(0, -2 * M_PI * k * m / 10.0));
        out[static_cast<std::size_t>(sensor * 60 + (k * 3 + a) * 2)] = s.real();
        out[static_cast<std::size_t>(sensor * 60 + (k * 3 + a) * 2 + 1)] = s.imag();
      }
    }
  }
  return out;
}

void write_text(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

const std::string header = "Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device,gt\n";

}  // namespace

TEST_CASE("HHAR CSV files round-trip, null rows are skipped, streams group by user, device and activity", "[data][hhar]") {
  const auto dir = slimnet::testing::temp_dir("hhar_roundtrip");
  auto [acc, gyro] = streams("a", "nexus4_1", 3);
  add_samples(acc, gyro, 0, 2, 0.3);
  auto [acc2, gyro2] = streams("b", "s3_1", 0);
  add_samples(acc2, gyro2, 100, 101, 0.3);
  hhar::write_sensor_csv(dir / "acc.csv", {acc, acc2});
  // Append a null-labelled row and a row with Windows line ending.
  std::ofstream(dir / "acc.csv", std::ios::app) << "99,1,1424696633000000000,1,2,3,a,nexus4,nexus4_1,null\n"
                                                << "100,1,1424696643000000000,1,2,3,a,nexus4,nexus4_1,walk\r\n";
  const auto read = hhar::read_sensor_csv(dir / "acc.csv");
  REQUIRE(read.size() == 2);
  CHECK(read[0].user == "a");
  CHECK(read[0].model == "nexus4");
  CHECK(read[0].device == "nexus4_1");
  CHECK(read[0].activity == 3);
  CHECK(read[0].samples.size() == acc.samples.size() + 1);
  CHECK(read[0].samples[1].time == acc.samples[1].time);
  CHECK(read[0].samples[1].x == acc.samples[1].x);
  CHECK(read[0].samples.back().time == 1424696643000000000);
  CHECK(read[1].activity == 0);
  CHECK(read[1].samples.size() == acc2.samples.size());
}

TEST_CASE("pairing matches acc and gyro samples within 0.1 time units and drops the rest", "[data][hhar]") {
  auto [acc, gyro] = streams("a", "nexus4_1", 3);
  add_samples(acc, gyro, 0, 3, 0.3);                  // 10 pairs, gyro 3 ms (0.03 units) late
  gyro.samples.push_back({t0 + 165000000, 1, 1, 1});  // t = 1.65: too far from acc 1.5 and 1.8, dropped
  std::swap(acc.samples[2], acc.samples[7]);          // file order is not time order
  auto [lone, unused] = streams("z", "s3_1", 1);      // no gyro partner
  add_samples(lone, unused, 0, 3, 0.3);
  auto [bad_acc, bad_gyro] = streams("a", "s3mini_2", 3);  // excluded device
  add_samples(bad_acc, bad_gyro, 0, 3, 0.3);
  const auto recs = hhar::pair_sensors({acc, lone, bad_acc}, {gyro, bad_gyro});
  REQUIRE(recs.size() == 1);
  const auto& r = recs[0];
  CHECK(r.samples.size() == 10);
  for (std::size_t i = 0; i < r.samples.size(); ++i) {
    CHECK(r.samples[i].time - 14246966330.0 == Approx(0.3 * static_cast<double>(i) + 0.015).margin(1e-5));
    CHECK(r.samples[i].acc[0] == Approx(signal(0.3 * static_cast<double>(i))[0]));
    CHECK(r.samples[i].gyro[2] == Approx(signal(0.3 * static_cast<double>(i))[5]).margin(1e-6));
  }
}

TEST_CASE("interval features are the FFT of the interpolated interval, frequency-major", "[data][hhar]") {
  auto [acc, gyro] = streams("a", "nexus4_1", 3);
  add_samples(acc, gyro, 0, 40, 0.3);  // 0.3-unit steps: intervals of 17 samples, rel 0 .. 4.8
  hhar::preprocess_options o;
  rng gen(1);
  // Exact pairing needs equal times: use the acc stamps for both sensors.
  for (auto& s : gyro.samples) s.time -= 3000000;
  const auto recs = hhar::pair_sensors({acc}, {gyro}, o);
  const auto segments = hhar::interval_segments<double>(recs.at(0), o, 0, gen);
  REQUIRE(segments.size() == 1);
  // Intervals start at 0, 5.1, 10.2, ... (the first sample past 5 units opens the next one); the one
  // still open at the end is dropped: 133 samples -> starts 0 .. 35.7, the 8th (35.7) is open.
  REQUIRE(segments[0].size() == 7);
  for (std::size_t i = 0; i < segments[0].size(); ++i) {
    const auto want = expected_features(5.1 * static_cast<double>(i), 0.3);
    for (std::size_t k = 0; k < 120; ++k) {
      INFO("interval " << i << " feature " << k);
      CHECK(segments[0][i][k] == Approx(want[k]).epsilon(1e-6).margin(1e-4));
    }
  }
  // Bin 0 is 10 x the mean, with no imaginary part.
  CHECK(segments[0][0][1] == Approx(0).margin(1e-9));
}

TEST_CASE("windows: 20 intervals, stride 5, at least 5, zero-padded, never across a gap", "[data][hhar]") {
  auto [acc, gyro] = streams("a", "nexus4_1", 4);
  // 0.3-unit steps: an interval holds rel 0..4.8, the next opens at 5.1. Two stretches with a
  // 30-unit pause between them (>= 20: a new segment).
  add_samples(acc, gyro, 0, 140, 0.3);
  add_samples(acc, gyro, 170, 233, 0.3);
  for (auto& s : gyro.samples) s.time -= 3000000;
  const auto recs = hhar::pair_sensors({acc}, {gyro});
  rng gen(1);
  const auto segments = hhar::interval_segments<float>(recs.at(0), {}, 0, gen);
  REQUIRE(segments.size() == 2);
  // Intervals start every 5.1 units: 28 in the first stretch (the last one is closed by the first
  // sample after the pause), 13 in the second, whose last one is still open at the end (dropped).
  CHECK(segments[0].size() == 28);
  CHECK(segments[1].size() == 12);
  const auto w = hhar::make_windows<float>(recs);
  // Segment 1 (28): starts 0, 5, 10, 15, 20 -> lengths 20, 20, 18, 13, 8 (25 -> 3 < 5 stops);
  // segment 2 (12): starts 0, 5 -> 12, 7 (10 -> 2 stops).
  CHECK(w.data.lengths == std::vector<std::int32_t>{20, 20, 18, 13, 8, 12, 7});
  REQUIRE(w.data.inputs.shape() == shape_t{7, 20, 120});
  CHECK(w.data.num_classes == 6);
  CHECK(w.data.labels == std::vector<std::int32_t>(7, 4));
  CHECK(w.users == std::vector<std::string>(7, "a"));
  w.data.validate();
  // Window 1 starts at interval 5 of segment 1; window 3 is zero past its 13 intervals.
  for (index_t k = 0; k < 120; ++k) CHECK(w.data.inputs[(1 * 20 + 0) * 120 + k] == segments[0][5][static_cast<std::size_t>(k)]);
  for (index_t t = 13; t < 20; ++t)
    for (index_t k = 0; k < 120; ++k) CHECK(w.data.inputs[(3 * 20 + t) * 120 + k] == 0.0f);
  CHECK(w.data.inputs[(3 * 20 + 12) * 120] != 0.0f);
}

TEST_CASE("leave one user out: the test user is never augmented", "[data][hhar]") {
  std::vector<hhar::sensor_stream> acc, gyro;
  for (const char* user : {"a", "b", "c"}) {
    for (std::int32_t activity : {0, 5}) {
      auto [sa, sg] = streams(user, "s3_1", activity);
      add_samples(sa, sg, 0, 60, 0.3);
      acc.push_back(sa);
      gyro.push_back(sg);
    }
  }
  const auto recs = hhar::pair_sensors(acc, gyro);
  REQUIRE(recs.size() == 6);
  hhar::preprocess_options o;
  o.augment_copies = 2;
  const auto s = hhar::leave_one_user_out<float>(recs, "b", o);
  const auto plain = hhar::make_windows<float>(std::vector<hhar::recording>{recs[0]});
  const index_t per_recording = plain.data.size();
  REQUIRE(per_recording > 0);
  CHECK(s.test.size() == 2 * per_recording);
  CHECK(s.train.size() == 4 * 3 * per_recording);
  CHECK(s.train.lengths.size() == static_cast<std::size_t>(s.train.size()));
  // The augmented copies differ from the clean windows, the clean ones are reproduced exactly.
  CHECK(s.train.inputs[0] == plain.data.inputs[0]);
  CHECK(s.train.inputs[per_recording * 20 * 120] != plain.data.inputs[0]);
  CHECK_THROWS_WITH(hhar::leave_one_user_out<float>(recs, "q"), Catch::Contains("user 'q' has no recordings"));
}

TEST_CASE("malformed HHAR files give io_errors naming the file, the line and the value", "[data][hhar][errors]") {
  const auto dir = slimnet::testing::temp_dir("hhar_errors");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "missing.csv"), Catch::Contains("cannot open") && Catch::Contains("missing.csv"));
  write_text(dir / "empty.csv", "");
  CHECK_THROWS_AS(hhar::read_sensor_csv(dir / "empty.csv"), io_error);
  write_text(dir / "no_gt.csv", "Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device\n1,2,3,4,5,6,a,b,c\n");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "no_gt.csv"),
                    Catch::Contains("slimnet::data::hhar::read_sensor_csv") && Catch::Contains("lacks column 'gt'"));
  write_text(dir / "short.csv", header + "0,1,1424696633000000000,1,2,3,a,nexus4,nexus4_1,walk\n1,1,1424696633000000000,1,2,a\n");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "short.csv"), Catch::Contains("short.csv line 3") && Catch::Contains("6 fields"));
  write_text(dir / "nan.csv", header + "0,1,1424696633000000000,1,zwei,3,a,nexus4,nexus4_1,walk\n");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "nan.csv"),
                    Catch::Contains("line 2") && Catch::Contains("column y holds 'zwei'"));
  write_text(dir / "time.csv", header + "0,1,14246966.5,1,2,3,a,nexus4,nexus4_1,walk\n");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "time.csv"), Catch::Contains("Creation_Time holds '14246966.5'"));
  write_text(dir / "label.csv", header + "0,1,1424696633000000000,1,2,3,a,nexus4,nexus4_1,jog\n");
  CHECK_THROWS_WITH(hhar::read_sensor_csv(dir / "label.csv"), Catch::Contains("unknown activity 'jog'"));
  CHECK_THROWS_AS(hhar::read_recordings(dir), io_error);  // no Phones_*.csv there
  hhar::preprocess_options o;
  o.min_window = 30;
  CHECK_THROWS_WITH(hhar::make_windows<float>({}, o), Catch::Contains("min_window=30"));
}

TEST_CASE("the synthetic IMU generator is seeded, HHAR-shaped, and goes through the whole pipeline", "[data][hhar][synthetic]") {
  data::synthetic_imu_options o;
  o.users = {"a", "b"};
  o.devices.resize(2);
  o.seconds = 12;
  const auto s = data::generate_synthetic_imu(o);
  REQUIRE(s.accelerometer.size() == 2 * 2 * 6);
  REQUIRE(s.gyroscope.size() == s.accelerometer.size());
  CHECK(s.accelerometer[0].samples.size() == 12 * 200);  // nexus4_1 at 200 Hz
  CHECK(s.accelerometer[6].samples.size() == 12 * 150);  // s3_1 at 150 Hz
  const auto again = data::generate_synthetic_imu(o);
  CHECK(again.accelerometer[5].samples[100].x == s.accelerometer[5].samples[100].x);
  CHECK(again.gyroscope[17].samples.back().time == s.gyroscope[17].samples.back().time);
  o.seed = 7;
  CHECK(data::generate_synthetic_imu(o).accelerometer[5].samples[100].x != s.accelerometer[5].samples[100].x);

  // Through CSV files and the reader, as real data would go.
  const auto dir = slimnet::testing::temp_dir("hhar_synthetic");
  hhar::write_sensor_csv(dir / "Phones_accelerometer.csv", s.accelerometer);
  hhar::write_sensor_csv(dir / "Phones_gyroscope.csv", s.gyroscope);
  const auto recs = hhar::read_recordings(dir);
  REQUIRE(recs.size() == 24);
  for (const auto& r : recs) CHECK(r.samples.size() > 0.9 * 12 * (r.device == "nexus4_1" ? 200 : 150));
  const auto split = hhar::leave_one_user_out<float>(recs, "a");
  // 12 s = 120 units: about 22 intervals per recording, 3 windows (more if a pause splits it).
  CHECK(split.test.size() >= 12 * 3);
  CHECK(split.train.size() >= 12 * 3);
  split.train.validate();

  // Movement differs by activity: the non-constant spectrum (bins 1..9) of walking carries far more
  // energy than sitting's.
  auto energy = [&](std::int32_t activity) {
    double e = 0;
    for (index_t i = 0; i < split.train.size(); ++i) {
      if (split.train.labels[static_cast<std::size_t>(i)] != activity) continue;
      for (index_t k = 6; k < 60; ++k) e += std::pow(split.train.inputs[i * 20 * 120 + k], 2);
    }
    return e;
  };
  CHECK(energy(3) > 20 * energy(1));
}
