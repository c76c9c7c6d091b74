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
