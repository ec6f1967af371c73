"""Graph stage: train/val/test split (decided once, here, by :mod:`cellgnn.design`) and the kNN cell graph.

``build_graph(adata, cfg, unit, seed)`` returns the graph dict of the contract in
CONTRIBUTING.md for one split unit (``cells``, ``donors`` or ``donor_cv/fold<i>``);
``save_graph`` / ``load_graph`` write and read it, the latter checking every key and shape.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .design import SPLITS, parse_unit, split_cells
from .errors import CellgnnInputError
from .io import torch_save
from .knn import DEFAULT_ANN_THRESHOLD, knn_search

LOG = logging.getLogger(__name__)


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


def correct_batches(pca: np.ndarray, donors: np.ndarray, method: str, seed: int) -> np.ndarray:
    """The PCA the kNN graph is built on ``[N, P]``: as it is (``none``), or Harmony-corrected with
    the donor as the batch (``harmony``; every cell, no labels: a held-out donor is aligned to the
    others the way BBKNN aligned the original study's batches)."""
    if method == "none" or np.unique(donors).size < 2:
        return pca
    if method != "harmony":
        raise CellgnnInputError(f"unknown batch correction '{method}'", field="graph.batch_correction",
                                fix="use none or harmony")
    import harmonypy

    ho = harmonypy.run_harmony(pca.astype(np.float64), pd.DataFrame({"donor": donors}), ["donor"],
                               random_state=seed, verbose=False, ncores=1)
    z = np.asarray(ho.Z_corr)
    return np.ascontiguousarray(z.T if z.shape[0] != pca.shape[0] else z, dtype=np.float32)


def standardize_per_donor(X: np.ndarray, donors: np.ndarray) -> np.ndarray:
    """Each gene centred and scaled to unit variance within each donor ``[N, G]`` (removes a donor's
    shifts; where the label is a donor property it removes the label's between-donor signal too)."""
    out = np.empty_like(X)
    for d in np.unique(donors):
        m = donors == d
        mu, sd = X[m].mean(0), X[m].std(0)
        out[m] = (X[m] - mu) / np.where(sd > 0, sd, 1.0)
    return out


def training_hvgs(adata: ad.AnnData, train: np.ndarray, n_genes: int, n_bins: int = 20) -> np.ndarray:
    """Indices (var order) of the ``n_genes`` most variable genes of the cells ``train`` ``[N]`` bool
    (all genes when there are fewer): the Seurat v2 dispersion ranking on the log-normalized ``X``
    (variance / mean of ``expm1(X)``, log, z-scored within ``n_bins`` bins of mean expression)."""
    if n_genes >= adata.n_vars:
        return np.arange(adata.n_vars)
    X = adata.X[train]
    X = np.expm1(X.toarray() if sp.issparse(X) else np.asarray(X, dtype=np.float64))
    mean = X.mean(axis=0)
    var = X.var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = np.log(np.where(mean > 0, var / np.where(mean > 0, mean, 1.0), np.nan))
    bins = pd.cut(np.log1p(mean), n_bins)
    by_bin = pd.Series(disp).groupby(bins, observed=False)
    mu, sd = by_bin.transform("mean").to_numpy(), by_bin.transform("std").to_numpy()
    z = np.where(np.isfinite(sd) & (sd > 0), (disp - mu) / np.where(sd > 0, sd, 1.0), 0.0)
    z = np.where(np.isfinite(disp), z, -np.inf)
    return np.sort(np.argsort(-z, kind="stable")[:n_genes])


SPARSE_MIN_ENTRIES = 2**27  # graph.sparse_features auto: cells x genes above which x is stored sparse


def use_sparse_features(X, cfg: dict) -> bool:
    """Whether the node features from the gene matrix ``X [N, G]`` are stored sparse (``graph.sparse_features``:
    true, false or auto; auto: X is sparse, non-negative and has more than ``SPARSE_MIN_ENTRIES`` entries).
    Never for the pretrain embedding or with ``donor_standardize`` (both dense by nature)."""
    setting = cfg["sparse_features"]
    dense_only = cfg["node_features"] == "pretrain" or cfg["donor_standardize"]
    if setting is True and dense_only:
        which = "node_features: pretrain" if cfg["node_features"] == "pretrain" else "donor_standardize: true"
        raise CellgnnInputError(f"sparse node features cannot be used with graph.{which}", field="graph.sparse_features",
                                fix="set graph.sparse_features to auto or false")
    if setting is False or dense_only:
        return False
    negative = (X.data.min() if sp.issparse(X) and X.nnz else np.min(X, initial=0.0)) < 0
    if negative:
        if setting is True:
            raise CellgnnInputError("the preprocessed X has negative values, which sparse features cannot scale",
                                    file="preprocessed.h5ad", field="graph.sparse_features",
                                    fix="set graph.sparse_features to auto or false (or preprocess.transform to log1p)")
        return False
    return setting is True or (sp.issparse(X) and X.shape[0] * X.shape[1] > SPARSE_MIN_ENTRIES)


def scale_sparse_features(X, train: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """Sparse node features ``x [N, G]`` (float32 CSR) from non-negative ``X``: each gene divided by its
    maximum over the ``train`` cells ``[N]`` bool and clipped to 1 (genes absent from training: 0), i.e.
    min-max scaling with the minimum fixed at 0. Returns ``(x, feature_min [G] zeros, maximum [G])``."""
    x = sp.csr_matrix(X, dtype=np.float32, copy=True)
    hi = np.asarray(x[train].max(axis=0).todense(), dtype=np.float32).ravel()
    x.data /= np.where(hi > 0, hi, np.inf)[x.indices]
    np.minimum(x.data, 1.0, out=x.data)
    x.eliminate_zeros()
    if x.nnz < 2**31:
        x.indices, x.indptr = x.indices.astype(np.int32), x.indptr.astype(np.int32)
    return x, np.zeros_like(hi), hi


def is_sparse(x) -> bool:
    """Whether node features ``x`` are a scipy sparse matrix (``graph.sparse_features``), not a dense tensor."""
    return sp.issparse(x)


def dense_features(graph: dict, rows=None) -> torch.Tensor:
    """The node features of ``graph`` as a dense float32 tensor ``[N, G]``, or only ``rows`` (indices or a
    bool mask ``[N]``); sparse features are densified here, so callers on large graphs pass rows."""
    from .batching import gather_features

    x = graph["x"]
    if rows is None:
        return torch.from_numpy(x.toarray().astype(np.float32, copy=False)) if is_sparse(x) else x
    rows = torch.as_tensor(rows)
    return gather_features(x, (rows.nonzero().view(-1) if rows.dtype == torch.bool else rows).cpu())


def sort_edges(edge_index: np.ndarray, *attrs: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Sort edges by (target, source); permute each per-edge array the same way.

    edge_index: ``[2, E]`` (row 0 source, row 1 target); attrs: arrays with first dim E.
    """
    order = np.lexsort((edge_index[0], edge_index[1]))
    return edge_index[:, order], tuple(a[order] for a in attrs)


# ---------------------------------------------------------------- full stage
def build_graph(adata: ad.AnnData, cfg: dict, unit: str, seed: int, n_jobs: int = 1,
                embedding: np.ndarray | None = None) -> dict:
    """Split the cells and build the graph dict of the contract (see CONTRIBUTING.md).

    unit: ``cells``, ``donors`` or ``donor_cv/fold<i>``. cfg: the ``graph`` config section
    (``k``, ``metric``, ``n_pcs``, ``self_loops``, ``graph_mode``, ``fractions``, ``cv_folds``,
    ``validation``, ``knn_method``, ``ann_threshold``, ``features``, ``node_features``). n_jobs:
    threads for the kNN search. embedding: the pretrain stage's ``[N, D]`` cell embedding
    (:func:`cellgnn.pretrain.load_embedding`), needed when ``features`` or ``node_features`` is
    ``pretrain``.
    """
    from .config import settings

    cfg = settings("graph", cfg)
    uses = [k for k in ("features", "node_features") if cfg[k] == "pretrain"]
    if uses and embedding is None:
        raise CellgnnInputError("no pretrained embedding given", field=f"graph.{uses[0]}",
                                fix="run the pretrain stage first (the workflow does) and pass its embedding")
    if embedding is not None and embedding.shape[0] != adata.n_obs:
        raise CellgnnInputError(f"the embedding has {embedding.shape[0]} rows for {adata.n_obs} cells",
                                field="obsm.X_cellgnn_pretrain", fix="rerun the pretrain stage on this dataset")
    knn_kw = {"n_jobs": n_jobs, "ann_threshold": cfg["ann_threshold"]}
    if "X_pca" not in adata.obsm:
        raise CellgnnInputError("no obsm['X_pca']", file="preprocessed.h5ad", field="obsm.X_pca",
                                fix="run the preprocess stage first")
    mode, fold = parse_unit(unit)
    split = split_cells(adata.obs, mode, cfg["fractions"], seed, fold, cfg["cv_folds"], cfg["validation"])
    n_pcs = adata.obsm["X_pca"].shape[1]
    if cfg["n_pcs"] > n_pcs:
        raise CellgnnInputError(f"graph.n_pcs={cfg['n_pcs']} but the preprocessed data has {n_pcs} PCs",
                                file="preprocessed.h5ad", field="graph.n_pcs",
                                fix=f"set graph.n_pcs <= {n_pcs} (or raise preprocess.n_pcs)")
    pca = np.ascontiguousarray(adata.obsm["X_pca"][:, : cfg["n_pcs"]], dtype=np.float32)
    donors = adata.obs["donor"].astype(str).to_numpy()
    pca = correct_batches(pca, donors, cfg["batch_correction"], seed)
    coords = pca if cfg["features"] == "pca" else correct_batches(
        np.ascontiguousarray(embedding, dtype=np.float32), donors, cfg["batch_correction"], seed)
    n = adata.n_obs
    if cfg["graph_mode"] == "transductive":
        blocks = [np.arange(n)]
    elif cfg["graph_mode"] == "inductive":
        blocks = [np.flatnonzero(split == s) for s in SPLITS]
    else:
        raise CellgnnInputError(f"unknown graph mode '{cfg['graph_mode']}'", field="graph.graph_mode",
                                fix="use 'inductive' or 'transductive'")
    parts_ei, parts_w = [], []
    for nodes in blocks:
        k = min(cfg["k"], nodes.size - 1)
        if k < cfg["k"]:
            LOG.warning("field 'graph.k': a graph block of %s has %d cells, so each cell gets %d neighbours, not %d",
                        unit, nodes.size, k, cfg["k"])
        if k < 1:
            continue
        ei, w = knn_graph(coords[nodes], k, cfg["metric"], cfg["self_loops"], cfg["knn_method"], seed, **knn_kw)
        parts_ei.append(nodes[ei])
        parts_w.append(w)
    edge_index, (edge_weight,) = sort_edges(np.hstack(parts_ei), np.concatenate(parts_w))
    return assemble_graph(adata, split, edge_index, edge_weight, cfg, unit, seed, pca=pca, embedding=embedding)


def assemble_graph(adata: ad.AnnData, split: np.ndarray, edge_index: np.ndarray, edge_weight: np.ndarray, cfg: dict,
                   unit: str, seed: int, pca: np.ndarray | None = None, embedding: np.ndarray | None = None) -> dict:
    """The graph dict of the contract from the cells' ``split`` (``train``/``val``/``test`` ``[N]``) and
    their sorted edges (``edge_index [2, E]``, ``edge_weight [E]``): node features min-max scaled on
    the training cells, labels, masks and names. cfg: the ``graph`` section (``n_pcs``,
    ``graph_mode``, ``self_loops``, ``batch_correction``, ``donor_standardize``, ``hvg_training``,
    ``features``, ``node_features``). pca: the ``[N, n_pcs]`` PCA after batch correction (computed from
    ``obsm["X_pca"]`` when None); embedding: the pretrain stage's ``[N, D]`` embedding when
    ``node_features`` is ``pretrain``."""
    from .config import settings

    cfg = settings("graph", cfg)
    mode, fold = parse_unit(unit)
    n = adata.n_obs
    donor_of_cell = adata.obs["donor"].astype(str).to_numpy()
    if pca is None:
        pca = correct_batches(np.ascontiguousarray(adata.obsm["X_pca"][:, : cfg["n_pcs"]], dtype=np.float32),
                              donor_of_cell, cfg["batch_correction"], seed)
    train = split == "train"
    if cfg["node_features"] == "pretrain":
        X = np.asarray(embedding, dtype=np.float32)
        genes = [f"pretrain_{i}" for i in range(X.shape[1])]
    else:
        keep = (training_hvgs(adata, train, cfg["hvg_training"]) if cfg["hvg_training"]
                else np.arange(adata.n_vars))
        X = adata.X[:, keep] if keep.size < adata.n_vars else adata.X
        genes = [str(g) for g in adata.var_names[keep]]
    if use_sparse_features(X, cfg):
        x, lo, hi = scale_sparse_features(X, train)
    else:
        X = (X.toarray() if sp.issparse(X) else np.asarray(X)).astype(np.float32)
        if cfg["donor_standardize"]:
            X = standardize_per_donor(X, donor_of_cell)
        lo, hi = X[train].min(axis=0), X[train].max(axis=0)
        rng_ = np.where(hi > lo, hi - lo, 1.0)
        x = torch.from_numpy(np.ascontiguousarray(np.clip((X - lo) / rng_, 0.0, 1.0) * (hi > lo), dtype=np.float32))

    classes = [str(c) for c in adata.obs["label"].cat.categories]
    donors = [str(c) for c in adata.obs["donor"].cat.categories]
    has_ct = "cell_type" in adata.obs
    cell_types = [str(c) for c in adata.obs["cell_type"].cat.categories] if has_ct else ["unknown"]
    samples = adata.obs["sample" if "sample" in adata.obs else "donor"].astype(str).astype("category")
    graph = {
        "x": x,
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
        "sample": torch.from_numpy(samples.cat.codes.to_numpy().astype(np.int64)),
        "feature_min": torch.from_numpy(lo.astype(np.float32)),
        "feature_range": torch.from_numpy(np.where(hi > lo, hi - lo, 0.0).astype(np.float32)),
        "classes": classes, "genes": genes, "donors": donors,
        "cell_types": cell_types, "has_cell_types": bool(has_ct), "samples": [str(c) for c in samples.cat.categories],
        "has_samples": "sample" in adata.obs, "cell_ids": [str(c) for c in adata.obs_names],
        "split_mode": mode, "fold": int(fold), "unit": unit, "graph_mode": cfg["graph_mode"],
        "self_loops": bool(cfg["self_loops"]), "seed": int(seed),
        "features": cfg["features"], "node_features": cfg["node_features"],
    }
    LOG.info("graph %s/%s: %d cells (train %d, val %d, test %d), %d edges", unit, cfg["graph_mode"], n,
             int(graph["train_mask"].sum()), int(graph["val_mask"].sum()), int(graph["test_mask"].sum()),
             edge_index.shape[1])
    return graph


def save_graph(graph: dict, path: str | Path) -> None:
    validate_graph(graph, str(path))
    torch_save(graph, path)


REQUIRED = {"x": 2, "pca": 2, "y": 1, "edge_index": 2, "edge_weight": 1, "train_mask": 1, "val_mask": 1,
            "test_mask": 1, "donor": 1, "cell_type": 1, "sample": 1}


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
        if graph[key].ndim != ndim:
            raise CellgnnInputError(f"expected {ndim} dims, got shape {tuple(graph[key].shape)}", file=where, field=key,
                                    fix="rerun the graph stage")
    n = graph["x"].shape[0]
    for key in ("pca", "y", "train_mask", "val_mask", "test_mask", "donor", "cell_type", "sample"):
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


def graph_fingerprint(graph: dict) -> str:
    """Short hash of a graph's cells, genes, classes and split: tells datasets and splits apart."""
    h = hashlib.sha256()
    for key in ("cell_ids", "genes", "classes"):
        h.update("\x1f".join(map(str, graph.get(key, []))).encode())
        h.update(b"\x1e")
    h.update(str(graph.get("split_mode")).encode())
    for key in ("train_mask", "test_mask"):
        h.update(graph[key].numpy().tobytes())
    return h.hexdigest()[:16]


def add_synthetic_nodes(graph: dict, x_syn: np.ndarray, y_syn: np.ndarray, k: int = 15,
                        n_pcs: int = 50, seed: int = 0) -> dict:
    """Return a copy of ``graph`` with synthetic TRAINING nodes appended (``synthetic_mask`` marks them).

    Each synthetic node gets edges to and from its ``k`` nearest real training nodes in a
    PCA (fit on real training node features), weight 1, plus a self-loop when the graph has
    them; edges are re-sorted by (target, source).
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    n, s = graph["x"].shape[0], len(x_syn)
    if s == 0:
        return {**graph, "synthetic_mask": torch.zeros(n, dtype=torch.bool)}
    train_idx = np.flatnonzero(graph["train_mask"].numpy())
    xt = dense_features(graph, train_idx).numpy()
    pca = PCA(n_components=int(min(n_pcs, xt.shape[1], len(xt) - 1)), random_state=seed).fit(xt)
    k = int(min(k, len(train_idx)))
    nn_ = NearestNeighbors(n_neighbors=k).fit(pca.transform(xt))
    _, nbr = nn_.kneighbors(pca.transform(x_syn))
    nbr = train_idx[nbr]  # [S, k] real training nodes
    new = n + np.arange(s)
    src = np.concatenate([np.repeat(new, k), nbr.ravel()])
    dst = np.concatenate([nbr.ravel(), np.repeat(new, k)])
    if graph.get("self_loops", True):
        src, dst = np.concatenate([src, new]), np.concatenate([dst, new])
    ei = np.hstack([graph["edge_index"].numpy(), np.vstack([src, dst])]).astype(np.int64)
    ew = np.concatenate([graph["edge_weight"].numpy(), np.ones(src.size, np.float32)])
    ei, (ew,) = sort_edges(ei, ew)
    pca_syn = graph["pca"].numpy()[nbr].mean(axis=1)  # graph PCA coordinates: mean of the neighbours'
    cat = lambda a, b: torch.cat([a, torch.as_tensor(b, dtype=a.dtype)])  # noqa: E731
    out = dict(graph)
    out.update(
        x=(sp.vstack([graph["x"], sp.csr_matrix(np.asarray(x_syn, dtype=np.float32))], format="csr")
           if is_sparse(graph["x"]) else cat(graph["x"], x_syn)), pca=cat(graph["pca"], pca_syn), y=cat(graph["y"], y_syn),
        edge_index=torch.from_numpy(ei), edge_weight=torch.from_numpy(ew),
        train_mask=cat(graph["train_mask"], np.ones(s, bool)),
        val_mask=cat(graph["val_mask"], np.zeros(s, bool)), test_mask=cat(graph["test_mask"], np.zeros(s, bool)),
        donor=cat(graph["donor"], np.zeros(s, np.int64)), cell_type=cat(graph["cell_type"], np.zeros(s, np.int64)),
        sample=cat(graph["sample"], np.zeros(s, np.int64)),
        cell_ids=list(graph["cell_ids"]) + [f"synthetic{i:06d}" for i in range(s)],
        synthetic_mask=torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(s, dtype=torch.bool)]),
    )
    return out


def load_topup(path: str | Path, graph: dict) -> dict:
    """The synthetic training cells of :func:`cellgnn.augment.graph_topup.run_topup`, checked against ``graph``."""
    try:
        topup = torch.load(path, weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt file
        raise CellgnnInputError(f"cannot read top-up cells ({e})", file=str(path),
                                fix="delete it and rerun rule augment_topup") from e
    if topup.get("classes") != list(graph["classes"]) or topup.get("graph_fingerprint") != graph_fingerprint(graph):
        raise CellgnnInputError("top-up cells were made for another graph", file=str(path),
                                fix="rerun rule augment_topup for this split")
    return topup
