// Replays files through the fuzz targets without libFuzzer: `fuzz_replay READER FILE_OR_DIR...` runs
// READER's LLVMFuzzerTestOneInput on every file (a directory: each regular file in it, sorted), so
// ctest checks the committed corpus (seeds and every crash ever found) with the normal compiler.
// Every target is compiled here, in this one translation unit, its entry point renamed by a macro:
// one program instead of one per reader, and the headers the readers share are parsed once.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#define LLVMFuzzerTestOneInput fuzz_cifar
#include "cifar_fuzz.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_hhar
#include "hhar_fuzz.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_idx
#include "idx_fuzz.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_mnist_json
#include "mnist_json_fuzz.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_model_file
#include "model_file_fuzz.cpp"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_safetensors
#include "safetensors_fuzz.cpp"
#undef LLVMFuzzerTestOneInput

namespace {

using fuzz_target = int (*)(const std::uint8_t* data, std::size_t size);

struct named_target {
  const char* reader;  // as in fuzz/CMakeLists.txt and fuzz/corpus/<reader>
  fuzz_target run;
};

constexpr named_target targets[] = {
    {"cifar", fuzz_cifar},           {"hhar", fuzz_hhar},
    {"idx", fuzz_idx},               {"mnist_json", fuzz_mnist_json},
    {"model_file", fuzz_model_file}, {"safetensors", fuzz_safetensors},
};

}  // namespace

int main(int argc, char** argv) {
  const auto target = argc < 2 ? std::end(targets)
                               : std::find_if(std::begin(targets), std::end(targets),
                                              [&](const named_target& t) { return std::strcmp(t.reader, argv[1]) == 0; });
  if (target == std::end(targets)) {
    std::fprintf(stderr, "usage: fuzz_replay READER FILE_OR_DIR...   READER: one of");
    for (const auto& t : targets) std::fprintf(stderr, " %s", t.reader);
    std::fprintf(stderr, "\n");
    return 2;
  }
  std::vector<std::filesystem::path> files;
  for (int i = 2; i < argc; ++i) {
    const std::filesystem::path p = argv[i];
    if (std::filesystem::is_directory(p)) {
      for (const auto& e : std::filesystem::directory_iterator(p))
        if (e.is_regular_file()) files.push_back(e.path());
    } else {
      files.push_back(p);
    }
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    const std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::printf("replay %s %s (%zu bytes)\n", target->reader, f.string().c_str(), bytes.size());
    std::fflush(stdout);
    target->run(reinterpret_cast<const std::uint8_t*>(bytes.data()), bytes.size());
  }
  std::printf("replayed %zu inputs, 0 crashes\n", files.size());
  return files.empty() ? 1 : 0;  // an empty corpus means the test checked nothing
}
