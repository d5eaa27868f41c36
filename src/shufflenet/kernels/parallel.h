// Shared by this project's CPU kernels: the argument layout of MindSpore's aot custom operators
// and a plain fork-join loop. MindSpore's own thread pool is not reachable from an aot kernel;
// a kernel runs on one of its actor threads, so the calling thread takes the first chunk.
#ifndef SHUFFLENET_KERNELS_PARALLEL_H_
#define SHUFFLENET_KERNELS_PARALLEL_H_

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

namespace shufflenet {

// Below this many elements per thread, starting a thread costs more than it saves.
constexpr int64_t kElementsPerThread = 1 << 15;

// Runs body(begin, end) over [0, count) in up to `threads` contiguous chunks, each with at
// least kElementsPerThread of `elements` (the work of all `count` items).
template <typename Body>
void parallel_for(int64_t count, int64_t elements, int64_t threads, Body body) {
  threads = std::clamp<int64_t>(std::min(threads, elements / kElementsPerThread), 1, count);
  const int64_t chunk = (count + threads - 1) / threads;
  std::vector<std::thread> workers;
  for (int64_t start = chunk; start < count; start += chunk)
    workers.emplace_back(body, start, std::min(count, start + chunk));
  body(0, std::min(count, chunk));
  for (auto &worker : workers) worker.join();
}

inline bool all_float32(int first, int last, const char **dtypes) {
  for (int i = first; i < last; ++i)
    if (std::strcmp(dtypes[i], "float32") != 0) return false;
  return true;
}

// The int32 geometry input (kernel, stride, padding, threads) as int64 values.
inline std::vector<int64_t> read_ints(const void *param, int64_t n) {
  const int32_t *values = static_cast<const int32_t *>(param);
  return std::vector<int64_t>(values, values + n);
}

}  // namespace shufflenet

#endif  // SHUFFLENET_KERNELS_PARALLEL_H_
