"""How real do synthetic cells look? Metrics of ACTIVA's paper, computed on held-out real cells.

All inputs are cells × genes in data units (library-size normalized, not logged).

- :func:`rf_auc`: random forest told to separate real from synthetic cells, ROC AUC over
  stratified k-fold cross-validation (0.5 = indistinguishable; lower is better).
- :func:`separating_features`: what such a forest uses: per-cell summaries (fraction of zeros,
  largest value, spread), its most important genes, the mean–variance relation.
- :func:`correlation_discrepancy`: induced 1-norm (max column sum of |Δ|) of the difference
  between the gene–gene Pearson correlation matrices (log1p) of synthetic and real cells, on
  the top marker genes of each population (lower is better).
- :func:`mmd_pcs`: squared maximum mean discrepancy (unbiased, Gaussian kernels at 0.5, 1, 2×
  the median pairwise distance) between real and synthetic cells on the first principal
  components of the real training cells (log1p); lower is better.
"""

from __future__ import annotations

import numpy as np

from ..errors import CellgnnInputError
from ..stats import t_interval


def _log(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(x, dtype=np.float64))


def rf_auc(real: np.ndarray, synth: np.ndarray, n_folds: int = 5, n_trees: int = 200, seed: int = 0,
           n_jobs: int = 1) -> dict:
    """Real (label 0) vs synthetic (label 1) RF ROC AUC over folds: ``{"mean", "sd", "ci_low", "ci_high", "folds"}``.

    The interval is a 95% t-interval over the folds (one generator seed).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    if min(len(real), len(synth)) < n_folds:
        raise CellgnnInputError(f"need at least {n_folds} real and synthetic cells for {n_folds}-fold AUC",
                                field="augment.eval")
    x = np.vstack([real, synth]).astype(np.float32)
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    folds = []
    for k, (tr, te) in enumerate(StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(x, y)):
        rf = RandomForestClassifier(n_estimators=n_trees, max_features="sqrt", random_state=seed + k,
                                    n_jobs=n_jobs).fit(x[tr], y[tr])
        folds.append(float(roc_auc_score(y[te], rf.predict_proba(x[te])[:, 1])))
    ci = t_interval(folds)
    return {"mean": ci.mean, "sd": float(np.std(folds, ddof=1)), "ci_low": ci.low, "ci_high": ci.high,
            "folds": folds}


def cell_summaries(x: np.ndarray) -> dict[str, np.ndarray]:
    """Per-cell summaries ``[N]`` of cells in data units: fraction of zeros, largest value, SD of log1p."""
    lx = _log(x)
    return {"zero_fraction": (x == 0).mean(axis=1), "max": x.max(axis=1), "sd_log1p": lx.std(axis=1)}


def separating_features(real: np.ndarray, synth: np.ndarray, genes: list[str], n_top: int = 10,
                        n_trees: int = 200, seed: int = 0, pca: "PcaSpace | None" = None) -> dict:
    """What tells ``synth`` from ``real`` (both ``[N, G]``, data units).

    Returns ``cell_summaries`` (per summary: real and synthetic mean, AUC of the summary
    alone), ``rf_auc_summaries`` (5-fold forest on the summaries only), ``top_genes`` (the
    ``n_top`` genes of largest impurity importance of a forest on all cells: importance,
    single-gene AUC, mean, fraction of zeros and CV² real vs synthetic), ``top_genes_importance``
    (their summed importance) and ``mean_variance`` (median log2 ratio synthetic/real of the
    per-gene mean and variance, median CV² of each, over genes with mean > 1); with ``pca``,
    ``rf_auc_pcs``: the 5-fold forest on the principal components instead of the genes (gene–gene
    structure rather than per-gene distributions).
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    sr, ss = cell_summaries(real), cell_summaries(synth)
    summaries = {k: {"real": float(sr[k].mean()), "synthetic": float(ss[k].mean()),
                     "auc": float(roc_auc_score(y, np.r_[sr[k], ss[k]]))} for k in sr}
    feats = lambda d: np.column_stack(list(d.values()))  # noqa: E731
    x = np.vstack([real, synth]).astype(np.float32)
    rf = RandomForestClassifier(n_estimators=n_trees, max_features="sqrt", random_state=seed, n_jobs=1).fit(x, y)
    order = np.argsort(-rf.feature_importances_, kind="stable")[:n_top]

    def cv2(v):
        m = v.mean(0)
        return np.divide(v.var(0), m ** 2, out=np.full_like(m, np.nan, dtype=np.float64), where=m > 0)

    cr, cs = cv2(real), cv2(synth)
    top = [{"gene": str(genes[i]), "importance": float(rf.feature_importances_[i]),
            "auc": float(roc_auc_score(y, x[:, i])), "mean_real": float(real[:, i].mean()),
            "mean_synthetic": float(synth[:, i].mean()), "zero_real": float((real[:, i] == 0).mean()),
            "zero_synthetic": float((synth[:, i] == 0).mean()), "cv2_real": float(cr[i]),
            "cv2_synthetic": float(cs[i])} for i in order]
    mr, ms, vr, vs = real.mean(0), synth.mean(0), real.var(0), synth.var(0)
    ok = (mr > 1) & (ms > 1) & (vr > 0) & (vs > 0)
    out = {} if pca is None else {"rf_auc_pcs": rf_auc(pca.transform(real), pca.transform(synth), n_trees=n_trees,
                                                        seed=seed)["mean"]}
    return {**out, "cell_summaries": summaries,
            "rf_auc_summaries": rf_auc(feats(sr), feats(ss), n_trees=n_trees, seed=seed)["mean"],
            "top_genes": top, "top_genes_importance": float(rf.feature_importances_[order].sum()),
            "mean_variance": {"n_genes": int(ok.sum()),
                              "median_log2_mean_ratio": float(np.median(np.log2(ms[ok] / mr[ok]))),
                              "median_log2_var_ratio": float(np.median(np.log2(vs[ok] / vr[ok]))),
                              "median_cv2_real": float(np.median(cr[ok])),
                              "median_cv2_synthetic": float(np.median(cs[ok]))}}


def marker_genes(x: np.ndarray, labels: np.ndarray, n_top: int = 5) -> np.ndarray:
    """Indices of the top ``n_top`` genes per population by mean log1p difference to the rest."""
    lx = _log(x)
    out: list[int] = []
    for pop in sorted(set(labels.tolist())):
        inside = labels == pop
        if inside.all():
            continue
        diff = lx[inside].mean(0) - lx[~inside].mean(0)
        out += np.argsort(-diff, kind="stable")[:n_top].tolist()
    return np.array(sorted(set(out)), dtype=np.int64)


def _corr(x: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.corrcoef(x, rowvar=False)
    return np.nan_to_num(np.atleast_2d(c), nan=0.0)


def correlation_discrepancy(real: np.ndarray, synth: np.ndarray, genes: np.ndarray) -> float:
    """``‖corr(log1p synth) − corr(log1p real)‖₁`` (induced 1-norm) over ``genes``."""
    d = _corr(_log(synth[:, genes])) - _corr(_log(real[:, genes]))
    return float(np.linalg.norm(d, 1))


class PcaSpace:
    """PCA of log1p real training cells; ``transform`` maps cells (data units) to ``[N, P]``."""

    def __init__(self, x_train: np.ndarray, n_pcs: int = 50, seed: int = 0):
        from sklearn.decomposition import PCA

        n_pcs = int(min(n_pcs, x_train.shape[1], x_train.shape[0] - 1))
        self.pca = PCA(n_components=n_pcs, random_state=seed).fit(_log(x_train))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return self.pca.transform(_log(x))


def mmd_pcs(real_pcs: np.ndarray, synth_pcs: np.ndarray, max_cells: int = 1000, seed: int = 0) -> float:
    """Unbiased MMD² between two point sets ``[N, P]``, ``[M, P]`` (each subsampled to ``max_cells``)."""
    from scipy.spatial.distance import cdist

    rng = np.random.default_rng(seed)
    a = real_pcs[rng.permutation(len(real_pcs))[:max_cells]]
    b = synth_pcs[rng.permutation(len(synth_pcs))[:max_cells]]
    if len(a) < 2 or len(b) < 2:
        raise CellgnnInputError("MMD needs at least 2 cells on each side", field="augment.eval")
    daa, dbb, dab = cdist(a, a, "sqeuclidean"), cdist(b, b, "sqeuclidean"), cdist(a, b, "sqeuclidean")
    med = np.median(np.sqrt(np.concatenate([daa.ravel(), dbb.ravel(), dab.ravel()])))
    med = med if med > 0 else 1.0
    total = 0.0
    for s in (0.5, 1.0, 2.0):
        gamma = 1.0 / (2 * (s * med) ** 2)
        kaa, kbb, kab = np.exp(-gamma * daa), np.exp(-gamma * dbb), np.exp(-gamma * dab)
        n, m = len(a), len(b)
        total += ((kaa.sum() - np.trace(kaa)) / (n * (n - 1)) + (kbb.sum() - np.trace(kbb)) / (m * (m - 1))
                  - 2 * kab.mean())
    return float(total)


def evaluate_synthetic(real_test: np.ndarray, synth: np.ndarray, real_train: np.ndarray,
                       train_labels: np.ndarray, pca: PcaSpace, n_folds: int = 5, n_trees: int = 200,
                       n_top_markers: int = 5, seed: int = 0, n_jobs: int = 1) -> dict:
    """AUC, correlation discrepancy and MMD of ``synth`` against the held-out ``real_test`` cells.

    ``synth`` should have as many cells as ``real_test`` (as in ACTIVA's paper).
    """
    genes = marker_genes(real_train, train_labels, n_top_markers)
    return {"rf_auc": rf_auc(real_test, synth, n_folds, n_trees, seed, n_jobs),
            "correlation_discrepancy": correlation_discrepancy(real_test, synth, genes),
            "mmd_pcs": mmd_pcs(pca.transform(real_test), pca.transform(synth), seed=seed),
            "n_real": int(len(real_test)), "n_synthetic": int(len(synth)),
            "n_marker_genes": int(len(genes))}

