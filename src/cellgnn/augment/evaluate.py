"""How real do synthetic cells look? Metrics of ACTIVA's paper, computed on held-out real cells.

All inputs are cells × genes in data units (library-size normalized, not logged).

- :func:`rf_auc`: random forest told to separate real from synthetic cells, ROC AUC over
  stratified k-fold cross-validation (0.5 = indistinguishable; lower is better).
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


def _log(x: np.ndarray) -> np.ndarray:
    return np.log1p(np.asarray(x, dtype=np.float64))


def rf_auc(real: np.ndarray, synth: np.ndarray, n_folds: int = 5, n_trees: int = 200, seed: int = 0,
           n_jobs: int = 1) -> dict:
    """Real (label 0) vs synthetic (label 1) RF ROC AUC: ``{"mean", "sd", "folds"}``."""
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
    return {"mean": float(np.mean(folds)), "sd": float(np.std(folds, ddof=1)), "folds": folds}


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
                       n_top_markers: int = 5, seed: int = 0) -> dict:
    """AUC, correlation discrepancy and MMD of ``synth`` against the held-out ``real_test`` cells.

    ``synth`` should have as many cells as ``real_test`` (as in ACTIVA's paper).
    """
    genes = marker_genes(real_train, train_labels, n_top_markers)
    return {"rf_auc": rf_auc(real_test, synth, n_folds, n_trees, seed),
            "correlation_discrepancy": correlation_discrepancy(real_test, synth, genes),
            "mmd_pcs": mmd_pcs(pca.transform(real_test), pca.transform(synth), seed=seed),
            "n_real": int(len(real_test)), "n_synthetic": int(len(synth)),
            "n_marker_genes": int(len(genes))}

