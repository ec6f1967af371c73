"""ACTIVA augmentation inside the graph model (model name ``gat_activa``).

1. :func:`make_topup`: ACTIVA is trained on the **training** cells of a graph split
   (populations = the graph's prediction classes, counts of all graph genes normalized to
   ``target_sum``). Every rare class (fewer training cells than ``rare_fraction`` × the
   largest class) is topped up to that level (at most ``max_per_class`` cells) with cells
   generated around its own training cells (posterior sampling, counts from ACTIVA's
   observation model, ACTINN-filtered). The
   synthetic counts are mapped into the graph's node-feature space exactly as real cells
   were (preprocess normalization + transform, then the graph's min–max scaling fitted on
   the real training cells, recovered from ``preprocessed.h5ad`` and checked against the
   graph's own ``x``).
2. :func:`cellgnn.graph.add_synthetic_nodes`: the synthetic cells become training nodes joined to their
   ``k`` nearest real **training** cells (both directions) in a PCA of the training cells'
   node features. They are never in the validation or test masks, and no edge links them
   to validation or test cells.
3. The train stage (:func:`cellgnn.train.run_train` with ``topup``) trains the GAT on the
   topped-up graph through the same path as every model, evaluates it on the real test cells
   and reports its per-class F1 next to the plain GAT's of the same split and seed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import CellgnnInputError
from ..graph import dense_features
from .activa import ActivaConfig, ActivaTrainer, generate
from .data import library_normalize

LOG = logging.getLogger("cellgnn.augment.graph_topup")


def _node_feature_map(adata, graph: dict, file: str):
    """Return ``f(counts [S, G]) -> node features [S, G]`` reproducing the graph's scaling."""
    pre = adata.uns.get("preprocess", {})
    target, transform = float(pre.get("target_sum", 1e4)), pre.get("transform", "log1p")
    if list(adata.var_names) != list(graph["genes"]):
        raise CellgnnInputError("graph genes differ from preprocessed.h5ad genes", file=file, field="genes",
                                fix="rebuild the graph from this preprocessed.h5ad")

    def transformed(counts: np.ndarray) -> np.ndarray:
        x = library_normalize(counts, target).astype(np.float64)
        if transform == "log1p":
            return np.log1p(x)
        if transform == "sqrt":
            return np.sqrt(x)
        return x

    train = np.flatnonzero(graph["train_mask"].numpy())
    lo, span = graph["feature_min"].numpy(), graph["feature_range"].numpy()

    def to_nodes(counts: np.ndarray) -> np.ndarray:
        scaled = (transformed(counts) - lo) / np.where(span > 0, span, 1.0)
        return (np.clip(scaled, 0.0, 1.0) * (span > 0)).astype(np.float32)

    check = to_nodes(_counts(adata)[train[:50]])
    if not np.allclose(check, dense_features(graph, train[:50]).numpy(), atol=1e-3):
        raise CellgnnInputError("cannot reproduce the graph's node features from preprocessed.h5ad",
                                file=file, field="x", fix="rebuild the graph from this preprocessed.h5ad")
    return to_nodes


def _counts(adata) -> np.ndarray:
    c = adata.layers["counts"]
    return c.toarray() if sp.issparse(c) else np.asarray(c)


def make_topup(adata, graph: dict, activa_cfg: ActivaConfig, rare_fraction: float = 0.5,
               max_per_class: int = 300, accept_threshold: float = 0.5, target_sum: float = 20000.0,
               file: str = "preprocessed.h5ad", progress: bool = True) -> dict:
    """Synthetic training cells for the rare classes of ``graph`` (see module docstring).

    Returns ``{"x": float32 [S, G] node features, "y": int64 [S], "n_per_class": {class: n},
    "classes": [...], "activa_history": [...]}``.
    """
    if "counts" not in adata.layers:
        raise CellgnnInputError("no layer 'counts'", file=file, field="layers",
                                fix="run the preprocess stage, which keeps raw counts in layers['counts']")
    if not 0 < rare_fraction <= 1:
        raise CellgnnInputError(f"rare_fraction must lie in (0, 1], got {rare_fraction}",
                                field="augment.graph_model.rare_fraction")
    pos = {c: i for i, c in enumerate(adata.obs_names)}
    if any(c not in pos for c in graph["cell_ids"]):
        raise CellgnnInputError("graph cells missing from preprocessed.h5ad", file=file, field="obs_names",
                                fix="rebuild the graph from this preprocessed.h5ad")
    adata = adata[[pos[c] for c in graph["cell_ids"]]]
    if set(graph["genes"]) < set(adata.var_names):  # graph.hvg_training: the graph's genes only
        adata = adata[:, list(graph["genes"])]
    to_nodes = _node_feature_map(adata, graph, file)
    train = graph["train_mask"].numpy()
    y = graph["y"].numpy()
    classes = list(graph["classes"])
    counts_tr = _counts(adata)[train]
    lib_tr = counts_tr.sum(axis=1).astype(np.float64)
    has_counts = lib_tr > 0
    x_tr = library_normalize(counts_tr, target_sum)
    y_tr = y[train]
    sizes = np.bincount(y_tr, minlength=len(classes))
    level = int(np.floor(rare_fraction * sizes.max()))
    want = {c: int(min(max_per_class, level - sizes[c])) for c in range(len(classes))
            if 0 < sizes[c] < level}
    out = {"x": np.zeros((0, adata.n_vars), np.float32), "y": np.zeros(0, np.int64), "classes": classes,
           "n_per_class": {classes[c]: 0 for c in range(len(classes))}, "activa_history": []}
    if not want:
        LOG.info("no rare class below %.2f of the largest; nothing to top up", rare_fraction)
        return out
    trainer = ActivaTrainer(x_tr[has_counts], lib_tr[has_counts], y_tr[has_counts], classes, activa_cfg,
                            genes=list(adata.var_names), target_sum=target_sum)
    trainer.fit(progress=progress)
    xs, ys = [], []
    for c, n in want.items():
        x_pop = x_tr[y_tr == c]
        try:
            cells = generate(trainer.model, n, classes, classes[c], "posterior", x_population=x_pop,
                             threshold=accept_threshold, max_draws=100 * n, seed=activa_cfg.seed + c)
        except CellgnnInputError as err:
            LOG.warning("%s; using unfiltered posterior samples for class %s", err, classes[c])
            cells = generate(trainer.model, n, classes, classes[c], "posterior", x_population=x_pop,
                             threshold=0.0, seed=activa_cfg.seed + c)
        xs.append(to_nodes(cells))
        ys.append(np.full(n, c, dtype=np.int64))
        out["n_per_class"][classes[c]] = n
    out.update(x=np.vstack(xs), y=np.concatenate(ys), activa_history=trainer.history)
    return out


def run_topup(preprocessed: str | Path, graph_path: str | Path, output: str | Path, cfg: dict,
              progress: bool = True) -> dict:
    """Stage entry: write the synthetic training cells of one graph split (``torch.save`` dict).

    Runs on one thread (torch and BLAS): the networks are small.
    """
    import anndata as ad
    from threadpoolctl import threadpool_limits

    from ..graph import graph_fingerprint, load_graph
    from ..io import torch_save
    from ..utils import set_threads
    from .stage import configs_from

    set_threads(1)
    gm = cfg.get("graph_model", {})
    activa_cfg, _, _ = configs_from(cfg)
    activa_cfg = replace(activa_cfg, epochs=gm.get("epochs", activa_cfg.epochs),
                         warmup_epochs=min(activa_cfg.warmup_epochs, gm.get("epochs", activa_cfg.epochs)))
    graph = load_graph(graph_path)
    with threadpool_limits(1, user_api="blas"):
        topup = make_topup(ad.read_h5ad(preprocessed), graph, activa_cfg, gm.get("rare_fraction", 0.5),
                           gm.get("max_per_class", 300), cfg.get("accept_threshold", 0.5),
                           cfg.get("target_sum", 20000.0), file=str(preprocessed), progress=progress)
    topup.update(split_mode=graph["split_mode"], unit=graph.get("unit", graph["split_mode"]), k=int(gm.get("k", 15)),
                 graph_fingerprint=graph_fingerprint(graph))
    torch_save(topup, output)
    LOG.info("top-up %s: %s", graph["split_mode"], topup["n_per_class"])
    return topup

