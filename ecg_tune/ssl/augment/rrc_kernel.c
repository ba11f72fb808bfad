/* RandomResizedCrop on CPU float32 batches in one pass: crop map and interpolation fused.
 *
 * Same contract as `knots` + `crop_map` + `lerp_at` in random_resized_crop.py (read that first):
 * from the random draws of `RandomResizedCrop.draw`, the output at position j of every sample is
 * x[left] + frac * (x[left+1] - x[left]) with left and frac derived from the placed positions
 * ("knots"). The eager version pays for batch-sized int64 index tensors and two gathers; here the
 * map of one sample is computed once into small arrays that stay in L1 and reused for its leads.
 * Optionally TimeOut's block is zeroed in each output row right after it is written.
 *
 * The gather is done without gather instructions: left is non-decreasing in steps of 0 or 1, so 8
 * consecutive outputs read at most 9 consecutive input samples. With AVX2 one unaligned load plus
 * one in-register permute (vpermps) yields the 8 lower neighbours, a second pair the upper ones.
 * The lerp is torch's vectorised formula (fused multiply-add, the weight < 0.5 split), so results
 * match torch.lerp on an AVX2/AVX-512 build to the last bit except, at most, in the scalar tails.
 * Without AVX2 (other CPUs) a scalar loop computes the same formula without FMA.
 *
 * Built by native.py with the system C compiler; no Python or torch headers are needed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define ECG_HAVE_AVX2_PATH 1
#endif

static inline float lerp1(float a, float b, float w) {
    return w < 0.5f ? a + w * (b - a) : b - (b - a) * (1.0f - w);
}

/* Placed positions of one sample from its exponential partial sums, the same float32 operations in
 * the same order as `RandomResizedCrop.knots`: knots[0] = 0, knots[k+1] = min(floor(sums[k] /
 * sums[crop-2] * (spare+1)), spare) + k + 1 clamped to T-1 (k < T-2), knots[T-1] = knots[T] = T-1.
 * Stored as int32 (exact: small integers). */
static inline void sample_knots(const float *restrict sums, int64_t crop, int64_t T,
                                int32_t *restrict knots) {
    const float total = sums[crop - 2], spare = (float)(T - crop), last = (float)(T - 1);
    const int32_t n = (int32_t)(T - 2);
    knots[0] = 0;
    for (int32_t k = 0; k < n; k++) { /* branch-free, int32 counter: it vectorises */
        const float q = sums[k] / total * (spare + 1.0f); /* >= 0, or NaN from 0/0 (two zero draws) */
        /* floor, then at most spare, equals truncating min(q, spare) for q >= 0; NaN gives spare */
        const float m = q < spare ? q : spare;
        const float p = (float)(int32_t)m + (float)(k + 1);
        knots[k + 1] = (int32_t)(p < last ? p : last);
    }
    knots[T - 1] = knots[T] = (int32_t)(T - 1);
}

/* k / step for 1 <= step <= MAX_STEP, 0 <= k < step: the exact float32 quotients, without a division
 * per output (gaps between placed samples are 1 or 2 unless crops are far shorter than T). */
#define MAX_STEP 16
typedef struct {
    float q[MAX_STEP + 1][MAX_STEP + 1];
} quotients;

static void fill_quotients(quotients *t) {
    for (int s = 1; s <= MAX_STEP; s++)
        for (int k = 0; k <= MAX_STEP; k++) t->q[s][k] = (float)k / (float)s;
}

/* Map of one sample: left[j] in [0, T-2] and w[j] in [0, 1] (see crop_map in Python), written
 * interval by interval: outputs knots[i] .. knots[i+1]-1 lie between crop samples i and i+1 (the
 * positions are strictly increasing and knots[crop-1] = T-1), so left = start + i and w = (j -
 * knots[i]) / gap. Short intervals are written 4 entries at a time without a loop (entries past the
 * interval are overwritten by the next one; left and w have T + 4 entries), which avoids a branch
 * misprediction per interval. The last output is crop sample crop-1. The eager version may give
 * left = T-1 there with right clamped to T-1; here that becomes left = T-2, w = 1, which returns
 * x[T-1] exactly as well and keeps left + 1 inside the row. */
static inline void sample_map(const int32_t *knots, int64_t start, int64_t crop, int64_t T,
                              const quotients *t, int32_t *left, float *w) {
    int32_t p0 = 0;
    for (int64_t i = 0; i < crop - 1; i++) {
        const int32_t p1 = knots[i + 1], gap = p1 - p0, l = (int32_t)(start + i);
        if (gap <= 4) {
            for (int k = 0; k < 4; k++) {
                left[p0 + k] = l;
                w[p0 + k] = t->q[gap][k];
            }
        } else {
            for (int32_t k = 0; k < gap; k++) {
                left[p0 + k] = l;
                w[p0 + k] = gap <= MAX_STEP ? t->q[gap][k] : (float)k / (float)gap;
            }
        }
        p0 = p1;
    }
    const int64_t last = start + crop - 1;
    left[T - 1] = (int32_t)(last < T - 1 ? last : T - 2);
    w[T - 1] = last < T - 1 ? 0.0f : 1.0f;
}

/* Both row functions zero samples zs .. zs+zn-1 of each output row right after writing it (TimeOut
 * fused in, while the row is in L1; zn = 0: none). */
static void rows_scalar(const float *x, float *out, int64_t L, int64_t T, const int32_t *left,
                        const float *w, int64_t zs, int64_t zn) {
    for (int64_t l = 0; l < L; l++) {
        const float *row = x + l * T;
        float *orow = out + l * T;
        for (int64_t j = 0; j < T; j++) orow[j] = lerp1(row[left[j]], row[left[j] + 1], w[j]);
        if (zn > 0) memset(orow + zs, 0, (size_t)zn * sizeof(float));
    }
}

#ifdef ECG_HAVE_AVX2_PATH
/* perm[j] = left[j] - left[8 * (j / 8)], in 0..7. */
__attribute__((target("avx2,fma"))) static void rows_avx2(const float *x, float *out, int64_t L,
                                                          int64_t T, const int32_t *left,
                                                          const float *w, const int32_t *perm,
                                                          int64_t zs, int64_t zn) {
    const int64_t blocks = T / 8;
    const __m256 half = _mm256_set1_ps(0.5f), one = _mm256_set1_ps(1.0f);
    for (int64_t l = 0; l < L; l++) {
        const float *row = x + l * T;
        float *orow = out + l * T;
        for (int64_t b = 0; b < blocks; b++) {
            const int64_t j0 = 8 * b, s = left[j0];
            __m256 lo, hi;
            if (s + 9 <= T) {
                lo = _mm256_loadu_ps(row + s);
                hi = _mm256_loadu_ps(row + s + 1);
            } else { /* the last samples of the row: never read past it */
                float buf[17] = {0};
                memcpy(buf, row + s, (size_t)(T - s) * sizeof(float));
                lo = _mm256_loadu_ps(buf);
                hi = _mm256_loadu_ps(buf + 1);
            }
            const __m256i p = _mm256_loadu_si256((const __m256i *)(perm + j0));
            const __m256 a = _mm256_permutevar8x32_ps(lo, p), e = _mm256_permutevar8x32_ps(hi, p);
            const __m256 wv = _mm256_loadu_ps(w + j0);
            const __m256 small = _mm256_cmp_ps(wv, half, _CMP_LT_OQ);
            const __m256 coeff = _mm256_blendv_ps(_mm256_sub_ps(wv, one), wv, small);
            const __m256 base = _mm256_blendv_ps(e, a, small);
            _mm256_storeu_ps(orow + j0, _mm256_fmadd_ps(coeff, _mm256_sub_ps(e, a), base));
        }
        for (int64_t j = 8 * blocks; j < T; j++) orow[j] = lerp1(row[left[j]], row[left[j] + 1], w[j]);
        if (zn > 0) memset(orow + zs, 0, (size_t)zn * sizeof(float));
    }
}
#endif

/* x, out: (B, L, T) contiguous float32; start, crop: (B,) int64 with 2 <= crop <= T - start; sums:
 * (B, T-1) float32, the cumulative sums of the exponential variates (see `RandomResizedCrop.draw`);
 * T >= 3. zero_start, zero_size: (B,) int64 or both NULL: TimeOut's blocks, zeroed in the output
 * (0 <= zero_start, zero_start + zero_size <= T). Returns 0, or -1 when scratch memory could not be
 * allocated (out is then incomplete). */
int ecg_rrc_forward(const float *x, float *out, const int64_t *start, const int64_t *crop,
                    const float *sums, const int64_t *zero_start, const int64_t *zero_size, int64_t B,
                    int64_t L, int64_t T) {
    /* left, w: T + 4 entries (see sample_map); perm: T; knots: T + 1 */
    int32_t *left = malloc((size_t)(4 * T + 9) * sizeof(int32_t));
    if (!left) return -1;
    int32_t *perm = left + T + 4, *knots = perm + T;
    float *w = (float *)(knots + T + 1);
    quotients t;
    fill_quotients(&t);
#ifdef ECG_HAVE_AVX2_PATH
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
    for (int64_t b = 0; b < B; b++) {
        sample_knots(sums + b * (T - 1), crop[b], T, knots);
        sample_map(knots, start[b], crop[b], T, &t, left, w);
        const float *xb = x + b * L * T;
        float *ob = out + b * L * T;
        const int64_t zs = zero_start ? zero_start[b] : 0, zn = zero_size ? zero_size[b] : 0;
#ifdef ECG_HAVE_AVX2_PATH
        if (avx2) {
            for (int64_t j0 = 0; j0 + 8 <= T; j0 += 8)
                for (int k = 0; k < 8; k++) perm[j0 + k] = left[j0 + k] - left[j0];
            rows_avx2(xb, ob, L, T, left, w, perm, zs, zn);
            continue;
        }
#endif
        rows_scalar(xb, ob, L, T, left, w, zs, zn);
    }
    free(left);
    return 0;
}

/* TimeOut in place: zero samples start[b] .. start[b]+size[b]-1 of every lead of x (B, L, T). */
void ecg_zero_blocks(float *x, const int64_t *start, const int64_t *size, int64_t B, int64_t L,
                     int64_t T) {
    for (int64_t b = 0; b < B; b++) {
        if (size[b] <= 0) continue;
        for (int64_t l = 0; l < L; l++) memset(x + (b * L + l) * T + start[b], 0, (size_t)size[b] * sizeof(float));
    }
}

/* The k-th smallest (0-based) of n floats, rearranging a (quickselect, Hoare partition: expected
 * O(n), where a sort of the row was most of the augmentation's cost). No NaN (uniform keys). */
static float kth_smallest(float *a, int64_t n, int64_t k) {
    int64_t lo = 0, hi = n - 1;
    while (lo < hi) {
        const float pivot = a[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (a[i] < pivot) i++;
            while (a[j] > pivot) j--;
            if (i <= j) {
                const float t = a[i];
                a[i] = a[j];
                a[j] = t;
                i++;
                j--;
            }
        }
        if (k <= j)
            hi = j;
        else if (k >= i)
            lo = i;
        else
            return a[k];
    }
    return a[k];
}

/* `subset_sums_from_keys` of random_resized_crop.py for B rows of T-2 uniform keys, into sums
 * (B, T-1): the crop-2 smallest keys of a row (a tie at the threshold cut by position) mark its
 * interior positions p_r (1-based slots, in order), and sums[r] = ((p_r - 1 - r) + 0.5) / (T-crop+1),
 * the same float32 operations in the same order; every other entry is 1. Returns 1 when out of
 * memory. */
int ecg_subset_sums(const float *keys, const int64_t *crop, float *sums, int64_t B, int64_t T) {
    const int64_t n = T - 2;
    float *scratch = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!scratch) return 1;
    for (int64_t b = 0; b < B; b++) {
        const float *key = keys + b * n;
        float *s = sums + b * (T - 1);
        const int64_t inner = crop[b] - 2;
        for (int64_t k = 0; k < T - 1; k++) s[k] = 1.0f;
        if (inner <= 0) continue;
        memcpy(scratch, key, sizeof(float) * (size_t)n);
        const float threshold = kth_smallest(scratch, n, inner - 1);
        const float den = (float)(T - crop[b]) + 1.0f;
        int64_t r = 0;
        for (int64_t j = 0; j < n && r < inner; j++) {
            if (key[j] <= threshold) {
                const float gap = (float)(j + 1) - 1.0f - (float)r;
                s[r] = (gap + 0.5f) / den;
                r++;
            }
        }
    }
    free(scratch);
    return 0;
}
