// Example 13: from a compressed model in training form to what a device stores and runs.
//
//   deploy --model lenet5 --data mnist --in out/lenet5-mnist-dns.safetensors --out out/lenet5-mnist-dns.slim
//
// 1. Load a trained model saved by another example (save_parameters: pruned weights are exact
//    zeros, quantized weights sit on their grid), and measure its accuracy on the full test set.
// 2. Write it as one model file (io::save_model): every tensor in the smallest encoding that
//    reproduces it exactly (Deep Compression's relative indices, codebook indices of the
//    nonzeros, canonical Huffman where it pays), the architecture and the input standardisation in
//    the metadata. Print its bytes against the dense float32 file.
// 3. Reload it with no model code (io::read_model builds the architecture from the file; its Linear
//    and Conv2d layers run on the kernel their encoding calls for), standardise the test images as
//    the file says, and measure the reloaded model's accuracy: it must equal step 1's.
// 4. Plan the reloaded model for batch 1 and for batch 64 (nn::compressed::compress: direct sparse
//    convolutions with ReLU and pooling fused, compact sparse Linear layers, dense where sparse
//    would be slower) and time it against the float model side by side, one thread, median of
//    interleaved rounds.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include "common/cli.hpp"
#include "slimnet/io/model_file.hpp"
#include "slimnet/nn/compressed/convert.hpp"
#include "slimnet/slimnet.hpp"

using namespace slimnet;

namespace {

/// Median over `rounds` of the seconds per call of each function, the functions interleaved within
/// each round so that a change of clock or load hits them alike.
std::vector<double> median_side_by_side(const std::vector<std::function<void()>>& fns, int rounds) {
  using clock = std::chrono::steady_clock;
  std::vector<int> reps(fns.size(), 1);
  for (std::size_t f = 0; f < fns.size(); ++f) {  // calibrate: about 2 ms per measurement
    const auto t0 = clock::now();
    fns[f]();
    const double once = std::chrono::duration<double>(clock::now() - t0).count();
    reps[f] = static_cast<int>(std::clamp(2e-3 / std::max(once, 1e-7), 1.0, 10000.0));
  }
  std::vector<std::vector<double>> samples(fns.size());
  for (int r = 0; r < rounds; ++r) {
    for (std::size_t f = 0; f < fns.size(); ++f) {
      const auto t0 = clock::now();
      for (int i = 0; i < reps[f]; ++i) fns[f]();
      samples[f].push_back(std::chrono::duration<double>(clock::now() - t0).count() / reps[f]);
    }
  }
  std::vector<double> out;
  for (auto& s : samples) {
    std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(s.size() / 2), s.end());
    out.push_back(s[s.size() / 2]);
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  cli::args a(argc, argv,
              {{"model", "lenet5"}, {"data", "mnist"}, {"in", ""}, {"out", ""}, {"rounds", "15"}, {"limit", "0"}, {"quiet", "false"}},
              "deploy: write a trained (pruned / quantized) model as one compressed model file, reload it with no model code, "
              "check its accuracy and time it against the float model (batch 1 and 64, one thread)\n"
              "  --in FILE    a model saved by train_lenet, prune_magnitude, dns, ... (save_parameters)\n"
              "  --out FILE   the model file to write (default: --in with .slim before the extension)");
  try {
    const std::string model_name = a.str("model"), data_name = a.str("data");
    const std::filesystem::path in = a.str("in");
    if (in.empty()) throw config_error("deploy: --in names the trained model to deploy");
    std::filesystem::path out = a.str("out");
    if (out.empty()) out = std::filesystem::path(in).replace_extension(".slim" + in.extension().string());

    // 1. The trained model and its accuracy, inputs standardised as its metadata says.
    auto raw = cli::load_dataset(data_name);
    cli::limit(raw.test, a.integer("limit"), 2);
    auto data = raw;
    rng gen(1);
    nn::sequential<float> float_model = cli::make_model(model_name, gen, "deploy");
    const auto metadata = cli::load_baseline(float_model, in.string(), model_name, data_name, data, "deploy");
    const train::cross_entropy<float> loss;
    const double float_accuracy = train::evaluate(float_model, data.test, loss).accuracy;

    // 2. The model file.
    io::save_model_options save;
    save.metadata = metadata;  // model, data and input_mean / input_std travel with the file
    io::save_model(float_model, out, save);
    const auto dense_bytes = std::filesystem::file_size(in), file_bytes = std::filesystem::file_size(out);

    // 3. Reload with no model code: the architecture, encodings and standardisation come from the file.
    io::loaded_model<float> loaded = io::read_model<float>(out);
    auto test = raw.test;
    if (loaded.input) data::standardize(test, loaded.input->mean, loaded.input->std);
    const double reloaded_accuracy = train::evaluate(*loaded.model, test, loss).accuracy;

    fmt::print("{}: {} bytes, dense float32 file {} bytes: {:.1f}x smaller\n", out.string(), file_bytes, dense_bytes,
               static_cast<double>(dense_bytes) / static_cast<double>(file_bytes));
    fmt::print("accuracy on {} test images: float {:.2f}%, reloaded model file {:.2f}% ({})\n", test.size(), 100 * float_accuracy,
               100 * reloaded_accuracy, reloaded_accuracy == float_accuracy ? "equal" : "DIFFERENT");
    if (!a.flag("quiet")) {
      for (const auto& row : io::describe_model_file(out).rows)
        fmt::print("  {:<14} {:<22} {:>8} nonzeros {:>9} bytes\n", row.tensor, row.encoding, row.nonzeros, row.bytes.total());
    }

    // 4. The planned model against the float one, one thread.
    const shape_t sample = test.example_shape();  // (1, 28, 28) images; the models flatten what they need
    for (const index_t batch : {index_t{1}, index_t{64}}) {
      io::load_model_options as_float;
      as_float.decode = true;  // float layers with the decoded weights, planned below for this batch
      auto decoded = io::load_model<float>(out, as_float);
      auto* planned = dynamic_cast<nn::sequential<float>*>(decoded.get());
      if (planned == nullptr) throw config_error("deploy: the model file does not hold a Sequential");
      nn::compressed::compress_options o;
      o.sparse.batch = batch;
      o.input_shape = {batch};
      o.input_shape.insert(o.input_shape.end(), sample.begin(), sample.end());
      nn::compressed::compress(*planned, nn::compressed::format::sparse, o);
      tensor<float> x(o.input_shape), y_float, y_planned;  // the first test images
      for (index_t i = 0; i < x.size(); ++i) x[i] = test.inputs[i % test.inputs.size()];
      const auto t = median_side_by_side({[&] { float_model.forward(x, y_float, {}); }, [&] { planned->forward(x, y_planned, {}); }},
                                         static_cast<int>(a.integer("rounds")));
      fmt::print("batch {:>2}: float {:8.1f} us, compressed {:8.1f} us: {:.1f}x faster (one thread)\n", batch, 1e6 * t[0], 1e6 * t[1],
                 t[0] / t[1]);
    }
    if (reloaded_accuracy != float_accuracy) return 1;  // the file must reproduce the model
    return 0;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
