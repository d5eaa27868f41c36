// 2-D max and average pooling of NCHW float32 tensors, forward and backward, as MindSpore aot
// custom ops. Why: MindSpore 2.10's CPU MaxPoolGrad re-runs oneDNN's pooling forward with a
// workspace in a reference kernel, ~46 ms of a ~400 ms ShuffleNetV1 training step (224 px,
// batch 16, 2 cores; these take ~7 ms), and its average pools take ~14 ms. Geometry input,
// int32[8]: kh, kw, sh, sw, pad_top, pad_left, count_include_pad, threads. Padding (symmetric
// but for 'same' windows) never wins a max window; an average divides by the window's elements
// inside the input, or, with count_include_pad, inside the padded input (PyTorch's divisor).
#include "parallel.h"

namespace {

using shufflenet::parallel_for;

struct Pool {
  int64_t kh, kw, sh, sw, pad_top, pad_left, include_pad, threads;
  int64_t planes, h, w, oh, ow;
};

Pool read_pool(void *geometry, const int64_t *in_shape, const int64_t *out_shape) {
  const std::vector<int64_t> g = shufflenet::read_ints(geometry, 8);
  return {g[0], g[1], g[2], g[3], g[4], g[5], g[6], g[7],
          in_shape[0] * in_shape[1], in_shape[2], in_shape[3], out_shape[2], out_shape[3]};
}

// Larger, or NaN: max with NaN propagation, written so that it vectorises.
inline float take_max(float best, float v) { return (v > best) | (v != v) ? v : best; }

// The plane column read by padded column i of a row: padding repeats the edge column, which
// changes neither a window's maximum nor which element holds it first.
std::vector<int32_t> clamped_columns(const Pool &p) {
  std::vector<int32_t> column((p.ow - 1) * p.sw + p.kw);
  for (int64_t i = 0; i < static_cast<int64_t>(column.size()); ++i)
    column[i] = static_cast<int32_t>(std::clamp<int64_t>(i - p.pad_left, 0, p.w - 1));
  return column;
}

// Rows [first, last) of the plane read by output row oy.
inline void window_rows(const Pool &p, int64_t oy, int64_t *first, int64_t *last) {
  const int64_t top = oy * p.sh - p.pad_top;
  *first = std::max<int64_t>(top, 0);
  *last = std::min<int64_t>(top + p.kh, p.h);
}

// Column maxima over the window's rows first (contiguous), then over each window's columns.
void forward_planes(const float *x, float *y, const Pool &p, int64_t begin, int64_t end) {
  const std::vector<int32_t> column = clamped_columns(p);
  std::vector<float> rows_max(p.w), padded(column.size());
  for (int64_t plane = begin; plane < end; ++plane) {
    const float *in = x + plane * p.h * p.w;
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      int64_t first, last;
      window_rows(p, oy, &first, &last);
      float *__restrict m = rows_max.data();
      std::memcpy(m, in + first * p.w, sizeof(float) * p.w);
      for (int64_t r = first + 1; r < last; ++r) {
        const float *__restrict row = in + r * p.w;
        for (int64_t i = 0; i < p.w; ++i) m[i] = take_max(m[i], row[i]);
      }
      for (size_t i = 0; i < column.size(); ++i) padded[i] = m[column[i]];
      float *__restrict out = y + (plane * p.oh + oy) * p.ow;
      const float *__restrict source = padded.data();
      for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] = source[ox * p.sw];
      for (int64_t kx = 1; kx < p.kw; ++kx)
        for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] = take_max(out[ox], source[ox * p.sw + kx]);
    }
  }
}

// Each output's gradient goes to the first element of its window, in row-major order, equal to
// the output (the element PyTorch and oneDNN pick among ties; NaN matches NaN). Window taps are
// visited last to first, so the first match is the one left standing.
void backward_planes(const float *x, const float *y, const float *dy, float *dx, const Pool &p,
                     int64_t begin, int64_t end) {
  const std::vector<int32_t> column = clamped_columns(p);
  std::vector<float> padded(column.size());
  std::vector<int32_t> chosen_tap(p.ow), tap_row(p.kh * p.kw), tap_column(p.kh * p.kw);
  for (int64_t tap = 0; tap < p.kh * p.kw; ++tap) {
    tap_row[tap] = static_cast<int32_t>(tap / p.kw);
    tap_column[tap] = static_cast<int32_t>(tap % p.kw);
  }
  std::memset(dx + begin * p.h * p.w, 0, sizeof(float) * (end - begin) * p.h * p.w);
  for (int64_t plane = begin; plane < end; ++plane) {
    const float *in = x + plane * p.h * p.w;
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      const float *__restrict out = y + (plane * p.oh + oy) * p.ow;
      const float *__restrict grad = dy + (plane * p.oh + oy) * p.ow;
      int32_t *__restrict chosen = chosen_tap.data();
      int64_t first, last;
      window_rows(p, oy, &first, &last);
      for (int64_t r = last - 1; r >= first; --r) {
        for (size_t i = 0; i < column.size(); ++i) padded[i] = in[r * p.w + column[i]];
        const float *__restrict source = padded.data();
        for (int64_t kx = p.kw - 1; kx >= 0; --kx) {
          const int32_t tap = static_cast<int32_t>((r - first) * p.kw + kx);
          for (int64_t ox = 0; ox < p.ow; ++ox) {
            const float v = source[ox * p.sw + kx], o = out[ox];
            chosen[ox] = (v == o) | ((v != v) & (o != o)) ? tap : chosen[ox];
          }
        }
      }
      float *window_dx = dx + (plane * p.h + first) * p.w;
      for (int64_t ox = 0; ox < p.ow; ++ox) {
        const int32_t tap = chosen[ox];
        window_dx[tap_row[tap] * p.w + column[ox * p.sw + tap_column[tap]]] += grad[ox];
      }
    }
  }
}

// Elements of each window along one axis that the average divides by: those inside the input,
// or with count_include_pad those inside the padded input (pad on both sides).
std::vector<float> window_counts(int64_t out, int64_t size, int64_t kernel, int64_t stride,
                                 int64_t pad, bool include_pad) {
  std::vector<float> counts(out);
  for (int64_t o = 0; o < out; ++o) {
    const int64_t start = o * stride - pad, stop = start + kernel;
    counts[o] = include_pad ? static_cast<float>(std::min(stop, size + pad) - std::max(start, -pad))
                            : static_cast<float>(std::min(stop, size) - std::max<int64_t>(start, 0));
  }
  return counts;
}

struct AvgWindows {
  std::vector<float> row_counts, col_counts;
  explicit AvgWindows(const Pool &p)
      : row_counts(window_counts(p.oh, p.h, p.kh, p.sh, p.pad_top, p.include_pad)),
        col_counts(window_counts(p.ow, p.w, p.kw, p.sw, p.pad_left, p.include_pad)) {}
};

// Column sums over the window's rows, then sums over each window's columns (zero padding).
void avg_forward_planes(const float *x, float *y, const Pool &p, int64_t begin, int64_t end) {
  const AvgWindows windows(p);
  const int64_t span = (p.ow - 1) * p.sw + p.kw;
  std::vector<float> padded(std::max(span, p.pad_left + p.w), 0.f);
  for (int64_t plane = begin; plane < end; ++plane) {
    const float *in = x + plane * p.h * p.w;
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      int64_t first, last;
      window_rows(p, oy, &first, &last);
      float *__restrict sums = padded.data() + p.pad_left;
      std::memcpy(sums, in + first * p.w, sizeof(float) * p.w);
      for (int64_t r = first + 1; r < last; ++r) {
        const float *__restrict row = in + r * p.w;
        for (int64_t i = 0; i < p.w; ++i) sums[i] += row[i];
      }
      float *__restrict out = y + (plane * p.oh + oy) * p.ow;
      const float *__restrict source = padded.data();
      const float rows = windows.row_counts[oy];
      for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] = source[ox * p.sw];
      for (int64_t kx = 1; kx < p.kw; ++kx)
        for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] += source[ox * p.sw + kx];
      for (int64_t ox = 0; ox < p.ow; ++ox) out[ox] /= rows * windows.col_counts[ox];
    }
  }
}

// Each output's gradient, divided by its window's count, spread over its window's elements.
void avg_backward_planes(const float *dy, float *dx, const Pool &p, int64_t begin, int64_t end) {
  const AvgWindows windows(p);
  const int64_t span = (p.ow - 1) * p.sw + p.kw;
  std::vector<float> spread(std::max(span, p.pad_left + p.w));
  std::memset(dx + begin * p.h * p.w, 0, sizeof(float) * (end - begin) * p.h * p.w);
  for (int64_t plane = begin; plane < end; ++plane) {
    for (int64_t oy = 0; oy < p.oh; ++oy) {
      const float *__restrict grad = dy + (plane * p.oh + oy) * p.ow;
      float *__restrict row = spread.data();
      std::fill(spread.begin(), spread.end(), 0.f);
      const float rows = windows.row_counts[oy];
      for (int64_t kx = 0; kx < p.kw; ++kx)
        for (int64_t ox = 0; ox < p.ow; ++ox)
          row[ox * p.sw + kx] += grad[ox] / (rows * windows.col_counts[ox]);
      int64_t first, last;
      window_rows(p, oy, &first, &last);
      for (int64_t r = first; r < last; ++r) {
        float *__restrict target = dx + (plane * p.h + r) * p.w;
        const float *__restrict source = row + p.pad_left;
        for (int64_t i = 0; i < p.w; ++i) target[i] += source[i];
      }
    }
  }
}


using ForwardPlanes = void (*)(const float *, float *, const Pool &, int64_t, int64_t);

// A forward entry point: checks the call, then runs `planes` over the input's planes.
int pool_forward(int nparam, void **params, int *ndims, int64_t **shapes, const char **dtypes,
                 ForwardPlanes planes) {
  if (nparam != 3 || ndims[0] != 4 || ndims[2] != 4 || !shufflenet::all_float32(2, 3, dtypes))
    return 1;
  const Pool p = read_pool(params[1], shapes[0], shapes[2]);
  const float *x = static_cast<const float *>(params[0]);
  float *y = static_cast<float *>(params[2]);
  parallel_for(p.planes, p.planes * p.h * p.w, p.threads,
               [&](int64_t begin, int64_t end) { planes(x, y, p, begin, end); });
  return 0;
}

}  // namespace

// Inputs: x (N, C, H, W), geometry. Output: y (N, C, OH, OW).
extern "C" int MaxPoolForward(int nparam, void **params, int *ndims, int64_t **shapes,
                              const char **dtypes, void *stream, void *extra) {
  return pool_forward(nparam, params, ndims, shapes, dtypes, forward_planes);
}

// Inputs: x, y = MaxPoolForward(x), dy (like y), geometry. Output: dx (like x).
extern "C" int MaxPoolBackward(int nparam, void **params, int *ndims, int64_t **shapes,
                               const char **dtypes, void *stream, void *extra) {
  if (nparam != 5 || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 4 ||
      !shufflenet::all_float32(0, 3, dtypes) || !shufflenet::all_float32(4, 5, dtypes))
    return 1;
  const Pool p = read_pool(params[3], shapes[0], shapes[1]);
  const float *x = static_cast<const float *>(params[0]);
  const float *y = static_cast<const float *>(params[1]);
  const float *dy = static_cast<const float *>(params[2]);
  float *dx = static_cast<float *>(params[4]);
  parallel_for(p.planes, p.planes * p.h * p.w, p.threads,
               [&](int64_t begin, int64_t end) { backward_planes(x, y, dy, dx, p, begin, end); });
  return 0;
}

// Inputs: x (N, C, H, W), geometry. Output: y (N, C, OH, OW).
extern "C" int AvgPoolForward(int nparam, void **params, int *ndims, int64_t **shapes,
                              const char **dtypes, void *stream, void *extra) {
  return pool_forward(nparam, params, ndims, shapes, dtypes, avg_forward_planes);
}

// Inputs: x (for its shape), dy (N, C, OH, OW), geometry. Output: dx (like x).
extern "C" int AvgPoolBackward(int nparam, void **params, int *ndims, int64_t **shapes,
                               const char **dtypes, void *stream, void *extra) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4 || !shufflenet::all_float32(1, 2, dtypes) ||
      !shufflenet::all_float32(3, 4, dtypes))
    return 1;
  const Pool p = read_pool(params[2], shapes[0], shapes[1]);
  const float *dy = static_cast<const float *>(params[1]);
  float *dx = static_cast<float *>(params[3]);
  parallel_for(p.planes, p.planes * p.h * p.w, p.threads,
               [&](int64_t begin, int64_t end) { avg_backward_planes(dy, dx, p, begin, end); });
  return 0;
}
