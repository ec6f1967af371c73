"""The cells' kNN graph over all cells, in scanpy's layout (``obsp`` + ``uns["neighbors"]``).

:func:`neighbors` searches the ``graph.k`` nearest neighbours of every cell in the first
``graph.n_pcs`` principal components with :func:`cellgnn.knn.knn_search` (exact, HNSW or
NN-descent as ``graph.knn_method`` says) and hands them to ``scanpy.pp.neighbors`` through a
kNN transformer, so the connectivities (UMAP's fuzzy union), ``obsp["distances"]`` and
``uns["neighbors"]`` are scanpy's own: ``sc.tl.umap``, ``sc.tl.leiden`` and ``sc.tl.paga`` read
them without recomputing anything. The figures' UMAP (rule ``umap_embedding``) is computed
from this graph, and the results file (``cellgnn.h5ad``) carries it.

Unlike the models' graphs (one per split unit; ``inductive`` ones have no edges between
train, validation and test cells) this graph joins all cells: it is for looking at the data.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


class KnnTransformer:
    """A scikit-learn-style kNN transformer over :func:`cellgnn.knn.knn_search` for
    ``scanpy.pp.neighbors(transformer=...)``.

    n_neighbors: scanpy's count, the cell itself included (``k + 1``). ``fit_transform(X)``
    returns the CSR distance matrix ``[N, N]`` with the ``n_neighbors - 1`` other cells of each
    row, nearest first.
    """

    def __init__(self, n_neighbors: int = 13, metric: str = "euclidean", method: str = "exact", seed: int = 0,
                 n_jobs: int = 1, ann_threshold: int | None = None):
        self.n_neighbors, self.metric, self.method = n_neighbors, metric, method
        self.seed, self.n_jobs, self.ann_threshold = seed, n_jobs, ann_threshold

    def get_params(self, deep: bool = True) -> dict:
        return {"n_neighbors": self.n_neighbors, "metric": self.metric, "method": self.method, "seed": self.seed,
                "n_jobs": self.n_jobs, "ann_threshold": self.ann_threshold}

    def set_params(self, **params) -> KnnTransformer:
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def fit(self, x, y=None) -> KnnTransformer:
        self.n_samples_fit_ = x.shape[0]
        return self

    def transform(self, x) -> sp.csr_matrix:
        from .knn import DEFAULT_ANN_THRESHOLD, knn_search

        n = x.shape[0]
        k = self.n_neighbors - 1
        idx, dist = knn_search(np.asarray(x, dtype=np.float32), k, metric=self.metric, method=self.method,
                               seed=self.seed, n_jobs=self.n_jobs,
                               ann_threshold=self.ann_threshold or DEFAULT_ANN_THRESHOLD)
        # rows keep their nearest-first order (scanpy reads the neighbours off the CSR arrays)
        return sp.csr_matrix((dist.ravel().astype(np.float32), idx.ravel(), np.arange(0, n * k + 1, k)),
                             shape=(n, n))

    def fit_transform(self, x, y=None) -> sp.csr_matrix:
        return self.fit(x).transform(x)


def neighbors(adata, k: int | None = None, n_pcs: int | None = None, metric: str | None = None,
              method: str | None = None, seed: int | None = None, n_jobs: int = 1, ann_threshold: int | None = None):
    """Write the kNN graph of all cells into ``adata`` in scanpy's layout; returns ``adata``.

    adata: AnnData with ``obsm["X_pca"]``. k: neighbours of each cell besides itself (scanpy's
    ``n_neighbors`` is ``k + 1``); k, n_pcs, metric, method (``graph.knn_method``),
    ann_threshold: default to the config schema's ``graph`` section, seed to its ``seed``.
    Writes ``obsp["distances"]`` (``[N, N]``, k entries per row, PCA-space distance),
    ``obsp["connectivities"]`` (``[N, N]``, symmetric UMAP fuzzy-union weights in (0, 1]) and
    ``uns["neighbors"]`` (scanpy's keys; ``params`` adds ``knn_method``).
    """
    import scanpy as sc

    from .config import schema_defaults, settings
    from .errors import CellgnnInputError

    cfg = settings("graph", {key: v for key, v in (("k", k), ("n_pcs", n_pcs), ("metric", metric),
                                                   ("knn_method", method), ("ann_threshold", ann_threshold))
                             if v is not None})
    seed = schema_defaults()["seed"] if seed is None else seed
    if "X_pca" not in adata.obsm:
        raise CellgnnInputError("no obsm['X_pca']", file="AnnData", field="obsm.X_pca",
                                fix="run cellgnn.pp.prepare (or scanpy.pp.pca) first")
    have = adata.obsm["X_pca"].shape[1]
    if cfg["n_pcs"] > have:
        raise CellgnnInputError(f"n_pcs={cfg['n_pcs']} but obsm['X_pca'] has {have} components", file="AnnData",
                                field="graph.n_pcs", fix=f"use n_pcs <= {have}")
    if cfg["k"] >= adata.n_obs:
        raise CellgnnInputError(f"k={cfg['k']} neighbours but only {adata.n_obs} cells", file="AnnData",
                                field="graph.k", fix=f"use k < {adata.n_obs}")
    transformer = KnnTransformer(cfg["k"] + 1, cfg["metric"], cfg["knn_method"], seed, n_jobs, cfg["ann_threshold"])
    sc.pp.neighbors(adata, use_rep="X_pca", n_pcs=cfg["n_pcs"], transformer=transformer, metric=cfg["metric"],
                    random_state=seed)
    adata.uns["neighbors"]["params"]["knn_method"] = cfg["knn_method"]
    return adata
