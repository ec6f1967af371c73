"""Figures of the augmentation stage (PNG + PDF, Okabe–Ito colours: :mod:`cellgnn.figstyle`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..figstyle import colour, save_figure

SOURCE_COLOURS = {"real": "#999999", "ACTIVA": "#0072B2", "scGAN": "#D55E00", "real (train)": "#009E73"}


def plot_embedding(embedding: np.ndarray, source: np.ndarray, method: str, png: str | Path) -> None:
    """2-D ``embedding`` ``[N, 2]`` (``method``: ``pca`` or ``umap``) of real and synthetic cells coloured by ``source``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    label = {"pca": "PC", "umap": "UMAP "}[method]
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for name in pd.unique(source):
        m = source == name
        ax.scatter(embedding[m, 0], embedding[m, 1], s=4, alpha=0.6, label=f"{name} (n={m.sum()})",
                   color=SOURCE_COLOURS.get(name, colour(len(ax.collections))), linewidths=0)
    ax.set_xlabel(f"{label}1")
    ax.set_ylabel(f"{label}2")
    ax.set_title("Held-out real cells and synthetic cells")
    ax.legend(markerscale=3, frameon=False, fontsize=8)
    save_figure(fig, png)


def plot_auc(metrics: dict[str, dict], png: str | Path) -> None:
    """Bars: real-vs-synthetic RF AUC (mean, 95% t-interval over folds) per generator; 0.5 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(metrics)
    means = [metrics[n]["rf_auc"]["mean"] for n in names]
    err = [[m - metrics[n]["rf_auc"]["ci_low"] for n, m in zip(names, means)],
           [metrics[n]["rf_auc"]["ci_high"] - m for n, m in zip(names, means)]]
    fig, ax = plt.subplots(figsize=(1.0 + 0.9 * len(names), 3.8))
    ax.bar(names, means, yerr=err, capsize=4, color=[SOURCE_COLOURS.get(n, "#999999") for n in names])
    ax.tick_params(axis="x", labelrotation=30)
    plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")
    ax.axhline(0.5, color="black", ls="--", lw=1, label="indistinguishable (0.5)")
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("real-vs-synthetic RF AUC (5-fold)")
    ax.set_xlabel("generator")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    save_figure(fig, png)


def plot_rare(summary: list[dict], png: str | Path) -> None:
    """F1 of the rare population vs kept fraction, with and without ACTIVA augmentation (95% CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.8))
    for aug, colour, label in ((False, "#999999", "real cells only"), (True, "#0072B2", "+ ACTIVA cells")):
        rows = sorted((r for r in summary if r["augmented"] == aug), key=lambda r: r["fraction"])
        f = np.array([r["fraction"] * 100 for r in rows])
        m = np.array([r["f1"]["mean"] for r in rows])
        lo = np.array([r["f1"]["ci_low"] for r in rows])
        hi = np.array([r["f1"]["ci_high"] for r in rows])
        ax.errorbar(f, m, yerr=[m - lo, hi - m], marker="o", capsize=3, color=colour, label=label)
    ax.set_xscale("log")
    kept = sorted({r["fraction"] * 100 for r in summary})
    ax.set_xticks(kept, [f"{v:g}" for v in kept])
    ax.minorticks_off()
    ax.set_xlabel("population kept in training (%)")
    ax.set_ylabel("F1 on held-out real cells")
    ax.set_ylim(-0.02, 1.02)
    ax.legend(frameon=False, fontsize=8)
    save_figure(fig, png)
