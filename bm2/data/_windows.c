/* bm2's window kernel: the normalised brain windows of a batch in one pass over each window.
 *
 * A plain shared library (no Python API), loaded with ctypes by bm2/data/window_kernel.py, which documents it and
 * falls back to torch when it is not built. Each window is read once from the memory-mapped recording and written
 * once to its row of the batch: baseline mean, centre, scale and clamp happen while a row is in registers, where
 * torch needs one pass per operation (bm2.data.dataset.SegmentDataset._brains_into).
 *
 * The float32 operations and their order are those of the torch path, so both give the same numbers bit for bit:
 * the baseline sum is numpy's pairwise sum (8 accumulators for up to 128 values, halves above), divided by the
 * count in double precision and rounded to float32 (numpy's float32 / intp), plus the centre; then x - shift, times
 * the reciprocal scale, clamped. No -ffast-math: reassociation would change the sums.
 */
#include <stdint.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* one build for every x86-64 CPU: the loader picks the widest vector unit the CPU has when the library loads */
#define BM2_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define BM2_CLONES
#endif

#define BM2_PW_BLOCKSIZE 128

/* The interface version: window_kernel.py loads a library only if this matches its own (a library left from an
 * older checkout is not called with arguments it does not take). Bump it with any change of the signature. */
int32_t bm2_windows_abi(void) { return 1; }

/* numpy's pairwise summation of float32 (numpy/_core/src/umath/loops_utils.h.src), which np.add.reduce uses on a
 * contiguous row */
static float pairwise_sum(const float *a, int64_t n) {
    if (n < 8) {
        float res = 0.f;
        for (int64_t i = 0; i < n; i++) res += a[i];
        return res;
    }
    if (n <= BM2_PW_BLOCKSIZE) {
        float r[8];
        for (int j = 0; j < 8; j++) r[j] = a[j];
        int64_t i;
        for (i = 8; i < n - (n % 8); i += 8)
            for (int j = 0; j < 8; j++) r[j] += a[i + j];
        float res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for (; i < n; i++) res += a[i];
        return res;
    }
    int64_t n2 = n / 2;
    n2 -= n2 % 8;
    return pairwise_sum(a, n2) + pairwise_sum(a + n2, n - n2);
}

#define BM2_PREFETCH_ROWS 2

/* Ask for the cache lines of n floats from p. Each row of a window is in another page of the recording, so the
 * hardware prefetcher, which follows a stream within a page, starts every row cold; asking for the rows two ahead
 * hides that latency (measured: 0.68x -> 0.92x of a plain copy for batches of 256 x 208 x 342 windows). */
static inline void prefetch_row(const float *p, int64_t n) {
    for (int64_t t = 0; t < n; t += 16) __builtin_prefetch(p + t, 0, 3);
    __builtin_prefetch(p + n - 1, 0, 3);
}

/* Write n_windows normalised windows into out.
 *   src:        rows x n_times float32, row r at src + r * row_stride (the recording, C-contiguous per row)
 *   starts[w]:  window w's start sample; it reads samples [start + first, start + first + n_out) of every row and
 *               its baseline [start, start + n_pre)
 *   dest[w]:    the batch row of window w: out + dest[w] * rows * n_out (rows x n_out, contiguous)
 *   centre:     rows float32 (the scaler's centre, the features' mean, or zeros)
 *   scale:      rows float32; scale_mode 0: unused, 1: multiply by it (a reciprocal scale), 2: divide by it (a std)
 *   max_scale:  clamp to [-max_scale, max_scale] when clamp != 0
 * Returns 0, or the index + 1 of the first window out of bounds (then nothing is written). */
BM2_CLONES
int64_t bm2_normalised_windows(const float *src, int64_t rows, int64_t row_stride, int64_t n_times,
                               const int64_t *starts, const int64_t *dest, int64_t n_windows, int64_t first,
                               int64_t n_out, int64_t n_pre, const float *centre, const float *scale,
                               int32_t scale_mode, int32_t clamp, float max_scale, float *out) {
    const float lo = -max_scale, hi = max_scale;
    for (int64_t w = 0; w < n_windows; w++) {
        const int64_t start = starts[w];
        if (start + first < 0 || start + first + n_out > n_times || start < 0 || start + n_pre > n_times)
            return w + 1;
    }
    /* the span of a row that a window reads: its samples and its baseline */
    const int64_t span_lo = first < 0 ? first : 0;
    const int64_t span_hi = first + n_out > n_pre ? first + n_out : n_pre;
    const int64_t n_rows = n_windows * rows;
    for (int64_t k = 0; k < BM2_PREFETCH_ROWS && k < n_rows; k++)
        prefetch_row(src + starts[k / rows] + span_lo + (k % rows) * row_stride, span_hi - span_lo);
    for (int64_t w = 0; w < n_windows; w++) {
        const int64_t start = starts[w];
        float *o = out + dest[w] * rows * n_out;
        for (int64_t r = 0; r < rows; r++) {
            const int64_t ahead = w * rows + r + BM2_PREFETCH_ROWS;  /* rows counted across windows */
            if (ahead < n_rows)
                prefetch_row(src + starts[ahead / rows] + span_lo + (ahead % rows) * row_stride, span_hi - span_lo);
            const float *x = src + r * row_stride;
            float shift = centre[r];
            if (n_pre > 0) {
                float mean = (float)((double)pairwise_sum(x + start, n_pre) / (double)n_pre);
                shift = mean + centre[r];
            }
            const float *xs = x + start + first;
            float *orow = o + r * n_out;
            if (scale_mode == 1) {
                const float k = scale[r];
                if (clamp) {
                    for (int64_t t = 0; t < n_out; t++) {
                        float v = (xs[t] - shift) * k;
                        v = v < lo ? lo : v;
                        orow[t] = v > hi ? hi : v;
                    }
                } else {
                    for (int64_t t = 0; t < n_out; t++) orow[t] = (xs[t] - shift) * k;
                }
            } else if (scale_mode == 2) {
                const float k = scale[r];
                for (int64_t t = 0; t < n_out; t++) {
                    float v = (xs[t] - shift) / k;
                    if (clamp) {
                        v = v < lo ? lo : v;
                        v = v > hi ? hi : v;
                    }
                    orow[t] = v;
                }
            } else if (clamp) {
                for (int64_t t = 0; t < n_out; t++) {
                    float v = xs[t] - shift;
                    v = v < lo ? lo : v;
                    orow[t] = v > hi ? hi : v;
                }
            } else {
                for (int64_t t = 0; t < n_out; t++) orow[t] = xs[t] - shift;
            }
        }
    }
    return 0;
}
