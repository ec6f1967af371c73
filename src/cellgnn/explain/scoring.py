"""Scoring gene rankings against the simulator's planted response genes.

precision@k with k = number of planted genes, and average precision (AUPRC), per class
(the genes planted in every cell type of the class) and per class × cell type (every gene
planted there); summaries over model seeds use :mod:`cellgnn.stats`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellgnnInputError
from ..stats import paired_margin, seed_summary
from .rankings import CLASS_AGNOSTIC

LOG = logging.getLogger(__name__)

SCORE_COLUMNS = ["method", "class", "precision_at_k", "auprc", "k", "seed"]


def read_ground_truth(raw_path: str | Path) -> dict | None:
    """``uns["ground_truth"]`` of the data stage's ``raw.h5ad`` (None for real data)."""
    import anndata as ad

    a = ad.read_h5ad(raw_path, backed="r")
    try:
        truth = a.uns.get("ground_truth")
        return None if truth is None else {k: np.asarray(v) for k, v in truth.items()}
    finally:
        a.file.close()


def ground_truth_sets(truth: dict, genes: list[str], classes: list[str]) -> tuple[dict, dict]:
    """Planted genes per class and per (class, cell type), restricted to the model's genes.

    truth: ``uns["ground_truth"]`` (equal-length arrays ``class, cell_type, gene,
    log2_fold_change``). Returns ``(by_class, by_class_cell_type)`` of gene-name sets. A
    class's set holds the genes planted in every cell type of the class (its shared
    response programme); genes that respond in one cell type only are scored in the
    (class, cell type) sets, since a single ranking for the whole class cannot rank a gene
    that responds in a sixth of its cells among the genes that respond in all of them.
    """
    need = {"class", "cell_type", "gene", "log2_fold_change"}
    if not need <= set(truth):
        raise CellgnnInputError(f"ground truth lacks {sorted(need - set(truth))}", field='uns["ground_truth"]',
                                fix="regenerate the simulated data with cellgnn.data")
    df = pd.DataFrame({k: np.asarray(truth[k]).astype(str) for k in ("class", "cell_type", "gene")})
    unknown = sorted(set(df["class"]) - set(classes))
    if unknown:
        LOG.warning("ground-truth classes not among the model's classes, ignored: %s", unknown)
    gene_set = set(genes)
    n_lost = (~df["gene"].isin(gene_set)).sum()
    if n_lost:
        LOG.info("%d ground-truth rows name genes not among the model's features (filtered upstream)", n_lost)
    df = df[df["gene"].isin(gene_set) & df["class"].isin(classes)]
    by_ct = {k: set(g["gene"]) for k, g in df.groupby(["class", "cell_type"])}
    by_class = {c: set.intersection(*(set(gg["gene"]) for _, gg in g.groupby("cell_type")))
                for c, g in df.groupby("class")}
    return by_class, by_ct


def precision_at_k(scores: np.ndarray, truth_mask: np.ndarray, k: int | None = None) -> float:
    """Fraction of the ``k`` top-scoring genes (ties broken by gene order) that are planted;
    ``k`` defaults to the number of planted genes."""
    k = int(truth_mask.sum()) if k is None else k
    if k == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    return float(truth_mask[top].mean())


def average_precision(scores: np.ndarray, truth_mask: np.ndarray) -> float:
    """Area under the precision–recall curve (average precision) of ranking genes by score."""
    from sklearn.metrics import average_precision_score

    if truth_mask.sum() == 0:
        return float("nan")
    return float(average_precision_score(truth_mask.astype(int), scores))


def gene_set_truth(path: str | Path, genes: list[str], classes: list[str]) -> dict[str, set]:
    """A published gene set as the truth of each of ``classes`` (the same set for each), restricted
    to the model's genes. path: a bundled set's name (:mod:`cellgnn.genesets`) or a TSV (``#``
    comments) with a ``gene`` column and an optional ``previous_symbol`` column, matched when the
    data names the gene by its older symbol."""
    import pandas as pd

    from ..errors import CellgnnInputError
    from ..genesets import gene_set_path

    path = gene_set_path(str(path))
    try:
        table = pd.read_csv(path, sep="\t", comment="#", dtype=str).fillna("")
    except (OSError, pd.errors.ParserError) as e:
        raise CellgnnInputError(f"cannot read the gene set ({e})", file=str(path), field="explain.gene_set.path",
                                fix="point it at a TSV with a 'gene' column") from e
    if "gene" not in table:
        raise CellgnnInputError(f"no 'gene' column (columns: {list(table.columns)})", file=str(path),
                                field="explain.gene_set.path", fix="name the column of gene symbols 'gene'")
    have = set(genes)
    previous = table["previous_symbol"] if "previous_symbol" in table else pd.Series("", index=table.index)
    found = {g if g in have else p for g, p in zip(table["gene"], previous) if g in have or (p and p in have)}
    if not found:
        raise CellgnnInputError("none of the set's genes is among the data's genes", file=str(path),
                                field="explain.gene_set.path", fix="check the species and gene naming of the set")
    return {c: set(found) for c in classes}


def score_rankings(rankings: pd.DataFrame, genes: list[str], truth_by_class: dict[str, set]) -> pd.DataFrame:
    """Score class-level rankings against the planted genes.

    rankings: long table ``method, seed, class, gene_index, score`` holding full rankings
    (class ``all`` = class-agnostic method, scored against every class). Returns
    ``method, class, precision_at_k, auprc, k, seed``.
    """
    rows = []
    g = len(genes)
    gene_idx = {n: i for i, n in enumerate(genes)}
    for (method, seed, cls), grp in rankings.groupby(["method", "seed", "class"], dropna=False, sort=True):
        s = np.full(g, -np.inf, np.float64)
        s[grp["gene_index"].to_numpy()] = grp["score"].to_numpy()
        targets = truth_by_class if cls == CLASS_AGNOSTIC else {cls: truth_by_class[cls]} if cls in truth_by_class else {}
        for c, gs in targets.items():
            mask = np.zeros(g, bool)
            mask[[gene_idx[n] for n in gs]] = True
            rows.append({"method": method, "class": c, "precision_at_k": precision_at_k(s, mask),
                         "auprc": average_precision(np.nan_to_num(s, neginf=-1e30), mask), "k": int(mask.sum()),
                         "seed": seed})
    return pd.DataFrame(rows, columns=SCORE_COLUMNS)


def _seed_means(scores: pd.DataFrame, columns=("precision_at_k", "auprc")) -> pd.DataFrame:
    """Mean of ``columns`` over classes per seed (one row, seed missing, for a deterministic method)."""
    return scores.groupby("seed", dropna=False)[list(columns)].mean()


def summarize_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean over classes per seed, then mean and 95% interval over seeds
    (:func:`cellgnn.stats.seed_summary`); best precision@k first. Columns ``method,
    n_seeds, seeds, precision_at_k, precision_at_k_low, precision_at_k_high, auprc, …``."""
    rows = []
    for method, grp in scores.groupby("method", sort=False):
        row = seed_summary(_seed_means(grp), ["precision_at_k", "auprc"])
        rows.append({"method": method, **{k.removesuffix("_mean"): v for k, v in row.items()}})
    return pd.DataFrame(rows).sort_values("precision_at_k", ascending=False, ignore_index=True)


def method_margins(scores: pd.DataFrame, method: str, others: list[str]) -> pd.DataFrame:
    """Precision@k of ``method`` minus each of ``others``, paired by model seed.

    scores: ``ground_truth_scores.csv``. Each method's score per seed is its mean over
    classes; a deterministic method (empty seed) is one value, set against every seed of
    the other (:func:`cellgnn.stats.paired_differences`). Returns ``other, n_seeds, diff,
    low, high`` (mean and 95% t-interval; no interval for a single pair).
    """
    a = _seed_means(scores[scores["method"] == method], ["precision_at_k"])["precision_at_k"]
    rows = []
    for other in others:
        b = _seed_means(scores[scores["method"] == other], ["precision_at_k"])["precision_at_k"]
        if other == method or a.empty or b.empty:
            continue
        (mean, low, high), n = paired_margin(a, b)
        rows.append({"other": other, "n_seeds": n, "diff": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["other", "n_seeds", "diff", "low", "high"])
