// Model files: save -> load gives bitwise the outputs of the in-memory model (decoded to float, and
// on the compressed layers the encodings call for) for LeNet-300-100, LeNet-5, a VGG-style net, a
// Bi-LSTM, a stacked GRU and DeepSense; corrupted files are io_errors naming the tensor.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstring>

#include "slimnet/io.hpp"
#include "slimnet/nn.hpp"
#include "slimnet/nn/models.hpp"
#include "slimnet/nn/models_deepsense.hpp"
#include "slimnet/prune/functional.hpp"
#include "support/temp_dir.hpp"
#include "support/tensors.hpp"

using namespace slimnet;
namespace fs = std::filesystem;

namespace {

tensor<float> random_input(const shape_t& shape, std::uint64_t seed) {
  rng gen(seed);
  tensor<float> x(shape);
  for (index_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(gen.normal());
  return x;
}

tensor<float> run(nn::layer<float>& m, const tensor<float>& x) {
  tensor<float> y;
  m.forward(x, y, nn::forward_context{});
  return y;
}

/// Equal element by element (+0 == -0; a NaN never equals).
void require_identical(const tensor<float>& a, const tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  index_t differ = 0;
  for (index_t i = 0; i < a.size(); ++i) differ += !(a[i] == b[i]);
  CHECK(differ == 0);
}

/// Prunes `fraction` of the weight by magnitude (a mask transform) and snaps the survivors to k
/// values (a trained codebook's result; k = 0 leaves them free).
void prune_and_cluster(nn::parameter<float>& w, double fraction, int k, std::uint64_t seed) {
  prune::l1_unstructured(w, fraction);
  if (k == 0) return;
  rng gen(seed);
  const double largest = w.value().flat().cwiseAbs().maxCoeff();
  std::vector<float> centroids;
  for (int i = 0; i < k; ++i) centroids.push_back(static_cast<float>(gen.uniform(-largest, largest)));
  for (index_t i = 0; i < w.value().size(); ++i) {
    float& v = w.value()[i];
    if (v == 0.0f) continue;
    float best = centroids[0];
    for (float c : centroids)
      if (std::abs(c - v) < std::abs(best - v)) best = c;
    v = best;
  }
}

/// Row j = +-alpha_j (a binarized layer's effective weights).
void binarize_rows(nn::parameter<float>& w) {
  auto m = w.value().matrix();
  for (index_t j = 0; j < m.rows(); ++j) {
    const float alpha = 0.05f + 0.001f * static_cast<float>(j);
    for (index_t k = 0; k < m.cols(); ++k) m(j, k) = m(j, k) < 0 ? -alpha : alpha;
  }
}

/// Row j = q_jk s_j with int8 codes and an arbitrary scale.
void int8_rows(nn::parameter<float>& w) {
  auto m = w.value().matrix();
  for (index_t j = 0; j < m.rows(); ++j) {
    const float s = m.row(j).cwiseAbs().maxCoeff() / 127.0f;
    for (index_t k = 0; k < m.cols(); ++k) m(j, k) = std::nearbyint(m(j, k) / s) * s;
  }
}

/// Weights on the <IL, FL> = <2, 6> grid (8-bit fixed point).
void fixed_point(nn::parameter<float>& w) {
  for (index_t i = 0; i < w.value().size(); ++i) {
    float& v = w.value()[i];
    v = std::clamp(std::nearbyint(v * 64.0f), -128.0f, 127.0f) / 64.0f;
  }
}

/// The in-memory model converted as load_model converts the file (same effective weights, same calls).
/// The batch-1 sparse form without the timed choice (SELL-16 over the columns as they are, or
/// reordered, or the compact CSR, whichever ran fastest: nn/compressed/convert.hpp): two
/// conversions of the same weights must build the same form for a bitwise comparison.
nn::compressed::sparse_options untimed_sparse_options() {
  nn::compressed::sparse_options o;
  o.measure_column_order = false;
  return o;
}

std::unique_ptr<nn::layer<float>> convert_like_loader(const nn::layer<float>& model, const std::map<std::string, std::string>& encodings) {
  namespace c = nn::compressed;
  auto copy = model.clone();
  std::vector<nn::sequential<float>*> containers;
  copy->visit_layers([&](nn::layer<float>& l) {
    if (auto* s = dynamic_cast<nn::sequential<float>*>(&l)) containers.push_back(s);
  });
  for (auto* s : containers) {
    for (std::size_t i = 0; i < s->size(); ++i) {
      auto convert = [&](auto& l, auto tag) -> std::unique_ptr<nn::layer<float>> {
        using compressed = decltype(tag);
        const std::string e = encodings.at(l.weight().name());
        if (e == "sparse_codebook") return std::make_unique<compressed>(c::to_sparse_codebook(l));
        if (e == "sparse") return std::make_unique<compressed>(c::to_sparse(l, untimed_sparse_options()));
        if (e == "codebook") return std::make_unique<compressed>(c::to_codebook(l));
        if (e == "sign_bits") return io::detail::reads_signs(*s, i) ? std::make_unique<compressed>(c::to_xnor(l)) : nullptr;
        if (e == "int8_rows" || e == "fixed_point") return std::make_unique<compressed>(c::to_int8(l));
        return nullptr;
      };
      std::unique_ptr<nn::layer<float>> r;
      if (auto* lin = dynamic_cast<nn::linear<float>*>(&(*s)[i])) r = convert(*lin, c::compressed_linear<float>(std::make_unique<c::dense_engine<float>>(row_matrix<float>(1, 1), std::nullopt)));
      if (auto* conv = dynamic_cast<nn::conv2d<float>*>(&(*s)[i])) {
        r = convert(*conv, c::compressed_conv2d<float>(std::make_unique<c::dense_engine<float>>(row_matrix<float>(1, 1), std::nullopt), 1, nn::window2d{}));
      }
      if (r) s->replace(i, std::move(r));
    }
  }
  return copy;
}

/// save -> load (decoded and compressed) -> outputs equal the in-memory model's; returns the encodings.
/// The file is written to `path`.
io::load_model_options decode_options() {
  io::load_model_options o;
  o.decode = true;
  return o;
}

std::map<std::string, std::string> check_round_trip(nn::layer<float>& model, const tensor<float>& x, const std::string& file,
                                                    const io::save_model_options& options = {}, fs::path* written = nullptr) {
  const fs::path path = slimnet::testing::temp_dir("model_file_" + file) / (file + ".safetensors");
  io::save_model(model, path, options);
  auto decoded = io::read_model<float>(path, decode_options());
  INFO(file);
  require_identical(run(*decoded.model, x), run(model, x));
  io::load_model_options untimed;
  untimed.sparse = untimed_sparse_options();
  auto compressed = io::read_model<float>(path, untimed);
  auto reference = convert_like_loader(model, compressed.encodings);
  require_identical(run(*compressed.model, x), run(*reference, x));
  CHECK(compressed.model->describe() == reference->describe());
  if (written) *written = path;
  return compressed.encodings;
}

/// Where part `suffix` of tensor `name` lies in its layer's U8 tensor (format version 2).
std::pair<std::size_t, std::size_t> part_range(const io::raw_file& f, const std::string& name, const std::string& suffix) {
  const auto all = nlohmann::json::parse(f.metadata.at("slimnet.tensors"));
  std::size_t at = 0;
  for (const auto& item : all.items()) {
    const auto d = io::expand_descriptor(item.value());
    if (!d.contains("parts") || io::model_packer::blob_name(item.key()) != io::model_packer::blob_name(name)) continue;
    const auto layout = io::part_layout(d);
    for (std::size_t k = 0; k < layout.size(); ++k) {
      const auto len = d["parts"][k].get<std::size_t>();
      if (item.key() == name && layout[k].suffix == suffix) return {at, len};
      at += len;
    }
  }
  FAIL("no part " << suffix << " of " << name);
  return {0, 0};
}

/// Bytes of the tensors in a model file against the same parameters as dense float32.
double compression_ratio(const fs::path& path) {
  const auto s = io::describe_model_file(path);
  return static_cast<double>(s.dense_f32_bytes) / static_cast<double>(s.tensor_bytes_total);
}

}  // namespace

TEST_CASE("LeNet-300-100 pruned + clustered, with a binarized layer, round trips bitwise", "[io][model_file]") {
  rng gen(11);
  auto m = nn::models::lenet_300_100<float>(gen);
  auto& fc1 = static_cast<nn::linear<float>&>(m.find("fc1"));
  auto& fc2 = static_cast<nn::linear<float>&>(m.find("fc2"));
  auto& fc3 = static_cast<nn::linear<float>&>(m.find("fc3"));
  prune_and_cluster(fc1.weight(), 0.92, 16, 1);
  prune_and_cluster(fc2.weight(), 0.91, 32, 2);
  binarize_rows(fc3.weight());
  fs::path path;
  const auto enc = check_round_trip(m, random_input({5, 1, 28, 28}, 3), "lenet300", io::save_model_options{}, &path);
  CHECK(enc.at("fc1.weight") == "sparse_codebook");
  CHECK(enc.at("fc2.weight") == "sparse_codebook");
  CHECK(enc.at("fc3.weight") == "sign_bits");
  CHECK(enc.at("fc1.bias") == "dense_f32");
  const auto loaded = io::load_model<float>(path);
  auto& seq = static_cast<nn::sequential<float>&>(*loaded);
  CHECK(seq[5].kind() == "Linear");  // fed by a ReLU, not signs: XNOR would binarize its input
  // ~8% of 266k weights at 4-bit indices and 4-5 bit codes, biases dense: well over 20x.
  CHECK(compression_ratio(path) > 20);
}

TEST_CASE("LeNet-5 with sparse, codebook and int8 layers round trips bitwise, with metadata and standardisation", "[io][model_file]") {
  rng gen(12);
  auto m = nn::models::lenet5<float>(gen);
  prune_and_cluster(static_cast<nn::conv2d<float>&>(m.find("conv2")).weight(), 0.8, 16, 4);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc1")).weight(), 0.95, 0, 0);
  int8_rows(static_cast<nn::linear<float>&>(m.find("fc2")).weight());
  io::save_model_options o;
  o.metadata = {{"model", "lenet5"}, {"data", "mnist"}, {"input_mean", "0.1307"}, {"input_std", "0.3081"}};
  o.overrides["fc2"].encoding = io::tensor_encoding::int8_rows;
  o.overrides["fc2.bias"].encoding = io::tensor_encoding::dense_f32;
  fs::path path;
  const auto enc = check_round_trip(m, random_input({3, 1, 28, 28}, 5), "lenet5", o, &path);
  CHECK(enc.at("conv1.weight") == "dense_f32");
  CHECK(enc.at("conv2.weight") == "sparse_codebook");
  CHECK(enc.at("fc1.weight") == "sparse");
  CHECK(enc.at("fc2.weight") == "int8_rows");
  const auto loaded = io::read_model<float>(path);
  CHECK(loaded.metadata.at("model") == "lenet5");
  REQUIRE(loaded.input);
  CHECK(loaded.input->mean == Approx(0.1307));
  CHECK(loaded.input->std == Approx(0.3081));
  auto& seq = static_cast<nn::sequential<float>&>(*loaded.model);
  CHECK(seq[0].kind() == "Conv2d");
  CHECK(seq[7].kind() == "Int8Linear");
  // The inspector's numbers add up to the file.
  const auto s = io::describe_model_file(path);
  std::uint64_t total = 0;
  for (const auto& r : s.rows) total += r.bytes.total();
  CHECK(total == s.tensor_bytes_total);
  CHECK(s.tensor_bytes_total < s.file_bytes);
  CHECK(s.dense_f32_bytes == 4u * 431080u);
}

TEST_CASE("a VGG-style net with BatchNorm statistics and a fixed-point layer round trips bitwise", "[io][model_file]") {
  rng gen(13);
  auto m = nn::models::vgg_small<float>(gen, 16);
  m.visit_layers([&](nn::layer<float>& l) {
    if (auto* bn = dynamic_cast<nn::batch_norm<float>*>(&l)) {
      for (index_t i = 0; i < bn->features(); ++i) {
        bn->running_mean().value()[i] = static_cast<float>(gen.normal(0, 0.1));
        bn->running_var().value()[i] = static_cast<float>(gen.uniform(0.5, 2.0));
        bn->weight().value()[i] = static_cast<float>(gen.uniform(0.5, 1.5));
      }
    }
  });
  fixed_point(static_cast<nn::conv2d<float>&>(m.find("conv3")).weight());
  prune_and_cluster(static_cast<nn::conv2d<float>&>(m.find("conv5")).weight(), 0.7, 8, 6);
  const auto enc = check_round_trip(m, random_input({2, 1, 28, 28}, 7), "vgg");
  CHECK(enc.at("conv3.weight") == "fixed_point");
  CHECK(enc.at("bn1.running_var") == "dense_f32");
}

TEST_CASE("a Bi-LSTM with a unit mask and a thinned stacked GRU round trip bitwise", "[io][model_file]") {
  rng gen(14);
  nn::sequential<float> bi;
  nn::lstm<float> fwd(12, 9);
  fwd.reset_parameters(gen);
  auto& b = bi.add("bilstm", nn::bidirectional<float>(std::move(fwd), 3));
  tensor<float> mask({9});
  for (index_t i = 0; i < 9; ++i) mask[i] = i % 3 == 0 ? 0.0f : 0.75f;
  b.forward_as<nn::lstm<float>>().set_unit_mask(0, mask);
  bi.add("mean", nn::sequence_mean<float>());
  bi.add("fc", nn::linear<float>(18, 5));
  prune_and_cluster(b.forward_as<nn::lstm<float>>().weight_ih(0), 0.6, 4, 8);
  check_round_trip(bi, random_input({3, 7, 12}, 9), "bilstm");

  nn::sequential<float> g;
  nn::recurrent_options o;
  o.output = nn::sequence_output::last_step;
  g.add("gru", nn::gru<float>(6, std::vector<index_t>{10, 4}, o));
  g.add("drop", nn::dropout<float>(0.3));
  g.add("fc", nn::linear<float>(4, 3));
  g.add("act", nn::tanh<float>());
  g.reset_parameters(gen);
  binarize_rows(static_cast<nn::linear<float>&>(g.find("fc")).weight());
  const auto enc = check_round_trip(g, random_input({4, 5, 6}, 10), "gru");
  CHECK(enc.at("fc.weight") == "sign_bits");
}

TEST_CASE("a sign-bit layer loads on the XNOR kernel only where it reads signs", "[io][model_file]") {
  rng gen(16);
  nn::sequential<float> m;
  m.add("fc1", nn::linear<float>(12, 40));  // reads real values: stays float even with sign-bit weights
  m.add("sign1", quant::sign_activation<float>());
  m.add("drop", nn::dropout<float>(0.2));
  m.add("fc2", nn::linear<float>(40, 33));
  m.add("sign2", quant::sign_activation<float>());
  m.add("fc3", nn::linear<float>(33, 3));
  m.reset_parameters(gen);
  for (const char* name : {"fc1", "fc2"}) binarize_rows(static_cast<nn::linear<float>&>(m.find(name)).weight());
  fs::path path;
  const auto enc = check_round_trip(m, random_input({6, 12}, 17), "signs", io::save_model_options{}, &path);
  CHECK(enc.at("fc1.weight") == "sign_bits");
  CHECK(enc.at("fc2.weight") == "sign_bits");
  const auto loaded = io::load_model<float>(path);
  auto& seq = static_cast<nn::sequential<float>&>(*loaded);
  CHECK(seq[0].kind() == "Linear");
  CHECK(seq[3].kind() == "XnorLinear");
  // The loaded model computes what the float model computes (fc2 sums +-alpha over +-1 inputs).
  const auto x = random_input({6, 12}, 18);
  const auto a = run(m, x), b = run(*loaded, x);
  for (index_t i = 0; i < a.size(); ++i) CHECK(b[i] == Approx(a[i]).margin(1e-4));
}

TEST_CASE("the DeepSense model round trips bitwise", "[io][model_file]") {
  rng gen(15);
  nn::models::deepsense_options o;
  o.intervals = 4;
  o.channels = 8;
  o.hidden = 10;
  auto m = nn::models::deepsense<float>(gen, o);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc")).weight(), 0.5, 4, 9);
  check_round_trip(m, random_input({2, 4, o.features()}, 11), "deepsense");
}

TEST_CASE("corrupted model files are io_errors naming the tensor and the problem", "[io][model_file]") {
  rng gen(16);
  auto m = nn::models::lenet5<float>(gen);
  prune_and_cluster(static_cast<nn::conv2d<float>&>(m.find("conv2")).weight(), 0.8, 16, 4);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc1")).weight(), 0.95, 8, 5);
  const fs::path dir = slimnet::testing::temp_dir("model_file_corrupt");
  const fs::path good = dir / "good.safetensors", bad = dir / "bad.safetensors";
  io::save_model_options so;
  so.defaults.huffman = io::huffman_mode::always;
  io::save_model(m, good, so);
  const io::raw_file original = io::read_safetensors_raw(good);
  REQUIRE_NOTHROW(io::load_model<float>(good));
  // Version 2: one U8 tensor per layer holds the parts of its compressed tensors.
  REQUIRE(original.tensors.count("conv2") == 1);
  REQUIRE(original.tensors.count("conv2.weight.codes.huffman") == 0);

  SECTION("truncating any tensor") {
    for (const auto& [name, t] : original.tensors) {
      io::raw_file f = original;
      auto& part = f.tensors[name];
      const std::size_t elem = io::dtype_size(part.type);
      if (part.bytes.size() < elem || part.shape.size() != 1) {
        part.shape[0] -= 1;  // a 4-d dense tensor: drop one filter
        part.bytes.resize(static_cast<std::size_t>(shape_size(part.shape)) * elem);
      } else {
        part.bytes.resize(part.bytes.size() - elem);
        part.shape = {part.shape[0] - 1};
      }
      io::write_safetensors_raw(bad, f);
      const std::string owner = name.substr(0, name.find('.', name.find('.') + 1));
      CAPTURE(name);
      CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains(owner) && Catch::StartsWith("slimnet::io::load_model"));
    }
  }
  SECTION("flipped index bytes") {
    io::raw_file f = original;
    const auto [at, len] = part_range(f, "fc1.weight", "indices");
    REQUIRE(len > 100);
    for (std::size_t i = at; i < at + len; ++i) f.tensors.at("fc1").bytes[i] ^= 0x24;
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("'fc1.weight'"));
  }
  SECTION("a Huffman table that is not a prefix code") {
    io::raw_file f = original;
    const auto [at, len] = part_range(f, "conv2.weight", "indices.huffman");
    REQUIRE(len >= 2);  // at least 3 symbols of length 1
    auto& blob = f.tensors.at("conv2").bytes;
    std::fill(blob.begin() + static_cast<std::ptrdiff_t>(at), blob.begin() + static_cast<std::ptrdiff_t>(at + len), 0x11);  // every length 1
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("'conv2.weight'") && Catch::Contains("not a prefix code"));
  }
  SECTION("an architecture whose shapes do not fit the tensors") {
    io::raw_file f = original;
    auto arch = nlohmann::json::parse(f.metadata.at("slimnet.architecture"));
    arch["layers"][5]["out_features"] = 400;  // fc1
    arch["layers"][7]["in_features"] = 400;   // fc2
    f.metadata["slimnet.architecture"] = arch.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("does not fit") && Catch::Contains("'fc1.weight' is (500, 800) in the file") &&
                                                      Catch::Contains("'fc2.weight'") && Catch::Contains("'fc1.bias'"));
  }
  SECTION("missing and unexpected tensors are all named at once") {
    io::raw_file f = original;
    auto d = nlohmann::json::parse(f.metadata.at("slimnet.tensors"));
    d["extra.weight"] = d["fc2.bias"];
    d.erase("fc2.bias");
    d.erase("conv1.bias");
    f.metadata["slimnet.tensors"] = d.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("missing tensors: conv1.bias, fc2.bias") &&
                                                      Catch::Contains("unexpected tensors: extra.weight"));
  }
  SECTION("an unknown layer kind and a malformed field") {
    io::raw_file f = original;
    auto arch = nlohmann::json::parse(f.metadata.at("slimnet.architecture"));
    arch["layers"][1]["kind"] = "FancyPool";
    f.metadata["slimnet.architecture"] = arch.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("layer 'pool1'") && Catch::Contains("unknown layer kind 'FancyPool'"));
    arch["layers"][1]["kind"] = "MaxPool2d";
    arch["layers"][1]["kernel"] = -2;
    f.metadata["slimnet.architecture"] = arch.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("layer 'pool1'") && Catch::Contains("'kernel' = -2"));
    f.metadata["slimnet.architecture"] = "{not json";
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("not valid JSON"));
  }
  SECTION("part lengths that do not tile the layer's tensor") {
    io::raw_file f = original;
    auto d = nlohmann::json::parse(f.metadata.at("slimnet.tensors"));
    d["fc1.weight"]["p"].back() = d["fc1.weight"]["p"].back().get<int>() + 1;  // a U8 part
    f.metadata["slimnet.tensors"] = d.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("'fc1'") && Catch::Contains("fc1.weight"));
    CHECK_THROWS_WITH(io::describe_model_file(bad), Catch::Contains("'fc1'"));
    d["fc1.weight"]["p"] = {1, 2};
    f.metadata["slimnet.tensors"] = d.dump();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("'fc1.weight'") && Catch::Contains("part lengths"));
  }
  SECTION("a plain safetensors file is not a model file") {
    io::raw_file f = original;
    f.metadata.clear();
    io::write_safetensors_raw(bad, f);
    CHECK_THROWS_WITH(io::load_model<float>(bad), Catch::Contains("not a slimnet model file"));
  }
}

namespace {
struct custom_layer : nn::cloneable<custom_layer, float> {
  std::string kind() const override { return "Custom"; }
  shape_t output_shape(const shape_t& in) const override { return in; }
  void forward(const tensor<float>& x, tensor<float>& y, const nn::forward_context&) override { y = x; }
  void backward(const tensor<float>&, const tensor<float>&, const tensor<float>&, tensor<float>*) override {}
};
}  // namespace

TEST_CASE("save_model refuses what it cannot store exactly", "[io][model_file]") {
  const fs::path dir = slimnet::testing::temp_dir("model_file_refuse");
  nn::sequential<float> m;
  m.add("fc", nn::linear<float>(4, 3));
  m.add("odd", custom_layer());
  CHECK_THROWS_WITH(io::save_model(m, dir / "m.safetensors"), Catch::Contains("'odd'") && Catch::Contains("Custom"));
  nn::sequential<float> ok;
  ok.add("fc", nn::linear<float>(4, 3));
  io::save_model_options o;
  o.overrides["fc.weight"].encoding = io::tensor_encoding::sign_bits;
  CHECK_THROWS_WITH(io::save_model(ok, dir / "m.safetensors", o), Catch::Contains("'fc.weight'") && Catch::Contains("sign_bits"));
  o.overrides.clear();
  o.overrides["fc9"].encoding = io::tensor_encoding::sparse;
  CHECK_THROWS_WITH(io::save_model(ok, dir / "m.safetensors", o), Catch::Contains("'fc9'"));
  CHECK_FALSE(fs::exists(dir / "m.safetensors"));
}

TEST_CASE("version 2 packs each layer's compressed tensors into one U8 tensor and still reads version-1 files", "[io][model_file]") {
  rng gen(17);
  auto m = nn::models::lenet5<float>(gen);
  prune_and_cluster(static_cast<nn::conv2d<float>&>(m.find("conv2")).weight(), 0.9, 16, 4);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc1")).weight(), 0.99, 8, 5);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc2")).weight(), 0.8, 0, 0);
  fs::path path;
  check_round_trip(m, random_input({2, 1, 28, 28}, 18), "packed", io::save_model_options{}, &path);
  const io::raw_file f = io::read_safetensors_raw(path);
  CHECK(f.metadata.at("slimnet.format_version") == "2");
  // Every tensor is a dense parameter of its own or a layer's U8 tensor.
  std::set<std::string> names;
  for (const auto& [name, t] : f.tensors) names.insert(name);
  CHECK(names == std::set<std::string>{"conv1.bias", "conv1.weight", "conv2", "conv2.bias", "fc1", "fc1.bias", "fc2", "fc2.bias"});
  CHECK(f.tensors.at("fc1").type == io::dtype::u8);
  CHECK(f.tensors.at("conv1.weight").type == io::dtype::f32);
  CHECK(f.tensors.at("conv1.weight").shape == shape_t{20, 1, 5, 5});
  // Defaults are left out of the architecture and put back on reading.
  const auto arch = nlohmann::json::parse(f.metadata.at("slimnet.architecture"));
  CHECK_FALSE(arch["layers"][0].contains("stride"));
  CHECK_FALSE(arch.contains("name"));
  CHECK(io::expand_architecture(arch)["layers"][1]["stride"] == 2);

  // The same file in the version-1 layout (a tensor per part, long keys, byte Huffman tables, the
  // whole architecture) loads to the same outputs and is larger.
  const auto view = io::detail::view_of(f, "2", path.string(), "test");
  io::raw_file v1;
  v1.tensors = view.file.tensors;
  nlohmann::json d = view.descriptors;
  for (auto& item : d.items()) {
    item.value().erase("parts");
    for (const char* k : {"indices", "codes"})
      if (item.value().contains(k)) item.value()[k].erase("huffman_table");
  }
  v1.metadata = {{"slimnet.format_version", "1"}, {"slimnet.architecture", view.architecture.dump()}, {"slimnet.tensors", d.dump()}};
  CHECK(v1.tensors.count("fc1.weight.indices") == 1);
  const fs::path old = path.parent_path() / "v1.safetensors";
  io::write_safetensors_raw(old, v1);
  const auto x = random_input({2, 1, 28, 28}, 19);
  for (const bool decode : {false, true}) {
    io::load_model_options o;
    o.decode = decode;
    require_identical(run(*io::load_model<float>(old, o), x), run(*io::load_model<float>(path, o), x));
  }
  CHECK(fs::file_size(old) > fs::file_size(path) + 1000);
  // The inspector counts what is stored: the nibble tables at their stored size.
  const auto s2 = io::describe_model_file(path), s1 = io::describe_model_file(old);
  std::uint64_t h1 = 0, h2 = 0;
  for (const auto& r : s1.rows) h1 += r.bytes.huffman;
  for (const auto& r : s2.rows) h2 += r.bytes.huffman;
  CHECK(h2 < h1);
  CHECK(s2.tensor_bytes_total + (h1 - h2) == s1.tensor_bytes_total);
  CHECK(s2.rows.size() == s1.rows.size());
}

TEST_CASE("biases take the encoding save_model_options::biases asks for", "[io][model_file]") {
  rng gen(20);
  auto m = nn::models::lenet_300_100<float>(gen);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc1")).weight(), 0.92, 16, 1);
  // Biases rounded to half precision in the model: dense_f16 then stores them exactly.
  m.visit_parameters([](nn::parameter<float>& p) {
    if (p.name().find(".bias") == std::string::npos) return;
    for (index_t i = 0; i < p.value().size(); ++i) p.value()[i] = io::f16_to_float(io::float_to_f16(p.value()[i] + 0.01f));
  });
  io::save_model_options o;
  o.biases = io::tensor_encode_options{};
  o.biases->encoding = io::tensor_encoding::dense_f16;
  o.overrides["fc3.bias"].encoding = io::tensor_encoding::dense_f32;  // an override still wins
  fs::path path;
  const auto enc = check_round_trip(m, random_input({3, 1, 28, 28}, 21), "biases", o, &path);
  CHECK(enc.at("fc1.bias") == "dense_f16");
  CHECK(enc.at("fc2.bias") == "dense_f16");
  CHECK(enc.at("fc3.bias") == "dense_f32");
  CHECK(enc.at("fc1.weight") == "sparse_codebook");
  // A codebook of the biases: exact when they share few values.
  m.visit_parameters([](nn::parameter<float>& p) {
    if (p.name().find(".bias") == std::string::npos) return;
    for (index_t i = 0; i < p.value().size(); ++i) p.value()[i] = 0.125f * static_cast<float>(i % 4 + 1);
  });
  o.biases->encoding = io::tensor_encoding::codebook;
  o.overrides.clear();
  const auto enc2 = check_round_trip(m, random_input({3, 1, 28, 28}, 22), "biases_codebook", o);
  CHECK(enc2.at("fc1.bias") == "codebook");
  CHECK(enc2.at("fc3.bias") == "codebook");
}

namespace {

/// LeNet-5 with a stride-2 conv2 in place of conv2 + pool2 (same 800 features): a strided
/// convolution runs its im2col product, where the sparse + codebook engine serves convolutions.
nn::sequential<float> mfcb_strided_lenet5(rng& gen) {
  nn::sequential<float> m;
  m.add("conv1", nn::conv2d<float>(1, 20, 5));
  m.add("pool1", nn::max_pool2d<float>(2));
  m.add("conv2", nn::conv2d<float>(20, 50, 5, nn::conv2d<float>::options{2, 0, true}));
  m.add("relu2", nn::relu<float>());
  m.add("flatten", nn::flatten<float>());
  m.add("fc1", nn::linear<float>(800, 500));
  m.add("relu1", nn::relu<float>());
  m.add("fc2", nn::linear<float>(500, 10));
  m.reset_parameters(gen);
  return m;
}

/// max |a - b| / (1 + |b|), NaN anywhere -> infinity.
template <class Scalar>
double mfcb_worst(const tensor<Scalar>& a, const tensor<float>& b) {
  REQUIRE(a.shape() == b.shape());
  double worst = 0;
  for (index_t i = 0; i < a.size(); ++i) {
    const double d = std::abs(double(a[i]) - double(b[i])) / (1 + std::abs(double(b[i])));
    worst = std::isnan(d) ? INFINITY : std::max(worst, d);
  }
  return worst;
}

template <class Scalar>
const nn::compressed::sparse_codebook_engine<Scalar>* mfcb_engine_of(nn::layer<Scalar>& l) {
  if (auto* lin = dynamic_cast<nn::compressed::compressed_linear<Scalar>*>(&l))
    return dynamic_cast<const nn::compressed::sparse_codebook_engine<Scalar>*>(&lin->weights());
  if (auto* conv = dynamic_cast<nn::compressed::compressed_conv2d<Scalar>*>(&l))
    return dynamic_cast<const nn::compressed::sparse_codebook_engine<Scalar>*>(&conv->weights());
  return nullptr;
}

}  // namespace

TEMPLATE_TEST_CASE("a pruned + codebook model file loads on the sparse + codebook engine, as compress(codebook) converts it",
                   "[io][model_file][codebook]", float, double) {
  rng gen(31);
  auto m = mfcb_strided_lenet5(gen);
  prune_and_cluster(static_cast<nn::conv2d<float>&>(m.find("conv2")).weight(), 0.9, 16, 7);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc1")).weight(), 0.95, 16, 8);
  prune_and_cluster(static_cast<nn::linear<float>&>(m.find("fc2")).weight(), 0.8, 8, 9);
  const fs::path path = slimnet::testing::temp_dir("model_file_mfcb") / "lenet5_codebook.safetensors";
  io::save_model(m, path);
  const auto x = random_input({3, 1, 28, 28}, 32);
  const tensor<float> y_float = run(m, x);
  const tensor<TestType> xt = x.template cast<TestType>();
  const double tol = 1e-4;  // the file's weights are float: double differs by float rounding only

  for (index_t batch : {1, 64}) {
    io::load_model_options o;
    o.sparse.batch = batch;
    o.sparse.measure_column_order = false;  // compared bitwise with a second conversion below
    auto loaded = io::read_model<TestType>(path, o);
    CHECK(loaded.encodings.at("conv2.weight") == "sparse_codebook");
    CHECK(loaded.encodings.at("fc1.weight") == "sparse_codebook");
    CHECK(loaded.encodings.at("fc2.weight") == "sparse_codebook");
    auto& seq = static_cast<nn::sequential<TestType>&>(*loaded.model);
    INFO("batch " << batch);
    // fc1: 5% of 800 x 500 as codebook indices of <= 4 bits (16 centroids, fewer where the
    // largest weights snap to few of them); SELL-16 at batch 1, column-blocked CSR for batches.
    CHECK(seq[5].kind() == "SparseCodebookLinear");
    const auto* fc1 = mfcb_engine_of(seq[5]);
    REQUIRE(fc1 != nullptr);
    CHECK(fc1->bits() <= 4);
    CHECK(fc1->nnz() == (nn::compressed::effective_weight(static_cast<nn::linear<float>&>(m.find("fc1")).weight()).array() != 0.0f).count());
    CHECK(fc1->format().find(batch == 1 ? "SELL-16" : "column-blocked CSR") != std::string::npos);
    // conv2 (stride 2, 10% of 50 x 500): the sparse + codebook engine on its im2col product.
    CHECK(seq[2].kind() == "SparseCodebookConv2d");
    REQUIRE(mfcb_engine_of(seq[2]) != nullptr);
    CHECK(mfcb_engine_of(seq[2])->bits() <= 4);
    // The engines hold exactly the file's weights.
    CHECK(fc1->effective_weights().template cast<float>() == nn::compressed::effective_weight(static_cast<nn::linear<float>&>(m.find("fc1")).weight()));
    // Outputs: the float model's within float rounding, poisoned before the pass.
    CHECK(mfcb_worst(slimnet::testing::poisoned_forward(*loaded.model, xt), y_float) <= tol);
    // Exactly compress(model, format::codebook) on the same weights (fusion off: the loader keeps
    // the ReLU / pooling layers; conv1, stored dense_f32, stays float in both).
    auto reference = io::read_model<TestType>(path, decode_options()).model;
    nn::compressed::compress_options co;
    co.sparse.batch = batch;
    co.sparse.measure_column_order = o.sparse.measure_column_order;
    co.fuse = false;
    co.keep = {"conv1"};
    nn::compressed::compress(static_cast<nn::sequential<TestType>&>(*reference), nn::compressed::format::codebook, co);
    CHECK(loaded.model->describe() == reference->describe());
    const auto y_loaded = slimnet::testing::poisoned_forward(*loaded.model, xt);
    const auto y_reference = slimnet::testing::poisoned_forward(*reference, xt);
    index_t differ = 0;
    for (index_t i = 0; i < y_loaded.size(); ++i) differ += !(y_loaded[i] == y_reference[i]);
    CHECK(differ == 0);
  }
}

TEST_CASE("a sparse_codebook layer with more values than an 8-bit codebook holds loads on the float sparse engine", "[io][model_file][codebook]") {
  rng gen(33);
  auto m = mfcb_strided_lenet5(gen);
  auto& fc1 = static_cast<nn::linear<float>&>(m.find("fc1"));
  prune_and_cluster(fc1.weight(), 0.95, 0, 0);  // 20k nonzeros, nearly all distinct
  io::save_model_options so;
  so.overrides["fc1.weight"].encoding = io::tensor_encoding::sparse_codebook;
  so.overrides["fc1.weight"].max_codebook_bits = 16;
  const fs::path path = slimnet::testing::temp_dir("model_file_mfcb") / "wide_codebook.safetensors";
  io::save_model(m, path, so);
  auto loaded = io::read_model<float>(path);
  CHECK(loaded.encodings.at("fc1.weight") == "sparse_codebook");
  auto& seq = static_cast<nn::sequential<float>&>(*loaded.model);
  CHECK(seq[5].kind() == "SparseLinear");
  CHECK(mfcb_engine_of(seq[5]) == nullptr);
  const auto x = random_input({2, 1, 28, 28}, 34);
  CHECK(mfcb_worst(slimnet::testing::poisoned_forward(*loaded.model, x), run(m, x)) <= 1e-4);
}
