"""Classification metrics on held-out cells and intervals over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "auroc")


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1 and macro one-vs-rest AUROC.

    y_true: int ``[n]`` class indices; proba: float ``[n, C]`` class probabilities (rows sum
    to 1). Macro averages run over the classes present in ``y_true``; AUROC is the mean of
    the per-class one-vs-rest AUROCs of the classes that have both positives and negatives.
    """
    y_true = np.asarray(y_true)
    pred = proba.argmax(axis=1)
    present = np.unique(y_true)
    aucs = []
    for c in present:
        pos = y_true == c
        if 0 < pos.sum() < len(y_true):
            aucs.append(roc_auc_score(pos, proba[:, c]))
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
        "macro_f1": float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0)),
        "auroc": float(np.mean(aucs)) if aucs else float("nan"),
    }


def per_class_f1(y_true: np.ndarray, pred: np.ndarray, n_classes: int) -> np.ndarray:
    """F1 of each class ``[C]`` (NaN for classes absent from both truth and prediction)."""
    out = f1_score(y_true, pred, labels=np.arange(n_classes), average=None, zero_division=np.nan)
    return np.asarray(out, dtype=float)


def mean_ci(values, confidence: float = 0.95) -> tuple[float, float, float]:
    """Mean and t-based ``confidence`` interval over seeds: ``(mean, low, high)``.

    With a single value the interval is (nan, nan): one seed says nothing about spread.
    """
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2:
        return m, float("nan"), float("nan")
    half = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
    return m, m - half, m + half


def summarize(df: pd.DataFrame, by=("model", "split"), metrics=METRICS) -> pd.DataFrame:
    """One row per group: ``n_seeds``, ``seeds`` and ``<metric>_mean/_low/_high`` (95% CI)."""
    rows = []
    for key, g in df.groupby(list(by), sort=True):
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["n_seeds"] = int(g["seed"].nunique())
        row["seeds"] = " ".join(str(s) for s in sorted(g["seed"].unique()))
        for m in metrics:
            row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"] = mean_ci(g[m])
        rows.append(row)
    return pd.DataFrame(rows)


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Metrics of always predicting the most frequent training class."""
    proba = np.zeros((len(y_test), n_classes))
    proba[:, np.bincount(y_train, minlength=n_classes).argmax()] = 1.0
    return classification_metrics(y_test, proba)
