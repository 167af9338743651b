// Prints what a slimnet model file holds, tensor by tensor: encoding, shape, nonzeros, and its bytes
// split into values / indices / codebook / Huffman tables, against the same tensors as dense
// float32 (the Deep Compression accounting: Han et al. 2016, table 1 counts exactly these).
//   slimnet-inspect FILE [--json]
#include <cstdio>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "slimnet/io/model_file.hpp"

namespace {

std::string shape_text(const slimnet::shape_t& s) { return fmt::format("{}", fmt::join(s, "x")); }

double ratio(std::uint64_t dense, std::uint64_t stored) { return stored == 0 ? 0.0 : static_cast<double>(dense) / static_cast<double>(stored); }

void print_table(const std::string& path, const slimnet::io::model_file_summary& s) {
  fmt::print("{}: {} bytes ({} in tensors, {} in the header)\n", path, s.file_bytes, s.tensor_bytes_total, s.file_bytes - s.tensor_bytes_total);
  for (const auto& [k, v] : s.metadata) fmt::print("  {} = {}\n", k, v);
  if (s.architecture.contains("input_standardisation")) {
    fmt::print("  input standardisation: mean {}, std {}\n", s.architecture["input_standardisation"]["mean"].get<double>(),
               s.architecture["input_standardisation"]["std"].get<double>());
  }
  fmt::print("\n{:<28} {:<22} {:>14} {:>9} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10} {:>7}\n", "tensor", "encoding", "shape", "nonzeros", "values",
             "indices", "codebook", "huffman", "total", "dense f32", "ratio");
  for (const auto& r : s.rows) {
    std::string enc = r.encoding;
    if (r.descriptor.contains("indices")) enc += fmt::format(" i{}", r.descriptor["indices"]["bits"].get<int>());
    if (r.descriptor.contains("codes") && r.encoding != "sign_bits") enc += fmt::format(" c{}", r.descriptor["codes"]["bits"].get<int>());
    fmt::print("{:<28} {:<22} {:>14} {:>9} {:>10} {:>10} {:>9} {:>8} {:>10} {:>10} {:>6.1f}x\n", r.tensor, enc, shape_text(r.shape), r.nonzeros,
               r.bytes.values, r.bytes.indices, r.bytes.codebook, r.bytes.huffman, r.bytes.total(), r.dense_f32_bytes,
               ratio(r.dense_f32_bytes, r.bytes.total()));
  }
  fmt::print("\ntotal: {} bytes of tensors against {} as dense float32: {:.1f}x smaller ({:.1f}x counting the whole file)\n",
             s.tensor_bytes_total, s.dense_f32_bytes, ratio(s.dense_f32_bytes, s.tensor_bytes_total), ratio(s.dense_f32_bytes, s.file_bytes));
}

nlohmann::json as_json(const std::string& path, const slimnet::io::model_file_summary& s) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& r : s.rows) {
    rows.push_back({{"tensor", r.tensor},
                    {"layer", r.layer},
                    {"encoding", r.encoding},
                    {"shape", r.shape},
                    {"nonzeros", r.nonzeros},
                    {"bytes", {{"values", r.bytes.values}, {"indices", r.bytes.indices}, {"codebook", r.bytes.codebook}, {"huffman", r.bytes.huffman},
                               {"total", r.bytes.total()}}},
                    {"dense_f32_bytes", r.dense_f32_bytes},
                    {"descriptor", r.descriptor}});
  }
  return {{"file", path},
          {"file_bytes", s.file_bytes},
          {"tensor_bytes", s.tensor_bytes_total},
          {"dense_f32_bytes", s.dense_f32_bytes},
          {"ratio", ratio(s.dense_f32_bytes, s.tensor_bytes_total)},
          {"metadata", s.metadata},
          {"architecture", s.architecture},
          {"tensors", rows}};
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--json") {
      json = true;
    } else if (a == "-h" || a == "--help") {
      fmt::print("usage: {} FILE [--json]\n  per-tensor encodings and bytes of a slimnet model file (io::save_model)\n", argv[0]);
      return 0;
    } else if (path.empty() && a.rfind("--", 0) != 0) {
      path = a;
    } else {
      fmt::print(stderr, "{}: unexpected argument '{}'\nusage: {} FILE [--json]\n", argv[0], a, argv[0]);
      return 2;
    }
  }
  if (path.empty()) {
    fmt::print(stderr, "usage: {} FILE [--json]\n", argv[0]);
    return 2;
  }
  try {
    const auto s = slimnet::io::describe_model_file(path);
    if (json) {
      fmt::print("{}\n", as_json(path, s).dump(2));
    } else {
      print_table(path, s);
    }
  } catch (const std::exception& e) {  // slimnet::error (a bad file) and anything else alike
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
  return 0;
}
