"""Graph stage: train/val/test split (decided once, here) and the kNN cell graph.

``build_graph(adata, cfg, split_mode, seed)`` returns the graph dict of the contract
in CONTRIBUTING.md; ``save_graph`` / ``load_graph`` write and read it, the latter
checking every key and shape.
"""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .errors import CellgnnInputError
from .io import torch_save
from .knn import DEFAULT_ANN_THRESHOLD, knn_search

LOG = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- splits
def split_cells(obs: pd.DataFrame, mode: str, fractions: dict, seed: int) -> np.ndarray:
    """Assign each cell to ``train`` / ``val`` / ``test``; returns a string array ``[N]``.

    ``cells``: stratified by label. ``donors``: whole donors held out; when the label is
    constant within donors, donors are stratified by label so every class has a donor on
    each side. Raises when a class would be missing from train or test.
    """
    fr = [float(fractions[s]) for s in SPLITS]
    if any(f <= 0 for f in fr) or abs(sum(fr) - 1.0) > 1e-6:
        raise CellgnnInputError(f"split fractions {dict(zip(SPLITS, fr))} must be > 0 and sum to 1",
                                field="graph.fractions", fix="e.g. train: 0.7, val: 0.15, test: 0.15")
    rng = np.random.default_rng(seed)
    labels = obs["label"].astype(str).to_numpy()
    out = np.empty(len(obs), dtype=object)
    if mode == "cells":
        for lab in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == lab))
            n_test = max(1, int(round(fr[2] * idx.size)))
            n_val = max(1, int(round(fr[1] * idx.size)))
            if idx.size < 3:
                raise CellgnnInputError(f"class '{lab}' has {idx.size} cells, too few for train/val/test",
                                        field="obs.label", fix="drop that class or merge it with another")
            out[idx[:n_test]] = "test"
            out[idx[n_test:n_test + n_val]] = "val"
            out[idx[n_test + n_val:]] = "train"
    elif mode == "donors":
        donors = obs["donor"].astype(str).to_numpy()
        uniq = np.unique(donors)
        if uniq.size < 3:
            raise CellgnnInputError(f"split mode 'donors' needs >= 3 donors, found {uniq.size}",
                                    field="graph.split_modes", fix="use split mode 'cells' for this dataset")
        per_donor = pd.Series(labels).groupby(donors).nunique()
        if (per_donor == 1).all():  # label is a donor property: stratify donors by label
            donor_label = pd.Series(labels).groupby(donors).first()
            for lab, group in donor_label.groupby(donor_label):
                ds = rng.permutation(group.index.to_numpy())
                if ds.size < 2:
                    raise CellgnnInputError(f"class '{lab}' has a single donor ({ds[0]}): it cannot be in both "
                                            "train and test when donors are held out", field="graph.split_modes",
                                            fix="add donors of that class or use split mode 'cells'")
                n_test = max(1, int(round(fr[2] * ds.size)))
                n_val = int(round(fr[1] * ds.size)) if ds.size >= 3 else 0
                n_val = max(n_val, 1) if ds.size - n_test >= 2 else 0
                _assign_donors(out, donors, ds[:n_test], "test")
                _assign_donors(out, donors, ds[n_test:n_test + n_val], "val")
                _assign_donors(out, donors, ds[n_test + n_val:], "train")
        else:
            ds = rng.permutation(uniq)
            n_test = max(1, int(round(fr[2] * ds.size)))
            n_val = max(1, int(round(fr[1] * ds.size)))
            _assign_donors(out, donors, ds[:n_test], "test")
            _assign_donors(out, donors, ds[n_test:n_test + n_val], "val")
            _assign_donors(out, donors, ds[n_test + n_val:], "train")
    else:
        raise CellgnnInputError(f"unknown split mode '{mode}'", field="graph.split_modes",
                                fix="use 'cells' or 'donors'")
    all_classes = set(labels)
    for s in ("train", "test"):
        missing = sorted(all_classes - set(labels[out == s]))
        if missing:
            raise CellgnnInputError(f"the {s} split has no cells of class(es) {missing} in split mode '{mode}'",
                                    field="graph.split_modes",
                                    fix="add donors, change graph.seed, or use split mode 'cells'")
    return out.astype(str)


def _assign_donors(out: np.ndarray, donors: np.ndarray, chosen, name: str) -> None:
    out[np.isin(donors, np.asarray(chosen))] = name


# ---------------------------------------------------------------- kNN graph
def knn_graph(points: np.ndarray, k: int, metric: str = "euclidean", self_loops: bool = True,
              method: str = "exact", seed: int = 0, n_jobs: int = 1,
              ann_threshold: int = DEFAULT_ANN_THRESHOLD) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric weighted kNN graph on ``points [N, D]``.

    Weights are UMAP-style fuzzy memberships ``exp(-(d - rho_i) / sigma_i)`` (rho: distance to
    the nearest neighbour, sigma: mean excess distance), symmetrized by fuzzy union
    ``a + b - ab``, so they lie in (0, 1]. Returns ``edge_index int64 [2, E]`` (both
    directions, sorted by target then source) and ``edge_weight float32 [E]``. ``method``,
    ``n_jobs``, ``ann_threshold``: see :func:`cellgnn.knn.knn_search`.
    """
    n = points.shape[0]
    idx, dist = knn_search(points, k, metric=metric, method=method, seed=seed, n_jobs=n_jobs,
                           ann_threshold=ann_threshold)
    rho = dist[:, :1]
    excess = np.maximum(dist - rho, 0.0)
    sigma = np.maximum(excess.mean(axis=1, keepdims=True), 1e-8)
    w = np.exp(-excess / sigma).astype(np.float64)
    a = sp.csr_matrix((w.ravel(), (np.repeat(np.arange(n), k), idx.ravel())), shape=(n, n))
    a = (a + a.T - a.multiply(a.T)).tocsr()
    diag = a.diagonal()
    if diag.any():  # knn_search excludes each point itself; keep the graph loop-free all the same
        a = (a - sp.diags(diag)).tocsr()
    a.eliminate_zeros()
    if self_loops:
        a = (a + sp.identity(n, format="csr")).tocsr()
    a.sort_indices()
    # a is symmetric, so row i lists the sources j of the edges j -> i: CSR order is the
    # (target, source) order of sort_edges, without sorting E edges
    dst = np.repeat(np.arange(n, dtype=np.int64), np.diff(a.indptr))
    ei = np.vstack([a.indices.astype(np.int64), dst])
    return ei, a.data.astype(np.float32)


def sort_edges(edge_index: np.ndarray, *attrs: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Sort edges by (target, source); permute each per-edge array the same way.

    edge_index: ``[2, E]`` (row 0 source, row 1 target); attrs: arrays with first dim E.
    """
    order = np.lexsort((edge_index[0], edge_index[1]))
    return edge_index[:, order], tuple(a[order] for a in attrs)


# ---------------------------------------------------------------- full stage
def build_graph(adata: ad.AnnData, cfg: dict, split_mode: str, seed: int, n_jobs: int = 1) -> dict:
    """Split the cells and build the graph dict of the contract (see CONTRIBUTING.md).

    cfg keys: ``k``, ``metric``, ``n_pcs``, ``self_loops``, ``graph_mode``
    (``inductive`` | ``transductive``), ``fractions``, ``knn_method``, ``ann_threshold``.
    n_jobs: threads for the kNN search.
    """
    knn_kw = {"n_jobs": n_jobs, "ann_threshold": cfg.get("ann_threshold", DEFAULT_ANN_THRESHOLD)}
    if "X_pca" not in adata.obsm:
        raise CellgnnInputError("no obsm['X_pca']", file="preprocessed.h5ad", field="obsm.X_pca",
                                fix="run the preprocess stage first")
    split = split_cells(adata.obs, split_mode, cfg["fractions"], seed)
    pca = np.ascontiguousarray(adata.obsm["X_pca"][:, : cfg["n_pcs"]], dtype=np.float32)
    n = adata.n_obs
    if cfg["graph_mode"] == "transductive":
        edge_index, edge_weight = knn_graph(pca, cfg["k"], cfg["metric"], cfg["self_loops"], cfg["knn_method"], seed,
                                              **knn_kw)
    elif cfg["graph_mode"] == "inductive":
        parts_ei, parts_w = [], []
        for s in SPLITS:
            nodes = np.flatnonzero(split == s)
            k = min(cfg["k"], nodes.size - 1)
            ei, w = knn_graph(pca[nodes], k, cfg["metric"], cfg["self_loops"], cfg["knn_method"], seed, **knn_kw)
            parts_ei.append(nodes[ei])
            parts_w.append(w)
        edge_index, (edge_weight,) = sort_edges(np.hstack(parts_ei), np.concatenate(parts_w))
    else:
        raise CellgnnInputError(f"unknown graph mode '{cfg['graph_mode']}'", field="graph.graph_mode",
                                fix="use 'inductive' or 'transductive'")

    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    X = X.astype(np.float32)
    train = split == "train"
    lo, hi = X[train].min(axis=0), X[train].max(axis=0)
    rng_ = np.where(hi > lo, hi - lo, 1.0)
    x = np.clip((X - lo) / rng_, 0.0, 1.0) * (hi > lo)

    classes = [str(c) for c in adata.obs["label"].cat.categories]
    donors = [str(c) for c in adata.obs["donor"].cat.categories]
    has_ct = "cell_type" in adata.obs
    cell_types = [str(c) for c in adata.obs["cell_type"].cat.categories] if has_ct else ["unknown"]
    graph = {
        "x": torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)),
        "pca": torch.from_numpy(pca),
        "y": torch.from_numpy(adata.obs["label"].cat.codes.to_numpy().astype(np.int64)),
        "edge_index": torch.from_numpy(edge_index),
        "edge_weight": torch.from_numpy(edge_weight),
        "train_mask": torch.from_numpy(split == "train"),
        "val_mask": torch.from_numpy(split == "val"),
        "test_mask": torch.from_numpy(split == "test"),
        "donor": torch.from_numpy(adata.obs["donor"].cat.codes.to_numpy().astype(np.int64)),
        "cell_type": torch.from_numpy(adata.obs["cell_type"].cat.codes.to_numpy().astype(np.int64)
                                      if has_ct else np.zeros(n, dtype=np.int64)),
        "classes": classes, "genes": [str(g) for g in adata.var_names], "donors": donors,
        "cell_types": cell_types, "cell_ids": [str(c) for c in adata.obs_names],
        "split_mode": split_mode, "graph_mode": cfg["graph_mode"], "self_loops": bool(cfg["self_loops"]),
        "seed": int(seed),
    }
    LOG.info("graph %s/%s: %d cells (train %d, val %d, test %d), %d edges", split_mode, cfg["graph_mode"], n,
             int(graph["train_mask"].sum()), int(graph["val_mask"].sum()), int(graph["test_mask"].sum()),
             edge_index.shape[1])
    return graph


def save_graph(graph: dict, path: str | Path) -> None:
    validate_graph(graph, str(path))
    torch_save(graph, path)


REQUIRED = {"x": 2, "pca": 2, "y": 1, "edge_index": 2, "edge_weight": 1, "train_mask": 1, "val_mask": 1,
            "test_mask": 1, "donor": 1, "cell_type": 1}


def load_graph(path: str | Path) -> dict:
    """Load a graph file written by :func:`save_graph`, checking keys and shapes."""
    try:
        graph = torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a corrupt file
        raise CellgnnInputError(f"cannot read graph file ({e})", file=str(path),
                                fix="delete it and rerun the graph stage") from e
    validate_graph(graph, str(path))
    return graph


def validate_graph(graph: dict, where: str) -> None:
    """Check the graph dict against the contract; raise naming the key that is wrong."""
    if not isinstance(graph, dict):
        raise CellgnnInputError("not a cellgnn graph dict", file=where, fix="rerun the graph stage")
    for key, ndim in REQUIRED.items():
        if key not in graph:
            raise CellgnnInputError("missing key", file=where, field=key, fix="rerun the graph stage")
        if graph[key].dim() != ndim:
            raise CellgnnInputError(f"expected {ndim} dims, got shape {tuple(graph[key].shape)}", file=where, field=key,
                                    fix="rerun the graph stage")
    n = graph["x"].shape[0]
    for key in ("pca", "y", "train_mask", "val_mask", "test_mask", "donor", "cell_type"):
        if graph[key].shape[0] != n:
            raise CellgnnInputError(f"{graph[key].shape[0]} rows, expected {n} (one per cell)", file=where, field=key,
                                    fix="rerun the graph stage")
    ei = graph["edge_index"]
    if ei.shape[0] != 2 or graph["edge_weight"].shape[0] != ei.shape[1]:
        raise CellgnnInputError("edge_index must be [2, E] with one weight per edge", file=where, field="edge_index",
                                fix="rerun the graph stage")
    if ei.numel() and (int(ei.min()) < 0 or int(ei.max()) >= n):
        raise CellgnnInputError("edge_index refers to nodes outside [0, N)", file=where, field="edge_index",
                                fix="rerun the graph stage")
    masks = graph["train_mask"].long() + graph["val_mask"].long() + graph["test_mask"].long()
    if not bool((masks == 1).all()):
        raise CellgnnInputError("train/val/test masks must be disjoint and cover every cell", file=where,
                                field="train_mask", fix="rerun the graph stage")
