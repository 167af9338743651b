// Crafted safetensors files and hostile paths: every one is an io_error that names the problem,
// never a crash, a wrapped size, a bad_alloc or an endless read; failed writes leave nothing behind.
#include <catch2/catch.hpp>

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <new>

#include "slimnet/io/safetensors.hpp"
#include "slimnet/nn.hpp"
#include "support/temp_dir.hpp"

using namespace slimnet;
namespace fs = std::filesystem;
using Catch::Matchers::Contains;

namespace {

void write_bytes(const fs::path& p, const std::string& bytes) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

std::string length_prefix(std::uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xff);
  return s;
}

void write_file(const fs::path& p, const std::string& json, const std::string& buffer) {
  write_bytes(p, length_prefix(json.size()) + json + buffer);
}

/// Reads `p` with the raw and the typed reader: both must throw io_error with every needle.
void expect_io_error(const fs::path& p, const std::vector<std::string>& needles) {
  for (int typed = 0; typed < 2; ++typed) {
    try {
      if (typed) {
        (void)io::read_safetensors<float>(p);
      } else {
        (void)io::read_safetensors_raw(p);
      }
      FAIL("no exception for " << p);
    } catch (const io_error& e) {
      const std::string what = e.what();
      CHECK_THAT(what, Contains(typed ? "slimnet::io::read_safetensors:" : "slimnet::io::read_safetensors_raw:"));
      for (const auto& n : needles) CHECK_THAT(what, Contains(n));
    }
  }
}

std::vector<std::string> entries(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace

TEST_CASE("headers that lie about their length are refused before any allocation", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_header");
  const auto p = dir / "bad.safetensors";
  write_bytes(p, "abc");
  expect_io_error(p, {"3 bytes, too short"});
  write_bytes(p, "");
  expect_io_error(p, {"0 bytes, too short"});
  // Truncated header: 100 bytes declared, 20 present.
  write_bytes(p, length_prefix(100) + std::string(R"({"a":{"dtype":"F32",)"));
  expect_io_error(p, {"declares a 100-byte header but has 20 bytes"});
  // Header length past the end of a small file.
  write_bytes(p, length_prefix(0xffff) + "{}");
  expect_io_error(p, {"65535-byte header"});
  // A huge length is refused by the cap, not by trying to allocate it.
  write_bytes(p, length_prefix(0xffffffffffffffffull) + "{}");
  expect_io_error(p, {"18446744073709551615-byte header, more than the 104857600-byte limit"});
  write_bytes(p, length_prefix((100u << 20) + 1) + "{}");
  expect_io_error(p, {"more than the 104857600-byte limit"});
  write_file(p, "{not json", "");
  expect_io_error(p, {"invalid JSON"});
  write_file(p, "[1, 2]", "");
  expect_io_error(p, {"not a JSON object"});
  write_file(p, R"({"__metadata__":{"k":1}})", "");
  expect_io_error(p, {"metadata 'k' is not a string"});
  write_file(p, "{\"a\xff\":1}", "");
  expect_io_error(p, {"invalid JSON"});
}

TEST_CASE("shapes: negative, non-integer and overflowing dimensions", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_shape");
  const auto p = dir / "bad.safetensors";
  write_file(p, R"({"a":{"dtype":"F32","shape":[2,-3],"data_offsets":[0,0]}})", "");
  expect_io_error(p, {"tensor 'a'", "[2,-3]", "negative dimension -3"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "non-negative integers"});
  write_file(p, R"({"a":{"dtype":"F32","shape":["2"],"data_offsets":[0,8]}})", "abcdefgh");
  expect_io_error(p, {"non-negative integers"});
  // 2^32 * 2^32 = 2^64 wraps to 0 elements: with offsets [0, 0] a wrapping check would pass.
  write_file(p, R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,1],"data_offsets":[0,0]}})", "");
  expect_io_error(p, {"tensor 'a'", "[4294967296,4294967296,1]", "overflows"});
  // (2^32 + 1) * (2^32 - 1) = 2^64 - 1: the elements fit 64 bits but not index_t.
  write_file(p, R"({"a":{"dtype":"U8","shape":[4294967297,4294967295],"data_offsets":[0,0]}})", "");
  expect_io_error(p, {"tensor 'a'", "[4294967297,4294967295]", "overflows"});
  // 2^62 elements fit, times 4 bytes = 2^64 wraps to 0 bytes.
  write_file(p, R"({"b":{"dtype":"F32","shape":[4611686018427387904],"data_offsets":[0,0]}})", "");
  expect_io_error(p, {"tensor 'b'", "[4611686018427387904]", "overflows"});
  // 2^61 * 8 wraps to 0 too, after a wrap to a small non-zero size: 2^61 + 1 elements of 8 bytes
  // is 2^64 + 8, which wraps to 8, exactly what the offsets say.
  write_file(p, R"({"c":{"dtype":"F64","shape":[2305843009213693953],"data_offsets":[0,8]}})", "abcdefgh");
  expect_io_error(p, {"tensor 'c'", "[2305843009213693953]", "overflows"});
  write_file(p, R"({"d":{"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'd'", "overflows"});
  write_file(p, R"({"e":{"dtype":"F32","shape":[1e30],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'e'", "non-negative integers"});
  // JSON nested a million levels deep: parsed and reported without recursion (no stack overflow).
  const std::string deep = std::string(1000000, '[') + std::string(1000000, ']');
  write_file(p, R"({"f":{"dtype":"F32","shape":[)" + deep + R"(],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'f' has an invalid shape (a nested array)"});
  write_file(p, R"({"g":{"dtype":"F32","shape":[1],"data_offsets":[)" + deep + R"(,4]}})", "abcd");
  expect_io_error(p, {"tensor 'g' has invalid data_offsets (a nested array)"});
  // A long shape is quoted, cut to 200 characters.
  std::string many = "[1";
  for (int i = 0; i < 10000; ++i) many += ",1";
  write_file(p, R"({"h":{"dtype":"F32","shape":)" + many + R"(,-1],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'h' has an invalid shape [1,1,1", "...: negative dimension -1"});
}

TEST_CASE("offsets: out of range, overlapping, holes, trailing bytes, disagreeing with the shape", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_offsets");
  const auto p = dir / "bad.safetensors";
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,8]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "[0, 8) outside the 4-byte buffer"});
  // A 4 TB tensor declared in a 12-byte buffer: refused from the header, nothing allocated.
  write_file(p, R"({"big":{"dtype":"F32","shape":[1000000000000],"data_offsets":[0,4000000000000]}})", "abcdefghijkl");
  expect_io_error(p, {"tensor 'big'", "[0, 4000000000000) outside the 12-byte buffer"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "outside"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[18446744073709551612,18446744073709551616]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "invalid data_offsets"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "invalid data_offsets"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"tensor 'a'", "needs 8 bytes, offsets give 4"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}})",
             "abcdef");
  expect_io_error(p, {"tensor 'b'", "overlaps another tensor at byte 2"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})",
             "abcd");
  expect_io_error(p, {"overlaps"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[6,10]}})",
             "abcdefghij");
  expect_io_error(p, {"tensor 'b'", "leaves a hole in the buffer at byte 6"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", "abcdefgh");
  expect_io_error(p, {"tensor 'a'", "hole"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcdefgh");
  expect_io_error(p, {"4 trailing bytes"});
  write_file(p, "{}", "x");
  expect_io_error(p, {"1 trailing bytes"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1]}})", "abcd");
  expect_io_error(p, {"entry 'a' lacks"});
  write_file(p, R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", "abcd");
  expect_io_error(p, {"entry 'a' lacks"});
  write_file(p, R"({"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"empty name"});
}

TEST_CASE("dtypes: unknown names and invalid booleans", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_dtype");
  const auto p = dir / "bad.safetensors";
  write_file(p, R"({"w":{"dtype":"F8_E4M3","shape":[2],"data_offsets":[0,2]}})", "ab");
  expect_io_error(p, {"tensor 'w'", "dtype F8_E4M3", "supported: F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL"});
  write_file(p, R"({"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"dtype f32"});
  write_file(p, R"({"w":{"dtype":7,"shape":[1],"data_offsets":[0,4]}})", "abcd");
  expect_io_error(p, {"entry 'w' lacks"});
  write_file(p, R"({"m":{"dtype":"BOOL","shape":[3],"data_offsets":[0,3]}})", std::string("\x01\x00\x02", 3));
  expect_io_error(p, {"BOOL tensor 'm'", "byte 2 at index 2"});
}

TEST_CASE("non-regular files are refused without reading them", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_special");
  expect_io_error(dir, {"is a directory, not a regular file"});
  expect_io_error("/dev/zero", {"'/dev/zero' is a character device, not a regular file"});
  expect_io_error(dir / "missing.safetensors", {"cannot open", "No such file or directory"});
  const auto fifo = dir / "fifo";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  expect_io_error(fifo, {"is a FIFO, not a regular file"});  // must not block waiting for a writer
  CHECK_THROWS_AS(io::read_safetensors_metadata("/dev/zero"), io_error);
  nn::linear<float> model(2, 2);
  CHECK_THROWS_AS(io::load_parameters(model, dir), io_error);
}

TEST_CASE("a failed save leaves neither a temporary file nor a changed target", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_save_fail");
  io::raw_file f;
  f.tensors["x"] = {io::dtype::u8, {3}, {1, 2, 3}};
  // The target is a directory.
  fs::create_directory(dir / "target");
  CHECK_THROWS_WITH(io::write_safetensors_raw(dir / "target", f),
                    Contains("slimnet::io::write_safetensors_raw") && Contains("is a directory"));
  CHECK(entries(dir) == std::vector<std::string>{"target"});
  CHECK(fs::is_empty(dir / "target"));
  nn::linear<float> model(2, 2);
  CHECK_THROWS_AS(io::save_parameters(model, dir / "target"), io_error);
  CHECK(entries(dir) == std::vector<std::string>{"target"});
  // The directory does not exist: the OS reason is in the message.
  CHECK_THROWS_WITH(io::write_safetensors_raw(dir / "nowhere" / "m.safetensors", f), Contains("No such file or directory"));
  // A read-only directory (skipped as root, who may write anyway).
  if (::geteuid() != 0) {
    fs::create_directory(dir / "ro");
    fs::permissions(dir / "ro", fs::perms::owner_read | fs::perms::owner_exec);
    CHECK_THROWS_WITH(io::write_safetensors_raw(dir / "ro" / "m.safetensors", f), Contains("Permission denied"));
    fs::permissions(dir / "ro", fs::perms::owner_all);
    CHECK(fs::is_empty(dir / "ro"));
  }
  // Invalid content (bytes disagreeing with the shape) is refused before any file is created.
  io::raw_file bad;
  bad.tensors["x"] = {io::dtype::f32, {2}, {1, 2, 3}};
  CHECK_THROWS_WITH(io::write_safetensors_raw(dir / "m.safetensors", bad), Contains("needs 8 bytes, has 3"));
  CHECK_FALSE(fs::exists(dir / "m.safetensors"));
  // A good write leaves exactly the target.
  io::write_safetensors_raw(dir / "m.safetensors", f);
  const auto names = entries(dir);
  CHECK(names == (::geteuid() != 0 ? std::vector<std::string>{"m.safetensors", "ro", "target"}
                                   : std::vector<std::string>{"m.safetensors", "target"}));
}

TEST_CASE("writes never follow a symlink planted at a temporary name", "[io][errors]") {
  const auto dir = slimnet::testing::temp_dir("stv_symlink");
  const auto victim = dir / "victim.txt";
  write_bytes(victim, "precious");
  // The old writer's fixed name, and any name the exclusive open could be handed.
  fs::create_symlink(victim, dir / "m.safetensors.tmp");
  errno = 0;
  CHECK(io::detail::open_exclusive(dir / "m.safetensors.tmp") == -1);
  CHECK(errno == EEXIST);
  fs::create_symlink(dir / "does-not-exist-yet", dir / "dangling");
  CHECK(io::detail::open_exclusive(dir / "dangling") == -1);  // would create the link's target
  CHECK_FALSE(fs::exists(dir / "does-not-exist-yet"));

  io::tensor_file<float> f;
  f.tensors["x"] = tensor<float>({2}, 1.5f);
  io::write_safetensors(dir / "m.safetensors", f);
  std::ifstream in(victim);
  std::string text;
  std::getline(in, text);
  CHECK(text == "precious");
  CHECK(fs::is_symlink(dir / "m.safetensors.tmp"));
  CHECK(io::read_safetensors<float>(dir / "m.safetensors").tensors.at("x")[1] == 1.5f);
  // Nothing else was created: no temporary is left after a successful write.
  const auto names = entries(dir);
  CHECK(names == std::vector<std::string>{"dangling", "m.safetensors", "m.safetensors.tmp", "victim.txt"});
  // Saving over a target that is a symlink replaces the link, not the file it points to.
  fs::create_symlink(victim, dir / "link.safetensors");
  io::write_safetensors(dir / "link.safetensors", f);
  CHECK_FALSE(fs::is_symlink(dir / "link.safetensors"));
  std::ifstream again(victim);
  std::getline(again, text);
  CHECK(text == "precious");
}

TEST_CASE("an overwritten file keeps its permissions and is replaced whole", "[io]") {
  const auto dir = slimnet::testing::temp_dir("stv_replace");
  const auto p = dir / "m.safetensors";
  io::raw_file f;
  f.tensors["x"] = {io::dtype::i16, {2}, {1, 0, 0xff, 0xff}};
  io::write_safetensors_raw(p, f);
  fs::permissions(p, fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  f.tensors["y"] = {io::dtype::u8, {1}, {7}};
  io::write_safetensors_raw(p, f);
  CHECK(fs::status(p).permissions() == (fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read));
  const auto g = io::read_safetensors_raw(p);
  CHECK(g.tensors.size() == 2);
  CHECK(g.tensors.at("y").bytes == std::vector<std::uint8_t>{7});
  CHECK(entries(dir) == std::vector<std::string>{"m.safetensors"});
}
