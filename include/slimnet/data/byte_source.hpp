// The bytes of a data file, plain or gzip-compressed (detected by the gzip magic 1f 8b), read in
// pieces so a reader can check what a header declares against what the file can hold before it
// allocates, and stop inflating as soon as a stream yields more than the format allows (a gzip
// bomb is refused after a few kilobytes, not after gigabytes). Only regular files are opened.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include <zlib.h>

#include "slimnet/core/error.hpp"
#include "slimnet/core/file.hpp"

namespace slimnet::data::detail {

/// Deflate's maximum expansion: a stored-length-258 match costs at least 2 bits, so one byte of
/// compressed data yields at most 1032 bytes (zlib's technical notes; "zlib FAQ: 1032:1").
inline constexpr std::uint64_t deflate_max_ratio = 1032;

class byte_source {
 public:
  byte_source(const std::filesystem::path& path, const char* function)
      : path_(path), function_(function), file_(slimnet::detail::open_regular_file(path, function)) {
    fill_input();
    gzip_ = in_.size() - in_pos_ >= 2 && in_[in_pos_] == 0x1f && in_[in_pos_ + 1] == 0x8b;
    if (gzip_) {
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) fail("cannot initialise zlib for '{}'", path_.string());
      z_ready_ = true;
    }
  }
  byte_source(const byte_source&) = delete;
  byte_source& operator=(const byte_source&) = delete;
  ~byte_source() {
    if (z_ready_) inflateEnd(&z_);
  }

  bool gzip() const { return gzip_; }
  /// Size of the file on disk.
  std::uint64_t file_size() const { return file_.size; }
  /// An upper bound of the bytes read() can ever return: the file size, or for gzip the deflate
  /// bound. A header that declares more than this is a lie and can be refused before allocating.
  std::uint64_t max_bytes() const {
    if (!gzip_) return file_.size;
    return file_.size > std::numeric_limits<std::uint64_t>::max() / deflate_max_ratio ? std::numeric_limits<std::uint64_t>::max()
                                                                                     : file_.size * deflate_max_ratio;
  }
  /// Bytes returned so far.
  std::uint64_t position() const { return produced_; }

  /// Reads up to n bytes into dst; returns fewer only at the end of the data. Throws io_error on
  /// a read error, a corrupt or truncated gzip stream, or data after the last gzip member.
  std::size_t read(std::uint8_t* dst, std::size_t n) {
    const std::size_t got = gzip_ ? inflate_into(dst, n) : read_plain(dst, n);
    produced_ += got;
    return got;
  }

  /// True when no byte is left (reads, and so consumes, at most one byte).
  bool at_end() {
    std::uint8_t b;
    return read(&b, 1) == 0;
  }

  /// Reads everything that is left, refusing more than `limit` bytes in total (counted from the
  /// start of the data) with io_error "'path' <what> is larger than <limit> bytes". The buffer grows
  /// as data arrives, so a stream that lies about its size never causes one large allocation.
  std::vector<std::uint8_t> read_rest(std::uint64_t limit, const char* what = "data") {
    std::vector<std::uint8_t> out;
    std::uint8_t buf[1 << 16];
    for (;;) {
      const std::uint64_t room = limit - std::min(limit, produced_);
      const std::size_t want = room >= sizeof(buf) ? sizeof(buf) : static_cast<std::size_t>(room) + 1;
      const std::size_t got = read(buf, want);
      if (produced_ > limit) fail("'{}' {} is larger than {} bytes", path_.string(), what, limit);
      out.insert(out.end(), buf, buf + got);
      if (got < want) return out;
    }
  }

  const std::filesystem::path& path() const { return path_; }

 private:
  template <class... Args>
  [[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) const {
    slimnet::detail::raise<io_error>(function_, format, std::forward<Args>(args)...);
  }

  // Refills in_ from the file when it is used up; sets eof_ at the end of the file.
  void fill_input() {
    if (in_pos_ < in_.size() || eof_) return;
    in_.resize(1 << 16);
    const std::size_t got = slimnet::detail::read_fully(file_.fd.get(), in_.data(), in_.size(), path_, function_);
    in_.resize(got);
    in_pos_ = 0;
    if (got == 0) eof_ = true;
  }

  std::size_t read_plain(std::uint8_t* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n) {
      fill_input();
      if (in_pos_ == in_.size()) break;
      const std::size_t k = std::min(n - done, in_.size() - in_pos_);
      std::copy_n(in_.data() + in_pos_, k, dst + done);
      in_pos_ += k;
      done += k;
    }
    return done;
  }

  // Inflates gzip members back to back (gzip -c a >> f; gzip -c b >> f is one valid file) into
  // dst. After a member ends, only another member may follow: anything else is trailing garbage
  // that gzread would skip silently.
  std::size_t inflate_into(std::uint8_t* dst, std::size_t n) {
    std::size_t done = 0;
    while (done < n && !finished_) {
      fill_input();
      if (member_done_) {
        if (in_pos_ == in_.size()) {  // end of file right after a member: the data is complete
          finished_ = true;
          break;
        }
        if (in_[in_pos_] != 0x1f) {
          fail("'{}' has data after the end of its gzip stream (at compressed byte {})", path_.string(), compressed_offset());
        }
        if (inflateReset(&z_) != Z_OK) fail("zlib cannot reset for '{}'", path_.string());
        member_done_ = false;
      }
      z_.next_in = in_.data() + in_pos_;
      z_.avail_in = static_cast<uInt>(in_.size() - in_pos_);
      z_.next_out = dst + done;
      z_.avail_out = static_cast<uInt>(std::min<std::size_t>(n - done, std::numeric_limits<uInt>::max()));
      const uInt before_out = z_.avail_out;
      const int r = inflate(&z_, Z_NO_FLUSH);
      const std::size_t used = (in_.size() - in_pos_) - z_.avail_in;
      in_pos_ += used;
      consumed_ += used;
      done += before_out - z_.avail_out;
      if (r == Z_STREAM_END) {
        member_done_ = true;
      } else if (r == Z_BUF_ERROR || (r == Z_OK && used == 0 && before_out == z_.avail_out)) {
        if (eof_ && in_pos_ == in_.size()) fail("'{}' is a truncated gzip stream", path_.string());
      } else if (r != Z_OK) {
        fail("'{}' is a corrupt gzip stream: {} (zlib error {})", path_.string(), z_.msg ? z_.msg : "no message", r);
      }
    }
    return done;
  }

  std::uint64_t compressed_offset() const { return consumed_; }

  std::filesystem::path path_;
  const char* function_;
  slimnet::detail::regular_file file_;
  std::vector<std::uint8_t> in_;
  std::size_t in_pos_ = 0;
  bool eof_ = false;
  bool gzip_ = false;
  z_stream z_{};
  bool z_ready_ = false;
  bool member_done_ = false;
  bool finished_ = false;
  std::uint64_t produced_ = 0;
  std::uint64_t consumed_ = 0;
};

}  // namespace slimnet::data::detail
