// The UCI "Heterogeneity Activity Recognition" (HHAR) phone data and DeepSense's preprocessing
// (yscacaca/HHAR-Data-Process): read Phones_accelerometer.csv / Phones_gyroscope.csv, pair the two
// sensors' samples per (user, device, activity), cut the pairs into intervals, interpolate each
// interval linearly to 10 points, take the FFT of each axis (real and imaginary parts), and cut
// the interval sequence into windows of 20 intervals with stride 5, zero-padded: a dataset of
// (N, 20, 120) sequences with their lengths and the 6 activity labels.
//
// Time unit: Creation_Time / 1e8 (the phones' Creation_Time is in ns, so one unit = 0.1 s):
// samples pair when their times differ by < 0.1 unit, an interval spans 5 units (0.5 s), and a gap
// of >= 20 units (2 s) between intervals starts a new segment; windows never cross segments.
//
// Where this reader departs from the reference scripts (each a bug or an accident there):
// - samples of each (user, device, activity) are sorted by Creation_Time before pairing (the
//   scripts assume file order is time order);
// - the last segment of each recording is kept (the scripts drop it unless a gap follows it);
// - the held-out user's first ten intervals are not turned into one-interval segments (the
//   scripts' augmentation bookkeeping does that, which drops them);
// - augmentation is optional (preprocess_options::augment_copies), seeded, and never applied to
//   the test user in leave_one_user_out.
// Kept as in the scripts: the interval still open at the end of a recording is dropped; repeated
// time stamps within an interval are kept once; an interval that ends before its 5 units is
// extended with its last sample at time 5; windows shorter than 5 intervals are dropped.
#pragma once

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <complex>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <new>
#include <limits>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "slimnet/core/checked.hpp"
#include "slimnet/core/error.hpp"
#include "slimnet/core/random.hpp"
#include "slimnet/core/tensor.hpp"
#include "slimnet/data/byte_source.hpp"
#include "slimnet/data/dataset.hpp"
#include "slimnet/data/idx.hpp"

// Functions of this header that are not templates by nature are written `template <class = void>`
// (called as before: the parameter is never named) so that a translation unit that includes the
// header without calling them does not compile them (a non-template inline body, with the fmt,
// file and parsing code it instantiates, is compiled in every unit that includes it).

namespace slimnet::data::hhar {

/// HHAR's activity labels in DeepSense's class order (the "gt" column; "null" rows are skipped).
inline const std::vector<std::string>& activities() {
  static const std::vector<std::string> names{"bike", "sit", "stand", "walk", "stairsup", "stairsdown"};
  return names;
}

/// Class index of an activity name, -1 for "null"; throws io_error for anything else.
inline std::int32_t activity_index(std::string_view name, const char* function = "slimnet::data::hhar::activity_index") {
  if (name == "null") return -1;
  const auto& a = activities();
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (a[i] == name) return static_cast<std::int32_t>(i);
  }
  slimnet::detail::raise<io_error>(
      function, "unknown activity '{}' (expected one of bike, sit, stand, walk, stairsup, stairsdown, null)", name);
}

/// One sensor sample: Creation_Time (ns on the phones) and the three axes.
struct sample {
  std::int64_t time = 0;
  float x = 0, y = 0, z = 0;
};

/// The samples of one sensor for one (user, device, activity), in file order.
struct sensor_stream {
  std::string user, model, device;
  std::int32_t activity = 0;
  std::vector<sample> samples;
};

/// An accelerometer sample and a gyroscope sample taken together, at time (t_acc + t_gyro) / 2 in
/// units of Creation_Time / time_scale.
struct paired_sample {
  double time = 0;
  std::array<float, 3> acc{}, gyro{};
};

/// The paired samples of one (user, device, activity), sorted by time.
struct recording {
  std::string user, model, device;
  std::int32_t activity = 0;
  std::vector<paired_sample> samples;
};

/// DeepSense's preprocessing constants (sep_HHAR_data.py / pairDataFile.py), all in time units.
struct preprocess_options {
  double time_scale = 1e8;      ///< time unit = Creation_Time / time_scale
  double pair_tolerance = 0.1;  ///< acc and gyro samples pair when |t_acc - t_gyro| < this
  double interval = 5.0;        ///< fftSpan: length of one interval
  index_t points = 10;          ///< sepcturalSamples: interpolation points (and FFT size) per interval
  double segment_gap = 20.0;    ///< SampSpan: a gap this long starts a new segment
  index_t window = 20;          ///< WIDE: intervals per window (the padded sequence length)
  index_t stride = 5;           ///< wide / wideScaleFactor
  index_t min_window = 5;       ///< shorter windows are dropped
  std::vector<std::string> excluded_devices{"lgwatch_1", "lgwatch_2", "s3mini_2"};
  /// Extra noisy copies of every interval (the scripts' augNum - 1 = 9 for training users):
  /// Gaussian noise of these standard deviations on acc, gyro and the sample times.
  index_t augment_copies = 0;
  double acc_noise = 0.5, gyro_noise = 0.2, time_noise = 0.2;
  std::uint64_t seed = 1;

  index_t features() const { return 2 * 3 * 2 * points; }  ///< 120: {acc, gyro} x 3 axes x {re, im} x points

  void validate(const char* function = "slimnet::data::hhar::preprocess_options") const {
    if (!(time_scale > 0) || !(pair_tolerance > 0) || !(interval > 0) || !(segment_gap >= 0) || points < 2) {
      slimnet::detail::raise<config_error>(function,
                                           "invalid times: time_scale={} pair_tolerance={} interval={} segment_gap={} points={}",
                                           time_scale, pair_tolerance, interval, segment_gap, points);
    }
    if (window <= 0 || stride <= 0 || min_window <= 0 || min_window > window || augment_copies < 0) {
      slimnet::detail::raise<config_error>(function, "invalid windows: window={} stride={} min_window={} augment_copies={}",
                                           window, stride, min_window, augment_copies);
    }
    // Each window holds window x features() values: checked, so a huge option is an error, not a
    // wrapped buffer size.
    checked_mul<config_error>(window, checked_mul<config_error>(index_t{12}, points, function, "features 12 x points"), function,
                              "window values");
    if (!(acc_noise >= 0) || !(gyro_noise >= 0) || !(time_noise >= 0)) {
      slimnet::detail::raise<config_error>(function, "noise levels must be >= 0, got acc={} gyro={} time={}", acc_noise,
                                           gyro_noise, time_noise);
    }
  }
};

/// Windows with who and what they came from.
template <class Scalar>
struct windows {
  dataset<Scalar> data;              ///< inputs (N, window, 120), labels, lengths, num_classes 6
  std::vector<std::string> users;    ///< per window
  std::vector<std::string> devices;  ///< per window
};

namespace detail {

inline std::vector<std::string_view> split_csv_line(std::string_view line) {
  std::vector<std::string_view> fields;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = line.find(',', start);
    fields.push_back(line.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return fields;
}

template <class T>
T parse_number(std::string_view field, const char* function, const std::string& where, const char* column) {
  T value{};
  const auto* end = field.data() + field.size();
  const auto [ptr, ec] = std::from_chars(field.data(), end, value);
  if (ec != std::errc() || ptr != end || field.empty()) {
    slimnet::detail::raise<io_error>(function, "{}: column {} holds '{}', not a number", where, column, field);
  }
  return value;
}

/// Lines of a text file (plain or gzip), read in chunks; a line longer than `max_line` bytes is an
/// io_error, so a file without line breaks cannot make one line eat all memory.
class line_reader {
 public:
  line_reader(const std::filesystem::path& path, const char* function, std::size_t max_line = std::size_t{1} << 16)
      : src_(path, function), function_(function), max_line_(max_line) {}

  /// The next line without its "\n" (and "\r"); false at the end of the file.
  bool next(std::string& line) {
    for (;;) {
      const std::size_t nl = buffer_.find('\n', pos_);
      if (nl != std::string::npos) {
        line.assign(buffer_, pos_, nl - pos_);
        pos_ = nl + 1;
        break;
      }
      if (buffer_.size() - pos_ > max_line_) {
        slimnet::detail::raise<io_error>(function_, "'{}' line {} is longer than {} bytes", src_.path().string(), number_ + 1, max_line_);
      }
      buffer_.erase(0, pos_);
      pos_ = 0;
      const std::size_t old = buffer_.size();
      buffer_.resize(old + chunk);
      const std::size_t got = src_.read(reinterpret_cast<std::uint8_t*>(buffer_.data()) + old, chunk);
      buffer_.resize(old + got);
      if (got == 0) {
        if (buffer_.empty()) return false;
        line.swap(buffer_);  // the last line, without a final line break
        buffer_.clear();
        break;
      }
    }
    ++number_;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    return true;
  }
  /// 1-based number of the line `next` returned last.
  std::size_t number() const { return number_; }

 private:
  static constexpr std::size_t chunk = std::size_t{1} << 16;
  data::detail::byte_source src_;
  const char* function_;
  std::size_t max_line_;
  std::string buffer_;
  std::size_t pos_ = 0;
  std::size_t number_ = 0;
};

/// An axis value: a finite number that fits a float ("nan", "inf" and 1e39 are io_errors).
inline float parse_axis(std::string_view field, const char* function, const std::string& where, const char* column) {
  const double v = parse_number<double>(field, function, where, column);
  if (!(std::abs(v) <= static_cast<double>(std::numeric_limits<float>::max()))) {  // also false for NaN
    slimnet::detail::raise<io_error>(function, "{}: column {} holds '{}', not a finite float", where, column, field);
  }
  return static_cast<float>(v);
}

/// x(t) linearly interpolated at `at` (times sorted; at within [times.front(), times.back()]).
inline double interpolate(const std::vector<double>& times, const std::vector<double>& values, double at) {
  if (at <= times.front()) return values.front();
  if (at >= times.back()) return values.back();
  const auto it = std::upper_bound(times.begin(), times.end(), at);
  const std::size_t hi = static_cast<std::size_t>(it - times.begin()), lo = hi - 1;
  const double span = times[hi] - times[lo];
  if (span <= 0) return values[hi];
  const double w = (at - times[lo]) / span;
  return values[lo] + w * (values[hi] - values[lo]);
}

/// The 120 features of one interval: for each sensor (acc, gyro), the values interpolated at
/// `points` equally spaced times over [0, interval] (ends included, as numpy.linspace), then per
/// axis X_k = sum_m x_m exp(-2 pi i k m / points) (scipy.fftpack.fft), written freq-major:
/// for each k, for each axis, real then imaginary part.
template <class Scalar>
void interval_features(const std::vector<double>& times, const std::vector<std::array<double, 6>>& values,
                       const preprocess_options& o, Scalar* out) {
  const index_t p = o.points;
  std::vector<double> axis(values.size()), grid(static_cast<std::size_t>(p));
  for (index_t sensor = 0; sensor < 2; ++sensor) {
    for (index_t a = 0; a < 3; ++a) {
      for (std::size_t i = 0; i < values.size(); ++i) axis[i] = values[i][static_cast<std::size_t>(sensor * 3 + a)];
      for (index_t m = 0; m < p; ++m) {
        grid[static_cast<std::size_t>(m)] =
            interpolate(times, axis, o.interval * static_cast<double>(m) / static_cast<double>(p - 1));
      }
      for (index_t k = 0; k < p; ++k) {
        std::complex<double> sum = 0;
        for (index_t m = 0; m < p; ++m) {
          sum += grid[static_cast<std::size_t>(m)] *
                 std::polar(1.0, -2.0 * M_PI * static_cast<double>((k * m) % p) / static_cast<double>(p));
        }
        Scalar* dst = out + sensor * 6 * p + (k * 3 + a) * 2;
        dst[0] = static_cast<Scalar>(sum.real());
        dst[1] = static_cast<Scalar>(sum.imag());
      }
    }
  }
}

}  // namespace detail

/// Reads one HHAR sensor file (Phones_accelerometer.csv, Phones_gyroscope.csv, or the watch files):
/// a header naming at least Creation_Time, x, y, z, User, Model, Device, gt (Index and Arrival_Time
/// are ignored), then one sample per line. Rows labelled "null" are skipped. Returns one stream per
/// (user, device, activity) in order of first appearance. Throws io_error naming the file and the
/// line for a missing file, a missing column, a wrong field count, a malformed number or an
/// unknown activity.
template <class = void>
std::vector<sensor_stream> read_sensor_csv(const std::filesystem::path& path) {
  constexpr const char* fn = "slimnet::data::hhar::read_sensor_csv";
  try {
    detail::line_reader in(path, fn);
    std::string line;
    if (!in.next(line)) slimnet::detail::raise<io_error>(fn, "'{}' is empty: expected a header line", path.string());
    const auto header = detail::split_csv_line(line);
    const char* required[] = {"Creation_Time", "x", "y", "z", "User", "Model", "Device", "gt"};
    std::array<std::size_t, 8> col{};
    for (std::size_t r = 0; r < 8; ++r) {
      const auto it = std::find(header.begin(), header.end(), std::string_view(required[r]));
      if (it == header.end()) {
        slimnet::detail::raise<io_error>(fn, "'{}': the header '{}' lacks column '{}'", path.string(), line, required[r]);
      }
      col[r] = static_cast<std::size_t>(it - header.begin());
    }
    const std::size_t fields = header.size();  // `header` views `line`: not used past here
    std::vector<sensor_stream> streams;
    std::map<std::tuple<std::string, std::string, std::int32_t>, std::size_t> index;
    const std::string name = path.filename().string();
    while (in.next(line)) {
      if (line.empty()) continue;
      const auto f = detail::split_csv_line(line);
      const std::string where = fmt::format("{} line {}", name, in.number());
      if (f.size() != fields) {
        slimnet::detail::raise<io_error>(fn, "{}: {} fields, the header has {}", where, f.size(), fields);
      }
      const std::int32_t activity = activity_index(f[col[7]], fn);
      sample s;
      s.time = detail::parse_number<std::int64_t>(f[col[0]], fn, where, "Creation_Time");
      // A negative time stamp would make every interval start "before" the recording (0 windows,
      // silently); NaN or Inf in an axis would reach the FFT and every feature of its interval.
      if (s.time < 0) slimnet::detail::raise<io_error>(fn, "{}: column Creation_Time holds {}, a negative time", where, s.time);
      s.x = detail::parse_axis(f[col[1]], fn, where, "x");
      s.y = detail::parse_axis(f[col[2]], fn, where, "y");
      s.z = detail::parse_axis(f[col[3]], fn, where, "z");
      if (activity < 0) continue;
      auto key = std::make_tuple(std::string(f[col[4]]), std::string(f[col[6]]), activity);
      auto it = index.find(key);
      if (it == index.end()) {
        it = index.emplace(key, streams.size()).first;
        streams.push_back({std::string(f[col[4]]), std::string(f[col[5]]), std::string(f[col[6]]), activity, {}});
      }
      streams[it->second].samples.push_back(s);
    }
    return streams;
  } catch (const std::bad_alloc&) {
    slimnet::detail::raise<io_error>(fn, "not enough memory to read '{}'", path.string());
  }
}

/// Writes streams in HHAR's column order (Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device,gt);
/// Arrival_Time is written as Creation_Time / 1e6 (ms). For tests and for synthetic data.
template <class = void>
void write_sensor_csv(const std::filesystem::path& path, const std::vector<sensor_stream>& streams) {
  constexpr const char* fn = "slimnet::data::hhar::write_sensor_csv";
  std::ofstream out(path, std::ios::binary);
  if (!out) slimnet::detail::raise<io_error>(fn, "cannot create '{}'", path.string());
  out << "Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device,gt\n";
  std::size_t row = 0;
  for (const auto& s : streams) {
    if (s.activity < 0 || s.activity >= static_cast<std::int32_t>(activities().size())) {
      slimnet::detail::raise<config_error>(fn, "stream of user '{}' has activity {}, outside [0, 6)", s.user, s.activity);
    }
    for (const auto& x : s.samples) {
      out << fmt::format("{},{},{},{},{},{},{},{},{},{}\n", row++, x.time / 1000000, x.time, x.x, x.y, x.z, s.user, s.model,
                         s.device, activities()[static_cast<std::size_t>(s.activity)]);
    }
  }
  if (!out) slimnet::detail::raise<io_error>(fn, "writing '{}' failed", path.string());
}

/// Pairs accelerometer and gyroscope samples of the same (user, device, activity), as
/// pairDataFile.py: both sorted by time, a merge walk pairs two samples when their times differ by
/// less than pair_tolerance (the pair's time is the mean) and otherwise drops the earlier one.
/// Excluded devices and streams without a partner are left out. Recordings come out sorted by
/// (user, device, activity).
template <class = void>
std::vector<recording> pair_sensors(const std::vector<sensor_stream>& acc, const std::vector<sensor_stream>& gyro,
                                           const preprocess_options& o = {}) {
  o.validate("slimnet::data::hhar::pair_sensors");
  std::map<std::tuple<std::string, std::string, std::int32_t>, const sensor_stream*> gyro_of;
  for (const auto& g : gyro) gyro_of[{g.user, g.device, g.activity}] = &g;
  std::vector<recording> out;
  auto by_time = [](const sample& a, const sample& b) { return a.time < b.time; };
  for (const auto& a : acc) {
    if (std::find(o.excluded_devices.begin(), o.excluded_devices.end(), a.device) != o.excluded_devices.end()) continue;
    const auto it = gyro_of.find({a.user, a.device, a.activity});
    if (it == gyro_of.end()) continue;
    std::vector<sample> sa = a.samples, sg = it->second->samples;
    std::stable_sort(sa.begin(), sa.end(), by_time);
    std::stable_sort(sg.begin(), sg.end(), by_time);
    recording r{a.user, a.model, a.device, a.activity, {}};
    std::size_t i = 0, j = 0;
    while (i < sa.size() && j < sg.size()) {
      const double ta = static_cast<double>(sa[i].time) / o.time_scale, tg = static_cast<double>(sg[j].time) / o.time_scale;
      if (std::abs(ta - tg) < o.pair_tolerance) {
        r.samples.push_back({0.5 * (ta + tg), {sa[i].x, sa[i].y, sa[i].z}, {sg[j].x, sg[j].y, sg[j].z}});
        ++i;
        ++j;
      } else if (ta - tg >= o.pair_tolerance) {
        ++j;
      } else {
        ++i;
      }
    }
    if (!r.samples.empty()) out.push_back(std::move(r));
  }
  std::sort(out.begin(), out.end(), [](const recording& x, const recording& y) {
    return std::tie(x.user, x.device, x.activity) < std::tie(y.user, y.device, y.activity);
  });
  return out;
}

/// The interval features of one recording, grouped into segments (a gap of segment_gap or more
/// between intervals starts a new one). copy 0 is the clean data, copies 1.. add noise.
template <class Scalar>
std::vector<std::vector<std::vector<Scalar>>> interval_segments(const recording& r, const preprocess_options& o, index_t copy,
                                                                rng& gen) {
  std::vector<std::vector<std::vector<Scalar>>> segments;
  std::vector<double> times;
  std::vector<std::array<double, 6>> values;
  double start = -1, last_end = -1;
  auto close_interval = [&] {
    if (times.empty()) return;
    if (times.back() < o.interval) {  // extend to the full interval with the last sample
      times.push_back(o.interval);
      values.push_back(values.back());
    }
    std::vector<double> t = times;
    std::vector<std::array<double, 6>> v = values;
    if (copy > 0) {
      for (auto& row : v) {
        for (std::size_t k = 0; k < 6; ++k) row[k] += gen.normal() * (k < 3 ? o.acc_noise : o.gyro_noise);
      }
      for (auto& ti : t) ti += gen.normal() * o.time_noise;
      // Sorting the times alone (not the values with them) is what the scripts do.
      std::sort(t.begin(), t.end());
      if (t.back() < o.interval) t.back() = o.interval;
      if (t.front() > 0) t.front() = 0;
    }
    std::vector<Scalar> features(static_cast<std::size_t>(o.features()));
    detail::interval_features(t, v, o, features.data());
    if (segments.empty() || start - last_end >= o.segment_gap) segments.emplace_back();
    segments.back().push_back(std::move(features));
    last_end = start + times.back();
  };
  for (const auto& s : r.samples) {
    if (start >= 0 && std::abs(s.time - start) > o.interval) {
      close_interval();
      start = -1;
      times.clear();
      values.clear();
    }
    if (start < 0) start = s.time;
    const double rel = s.time - start;
    if (std::find(times.begin(), times.end(), rel) == times.end()) {
      times.push_back(rel);
      values.push_back({s.acc[0], s.acc[1], s.acc[2], s.gyro[0], s.gyro[1], s.gyro[2]});
    }
  }
  return segments;  // the interval still open at the end is dropped, as in the scripts
}

/// Windows of every recording: per segment, windows of `window` intervals starting every `stride`
/// intervals, the last ones shorter (down to min_window), zero-padded; lengths hold the number of
/// real intervals. With augment_copies > 0 each recording also yields that many noisy copies.
template <class Scalar = float>
windows<Scalar> make_windows(const std::vector<recording>& recordings, const preprocess_options& o = {}) {
  o.validate("slimnet::data::hhar::make_windows");
  rng gen(o.seed);
  const index_t f = o.features();
  std::vector<Scalar> flat;
  windows<Scalar> w;
  w.data.num_classes = static_cast<index_t>(activities().size());
  for (const auto& r : recordings) {
    for (index_t copy = 0; copy <= o.augment_copies; ++copy) {
      for (const auto& seg : interval_segments<Scalar>(r, o, copy, gen)) {
        const auto count = static_cast<index_t>(seg.size());
        for (index_t begin = 0; begin < count; begin += o.stride) {
          const index_t end = std::min(begin + o.window, count);
          if (end - begin < o.min_window) break;
          const std::size_t base = flat.size();
          flat.resize(base + static_cast<std::size_t>(o.window * f), Scalar(0));
          for (index_t i = begin; i < end; ++i) {
            std::copy(seg[static_cast<std::size_t>(i)].begin(), seg[static_cast<std::size_t>(i)].end(),
                      flat.begin() + static_cast<std::ptrdiff_t>(base + static_cast<std::size_t>((i - begin) * f)));
          }
          w.data.labels.push_back(r.activity);
          w.data.lengths.push_back(static_cast<std::int32_t>(end - begin));
          w.users.push_back(r.user);
          w.devices.push_back(r.device);
        }
      }
    }
  }
  const auto n = static_cast<index_t>(w.data.labels.size());
  w.data.inputs.resize({n, o.window, f});
  std::copy(flat.begin(), flat.end(), w.data.inputs.data());
  return w;
}

/// Leave-one-user-out split (the scripts' mode 'one_user_out'): windows of `test_user` form the test
/// set, never augmented; the other users' windows form the training set, with o.augment_copies
/// noisy copies. Throws config_error if `test_user` has no recordings.
template <class Scalar = float>
split<Scalar> leave_one_user_out(const std::vector<recording>& recordings, const std::string& test_user,
                                 const preprocess_options& o = {}) {
  std::vector<recording> train_recs, test_recs;
  for (const auto& r : recordings) (r.user == test_user ? test_recs : train_recs).push_back(r);
  if (test_recs.empty()) {
    slimnet::detail::raise<config_error>("slimnet::data::hhar::leave_one_user_out", "user '{}' has no recordings", test_user);
  }
  preprocess_options clean = o;
  clean.augment_copies = 0;
  return {make_windows<Scalar>(train_recs, o).data, make_windows<Scalar>(test_recs, clean).data};
}

/// The UserID task (DeepSense's user identification, DeepIoT's Table 6): windows of the given
/// activities (by default walking only: users are told apart by their gait), labelled by user, and
/// split at random, stratified per user: test_fraction of each user's windows go to the test side
/// (0.1 is one fold of the 10-fold cross-validation the DeepSense paper is reported to use;
/// unverified). Not leave-one-user-out: every test user is also a training user. Windows overlap
/// (stride 5 of 20 intervals), so a test window shares intervals with training windows of the
/// same recording, as in any random split of HHAR windows.
struct user_id_options {
  std::vector<std::int32_t> activities{3};  ///< class indices of hhar::activities(); 3 = walk
  double test_fraction = 0.1;
  std::uint64_t seed = 1;
};

/// The users of `recordings` in sorted order: label k of user_id_split is users[k].
template <class = void>
std::vector<std::string> user_names(const std::vector<recording>& recordings) {
  std::vector<std::string> names;
  for (const auto& r : recordings) names.push_back(r.user);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

/// UserID split (see user_id_options): labels are indices into user_names(recordings), num_classes
/// the number of users. Throws config_error for augmentation (a noisy copy of a test window would
/// be trained on), an activity outside [0, 6), a test_fraction outside (0, 1), or no window.
template <class Scalar = float>
split<Scalar> user_id_split(const std::vector<recording>& recordings, const user_id_options& u = {},
                            const preprocess_options& o = {}) {
  constexpr const char* fn = "slimnet::data::hhar::user_id_split";
  if (o.augment_copies != 0) {
    slimnet::detail::raise<config_error>(fn, "augment_copies = {}: augmentation is not supported for a random window split",
                                         o.augment_copies);
  }
  if (!(u.test_fraction > 0 && u.test_fraction < 1)) {
    slimnet::detail::raise<config_error>(fn, "test_fraction = {} must be in (0, 1)", u.test_fraction);
  }
  const auto classes = static_cast<std::int32_t>(activities().size());
  for (auto a : u.activities) {
    if (a < 0 || a >= classes) slimnet::detail::raise<config_error>(fn, "activity {} is outside [0, {})", a, classes);
  }
  const auto names = user_names(recordings);
  std::vector<recording> chosen;
  for (const auto& r : recordings) {
    if (std::find(u.activities.begin(), u.activities.end(), r.activity) != u.activities.end()) chosen.push_back(r);
  }
  auto w = make_windows<Scalar>(chosen, o);
  if (w.data.size() == 0) slimnet::detail::raise<config_error>(fn, "no window of the chosen activities");
  for (std::size_t i = 0; i < w.users.size(); ++i) {
    w.data.labels[i] = static_cast<std::int32_t>(std::lower_bound(names.begin(), names.end(), w.users[i]) - names.begin());
  }
  w.data.num_classes = static_cast<index_t>(names.size());
  const auto [train, test] = stratified_split(w.data.labels, w.data.num_classes, u.test_fraction, u.seed);
  return {w.data.subset(train), w.data.subset(test)};
}

/// Reads `dir`/Phones_accelerometer.csv and `dir`/Phones_gyroscope.csv and pairs them.
template <class = void>
std::vector<recording> read_recordings(const std::filesystem::path& dir, const preprocess_options& o = {}) {
  return pair_sensors(read_sensor_csv(dir / "Phones_accelerometer.csv"), read_sensor_csv(dir / "Phones_gyroscope.csv"), o);
}

}  // namespace slimnet::data::hhar
