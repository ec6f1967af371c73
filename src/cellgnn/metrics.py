"""Classification metrics on held-out cells (intervals over seeds: :mod:`cellgnn.stats`)."""

from __future__ import annotations

import numpy as np
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


def majority_baseline(y_train: np.ndarray, y_test: np.ndarray, n_classes: int) -> dict[str, float]:
    """Metrics of always predicting the most frequent training class."""
    proba = np.zeros((len(y_test), n_classes))
    proba[:, np.bincount(y_train, minlength=n_classes).argmax()] = 1.0
    return classification_metrics(y_test, proba)
