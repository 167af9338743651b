// Crafted and misdirected input for every reader in data/: each gets a typed io_error naming the
// file (never a crash, std::bad_alloc, std::ios_base::failure or an endless read), and writes
// leave nothing behind when they fail.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <zlib.h>

#include "slimnet/data.hpp"
#include "support/files.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
using Catch::Contains;
namespace fs = std::filesystem;
namespace hhar = slimnet::data::hhar;

namespace {

using slimnet::testing::write_bytes;

std::vector<std::uint8_t> gzip(const std::vector<std::uint8_t>& bytes) {
  // A one-member gzip stream (windowBits 15 + 16 asks deflate for the gzip wrapper).
  z_stream z{};
  REQUIRE(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<std::uint8_t> out(deflateBound(&z, static_cast<uLong>(bytes.size())));
  z.next_in = const_cast<Bytef*>(bytes.data());
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  REQUIRE(deflate(&z, Z_FINISH) == Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// gzip of `prefix` followed by `zeros` zero bytes, deflated piece by piece (never held whole).
std::vector<std::uint8_t> gzip_with_zeros(const std::vector<std::uint8_t>& prefix, std::size_t zeros) {
  z_stream z{};
  REQUIRE(deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 9, Z_DEFAULT_STRATEGY) == Z_OK);
  std::vector<std::uint8_t> out, buf(1 << 16);
  const std::vector<std::uint8_t> chunk(1 << 20, 0);
  auto feed = [&](const std::uint8_t* p, std::size_t n, int flush) {
    z.next_in = const_cast<Bytef*>(p);
    z.avail_in = static_cast<uInt>(n);
    do {
      z.next_out = buf.data();
      z.avail_out = static_cast<uInt>(buf.size());
      deflate(&z, flush);
      out.insert(out.end(), buf.data(), buf.data() + (buf.size() - z.avail_out));
    } while (z.avail_out == 0);
  };
  feed(prefix.data(), prefix.size(), Z_NO_FLUSH);
  for (std::size_t left = zeros; left > 0;) {
    const std::size_t n = std::min(left, chunk.size());
    feed(chunk.data(), n, Z_NO_FLUSH);
    left -= n;
  }
  feed(nullptr, 0, Z_FINISH);
  deflateEnd(&z);
  return out;
}

// An IDX header: type u8, the given dimensions big-endian.
std::vector<std::uint8_t> idx_header(const std::vector<std::uint32_t>& dims, std::uint8_t type = 0x08) {
  std::vector<std::uint8_t> h{0, 0, type, static_cast<std::uint8_t>(dims.size())};
  for (std::uint32_t d : dims) h.insert(h.end(), {std::uint8_t(d >> 24), std::uint8_t(d >> 16), std::uint8_t(d >> 8), std::uint8_t(d)});
  return h;
}

std::vector<std::uint8_t> concat(std::vector<std::uint8_t> a, const std::vector<std::uint8_t>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

std::vector<fs::path> files_in(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename());
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

TEST_CASE("IDX dimensions whose product wraps are refused before any allocation", "[data][idx][errors]") {
  const auto dir = slimnet::testing::temp_dir("idx_overflow");
  // 2^16 x 2^16 x 2^16 x 2^16 = 2^64 wraps to 0 elements: with a plain product this header and
  // an empty payload would pass the length check and describe an "empty" 4-d array of 2^64 items.
  write_bytes(dir / "wrap0", idx_header({65536, 65536, 65536, 65536}));
  CHECK_THROWS_WITH(data::read_idx(dir / "wrap0"),
                    Contains("slimnet::data::read_idx") && Contains("(65536, 65536, 65536, 65536)") && Contains("64-bit"));
  // 2^62 f64 elements: the element count fits, the byte count 2^65 does not.
  write_bytes(dir / "wrap_bytes", idx_header({0x80000000u, 0x80000000u, 1}, 0x0E));
  CHECK_THROWS_WITH(data::read_idx(dir / "wrap_bytes"), Contains("payload bytes") && Contains("overflows"));
  // Fits 64 bits but not the file: 4 GiB declared by a 20-byte file, refused without allocating.
  write_bytes(dir / "huge", concat(idx_header({65536, 65536}), {1, 2, 3}));
  CHECK_THROWS_WITH(data::read_idx(dir / "huge"), Contains("holds 3 data bytes") && Contains("need 4294967296"));
  // The same through gzip: refused by the deflate bound (1032:1) before inflating anything.
  write_bytes(dir / "huge.gz", gzip(concat(idx_header({65536, 65536}), {1, 2, 3})));
  CHECK_THROWS_WITH(data::read_idx(dir / "huge.gz"), Contains("more than its") && Contains("compressed bytes can hold"));
  // A rank-0 header and a header cut inside its dimensions.
  write_bytes(dir / "rank0", {0, 0, 8, 0});
  CHECK_THROWS_WITH(data::read_idx(dir / "rank0"), Contains("rank 0"));
  write_bytes(dir / "cut_dims", {0, 0, 8, 200, 0, 0, 0, 1});
  CHECK_THROWS_WITH(data::read_idx(dir / "cut_dims"), Contains("truncated in its header") && Contains("rank 200"));
}

TEST_CASE("IDX payloads must match their dimensions exactly, plain and gzip", "[data][idx][errors]") {
  const auto dir = slimnet::testing::temp_dir("idx_payload");
  const auto header = idx_header({2, 3});
  const std::vector<std::uint8_t> payload{1, 2, 3, 4, 5, 6};
  write_bytes(dir / "ok.gz", gzip(concat(header, payload)));
  const auto ok = data::read_idx(dir / "ok.gz");
  CHECK(ok.dims == std::vector<index_t>{2, 3});
  CHECK(ok.bytes == payload);
  // Two gzip members back to back are one valid gzip file.
  const std::vector<std::uint8_t> first(payload.begin(), payload.begin() + 2), second(payload.begin() + 2, payload.end());
  write_bytes(dir / "members.gz", concat(gzip(concat(header, first)), gzip(second)));
  CHECK(data::read_idx(dir / "members.gz").bytes == payload);

  write_bytes(dir / "short", concat(header, {1, 2, 3, 4, 5}));
  CHECK_THROWS_WITH(data::read_idx(dir / "short"), Contains("holds 5 data bytes") && Contains("(2, 3) need 6"));
  write_bytes(dir / "long", concat(header, {1, 2, 3, 4, 5, 6, 7}));
  CHECK_THROWS_WITH(data::read_idx(dir / "long"), Contains("holds 7 data bytes") && Contains("need 6"));
  write_bytes(dir / "short.gz", gzip(concat(header, {1, 2, 3, 4, 5})));
  CHECK_THROWS_WITH(data::read_idx(dir / "short.gz"), Contains("holds 5 data bytes") && Contains("need 6"));
  write_bytes(dir / "long.gz", gzip(concat(header, {1, 2, 3, 4, 5, 6, 7})));
  CHECK_THROWS_WITH(data::read_idx(dir / "long.gz"), Contains("more than the 6 data bytes") && Contains("trailing data"));
  // Garbage after a complete gzip stream (gzread would skip it silently).
  write_bytes(dir / "garbage.gz", concat(gzip(concat(header, payload)), {'j', 'u', 'n', 'k'}));
  CHECK_THROWS_WITH(data::read_idx(dir / "garbage.gz"), Contains("data after the end of its gzip stream"));
  // A gzip stream whose CRC does not match, and one cut short.
  auto bad_crc = gzip(concat(header, payload));
  bad_crc[bad_crc.size() - 6] ^= 0xFF;
  write_bytes(dir / "crc.gz", bad_crc);
  CHECK_THROWS_WITH(data::read_idx(dir / "crc.gz"), Contains("corrupt gzip stream"));
  const auto whole = gzip(concat(header, payload));
  write_bytes(dir / "cut.gz", std::vector<std::uint8_t>(whole.begin(), whole.end() - 5));
  CHECK_THROWS_WITH(data::read_idx(dir / "cut.gz"), Contains("truncated gzip stream"));
}

TEST_CASE("a gzip bomb is refused after the declared size, without inflating it", "[data][idx][errors]") {
  const auto dir = slimnet::testing::temp_dir("idx_bomb");
  // 50 MB of zeros after a header declaring 28 x 28 bytes compress to ~50 KB. Reading stops one
  // byte past the 784 declared bytes: the error says so, and nothing near 50 MB is ever held.
  const auto compressed = gzip_with_zeros(idx_header({1, 28, 28}), 50 * 1000 * 1000);
  CHECK(compressed.size() < 300 * 1000);
  write_bytes(dir / "bomb.gz", compressed);
  CHECK_THROWS_WITH(data::read_idx(dir / "bomb.gz"), Contains("more than the 784 data bytes") && Contains("(1, 28, 28)"));
  // The reader's own view: a byte source stops where it is told to.
  data::detail::byte_source src(dir / "bomb.gz", "test");
  CHECK(src.gzip());
  CHECK_THROWS_WITH(src.read_rest(1 << 20), Contains("larger than 1048576 bytes"));
  CHECK(src.position() <= (1 << 20) + (1 << 16));
  // A header-less bomb (type byte 0) is refused after its first four bytes.
  write_bytes(dir / "zeros.gz", gzip_with_zeros({}, 10 * 1000 * 1000));
  CHECK_THROWS_WITH(data::read_idx(dir / "zeros.gz"), Contains("unknown element type 0x00"));
}

TEST_CASE("directories, devices and FIFOs given as data files are io_errors", "[data][errors]") {
  const auto dir = slimnet::testing::temp_dir("not_regular");
  fs::create_directories(dir / "folder");
  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  for (const fs::path& p : {dir / "folder", fs::path("/dev/zero"), dir / "fifo"}) {
    INFO(p.string());
    CHECK_THROWS_WITH(data::read_idx(p), Contains("slimnet::data::read_idx") && Contains("not a regular file"));
    CHECK_THROWS_WITH(data::load_cifar10_bin<float>({p}), Contains("not a regular file"));
    CHECK_THROWS_WITH(hhar::read_sensor_csv(p), Contains("slimnet::data::hhar::read_sensor_csv") && Contains("not a regular file"));
  }
  CHECK_THROWS_WITH(data::read_idx(dir / "folder"), Contains("is a directory"));
  CHECK_THROWS_WITH(data::read_idx("/dev/zero"), Contains("is a character device"));
  CHECK_THROWS_WITH(data::read_idx(dir / "fifo"), Contains("is a FIFO"));
  // The MNIST JSON converter reads <dir>/0.json ...: make 0.json a directory.
  fs::create_directories(dir / "digits" / "0.json");
  CHECK_THROWS_WITH(data::convert_mnist_json(dir / "digits", dir / "out"), Contains("0.json") && Contains("is a directory"));
  // An output folder that cannot be created (a file is in the way) is an io_error, not a
  // std::filesystem::filesystem_error.
  fs::create_directories(dir / "digits_ok");
  for (int digit = 0; digit < 10; ++digit) {
    std::ofstream out(dir / "digits_ok" / (std::to_string(digit) + ".json"));
    out << "{\"data\": [0";
    for (int i = 1; i < 5 * 784; ++i) out << ",0";
    out << "]}";
  }
  std::ofstream(dir / "in_the_way") << "x";
  CHECK_THROWS_WITH(data::convert_mnist_json(dir / "digits_ok", dir / "in_the_way" / "out"),
                    Contains("slimnet::data::convert_mnist_json") && Contains("cannot create the folder"));
  // OS errors carry the OS's reason.
  CHECK_THROWS_WITH(data::read_idx(dir / "absent"), Contains("cannot open") && Contains("No such file or directory"));
}

TEST_CASE("CIFAR-10 reader refuses an empty file list and corrupt streams", "[data][cifar][errors]") {
  const auto dir = slimnet::testing::temp_dir("cifar_errors");
  CHECK_THROWS_AS(data::load_cifar10_bin<float>({}), config_error);
  CHECK_THROWS_WITH(data::load_cifar10_bin<float>({}), Contains("no files"));
  std::vector<std::uint8_t> record(3073, 7);
  record[0] = 3;
  write_bytes(dir / "one.bin.gz", gzip(record));
  const auto d = data::load_cifar10_bin<float>({dir / "one.bin.gz"});
  CHECK(d.labels == std::vector<std::int32_t>{3});
  CHECK(d.inputs[3071] == Approx(7 / 255.0));
  write_bytes(dir / "garbage.bin.gz", concat(gzip(record), {0, 0}));
  CHECK_THROWS_WITH(data::load_cifar10_bin<float>({dir / "garbage.bin.gz"}), Contains("data after the end of its gzip stream"));
  write_bytes(dir / "short.bin.gz", gzip(std::vector<std::uint8_t>(record.begin(), record.end() - 1)));
  CHECK_THROWS_WITH(data::load_cifar10_bin<float>({dir / "short.bin.gz"}), Contains("3072 bytes") && Contains("3073-byte record"));
}

TEST_CASE("HHAR CSV: non-finite values, negative times and endless lines are io_errors", "[data][hhar][errors]") {
  const auto dir = slimnet::testing::temp_dir("hhar_malformed");
  const std::string header = "Index,Arrival_Time,Creation_Time,x,y,z,User,Model,Device,gt\n";
  const std::string good = "0,1,1424696633000000000,1,2,3,a,nexus4,nexus4_1,walk\n";
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir / name, std::ios::binary) << text;
    return dir / name;
  };
  CHECK(hhar::read_sensor_csv(write("ok.csv", header + good)).at(0).samples.at(0).z == 3.0f);
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("nan.csv", header + good + "1,1,1424696633000000001,nan,2,3,a,nexus4,nexus4_1,walk\n")),
                    Contains("nan.csv line 3") && Contains("column x holds 'nan'") && Contains("not a finite"));
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("inf.csv", header + "1,1,1424696633000000001,1,-inf,3,a,nexus4,nexus4_1,walk\n")),
                    Contains("inf.csv line 2") && Contains("column y holds '-inf'"));
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("big.csv", header + "1,1,1424696633000000001,1,2,1e39,a,nexus4,nexus4_1,walk\n")),
                    Contains("big.csv line 2") && Contains("column z holds '1e39'"));
  // Rows labelled null are checked as well: a NaN there is still a malformed file.
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("nan_null.csv", header + "1,1,5,NaN,2,3,a,nexus4,nexus4_1,null\n")),
                    Contains("column x holds 'NaN'"));
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("neg.csv", header + good + "1,1,-1424696633000000000,1,2,3,a,nexus4,nexus4_1,walk\n")),
                    Contains("neg.csv line 3") && Contains("Creation_Time holds -1424696633000000000") && Contains("negative"));
  // A "line" of 10 MB without a line break stops at the line limit instead of growing forever.
  CHECK_THROWS_WITH(hhar::read_sensor_csv(write("endless.csv", header + std::string(10 * 1000 * 1000, '7'))),
                    Contains("endless.csv' line 2 is longer than 65536 bytes"));
  // Options whose window buffer size would overflow.
  hhar::preprocess_options o;
  o.points = index_t{1} << 40;
  o.window = index_t{1} << 30;
  CHECK_THROWS_WITH(o.validate(), Contains("window values") && Contains("overflows"));
  // The same file gzip-compressed reads the same.
  const std::string text = header + good;
  write_bytes(dir / "ok.csv.gz", gzip(std::vector<std::uint8_t>(text.begin(), text.end())));
  CHECK(hhar::read_sensor_csv(dir / "ok.csv.gz").at(0).samples.at(0).time == 1424696633000000000);
}

TEST_CASE("write_idx_u8 is atomic and leaves nothing behind on failure", "[data][idx][errors]") {
  const auto dir = slimnet::testing::temp_dir("idx_write");
  const std::vector<std::uint8_t> bytes{1, 2, 3, 4, 5, 6};
  data::write_idx_u8(dir / "a", {2, 3}, bytes);
  CHECK(data::read_idx(dir / "a").bytes == bytes);
  CHECK(files_in(dir) == std::vector<fs::path>{"a"});
  // Rewriting replaces the file (a new inode: readers of the old one keep a whole file).
  data::write_idx_u8(dir / "a", {3, 2}, bytes);
  CHECK(data::read_idx(dir / "a").dims == std::vector<index_t>{3, 2});
  // The old fixed "<path>.part" name is not used: a symlink planted there is left alone.
  fs::create_symlink(dir / "victim", dir / "a.part");
  std::ofstream(dir / "victim") << "keep";
  data::write_idx_u8(dir / "a", {6}, bytes);
  std::ifstream victim(dir / "victim");
  CHECK(std::string(std::istreambuf_iterator<char>(victim), {}) == "keep");
  // A target that is a directory: the rename fails, with the OS reason, and the temporary is gone.
  fs::create_directories(dir / "target_dir" / "inner");
  CHECK_THROWS_WITH(data::write_idx_u8(dir / "target_dir", {6}, bytes),
                    Contains("slimnet::data::write_idx_u8") && Contains("cannot rename") && Contains("directory"));
  CHECK(files_in(dir) == std::vector<fs::path>{"a", "a.part", "target_dir", "victim"});
  CHECK_THROWS_WITH(data::write_idx_u8(dir / "no_such_dir" / "x", {6}, bytes), Contains("cannot create") && Contains("No such file"));
  // Dimensions IDX cannot hold.
  CHECK_THROWS_AS(data::write_idx_u8(dir / "b", {index_t{1} << 32, 0}, {}), shape_error);
  CHECK_THROWS_AS(data::write_idx_u8(dir / "b", {}, {}), shape_error);
  CHECK_THROWS_AS(data::write_idx_u8(dir / "b", {7}, bytes), shape_error);
  CHECK(!fs::exists(dir / "b"));
}
