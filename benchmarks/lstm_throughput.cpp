// LSTM (and GRU) throughput, slimnet against PyTorch 1.13, one thread each, side by side in one
// run: for each layer size, slimnet is timed, then lstm_throughput.py times the same nn.LSTM /
// nn.GRU (float32, batch_first, full-length sequences). Two modes: inference (forward only) and a
// training step (forward + backward into the weights; the input needs no gradient). Times are
// medians over at least `--seconds` per measurement, wall-clock and process CPU time. The two
// frameworks alternate `--repeats` times per size and the best median of each is kept (the
// machine's clock moves and other jobs come and go; the best run is the least disturbed one). The
// table gives sequences per second (wall) and PyTorch time / slimnet time on both clocks. Absolute
// numbers move 15-30% from run to run on the build machines; compare the ratios.
//
//   lstm_throughput [--seconds 1] [--repeats 3] [--csv lstm_throughput.csv] [--python /usr/bin/python3] [--quick]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <vector>

#include <nlohmann/json.hpp>

#include "common/cli.hpp"
#include "slimnet/nn/gru.hpp"
#include "slimnet/nn/lstm.hpp"

#ifndef SLIMNET_BENCHMARK_DIR
#define SLIMNET_BENCHMARK_DIR "benchmarks"
#endif

using namespace slimnet;
using clock_type = std::chrono::steady_clock;

namespace {

struct config {
  std::string cell;  // "lstm" or "gru"
  index_t batch, steps, input, hidden;
  std::string note;
};

struct measurement {
  double wall_ms = 0, cpu_ms = 0;  ///< medians per call
};
struct timing {
  measurement infer, train;
};

double process_cpu_ms() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) * 1e-6;
}

double median(std::vector<double> v) {
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(v.size() / 2), v.end());
  return v[v.size() / 2];
}

/// Median wall-clock and CPU milliseconds of fn() over at least `seconds` (and 5 runs), after two
/// warm-up calls.
measurement median_ms(const std::function<void()>& fn, double seconds) {
  fn();
  fn();
  std::vector<double> wall, cpu;
  const auto start = clock_type::now();
  while (wall.size() < 5 || std::chrono::duration<double>(clock_type::now() - start).count() < seconds) {
    const auto t0 = clock_type::now();
    const double c0 = process_cpu_ms();
    fn();
    wall.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
    cpu.push_back(process_cpu_ms() - c0);
  }
  return {median(wall), median(cpu)};
}

void keep_best(timing& best, const timing& t, bool first) {
  auto keep = [&](measurement& b, const measurement& m) {
    b.wall_ms = first ? m.wall_ms : std::min(b.wall_ms, m.wall_ms);
    b.cpu_ms = first ? m.cpu_ms : std::min(b.cpu_ms, m.cpu_ms);
  };
  keep(best.infer, t.infer);
  keep(best.train, t.train);
}

template <class Layer>
timing time_slimnet(const config& c, double seconds) {
  rng gen(0);
  Layer layer(c.input, c.hidden);
  layer.reset_parameters(gen);
  tensor<float> x({c.batch, c.steps, c.input}), y, r({c.batch, c.steps, c.hidden});
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.normal());
  for (index_t i = 0; i < r.size(); ++i) r[i] = static_cast<float>(gen.normal());
  timing t;
  nn::forward_context eval;
  t.infer = median_ms([&] { layer.forward(x, y, eval); }, seconds);
  nn::forward_context training{true, &gen};
  t.train = median_ms(
      [&] {
        layer.visit_parameters([](nn::parameter<float>& p) { p.zero_grad(); });
        layer.forward(x, y, training);
        layer.backward(x, y, r, nullptr);
      },
      seconds);
  return t;
}

timing time_pytorch(const std::string& python, const config& c, double seconds) {
  const std::string cmd = fmt::format(
      "OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 {} {}/lstm_throughput.py --cell {} --batch {} --steps {} "
      "--input {} --hidden {} --seconds {} 2>&1",
      python, SLIMNET_BENCHMARK_DIR, c.cell, c.batch, c.steps, c.input, c.hidden, seconds);
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw io_error("lstm_throughput: cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (std::fgets(buf, sizeof buf, pipe.get())) out += buf;
  const auto brace = out.find('{');
  const auto json = nlohmann::json::parse(brace == std::string::npos ? std::string("x") : out.substr(brace), nullptr, false);
  if (json.is_discarded() || !json.contains("infer_ms")) {
    throw io_error(fmt::format("lstm_throughput: the PyTorch run failed (is python3-torch installed?): {}", out));
  }
  return {{json["infer_ms"].get<double>(), json["infer_cpu_ms"].get<double>()},
          {json["train_ms"].get<double>(), json["train_cpu_ms"].get<double>()}};
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(
      argc, argv,
      {{"seconds", "1"}, {"repeats", "3"}, {"csv", "lstm_throughput.csv"}, {"python", "/usr/bin/python3"}, {"quick", "false"}},
      "lstm_throughput: LSTM/GRU forward and forward+backward throughput, slimnet against PyTorch 1.13 (one thread)");
  try {
    std::vector<config> configs{
        {"lstm", 64, 28, 28, 128, "sequential MNIST"}, {"lstm", 1, 28, 28, 128, "sequential MNIST, batch 1"},
        {"lstm", 64, 50, 256, 256, "medium"},          {"lstm", 32, 25, 512, 512, "seed Bi-LSTM width"},
        {"gru", 64, 20, 512, 120, "DeepSense gru1"},
    };
    if (a.flag("quick")) configs.resize(1);
    const double seconds = a.real("seconds");
    const long repeats = std::max(1L, a.integer("repeats"));
    fmt::print("slimnet vs PyTorch 1.13, one thread, float32; median time per batch over >= {} s, best of {} alternating runs\n",
               seconds, repeats);
    fmt::print("speedup = PyTorch time / slimnet time, on the wall clock and on process CPU time\n\n");
    fmt::print("{:<4} {:>4} {:>4} {:>4} {:>4}  {:<5} {:>10} {:>10} {:>13} {:>12} {:>9} {:>9}  {}\n", "cell", "N", "T", "F", "H",
               "mode", "slimnet ms", "torch ms", "slimnet seq/s", "torch seq/s", "x (wall)", "x (cpu)", "note");
    std::ofstream csv(a.str("csv"));
    csv << "cell,batch,steps,input,hidden,mode,slimnet_ms,pytorch_ms,slimnet_cpu_ms,pytorch_cpu_ms,slimnet_seq_per_s,"
           "pytorch_seq_per_s,speedup_wall,speedup_cpu\n";
    for (const auto& c : configs) {
      timing s, p;
      for (long r = 0; r < repeats; ++r) {
        keep_best(s, c.cell == "lstm" ? time_slimnet<nn::lstm<float>>(c, seconds) : time_slimnet<nn::gru<float>>(c, seconds),
                  r == 0);
        keep_best(p, time_pytorch(a.str("python"), c, seconds), r == 0);
      }
      for (int mode = 0; mode < 2; ++mode) {
        const measurement& ms = mode == 0 ? s.infer : s.train;
        const measurement& pms = mode == 0 ? p.infer : p.train;
        const double rate = 1e3 * static_cast<double>(c.batch) / ms.wall_ms,
                     prate = 1e3 * static_cast<double>(c.batch) / pms.wall_ms;
        const char* m = mode == 0 ? "infer" : "train";
        fmt::print("{:<4} {:>4} {:>4} {:>4} {:>4}  {:<5} {:>10.3f} {:>10.3f} {:>13.0f} {:>12.0f} {:>8.2f}x {:>8.2f}x  {}\n",
                   c.cell, c.batch, c.steps, c.input, c.hidden, m, ms.wall_ms, pms.wall_ms, rate, prate, pms.wall_ms / ms.wall_ms,
                   pms.cpu_ms / ms.cpu_ms, c.note);
        csv << fmt::format("{},{},{},{},{},{},{:.4f},{:.4f},{:.4f},{:.4f},{:.1f},{:.1f},{:.3f},{:.3f}\n", c.cell, c.batch,
                           c.steps, c.input, c.hidden, m, ms.wall_ms, pms.wall_ms, ms.cpu_ms, pms.cpu_ms, rate, prate,
                           pms.wall_ms / ms.wall_ms, pms.cpu_ms / ms.cpu_ms);
      }
      std::fflush(stdout);
    }
    fmt::print("\nwrote {}\n", a.str("csv"));
  } catch (const slimnet::error& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
