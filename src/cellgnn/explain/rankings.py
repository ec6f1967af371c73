"""Gene rankings as long tables, and what the stage aggregates from per-cell scores.

A ranking is a long table ``method, seed, class, cell_type, gene_index, score`` holding a
score for every gene; ``class`` or ``cell_type`` :data:`CLASS_AGNOSTIC` (``all``) marks a
ranking that is not specific to one class or cell type.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import CellgnnInputError

CLASS_AGNOSTIC = "all"


def long_scores(method: str, seed, cls: str, cell_type: str, scores: np.ndarray) -> pd.DataFrame:
    """One ranking as a long table (``method, seed, class, cell_type, gene_index, score``)."""
    return pd.DataFrame({"method": method, "seed": seed, "class": cls, "cell_type": cell_type,
                         "gene_index": np.arange(scores.size), "score": scores.astype(np.float64)})


def group_rankings(method, seed, values, yc, ctc, classes, cell_types, explain_classes, min_cells,
                   by_cell_type=True) -> list[pd.DataFrame]:
    """Mean per class (cell_type ``all``) and per cell type × class of per-cell scores
    ``values [n, G]`` (classes ``yc [n]``, cell types ``ctc [n]``), for groups of at least
    ``min_cells`` cells."""
    out = []
    for c in explain_classes:
        m = yc == classes.index(c)
        if m.sum() >= min_cells:
            out.append(long_scores(method, seed, c, CLASS_AGNOSTIC, values[m].mean(0)))
        if by_cell_type and len(cell_types) > 1:
            for t, tname in enumerate(cell_types):
                mt = m & (ctc == t)
                if mt.sum() >= min_cells:
                    out.append(long_scores(method, seed, c, tname, values[mt].mean(0)))
    return out


def top_genes_table(rankings: pd.DataFrame, genes: list[str], top_k: int) -> pd.DataFrame:
    """``genes.csv``: score averaged over seeds, top ``top_k`` genes per method × class × cell type."""
    mean = (rankings.groupby(["method", "class", "cell_type", "gene_index"], sort=False)["score"].mean()
            .reset_index())
    mean["rank"] = mean.groupby(["method", "class", "cell_type"])["score"].rank(ascending=False, method="first").astype(int)
    out = mean[mean["rank"] <= top_k].copy()
    out["gene"] = np.asarray(genes)[out["gene_index"].to_numpy()]
    return out.sort_values(["method", "class", "cell_type", "rank"])[
        ["method", "class", "cell_type", "gene", "score", "rank"]].reset_index(drop=True)


def cell_type_table(res, y, ct, classes, cell_types, explain_classes, seed) -> pd.DataFrame:
    """Per class × cell type, from an :class:`~cellgnn.explain.ig.IGResult`: accuracy on the
    explained cells, the share of |IG| mass coming from nodes of each cell type (which cell
    types carry the signal), and the mean per-cell |attribution| of the cell type's own cells."""
    yc, ctc = y[res.cells], ct[res.cells]
    rows = []
    for c in [CLASS_AGNOSTIC] + list(explain_classes):
        m = np.ones_like(yc, bool) if c == CLASS_AGNOSTIC else yc == classes.index(c)
        if not m.any():
            continue
        mass = res.node_mass[m].sum(0)
        share = mass / max(mass.sum(), 1e-12)
        for t, tname in enumerate(cell_types):
            mt = m & (ctc == t)
            rows.append({"seed": seed, "class": c, "cell_type": tname, "n_cells": int(mt.sum()),
                         "accuracy": float((res.pred[mt] == yc[mt]).mean()) if mt.any() else float("nan"),
                         "attribution_share": float(share[t]),
                         "mean_abs_attribution": float(np.abs(res.attr[mt]).sum(1).mean()) if mt.any() else float("nan")})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- which cells

def select_cells(mask: np.ndarray, y: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Node ids to explain: all cells of ``mask``, or ``n_cells`` of them drawn stratified by class."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise CellgnnInputError("the selected subset holds no cells", field="explain.cells_from",
                                fix="choose train, val, test or all")
    if n_cells <= 0 or n_cells >= idx.size:
        return idx
    # proportional allocation, at least one per class present
    classes, counts = np.unique(y[idx], return_counts=True)
    take = np.maximum(1, np.floor(counts / counts.sum() * n_cells)).astype(int)
    chosen = [rng.choice(idx[y[idx] == c], size=min(t, n), replace=False) for c, t, n in zip(classes, take, counts)]
    return np.sort(np.concatenate(chosen))


def per_class_sample(cells, y, explain_classes, classes, n_per_class, rng) -> np.ndarray:
    """Up to ``n_per_class`` of ``cells`` per explained class, drawn with ``rng``, sorted."""
    out = []
    for c in explain_classes:
        pool = cells[y[cells] == classes.index(c)]
        if pool.size:
            out.append(rng.choice(pool, size=min(n_per_class, pool.size), replace=False))
    return np.sort(np.concatenate(out)) if out else np.array([], dtype=np.int64)
