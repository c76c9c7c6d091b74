/* One pass over a tile of scores folding the entries above their row's (and, optionally,
 * their column's) threshold straight into running top-k heaps: the screening step of
 * siamkit.topk.self_topk, compiled at first use by siamkit/native.py (the numpy path in
 * topk.py does the same work with candidate lists and sorted merges, slower).
 *
 * s: n_r x n_c float32 scores, row-major, of rows row0 .. and columns col0 ... hv / hi hold
 * k values and int32 indices per row of the whole set, each row a min-heap (hv[g * k] is row
 * g's k-th best so far; -inf fills empty places). thr[g] is max(hv[g * k], bar[g]): nothing
 * at or below it can enter row g's top k. With mode & 1 (rows), an entry s[r][c] above
 * thr[row0 + r] enters row row0 + r's heap with index col0 + c; with mode & 2 (columns), one
 * above thr[col0 + c] enters row col0 + c's heap with index row0 + r (the tile's transpose:
 * a pair scored once feeds both its rows). Rows and columns touch different heaps when the
 * tile is off the diagonal, so two threads can take one each. */
#include <math.h>
#include <stdint.h>
#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define CHUNK 16

/* Whether any of row[0 .. CHUNK - 1] is above tr (or above its thr_c entry). Compiled for
 * the CPU it runs on (-march=native): one 16-lane compare with AVX-512, two 8-lane ones
 * with AVX2, a loop otherwise. */
static inline int any_above(const float *row, float tr, const float *thr_c) {
#if defined(__AVX512F__)
    __m512 v = _mm512_loadu_ps(row);
    __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_set1_ps(tr), _CMP_GT_OQ);
    if (thr_c) m |= _mm512_cmp_ps_mask(v, _mm512_loadu_ps(thr_c), _CMP_GT_OQ);
    return (int)m;
#elif defined(__AVX2__)
    __m256 t = _mm256_set1_ps(tr);
    __m256 v0 = _mm256_loadu_ps(row), v1 = _mm256_loadu_ps(row + 8);
    __m256 m = _mm256_or_ps(_mm256_cmp_ps(v0, t, _CMP_GT_OQ), _mm256_cmp_ps(v1, t, _CMP_GT_OQ));
    if (thr_c) {
        m = _mm256_or_ps(m, _mm256_cmp_ps(v0, _mm256_loadu_ps(thr_c), _CMP_GT_OQ));
        m = _mm256_or_ps(m, _mm256_cmp_ps(v1, _mm256_loadu_ps(thr_c + 8), _CMP_GT_OQ));
    }
    return _mm256_movemask_ps(m);
#else
    int flag = 0;
    for (int j = 0; j < CHUNK; j++)
        flag |= (row[j] > tr) | (thr_c ? row[j] > thr_c[j] : 0);
    return flag;
#endif
}

/* Replace row g's smallest kept value with v (index idx) and restore the min-heap; returns
 * the row's new threshold. */
static inline float push(float *hv, int32_t *hi, const float *bar, float *thr, int64_t k,
                         int64_t g, float v, int32_t idx) {
    float *h = hv + g * k;
    int32_t *ix = hi + g * k;
    int64_t p = 0;
    for (;;) {
        int64_t c = 2 * p + 1;
        if (c >= k) break;
        if (c + 1 < k && h[c + 1] < h[c]) c++;
        if (h[c] >= v) break;
        h[p] = h[c];
        ix[p] = ix[c];
        p = c;
    }
    h[p] = v;
    ix[p] = idx;
    float t = h[0] > bar[g] ? h[0] : bar[g];
    thr[g] = t;
    return t;
}

void heap_tile(const float *s, int64_t n_r, int64_t n_c, int32_t row0, int32_t col0,
               int32_t mode, float *thr, const float *bar, float *hv, int32_t *hi,
               int64_t k) {
    float *thr_c = (mode & 2) ? thr + col0 : 0;
    for (int64_t r = 0; r < n_r; r++) {
        const float *row = s + r * n_c;
        const int64_t g = row0 + r;
        float tr = (mode & 1) ? thr[g] : INFINITY;  /* columns only: no entry passes */
        for (int64_t c = 0; c < n_c; c += CHUNK) {
            int64_t end = c + CHUNK <= n_c ? c + CHUNK : n_c;
            /* a full chunk is tested at once (the few with a hit are looked at one by one) */
            if (end - c == CHUNK && !any_above(row + c, tr, thr_c ? thr_c + c : 0)) continue;
            for (int64_t j = c; j < end; j++) {
                float v = row[j];
                if (v > tr) tr = push(hv, hi, bar, thr, k, g, v, col0 + (int32_t)j);
                if (thr_c && v > thr_c[j])
                    push(hv, hi, bar, thr, k, col0 + j, v, row0 + (int32_t)r);
            }
        }
    }
}

/* ---- the bf16 screen: s holds bfloat16 scores (uint16 bits) of the same vectors rounded
 * to bfloat16. An entry is looked at when its rounded score plus delta (a bound on the
 * rounding error, given by the caller) is above a threshold; it enters a heap with its
 * exact float32 score, recomputed here from xr (the tile's rows, n_r x d) and xc (its
 * columns, n_c x d). Nothing that could enter a top k is missed, and every kept score is
 * exact. */

static inline float bf16_float(uint16_t h) {
    union { uint32_t u; float f; } b;
    b.u = (uint32_t)h << 16;
    return b.f;
}

/* The float32 dot product of a and b (d values each): sixteen running sums. */
static inline float dot(const float *a, const float *b, int64_t d) {
    int64_t i = 0;
#if defined(__AVX512F__)
    __m512 acc = _mm512_setzero_ps();
    for (; i + 16 <= d; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc);
    float s = _mm512_reduce_add_ps(acc);
#elif defined(__AVX2__)
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    for (; i + 16 <= d; i += 16) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
    }
    float part[8];
    _mm256_storeu_ps(part, _mm256_add_ps(acc0, acc1));
    float s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
#else
    float acc[16] = {0};
    for (; i + 16 <= d; i += 16)
        for (int j = 0; j < 16; j++) acc[j] += a[i + j] * b[i + j];
    float s = 0;
    for (int j = 0; j < 16; j++) s += acc[j];
#endif
    for (; i < d; i++) s += a[i] * b[i];
    return s;
}

/* any_above for bf16 scores raised by delta */
static inline int any_above_bf16(const uint16_t *row, float delta, float tr, const float *thr_c) {
#if defined(__AVX512F__)
    __m512 v = _mm512_castsi512_ps(_mm512_slli_epi32(
        _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)row)), 16));
    v = _mm512_add_ps(v, _mm512_set1_ps(delta));
    __mmask16 m = _mm512_cmp_ps_mask(v, _mm512_set1_ps(tr), _CMP_GT_OQ);
    if (thr_c) m |= _mm512_cmp_ps_mask(v, _mm512_loadu_ps(thr_c), _CMP_GT_OQ);
    return (int)m;
#elif defined(__AVX2__)
    __m256 dl = _mm256_set1_ps(delta), t = _mm256_set1_ps(tr);
    __m256 v0 = _mm256_add_ps(dl, _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)row)), 16)));
    __m256 v1 = _mm256_add_ps(dl, _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(row + 8))), 16)));
    __m256 m = _mm256_or_ps(_mm256_cmp_ps(v0, t, _CMP_GT_OQ), _mm256_cmp_ps(v1, t, _CMP_GT_OQ));
    if (thr_c) {
        m = _mm256_or_ps(m, _mm256_cmp_ps(v0, _mm256_loadu_ps(thr_c), _CMP_GT_OQ));
        m = _mm256_or_ps(m, _mm256_cmp_ps(v1, _mm256_loadu_ps(thr_c + 8), _CMP_GT_OQ));
    }
    return _mm256_movemask_ps(m);
#else
    int flag = 0;
    for (int j = 0; j < CHUNK; j++) {
        float v = bf16_float(row[j]) + delta;
        flag |= (v > tr) | (thr_c ? v > thr_c[j] : 0);
    }
    return flag;
#endif
}

void heap_tile_bf16(const uint16_t *s, int64_t n_r, int64_t n_c, int32_t row0, int32_t col0,
                    int32_t mode, float *thr, const float *bar, float *hv, int32_t *hi,
                    int64_t k, const float *xr, const float *xc, int64_t d, float delta) {
    float *thr_c = (mode & 2) ? thr + col0 : 0;
    for (int64_t r = 0; r < n_r; r++) {
        const uint16_t *row = s + r * n_c;
        const float *a = xr + r * d;
        const int64_t g = row0 + r;
        float tr = (mode & 1) ? thr[g] : INFINITY;
        for (int64_t c = 0; c < n_c; c += CHUNK) {
            int64_t end = c + CHUNK <= n_c ? c + CHUNK : n_c;
            if (end - c == CHUNK && !any_above_bf16(row + c, delta, tr, thr_c ? thr_c + c : 0))
                continue;
            for (int64_t j = c; j < end; j++) {
                float v = bf16_float(row[j]) + delta;
                int by_row = v > tr, by_col = thr_c && v > thr_c[j];
                if (!by_row && !by_col) continue;
                float e = dot(a, xc + j * d, d);
                if (by_row && e > tr) tr = push(hv, hi, bar, thr, k, g, e, col0 + (int32_t)j);
                if (by_col && e > thr_c[j])
                    push(hv, hi, bar, thr, k, col0 + j, e, row0 + (int32_t)r);
            }
        }
    }
}
