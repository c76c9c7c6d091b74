/* One pass over a tile of scores picking the entries above their row's (and, optionally,
 * their column's) threshold: the screening step of siamkit.topk.self_topk, compiled at
 * first use by siamkit/native.py (the numpy path in topk.py does the same, slower).
 *
 * s: n_r x n_c float32 scores, row-major. Row candidates s[r][c] > thr_r[r] are written as
 * (row0 + r, col0 + c, s[r][c]) to ar / ac / av; with thr_c given, column candidates
 * s[r][c] > thr_c[c] as (col0 + c, row0 + r, s[r][c]) to br / bc / bv. Returns 0, or -1
 * when either output would pass cap entries (its contents are then incomplete). */
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

static inline int emit(int32_t *rows, int32_t *cols, float *vals, int64_t *k, int64_t cap,
                       int32_t row, int32_t col, float v) {
    if (*k >= cap) return -1;
    rows[*k] = row;
    cols[*k] = col;
    vals[*k] = v;
    (*k)++;
    return 0;
}

int screen_tile(const float *s, int64_t n_r, int64_t n_c, const float *thr_r,
                const float *thr_c, int32_t row0, int32_t col0,
                int32_t *ar, int32_t *ac, float *av, int64_t *na,
                int32_t *br, int32_t *bc, float *bv, int64_t *nb, int64_t cap) {
    int64_t ka = 0, kb = 0;
    int bad = 0;
    for (int64_t r = 0; r < n_r && !bad; r++) {
        const float *row = s + r * n_c;
        const float tr = thr_r[r];
        for (int64_t c = 0; c < n_c; c += CHUNK) {
            int64_t end = c + CHUNK <= n_c ? c + CHUNK : n_c;
            /* a full chunk is tested at once (the few with a hit are looked at one by one) */
            if (end - c == CHUNK && !any_above(row + c, tr, thr_c ? thr_c + c : 0)) continue;
            for (int64_t j = c; j < end; j++) {
                float v = row[j];
                if (v > tr)
                    bad |= emit(ar, ac, av, &ka, cap, row0 + (int32_t)r, col0 + (int32_t)j, v);
                if (thr_c && v > thr_c[j])
                    bad |= emit(br, bc, bv, &kb, cap, col0 + (int32_t)j, row0 + (int32_t)r, v);
            }
        }
    }
    *na = ka;
    *nb = kb;
    return bad ? -1 : 0;
}
