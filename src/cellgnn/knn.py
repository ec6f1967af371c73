"""k-nearest-neighbour search on PCA coordinates, exact or approximate.

``knn_search`` returns, for each of N query points, the indices and distances of
its k nearest other points (self excluded), shape ``[N, k]``.

Methods:

- ``exact``: scikit-learn (tree or brute force), exact.
- ``hnsw``: hnswlib HNSW graph (M=16, ef_construction=64, query ef=max(3(k+1), 48)).
  Queries are deterministic; index construction with ``n_jobs > 1`` inserts points in a
  thread-dependent order, so bit-identical graphs across runs need ``n_jobs=1``.
- ``faiss``: faiss IVF-Flat (nlist ≈ 4√N coarse k-means cells, seeded; nprobe=24).
- ``nndescent``: NN-descent (``cellgnn.nndescent``: random-projection-tree start, then
  local joins; the algorithm behind ``scanpy.pp.neighbors``' pynndescent, compiled here
  for euclidean / cosine only, so a first run pays seconds of numba compilation instead of
  pynndescent's minute). ``bench/knn_cold.py`` times it against ``scanpy.pp.neighbors`` in
  fresh processes with an empty numba cache and measures recall against exact kNN.
  Seeded runs give identical neighbours, whatever ``n_jobs``.
- ``auto``: ``exact`` up to ``ann_threshold`` points, ``hnsw`` up to
  ``NNDESCENT_THRESHOLD`` (where its build time starts to dominate), ``nndescent`` above.

``recall_at_k`` and ``sampled_recall`` measure an approximate result against exact
kNN on a random sample of query points (exact search of a sample is cheap at any N);
``bench/scale.py`` records recall and time against exact kNN and ``scanpy.pp.neighbors``
at each size (``bench/README.md``).
"""

from __future__ import annotations

import logging

import numpy as np

from .errors import CellgnnInputError

LOG = logging.getLogger(__name__)

METHODS = ("exact", "hnsw", "faiss", "nndescent", "auto")
METRICS = ("euclidean", "cosine")
DEFAULT_ANN_THRESHOLD = 50_000
NNDESCENT_THRESHOLD = 500_000


def auto_method(n: int, ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> str:
    """The method ``auto`` picks for ``n`` points: exact, hnsw or nndescent."""
    return "exact" if n <= ann_threshold else "hnsw" if n <= NNDESCENT_THRESHOLD else "nndescent"


def knn_search(points: np.ndarray, k: int, metric: str = "euclidean", method: str = "exact",
               seed: int = 0, n_jobs: int = 1,
               ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """kNN of every point among the others.

    points: float32 ``[N, D]``; returns ``(indices int64 [N, k], distances float32 [N, k])``,
    rows sorted by distance (euclidean distance, or cosine distance ``1 - cos``), the point
    itself excluded. ``method`` ∈ exact | hnsw | faiss | nndescent | auto (``auto``: exact
    when ``N <= ann_threshold``, hnsw up to ``NNDESCENT_THRESHOLD``, nndescent above).
    """
    n = points.shape[0]
    if k < 1:
        raise CellgnnInputError(f"k must be >= 1, got {k}", field="graph.k", fix="set graph.k to a positive integer")
    if k >= n:
        raise CellgnnInputError(f"k={k} neighbours asked for but only {n} cells in this graph",
                                field="graph.k", fix=f"set graph.k below {n}")
    if method not in METHODS:
        raise CellgnnInputError(f"unknown kNN method '{method}'", field="graph.knn_method",
                                fix=f"use one of {', '.join(METHODS)}")
    if method == "auto":
        method = auto_method(n, ann_threshold)
        LOG.info("kNN method auto: %s (%d points, ann_threshold %d)", method, n, ann_threshold)
    if method != "exact" and metric not in METRICS:
        raise CellgnnInputError(f"metric '{metric}' is not supported by approximate kNN", field="graph.metric",
                                fix=f"use one of {', '.join(METRICS)}, or graph.knn_method: exact")
    points = np.ascontiguousarray(points, dtype=np.float32)
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, n_jobs=n_jobs).fit(points)
        dist, idx = nn.kneighbors(points)
    elif method == "hnsw":
        idx, dist = _hnsw(points, k + 1, metric, seed, n_jobs)
    elif method == "nndescent":  # self never in its own list
        from .nndescent import nndescent_knn

        return nndescent_knn(points, k, metric=metric, seed=seed, n_jobs=n_jobs)
    else:
        idx, dist = _faiss(points, k + 1, metric, seed, n_jobs)
    return _drop_self(idx, dist, k)


def _hnsw(points: np.ndarray, kq: int, metric: str, seed: int, n_jobs: int,
          M: int = 16, ef_construction: int = 64) -> tuple[np.ndarray, np.ndarray]:
    import hnswlib

    n, d = points.shape
    index = hnswlib.Index(space="l2" if metric == "euclidean" else "cosine", dim=d)
    index.init_index(max_elements=n, ef_construction=ef_construction, M=M, random_seed=int(seed) % (2**31))
    index.add_items(points, np.arange(n), num_threads=n_jobs)
    index.set_ef(max(3 * kq, 48))
    idx, dist = index.knn_query(points, k=kq, num_threads=n_jobs)
    dist = np.sqrt(np.maximum(dist, 0)) if metric == "euclidean" else dist
    return idx.astype(np.int64), dist.astype(np.float32)


def _faiss(points: np.ndarray, kq: int, metric: str, seed: int, n_jobs: int,
           nprobe: int = 24) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(max(1, int(n_jobs)))
    n, d = points.shape
    x = points
    if metric == "cosine":
        x = points / np.maximum(np.linalg.norm(points, axis=1, keepdims=True), 1e-12)
        x = np.ascontiguousarray(x, dtype=np.float32)
    nlist = int(max(1, min(4 * np.sqrt(n), n // 39)))
    quant = faiss.IndexFlatL2(d) if metric == "euclidean" else faiss.IndexFlatIP(d)
    ftype = faiss.METRIC_L2 if metric == "euclidean" else faiss.METRIC_INNER_PRODUCT
    index = faiss.IndexIVFFlat(quant, d, nlist, ftype)
    cp = faiss.ClusteringParameters()
    rng = np.random.default_rng(seed)
    train = x[rng.choice(n, size=min(n, 256 * nlist), replace=False)] if n > 256 * nlist else x
    clus = faiss.Clustering(d, nlist, cp)
    clus.seed = int(seed) % (2**31)
    clus.train(np.ascontiguousarray(train), quant)
    index.is_trained = True
    index.add(x)
    index.nprobe = min(nprobe, nlist)
    dist, idx = index.search(x, kq)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:  # too few candidates in the probed cells: search those rows exhaustively
        index.nprobe = nlist
        dist[short], idx[short] = index.search(np.ascontiguousarray(x[short]), kq)
    if metric == "euclidean":
        dist = np.sqrt(np.maximum(dist, 0))
    else:
        dist = 1.0 - dist
    return idx.astype(np.int64), dist.astype(np.float32)


def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray, k: int | None = None) -> float:
    """Mean fraction of each row's exact k nearest neighbours found by the approximate search.

    approx_idx, exact_idx: int ``[n, >=k]`` neighbour indices for the same n query points.
    """
    approx_idx, exact_idx = np.asarray(approx_idx), np.asarray(exact_idx)
    if approx_idx.shape[0] != exact_idx.shape[0]:
        raise ValueError(f"row counts differ: {approx_idx.shape[0]} vs {exact_idx.shape[0]}")
    k = k or exact_idx.shape[1]
    a, e = np.sort(approx_idx[:, :k], axis=1), np.sort(exact_idx[:, :k], axis=1)
    hits = sum(np.intersect1d(ra, re, assume_unique=True).size for ra, re in zip(a, e))
    return hits / (k * e.shape[0])


def exact_neighbors_of(points: np.ndarray, queries: np.ndarray, k: int, metric: str = "euclidean",
                       n_jobs: int = 1) -> np.ndarray:
    """Exact k nearest neighbours (self excluded) of the points with indices ``queries``; int64 ``[q, k]``."""
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, algorithm="brute", n_jobs=n_jobs).fit(points)
    dist, idx = nn.kneighbors(points[queries])
    is_self = idx == np.asarray(queries)[:, None]
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    return idx[~is_self].reshape(len(queries), k).astype(np.int64)


def sampled_recall(points: np.ndarray, approx_idx: np.ndarray, k: int, n_sample: int = 2000, seed: int = 0,
                   metric: str = "euclidean", n_jobs: int = 1) -> float:
    """recall@k of ``approx_idx [N, >=k]`` against exact kNN, on ``n_sample`` random query points."""
    rng = np.random.default_rng(seed)
    q = np.sort(rng.choice(points.shape[0], size=min(n_sample, points.shape[0]), replace=False))
    exact = exact_neighbors_of(np.ascontiguousarray(points, dtype=np.float32), q, k, metric, n_jobs)
    return recall_at_k(approx_idx[q], exact, k)


def _drop_self(idx: np.ndarray, dist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Remove each row's own index (ties can put it anywhere in the row) and keep k columns."""
    n = idx.shape[0]
    is_self = idx == np.arange(n)[:, None]
    # rows where self was not returned (duplicate points): drop the last column instead
    no_self = ~is_self.any(axis=1)
    is_self[no_self, -1] = True
    keep = ~is_self
    out_idx = idx[keep].reshape(n, -1)[:, :k]
    out_dist = dist[keep].reshape(n, -1)[:, :k]
    return out_idx.astype(np.int64), out_dist.astype(np.float32)
