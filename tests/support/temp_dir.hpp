// A fresh scratch folder per test, under the build tree (SLIMNET_TEST_TMP) or the system temp dir.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace slimnet::testing {

inline std::filesystem::path temp_dir(const std::string& name) {
  const char* root = std::getenv("SLIMNET_TEST_TMP");
  const std::filesystem::path dir = std::filesystem::path(root ? root : std::filesystem::temp_directory_path().string()) / name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

}  // namespace slimnet::testing
