// File primitives every slimnet reader and writer shares: a read-only handle that accepts only
// regular files (no directory, device or FIFO can make a reader block or read forever), checked
// size arithmetic, and atomic replacement of a file (exclusive temporary, fsync, rename, fsync
// of the directory) so a crash or a planted symlink never leaves a half-written or foreign file.
// POSIX only: every error carries the OS reason (errno) of the call that failed.
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <limits>
#include <string>
#include <system_error>
#include <vector>

#include "slimnet/core/error.hpp"

namespace slimnet::io {

namespace detail {

/// The OS's text for an errno value ("No such file or directory"); thread-safe, unlike strerror.
inline std::string os_reason(int err) { return std::system_category().message(err); }

}  // namespace detail

/// A regular file opened read-only. Opened with O_NONBLOCK so that a FIFO cannot block the open,
/// then checked with fstat: anything but a regular file (directory, /dev/zero, FIFO, socket) is an
/// io_error before a byte is read, so a reader never allocates from a size it cannot trust.
class regular_file {
 public:
  regular_file(const std::filesystem::path& path, const char* function) : path_(path), function_(function) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd_ < 0) {
      const int err = errno;
      slimnet::detail::raise<io_error>(function_, "cannot open '{}': {}", path_.string(), detail::os_reason(err));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      slimnet::detail::raise<io_error>(function_, "cannot stat '{}': {}", path_.string(), detail::os_reason(err));
    }
    if (!S_ISREG(st.st_mode)) {
      ::close(fd_);
      slimnet::detail::raise<io_error>(function_, "'{}' is not a regular file (it is a {})", path_.string(), kind(st.st_mode));
    }
    size_ = static_cast<std::uint64_t>(st.st_size);
  }
  regular_file(const regular_file&) = delete;
  regular_file& operator=(const regular_file&) = delete;
  ~regular_file() { ::close(fd_); }

  /// Size in bytes when the file was opened.
  std::uint64_t size() const { return size_; }
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
      const ssize_t got = ::pread(fd_, dst, chunk, static_cast<off_t>(offset));
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
  static const char* kind(mode_t mode) {
    if (S_ISDIR(mode)) return "directory";
    if (S_ISCHR(mode)) return "character device";
    if (S_ISBLK(mode)) return "block device";
    if (S_ISFIFO(mode)) return "FIFO";
    if (S_ISSOCK(mode)) return "socket";
    return "special file";
  }

  std::filesystem::path path_;
  const char* function_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

/// One contiguous piece of the bytes of a file being written.
struct byte_span {
  const void* data = nullptr;
  std::size_t size = 0;
};

namespace detail {

/// Creates `path` for writing, exclusively: O_CREAT|O_EXCL fails on any existing entry and
/// O_NOFOLLOW refuses a symlink, so a link planted at the name is never followed. Returns the fd,
/// or -1 with errno set.
inline int open_exclusive(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
}

/// A temporary name next to `target` (same directory, so the rename is atomic): hidden, with the
/// pid and a per-process counter mixed with the clock; O_EXCL makes it unique, not the name.
inline std::filesystem::path temporary_name(const std::filesystem::path& target) {
  static std::atomic<std::uint64_t> counter{0};
  const auto now = static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  std::uint64_t h = now ^ (counter.fetch_add(1) * 0x9e3779b97f4a7c15ull) ^ (static_cast<std::uint64_t>(::getpid()) << 40);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 29;
  return target.parent_path() / fmt::format(".{}.tmp.{}.{:016x}", target.filename().string(), ::getpid(), h);
}

inline void write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const std::size_t chunk = n < (std::size_t{1} << 30) ? n : (std::size_t{1} << 30);
    const ssize_t put = ::write(fd, p, chunk);
    if (put < 0) {
      if (errno == EINTR) continue;
      throw std::system_error(errno, std::system_category());
    }
    p += put;
    n -= static_cast<std::size_t>(put);
  }
}

}  // namespace detail

/// Replaces `target` with the concatenation of `pieces`, atomically: the bytes go to an exclusive
/// temporary file in the target's directory, are fsynced, the temporary is renamed over the target
/// and the directory is fsynced, so after a crash the target holds either its old or its new
/// content. On any failure the temporary is removed and an io_error names the step and the OS
/// reason; the old target is untouched. A target that is a directory is refused before anything
/// is created. An existing target keeps its permission bits.
inline void write_file_atomically(const std::filesystem::path& target, const std::vector<byte_span>& pieces,
                                  const char* function) {
  if (target.empty() || !target.has_filename()) {
    slimnet::detail::raise<io_error>(function, "'{}' does not name a file", target.string());
  }
  struct stat st {};
  mode_t keep_mode = 0;
  bool has_mode = false;
  if (::stat(target.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) slimnet::detail::raise<io_error>(function, "cannot write '{}': it is a directory", target.string());
    if (S_ISREG(st.st_mode)) {
      keep_mode = st.st_mode & 07777;
      has_mode = true;
    }
  }
  std::filesystem::path dir = target.parent_path();
  if (dir.empty()) dir = ".";

  std::filesystem::path tmp;
  int fd = -1;
  for (int attempt = 0; attempt < 64 && fd < 0; ++attempt) {
    tmp = detail::temporary_name(target);
    fd = detail::open_exclusive(tmp);
    if (fd < 0 && errno != EEXIST) {
      const int err = errno;
      slimnet::detail::raise<io_error>(function, "cannot create a temporary file in '{}' for '{}': {}", dir.string(),
                                       target.string(), detail::os_reason(err));
    }
  }
  if (fd < 0) {
    slimnet::detail::raise<io_error>(function, "cannot create a temporary file in '{}' for '{}': every name tried exists",
                                     dir.string(), target.string());
  }
  // From here on, every failure closes and unlinks the temporary before throwing.
  auto fail = [&](const char* step, int err) {
    if (fd >= 0) ::close(fd);
    ::unlink(tmp.c_str());
    slimnet::detail::raise<io_error>(function, "cannot write '{}' ({} of temporary '{}' failed): {}", target.string(), step,
                                     tmp.string(), detail::os_reason(err));
  };
  try {
    for (const byte_span& piece : pieces) detail::write_all(fd, piece.data, piece.size);
  } catch (const std::system_error& e) {
    fail("write", e.code().value());
  }
  if (has_mode && ::fchmod(fd, keep_mode) != 0) fail("fchmod", errno);
  if (::fsync(fd) != 0) fail("fsync", errno);
  const int closed = ::close(fd);
  fd = -1;
  if (closed != 0) fail("close", errno);
  if (::rename(tmp.c_str(), target.c_str()) != 0) fail("rename", errno);
  // The rename is durable only once the directory entry is on disk. Some file systems cannot
  // fsync a directory (EINVAL): the data itself is already synced there, so that is not an error.
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    const int err = errno;
    slimnet::detail::raise<io_error>(function, "wrote '{}' but cannot open its directory to fsync it: {}", target.string(),
                                     detail::os_reason(err));
  }
  if (::fsync(dfd) != 0 && errno != EINVAL && errno != ENOTSUP) {
    const int err = errno;
    ::close(dfd);
    slimnet::detail::raise<io_error>(function, "wrote '{}' but fsync of its directory failed: {}", target.string(),
                                     detail::os_reason(err));
  }
  ::close(dfd);
}

}  // namespace slimnet::io
