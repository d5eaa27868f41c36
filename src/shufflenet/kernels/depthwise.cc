// Depthwise 2-D convolution (one k x k filter per channel, zero padding) of NCHW float32
// tensors, forward and backward, as MindSpore aot custom ops.
// Why: MindSpore 2.10 runs depthwise convolutions on CPU through oneDNN's im2col + GEMM in plain
// layout, ~86 ms of a ~400 ms ShuffleNetV1 training step (224 px, batch 16, 2 cores); these
// direct loops take ~33 ms for the same layers (timed alone). Geometry input, int32[4]: kernel, stride, padding, threads.
// Each plane is copied once into a zero-padded buffer; at stride 1 each filter tap is then one
// vectorised pass over the whole plane. Work is split by channel, so each filter's gradient is
// summed by one thread in a fixed order: results do not depend on the thread count.
#include "parallel.h"

namespace {

using shufflenet::parallel_for;

struct Conv {
  int64_t k, stride, pad, threads;
  int64_t n, c, h, w, oh, ow;
  // The zero-padded plane every window reads from: rows x cols.
  int64_t rows() const { return std::max(h + 2 * pad, (oh - 1) * stride + k); }
  int64_t cols() const { return std::max(w + 2 * pad, (ow - 1) * stride + k); }
  // Stride 1 computes on the padded plane's grid, whole planes at a time: output (oy, ox) sits
  // at oy * cols() + ox, and each filter tap is one long vectorised loop of this length.
  int64_t grid_length() const { return (oh - 1) * cols() + ow; }
};

Conv read_conv(void *geometry, const int64_t *in_shape, const int64_t *out_shape) {
  const std::vector<int64_t> g = shufflenet::read_ints(geometry, 4);
  return {g[0], g[1], g[2], g[3], in_shape[0], in_shape[1], in_shape[2], in_shape[3],
          out_shape[2], out_shape[3]};
}

// Copies a plane into the interior of `padded`, whose border is zero and stays zero.
inline void load_plane(const float *plane, const Conv &c, float *padded) {
  for (int64_t y = 0; y < c.h; ++y)
    std::memcpy(padded + (y + c.pad) * c.cols() + c.pad, plane + y * c.w, sizeof(float) * c.w);
}

// out[i] = sum over taps of filter[tap] * source[i + direction * offset(tap)], i < length, where
// offset(ky, kx) = ky * cols + kx. Blocks of kBlock outputs stay in registers across the taps.
constexpr int64_t kBlock = 32;
void correlate(const float *source, const float *filter, int64_t k, int64_t cols, int64_t length,
               int direction, float *out) {
  std::vector<int64_t> offsets(k * k);
  for (int64_t tap = 0; tap < k * k; ++tap) offsets[tap] = direction * ((tap / k) * cols + tap % k);
  int64_t i = 0;
  for (; i + kBlock <= length; i += kBlock) {
    float acc[kBlock] = {};
    for (int64_t tap = 0; tap < k * k; ++tap) {
      const float weight = filter[tap];
      const float *__restrict in = source + i + offsets[tap];
      for (int64_t j = 0; j < kBlock; ++j) acc[j] += weight * in[j];
    }
    std::memcpy(out + i, acc, sizeof(acc));
  }
  for (; i < length; ++i) {
    float acc = 0.f;
    for (int64_t tap = 0; tap < k * k; ++tap) acc += filter[tap] * source[i + offsets[tap]];
    out[i] = acc;
  }
}

void forward_plane(const float *padded, const float *filter, float *out, float *grid,
                   const Conv &c) {
  const int64_t cols = c.cols();
  if (c.stride == 1) {
    correlate(padded, filter, c.k, cols, c.grid_length(), +1, grid);
    for (int64_t oy = 0; oy < c.oh; ++oy)
      std::memcpy(out + oy * c.ow, grid + oy * cols, sizeof(float) * c.ow);
    return;
  }
  for (int64_t oy = 0; oy < c.oh; ++oy) {
    float *__restrict row_out = out + oy * c.ow;
    std::fill(row_out, row_out + c.ow, 0.f);
    for (int64_t ky = 0; ky < c.k; ++ky)
      for (int64_t kx = 0; kx < c.k; ++kx) {
        const float weight = filter[ky * c.k + kx];
        const float *__restrict source = padded + (oy * c.stride + ky) * cols + kx;
        for (int64_t ox = 0; ox < c.ow; ++ox) row_out[ox] += weight * source[ox * c.stride];
      }
  }
}

void forward_channels(const float *x, const float *weight, float *y, const Conv &c,
                      int64_t begin, int64_t end) {
  std::vector<float> padded(c.rows() * c.cols()), grid(c.rows() * c.cols());
  for (int64_t ch = begin; ch < end; ++ch)
    for (int64_t n = 0; n < c.n; ++n) {
      load_plane(x + (n * c.c + ch) * c.h * c.w, c, padded.data());
      forward_plane(padded.data(), weight + ch * c.k * c.k, y + (n * c.c + ch) * c.oh * c.ow,
                    grid.data(), c);
    }
}

// Adds this plane's filter gradient to `sums` and writes its input gradient into the zeroed
// padded plane `dpadded`: each tap's gradient flows back along the same windows.
void backward_plane(const float *padded, const float *filter, const float *dy, float *dpadded,
                    float *grid, double *sums, const Conv &c) {
  const int64_t cols = c.cols();
  if (c.stride == 1) {
    const int64_t length = c.grid_length();
    float *__restrict g = grid;  // dy on the padded grid, zero between rows
    std::fill(g, g + length, 0.f);
    for (int64_t oy = 0; oy < c.oh; ++oy) std::memcpy(g + oy * cols, dy + oy * c.ow, sizeof(float) * c.ow);
    for (int64_t tap = 0; tap < c.k * c.k; ++tap) {
      const int64_t offset = (tap / c.k) * cols + tap % c.k;
      const float *__restrict source = padded + offset;
      float *__restrict target = dpadded + offset;
      const float weight = filter[tap];
      float dot = 0.f;
#pragma omp simd reduction(+ : dot)
      for (int64_t i = 0; i < length; ++i) dot += g[i] * source[i];
      for (int64_t i = 0; i < length; ++i) target[i] += weight * g[i];
      sums[tap] += dot;
    }
    return;
  }
  for (int64_t oy = 0; oy < c.oh; ++oy) {
    const float *__restrict grad = dy + oy * c.ow;
    for (int64_t ky = 0; ky < c.k; ++ky)
      for (int64_t kx = 0; kx < c.k; ++kx) {
        const int64_t offset = (oy * c.stride + ky) * cols + kx;
        const float *__restrict source = padded + offset;
        float *__restrict target = dpadded + offset;
        const float weight = filter[ky * c.k + kx];
        float dot = 0.f;
#pragma omp simd reduction(+ : dot)
        for (int64_t ox = 0; ox < c.ow; ++ox) dot += grad[ox] * source[ox * c.stride];
        for (int64_t ox = 0; ox < c.ow; ++ox) target[ox * c.stride] += weight * grad[ox];
        sums[ky * c.k + kx] += dot;
      }
  }
}

void backward_channels(const float *x, const float *weight, const float *dy, float *dx,
                       float *dweight, const Conv &c, int64_t begin, int64_t end) {
  const int64_t cols = c.cols();
  std::vector<float> padded(c.rows() * cols), dpadded(c.rows() * cols), grid(c.rows() * cols);
  std::vector<double> sums(c.k * c.k);
  for (int64_t ch = begin; ch < end; ++ch) {
    std::fill(sums.begin(), sums.end(), 0.0);
    for (int64_t n = 0; n < c.n; ++n) {
      const int64_t plane = n * c.c + ch;
      load_plane(x + plane * c.h * c.w, c, padded.data());
      std::fill(dpadded.begin(), dpadded.end(), 0.f);
      backward_plane(padded.data(), weight + ch * c.k * c.k, dy + plane * c.oh * c.ow,
                     dpadded.data(), grid.data(), sums.data(), c);
      for (int64_t y = 0; y < c.h; ++y)
        std::memcpy(dx + (plane * c.h + y) * c.w, dpadded.data() + (y + c.pad) * cols + c.pad,
                    sizeof(float) * c.w);
    }
    for (int64_t t = 0; t < c.k * c.k; ++t) dweight[ch * c.k * c.k + t] = static_cast<float>(sums[t]);
  }
}

}  // namespace

// Inputs: x (N, C, H, W), weight (C, 1, k, k), geometry. Output: y (N, C, OH, OW).
extern "C" int DepthwiseForward(int nparam, void **params, int *ndims, int64_t **shapes,
                                const char **dtypes, void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4 || ndims[3] != 4 ||
      !shufflenet::all_float32(0, 2, dtypes) || !shufflenet::all_float32(3, 4, dtypes))
    return 1;
  const Conv c = read_conv(params[2], shapes[0], shapes[3]);
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  float *y = static_cast<float *>(params[3]);
  parallel_for(c.c, c.n * c.c * c.h * c.w, c.threads,
               [&](int64_t begin, int64_t end) { forward_channels(x, weight, y, c, begin, end); });
  return 0;
}

// Inputs: x, weight, dy (N, C, OH, OW), geometry. Outputs: dx (like x), dweight (like weight).
extern "C" int DepthwiseBackward(int nparam, void **params, int *ndims, int64_t **shapes,
                                 const char **dtypes, void *stream, void *extra) {
  if (nparam != 6 || ndims[0] != 4 || ndims[2] != 4 || !shufflenet::all_float32(0, 3, dtypes) ||
      !shufflenet::all_float32(4, 6, dtypes))
    return 1;
  const Conv c = read_conv(params[3], shapes[0], shapes[2]);
  const float *x = static_cast<const float *>(params[0]);
  const float *weight = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[4]);
  float *dweight = static_cast<float *>(params[5]);
  parallel_for(c.c, c.n * c.c * c.h * c.w, c.threads, [&](int64_t begin, int64_t end) {
    backward_channels(x, weight, dy, dx, dweight, c, begin, end);
  });
  return 0;
}
