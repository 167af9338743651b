// File primitives of slimnet's model readers and writers, on top of core/file.hpp (the one
// mechanism every reader shares): a read-only handle that accepts only regular files (no
// directory, device or FIFO can make a reader block or read forever) with positioned reads, and
// atomic replacement of a file from a list of byte spans (exclusive temporary, fsync, rename,
// fsync of the directory), so a crash or a planted symlink never leaves a half-written or foreign
// file. POSIX only: every error carries the OS reason (errno) of the call that failed.
#pragma once

#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <string>
#include <vector>

#include "slimnet/core/error.hpp"
#include "slimnet/core/file.hpp"

namespace slimnet::io {

namespace detail {
using slimnet::detail::open_exclusive;
using slimnet::detail::os_reason;
}  // namespace detail

/// A regular file opened read-only (slimnet::detail::open_regular_file: anything but a regular
/// file is an io_error before a byte is read, so a reader never allocates from a size it cannot
/// trust), read at explicit offsets.
class regular_file {
 public:
  regular_file(const std::filesystem::path& path, const char* function)
      : path_(path), function_(function), file_(slimnet::detail::open_regular_file(path, function)) {}

  /// Size in bytes when the file was opened.
  std::uint64_t size() const { return file_.size; }
  const std::filesystem::path& path() const { return path_; }

  /// Reads exactly `n` bytes at `offset` into `out`; a file that shrank since it was opened, or a
  /// read error, is an io_error (never a partially filled buffer).
  void read_at(std::uint64_t offset, void* out, std::size_t n) const {
    auto* dst = static_cast<char*>(out);
    while (n > 0) {
      const std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
      if (offset > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max())) {
        slimnet::detail::raise<io_error>(function_, "'{}': offset {} is out of range", path_.string(), offset);
      }
      const ssize_t got = ::pread(file_.fd.get(), dst, chunk, static_cast<off_t>(offset));
      if (got < 0) {
        const int err = errno;
        if (err == EINTR) continue;
        slimnet::detail::raise<io_error>(function_, "cannot read '{}' at byte {}: {}", path_.string(), offset,
                                         detail::os_reason(err));
      }
      if (got == 0) {
        slimnet::detail::raise<io_error>(function_, "'{}' ends at byte {}, {} more bytes expected (truncated while reading?)",
                                         path_.string(), offset, n);
      }
      dst += got;
      offset += static_cast<std::uint64_t>(got);
      n -= static_cast<std::size_t>(got);
    }
  }

 private:
  std::filesystem::path path_;
  const char* function_;
  slimnet::detail::regular_file file_;
};

/// One contiguous piece of the bytes of a file being written.
struct byte_span {
  const void* data = nullptr;
  std::size_t size = 0;
};

/// Replaces `target` with the concatenation of `pieces`, atomically
/// (slimnet::detail::write_file_atomically: exclusive O_EXCL|O_NOFOLLOW temporary next to the
/// target, fsync, rename, fsync of the directory; removed after any failure, io_error with the OS
/// reason). A target that is a directory is refused before anything is created.
inline void write_file_atomically(const std::filesystem::path& target, const std::vector<byte_span>& pieces,
                                  const char* function) {
  std::error_code ec;
  if (std::filesystem::is_directory(target, ec)) {
    slimnet::detail::raise<io_error>(function, "cannot write '{}': it is a directory", target.string());
  }
  slimnet::detail::write_file_atomically(target, function, [&](slimnet::detail::file_sink& sink) {
    for (const byte_span& piece : pieces) sink.write(piece.data, piece.size);
  });
}

}  // namespace slimnet::io
