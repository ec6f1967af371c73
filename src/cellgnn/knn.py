"""k-nearest-neighbour search on PCA coordinates.

``knn_search`` returns, for each of N query points, the indices and distances of
its k nearest other points (self excluded), shape ``[N, k]``.
"""

from __future__ import annotations

import numpy as np

from .errors import CellgnnInputError


def knn_search(points: np.ndarray, k: int, metric: str = "euclidean", method: str = "exact",
               seed: int = 0, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Exact kNN with scikit-learn.

    points: float32 ``[N, D]``; returns ``(indices int64 [N, k], distances float32 [N, k])``,
    rows sorted by distance, the point itself excluded.
    """
    n = points.shape[0]
    if k < 1:
        raise CellgnnInputError(f"k must be >= 1, got {k}", field="graph.k", fix="set graph.k to a positive integer")
    if k >= n:
        raise CellgnnInputError(f"k={k} neighbours asked for but only {n} cells in this graph",
                                field="graph.k", fix=f"set graph.k below {n}")
    if method != "exact":
        raise CellgnnInputError(f"unknown kNN method '{method}'", field="graph.knn_method", fix="use 'exact'")
    from sklearn.neighbors import NearestNeighbors

    nn = NearestNeighbors(n_neighbors=k + 1, metric=metric, n_jobs=n_jobs).fit(points)
    dist, idx = nn.kneighbors(points)
    return _drop_self(idx, dist, k)


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
