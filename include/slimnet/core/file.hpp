// Files as a reader of untrusted input and a writer of results need them (POSIX): open only
// regular files (a directory, /dev/zero or a FIFO given as a data file is an io_error, not an
// endless read), read with the OS reason in every error, and write atomically (a unique temporary
// file created exclusively, fsync, rename, removed after any failure).
#pragma once

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <utility>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#include "slimnet/core/error.hpp"

namespace slimnet::detail {

/// The OS's description of errno value `err` (strerror), e.g. "Is a directory".
inline std::string os_reason(int err) { return std::strerror(err); }

/// An owned POSIX file descriptor, closed on destruction.
class unique_fd {
 public:
  unique_fd() = default;
  explicit unique_fd(int fd) : fd_(fd) {}
  unique_fd(unique_fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  unique_fd& operator=(unique_fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  unique_fd(const unique_fd&) = delete;
  unique_fd& operator=(const unique_fd&) = delete;
  ~unique_fd() { reset(); }

  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }
  /// Closes and reports close's error (a delayed write error shows up here).
  int close() {
    const int r = fd_ >= 0 ? ::close(fd_) : 0;
    fd_ = -1;
    return r;
  }

 private:
  int fd_ = -1;
};

/// A regular file opened for reading and its size in bytes at open time.
struct regular_file {
  unique_fd fd;
  std::uint64_t size = 0;
};

/// Opens `path` read-only and throws io_error "function: ..." (with the OS reason) unless it can
/// be opened and is a regular file. The type is checked with fstat on the opened descriptor, so a
/// file swapped for a device between a check and the open cannot slip through; O_NONBLOCK keeps
/// the open of a FIFO from waiting for a writer.
inline regular_file open_regular_file(const std::filesystem::path& path, const char* function) {
  int fd = -1;
  do {
    fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) {
    raise<io_error>(function, "cannot open '{}': {}", path.string(), os_reason(errno));
  }
  regular_file f{unique_fd(fd), 0};
  struct stat st {};
  if (::fstat(fd, &st) != 0) raise<io_error>(function, "cannot stat '{}': {}", path.string(), os_reason(errno));
  if (!S_ISREG(st.st_mode)) {
    const char* kind = S_ISDIR(st.st_mode)    ? "a directory"
                       : S_ISCHR(st.st_mode)  ? "a character device"
                       : S_ISBLK(st.st_mode)  ? "a block device"
                       : S_ISFIFO(st.st_mode) ? "a FIFO"
                       : S_ISSOCK(st.st_mode) ? "a socket"
                                              : "not a regular file";
    raise<io_error>(function, "'{}' is {}, not a regular file", path.string(), kind);
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  f.size = static_cast<std::uint64_t>(st.st_size);
  return f;
}

/// Reads up to n bytes (fewer only at the end of the file), retrying interrupted reads; throws
/// io_error with the OS reason on a read error.
inline std::size_t read_fully(int fd, void* buffer, std::size_t n, const std::filesystem::path& path, const char* function) {
  auto* p = static_cast<unsigned char*>(buffer);
  std::size_t done = 0;
  while (done < n) {
    const ssize_t r = ::read(fd, p + done, n - done);
    if (r < 0) {
      if (errno == EINTR) continue;
      raise<io_error>(function, "reading '{}' failed: {}", path.string(), os_reason(errno));
    }
    if (r == 0) break;
    done += static_cast<std::size_t>(r);
  }
  return done;
}

/// The sink write_file_atomically hands to its writer.
class file_sink {
 public:
  file_sink(int fd, const std::filesystem::path& shown, const char* function) : fd_(fd), shown_(shown), function_(function) {}
  /// Writes all n bytes (retrying short and interrupted writes) or throws io_error with the OS reason.
  void write(const void* data, std::size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    while (n > 0) {
      const ssize_t w = ::write(fd_, p, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        raise<io_error>(function_, "writing '{}' failed: {}", shown_.string(), os_reason(errno));
      }
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }

 private:
  int fd_;
  const std::filesystem::path& shown_;
  const char* function_;
};

/// Creates `path` for writing only if nothing (not even a dangling symlink) is there:
/// O_CREAT | O_EXCL | O_NOFOLLOW. Returns the descriptor, or -1 with errno set (EEXIST if taken).
inline int open_exclusive(const std::filesystem::path& path) {
  return ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0666);
}

/// Writes `path` atomically: `write(file_sink&)` fills a new temporary file "<path>.tmp-<random>"
/// in the same directory, created with O_CREAT | O_EXCL | O_NOFOLLOW (so a file or symlink planted
/// under a predictable name is never followed or overwritten; a name collision draws another
/// name), which is then fsynced and renamed over `path`, and the directory fsynced so the rename
/// survives a crash. Readers see either the old file or the whole new one. On any failure
/// (including an exception from `write`) the temporary file is removed and io_error is thrown with
/// the OS reason; `path` is untouched.
template <class Writer>
void write_file_atomically(const std::filesystem::path& path, const char* function, Writer&& write) {
  std::random_device device;
  std::mt19937_64 names((static_cast<std::uint64_t>(device()) << 32) ^ device() ^ static_cast<std::uint64_t>(::getpid()));
  std::filesystem::path tmp;
  unique_fd fd;
  for (int attempt = 0; attempt < 100 && !fd; ++attempt) {
    tmp = path;
    tmp += fmt::format(".tmp-{:016x}", names());
    const int raw = open_exclusive(tmp);
    if (raw >= 0) {
      fd = unique_fd(raw);
    } else if (errno != EEXIST && errno != EINTR) {
      raise<io_error>(function, "cannot create '{}': {}", tmp.string(), os_reason(errno));
    }
  }
  if (!fd) raise<io_error>(function, "cannot create a unique temporary file next to '{}'", path.string());
  try {
    // A file being replaced keeps its permission bits (the temporary was created 0666 & ~umask).
    struct stat existing {};
    if (::stat(path.c_str(), &existing) == 0 && S_ISREG(existing.st_mode) && ::fchmod(fd.get(), existing.st_mode & 07777) != 0) {
      raise<io_error>(function, "cannot set the permissions of '{}': {}", tmp.string(), os_reason(errno));
    }
    file_sink sink(fd.get(), tmp, function);
    write(sink);
    if (::fsync(fd.get()) != 0) raise<io_error>(function, "fsync of '{}' failed: {}", tmp.string(), os_reason(errno));
    if (fd.close() != 0) raise<io_error>(function, "closing '{}' failed: {}", tmp.string(), os_reason(errno));
    if (::rename(tmp.c_str(), path.c_str()) != 0) {
      raise<io_error>(function, "cannot rename '{}' to '{}': {}", tmp.string(), path.string(), os_reason(errno));
    }
  } catch (...) {
    fd.reset();
    ::unlink(tmp.c_str());
    throw;
  }
  // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
  const std::filesystem::path dir = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
}

}  // namespace slimnet::detail
