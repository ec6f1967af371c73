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
2. :func:`add_synthetic_nodes`: the synthetic cells become training nodes joined to their
   ``k`` nearest real **training** cells (both directions) in a PCA of the training cells'
   node features. They are never in the validation or test masks, and no edge links them
   to validation or test cells.
3. :func:`run_gat_activa`: the GAT is trained on the topped-up graph (the train stage's own
   ``train_model``), evaluated on the real test cells, and its per-class F1 is reported next
   to the plain GAT's of the same split and seed.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import CellgnnInputError
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

    X = adata.X.toarray() if sp.issparse(adata.X) else np.asarray(adata.X)
    train = graph["train_mask"].numpy()
    lo, hi = X[train].min(axis=0), X[train].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)

    def to_nodes(counts: np.ndarray) -> np.ndarray:
        return (np.clip((transformed(counts) - lo) / span, 0.0, 1.0) * (hi > lo)).astype(np.float32)

    check = to_nodes(_counts(adata)[train][:50])
    if not np.allclose(check, graph["x"].numpy()[train][:50], atol=1e-3):
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


def add_synthetic_nodes(graph: dict, x_syn: np.ndarray, y_syn: np.ndarray, k: int = 15,
                        n_pcs: int = 50, seed: int = 0) -> dict:
    """Return a copy of ``graph`` with synthetic TRAINING nodes appended (``synthetic_mask`` marks them).

    Each synthetic node gets edges to and from its ``k`` nearest real training nodes in a
    PCA (fit on real training node features), weight 1, plus a self-loop when the graph has
    them; edges are re-sorted by (target, source).
    """
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    from ..graph import sort_edges

    n, s = graph["x"].shape[0], len(x_syn)
    if s == 0:
        return {**graph, "synthetic_mask": torch.zeros(n, dtype=torch.bool)}
    train_idx = np.flatnonzero(graph["train_mask"].numpy())
    xt = graph["x"].numpy()[train_idx]
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
        x=cat(graph["x"], x_syn), pca=cat(graph["pca"], pca_syn), y=cat(graph["y"], y_syn),
        edge_index=torch.from_numpy(ei), edge_weight=torch.from_numpy(ew),
        train_mask=cat(graph["train_mask"], np.ones(s, bool)),
        val_mask=cat(graph["val_mask"], np.zeros(s, bool)), test_mask=cat(graph["test_mask"], np.zeros(s, bool)),
        donor=cat(graph["donor"], np.zeros(s, np.int64)), cell_type=cat(graph["cell_type"], np.zeros(s, np.int64)),
        cell_ids=list(graph["cell_ids"]) + [f"synthetic{i:06d}" for i in range(s)],
        synthetic_mask=torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(s, dtype=torch.bool)]),
    )
    return out


def per_class_f1_from(y_true: np.ndarray, pred: np.ndarray, classes: list[str]) -> dict[str, float]:
    from sklearn.metrics import f1_score

    f1 = f1_score(y_true, pred, labels=np.arange(len(classes)), average=None, zero_division=0)
    return {c: float(v) for c, v in zip(classes, f1)}


def run_topup(preprocessed: str | Path, graph_path: str | Path, output: str | Path, cfg: dict,
              progress: bool = True) -> dict:
    """Stage entry: write the synthetic training cells of one graph split (``torch.save`` dict).

    Runs on one thread (torch and BLAS): the networks are small.
    """
    import anndata as ad
    from threadpoolctl import threadpool_limits

    from ..graph import load_graph
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
    topup.update(split_mode=graph["split_mode"], k=int(gm.get("k", 15)))
    torch_save(topup, output)
    LOG.info("top-up %s: %s", graph["split_mode"], topup["n_per_class"])
    return topup


def run_gat_activa(graph_path: str | Path, topup_path: str | Path, gat_predictions: str | Path, seed: int,
                   train_cfg: dict, device_pref: str, output) -> dict:
    """Train the GAT on the topped-up graph; write model.pt, metrics.json, predictions.csv (model ``gat_activa``)."""
    import pandas as pd

    from ..graph import load_graph
    from ..io import torch_save, write_csv, write_json
    from ..train import checkpoint, predictions_table, train_model
    from ..utils import get_device

    graph = load_graph(graph_path)
    topup = torch.load(topup_path, weights_only=False)
    if topup["classes"] != list(graph["classes"]) or topup["split_mode"] != graph["split_mode"]:
        raise CellgnnInputError("top-up cells were made for another graph", file=str(topup_path),
                                fix="rerun rule augment_topup for this split")
    aug = add_synthetic_nodes(graph, topup["x"], topup["y"], k=topup["k"], seed=seed)
    device = get_device(device_pref)
    from ..train import resume_path

    resume = resume_path(output.model)  # resumable checkpoint, deleted once the outputs are written
    result = train_model(aug, "gat", train_cfg, seed, device, resume=resume)
    n = graph["x"].shape[0]
    proba = result.proba[:n]
    te = graph["test_mask"].numpy()
    y = graph["y"].numpy()
    base = pd.read_csv(gat_predictions)
    base = base[base["split"] == "test"]
    classes = list(graph["classes"])
    idx = {c: i for i, c in enumerate(classes)}
    metrics = {
        "model": "gat_activa", "split": graph["split_mode"], "seed": seed, "test": result.metrics,
        "n_test_cells": int(te.sum()), "n_synthetic_train": {c: int(v) for c, v in topup["n_per_class"].items()},
        "per_class_f1_test": {
            "gat_activa": per_class_f1_from(y[te], proba[te].argmax(1), classes),
            "gat": per_class_f1_from(base["true"].map(idx).to_numpy(), base["pred"].map(idx).to_numpy(), classes)},
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "seconds": round(result.seconds, 2),
        "device": str(device), "params": result.params,
    }
    torch_save({**checkpoint(result, "gat", graph, seed), "model": "gat_activa"}, output.model)
    write_csv(predictions_table(graph, proba), output.predictions)
    write_json(metrics, output.metrics)
    resume.unlink(missing_ok=True)
    return metrics
