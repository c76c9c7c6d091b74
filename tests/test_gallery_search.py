"""The Search interface of the gallery (siamkit.search): backends, registry, options."""

from __future__ import annotations

import numpy as np
import pytest

import siamkit.gallery as gallery_module
from siamkit.gallery import ExactIndex, FaissIndex, Gallery, GalleryError
from siamkit.search import SEARCH_BACKENDS, Search, create_search


def test_create_search_makes_each_backend_behind_one_interface():
    assert gallery_module.ExactIndex is SEARCH_BACKENDS["exact"]  # old import path kept
    assert gallery_module.FaissIndex is SEARCH_BACKENDS["faiss"]
    index = create_search("exact", "euclidean", chunk=1)
    assert isinstance(index, ExactIndex) and isinstance(index, Search)
    assert index.concurrent_search and index.metric == "euclidean" and index.chunk == 1
    # references (0, 0) and (3, 4); the query (0, 0): distances 0 and 5, as -d
    index.build(np.array([[0.0, 0.0], [3.0, 4.0]]))
    scores, rows = index.search(np.array([[0.0, 0.0]]), k=5)
    np.testing.assert_array_equal(rows, [[0, 1]])
    np.testing.assert_allclose(scores, [[0.0, -5.0]])
    sq = create_search("exact", "sqeuclidean")
    sq.build(np.array([[0.0, 0.0], [3.0, 4.0]]))
    np.testing.assert_allclose(sq.search(np.array([[3.0, 4.0]]), k=2)[0], [[0.0, -25.0]])


def test_faiss_backend_answers_like_exact_through_the_interface():
    pytest.importorskip("faiss")
    flat = create_search("faiss", "euclidean")
    assert isinstance(flat, FaissIndex) and isinstance(flat, Search)
    assert not flat.concurrent_search  # the gallery serialises its searches
    flat.build(np.array([[0.0, 0.0], [3.0, 4.0]]))
    scores, rows = flat.search(np.array([[0.0, 0.0]]), k=2)
    np.testing.assert_array_equal(rows, [[0, 1]])
    np.testing.assert_allclose(scores, [[0.0, -5.0]])


def test_unknown_backend_metric_and_option_are_named():
    with pytest.raises(GalleryError, match="unknown gallery backend 'annoy'"):
        create_search("annoy", "cosine")
    with pytest.raises(GalleryError, match="unknown metric 'manhattan'"):
        create_search("exact", "manhattan")
    with pytest.raises(GalleryError, match="bad options for the exact backend"):
        create_search("exact", "cosine", nlist=4)


@pytest.mark.parametrize("backend, option, value", [
    ("exact", "chunk", 0), ("exact", "query_chunk", -1), ("exact", "chunk", 2.5),
    ("faiss", "nlist", 0), ("faiss", "nprobe", -1), ("faiss", "m", 0), ("faiss", "m", 1),
    ("faiss", "ef_search", 0), ("faiss", "ef_construction", 0), ("faiss", "nlist", True),
    ("faiss", "nlist", "8"),
])
def test_bad_backend_option_values_are_a_gallery_error_naming_the_option(backend, option,
                                                                         value):
    # FAISS itself answers nlist=0 with a bare RuntimeError at build time, and m=0 worse
    with pytest.raises(GalleryError, match=f"{option}={value!r}: must be an integer"):
        create_search(backend, "euclidean", **{option: value})
    with pytest.raises(GalleryError, match=f"{option}={value!r}"):
        Gallery(2, metric="euclidean", backend=backend, backend_args={option: value})


def test_a_gallery_uses_any_search_through_the_interface_only():
    # a backend that is not concurrent-safe is searched under the gallery's lock; the
    # gallery needs nothing but build / search / concurrent_search from it
    class Brute(Search):
        concurrent_search = False

        def __init__(self, metric: str) -> None:
            self.metric = metric

        def build(self, vectors: np.ndarray) -> None:
            self.refs = np.asarray(vectors, np.float32)

        def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
            d = -np.linalg.norm(queries[:, None] - self.refs[None], axis=2)
            rows = np.argsort(-d, axis=1, kind="stable")[:, :k]
            return np.take_along_axis(d, rows, 1), rows

    SEARCH_BACKENDS["brute"] = Brute
    try:
        g = Gallery(2, metric="euclidean", backend="brute")
        g.enroll("a", np.array([[0.0, 0.0]]))
        g.enroll("b", np.array([[3.0, 4.0]]))
        (m,) = g.identify(np.array([[0.0, 1.0]]), k=2)
        assert [(x.label, x.score) for x in m] == [("a", 1.0), ("b", pytest.approx(np.sqrt(18)))]
    finally:
        del SEARCH_BACKENDS["brute"]


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "sqeuclidean"])
def test_exact_kernels_agree(metric):
    """FAISS's flat kernel and the blocked torch kernel return the same neighbours and
    scores (distances recomputed exactly either way)."""
    pytest.importorskip("faiss")
    from siamkit.search import ExactIndex

    rng = np.random.default_rng(0)
    refs = rng.normal(size=(3000, 16)).astype(np.float32)
    if metric == "cosine":
        refs /= np.linalg.norm(refs, axis=1, keepdims=True)
    queries = np.concatenate([refs[:5], rng.normal(size=(20, 16)).astype(np.float32)])
    out = {}
    for kernel, screen, used in [("torch", "fp32", "torch"), ("torch", "bf16", "torch-bf16"),
                                 ("faiss", "auto", "faiss")]:
        index = ExactIndex(metric, kernel=kernel, screen=screen)
        index.build(refs)
        assert index.kernel_in_use == used  # the paths really are all taken
        out[screen] = index.search(queries, 7)
    for screen in ("fp32", "bf16"):
        np.testing.assert_array_equal(out[screen][1], out["auto"][1])
        np.testing.assert_allclose(out[screen][0], out["auto"][0], rtol=1e-5, atol=1e-5)
    if metric in ("euclidean", "sqeuclidean"):
        assert (out["auto"][0][:5, 0] == 0).all()  # an item's distance to itself: exactly 0


@pytest.mark.parametrize(("flags", "metric", "want"), [
    ({"avx2", "avx512f", "avx512_bf16"}, "cosine", "faiss"),  # no AMX: FAISS's flat kernel
    ({"avx512f", "amx_bf16"}, "cosine", "torch-bf16"),         # AMX: the bf16 screen
    ({"avx512f", "amx_bf16"}, "euclidean", "torch-bf16"),      # [q, 1] . [r, -|r|^2 / 2]
    ({"avx2"}, "euclidean", "faiss"),
])
def test_auto_kernel_follows_the_cpu(monkeypatch, flags, metric, want):
    """``auto`` takes the bf16-screened torch kernel only where the CPU has AMX (the flag
    reading is overridden here), FAISS otherwise."""
    pytest.importorskip("faiss")
    from siamkit import machine
    from siamkit.native import screen_kernel_bf16
    from siamkit.search import ExactIndex

    if want == "torch-bf16" and screen_kernel_bf16() is None:
        pytest.skip("no C compiler: the compiled screen is unavailable")
    monkeypatch.setattr(machine, "cpu_flags", lambda: frozenset(flags))
    index = ExactIndex(metric)
    index.build(np.eye(40, 8, dtype=np.float32) + 0.1)
    assert index.kernel_in_use == want
    assert index.search(np.eye(2, 8, dtype=np.float32) + 0.1, 3)[1].shape == (2, 3)


@pytest.mark.parametrize("metric", ["euclidean", "sqeuclidean"])
@pytest.mark.parametrize("scale", [3.0, 30.0])
def test_bf16_screened_euclidean_search_is_exact(metric, scale):
    """Euclidean search screened in bf16 through the augmented inner product returns what
    float32 search returns where neighbours crowd (classes of 20 tight around their
    centres). Far from the origin (scale 30: |r|^2 / 2 near 10,000, float32's step there
    1e-3) any inner-product formulation, FAISS's too, ranks near-ties by rounding; there
    both kernels find the true k nearest distances to within that rounding."""
    from siamkit.native import screen_kernel_bf16
    from siamkit.search import ExactIndex

    if screen_kernel_bf16() is None:
        pytest.skip("no C compiler: the compiled screen is unavailable")
    rng = np.random.default_rng(1)
    centres = scale * rng.normal(size=(100, 24)).astype(np.float32)
    refs = centres.repeat(20, 0) + 0.1 * rng.normal(size=(2000, 24)).astype(np.float32)
    queries = np.concatenate([refs[::97], centres[:10] + 0.01])
    fp32, bf16 = (ExactIndex(metric, kernel="torch", screen=screen)
                  for screen in ("fp32", "bf16"))
    for index in (fp32, bf16):
        index.build(refs)
    assert bf16.kernel_in_use == "torch-bf16"
    (s32, i32), (s16, i16) = fp32.search(queries, 15), bf16.search(queries, 15)
    assert (s16[:21, 0] == 0).all()  # each reference is at distance exactly 0 from itself
    d2 = ((queries[:, None].astype(np.float64) - refs[None]) ** 2).sum(-1)
    truth = np.sort(d2, 1)[:, :15]
    def squared(scores: np.ndarray) -> np.ndarray:  # scores are -d or -d^2
        return scores ** 2 if metric == "euclidean" else -scores

    if scale == 3.0:
        np.testing.assert_array_equal(i16, i32)
        np.testing.assert_array_equal(s16, s32)  # both recomputed from differences
        # float32 products put |r|^2 (about 200 here) to 2e-5: a near-tie may swap
        np.testing.assert_allclose(squared(s16), truth, atol=1e-3)
    else:
        for scores in (s16, s32):
            np.testing.assert_allclose(squared(scores), truth, atol=0.02)
    # the bf16 copy is one column wider; the float32 references are not held twice
    assert bf16._refs_bf16.shape == (2000, 25)
    assert bf16._refs.data_ptr() == bf16._screened.data_ptr()


def test_exact_kernel_option_is_checked():
    from siamkit.search import ExactIndex

    with pytest.raises(GalleryError, match="kernel='gpu'"):
        ExactIndex("cosine", kernel="gpu")
    with pytest.raises(GalleryError, match="screen='fp16'"):
        ExactIndex("cosine", screen="fp16")
