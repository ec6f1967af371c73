"""Figures stage: UMAP panels, confusion matrix, model comparison, and ``summary.md``.

Palette and saver: :mod:`cellgnn.figstyle` (Okabe–Ito for categories, viridis for
continuous values; PNG + PDF).
"""

from __future__ import annotations

import json
import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .errors import CellgnnInputError  # noqa: E402
from .figstyle import palette, save_figure  # noqa: E402
from .io import atomic_path, write_text  # noqa: E402
from .metrics import METRICS  # noqa: E402

LOG = logging.getLogger(__name__)
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1",
                 "auroc": "AUROC (one-vs-rest)"}


def best_run(models_csv: pd.DataFrame, split: str, metric: str = "macro_f1") -> str:
    """Model with the highest mean test ``metric`` on split mode ``split``."""
    sub = models_csv[models_csv["split"] == split]
    return str(sub.groupby("model")[metric].mean().idxmax())


# ---------------------------------------------------------------- UMAP
UMAP_FULL_EPOCHS_CELLS = 100_000  # figures.umap_epochs null: umap-learn's default epochs up to this many cells


def umap_epochs(n_cells: int, setting: int | None = None) -> int | None:
    """UMAP epochs for ``n_cells`` (``figures.umap_epochs``): ``setting`` when given; else None (umap-learn's
    default) up to ``UMAP_FULL_EPOCHS_CELLS`` cells and ``200 * UMAP_FULL_EPOCHS_CELLS / n_cells`` (at least
    50) above: every epoch samples every edge, so larger graphs get as many updates in fewer epochs."""
    if setting is not None:
        return int(setting)
    if n_cells <= UMAP_FULL_EPOCHS_CELLS:
        return None
    return max(50, round(200 * UMAP_FULL_EPOCHS_CELLS / n_cells))


def umap_embedding(adata, seed: int = 0, graph: dict | None = None, epochs: int | None = None) -> pd.DataFrame:
    """2-D UMAP of the cells from their kNN graph (:func:`cellgnn.neighbors.neighbors` with the
    ``graph`` config section: k, n_pcs, metric, knn_method), seeded; ``epochs``: ``figures.umap_epochs``
    (:func:`umap_epochs`).

    adata: preprocessed AnnData with ``obsm["X_pca"]``; returns a DataFrame indexed by
    cell id with columns ``umap1, umap2`` (arbitrary units).
    """
    import scanpy as sc

    from .config import settings
    from .neighbors import neighbors

    cfg = settings("graph", graph)
    adata = _pca_only(adata)
    neighbors(adata, k=cfg["k"], n_pcs=cfg["n_pcs"], metric=cfg["metric"], method=cfg["knn_method"], seed=seed,
              ann_threshold=cfg["ann_threshold"])
    sc.tl.umap(adata, random_state=seed, maxiter=umap_epochs(adata.n_obs, epochs))
    emb = adata.obsm["X_umap"]
    return pd.DataFrame({"umap1": emb[:, 0], "umap2": emb[:, 1]}, index=pd.Index(adata.obs_names, name="cell_id"))


def _pca_only(adata):
    """An AnnData with only the cells' names and ``obsm["X_pca"]`` (no genes)."""
    import anndata as ad

    out = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    out.obsm["X_pca"] = np.asarray(adata.obsm["X_pca"])
    return out


def plot_umap(obs: pd.DataFrame, embedding: pd.DataFrame, predictions: pd.DataFrame, png: str, pdf: str,
              title_model: str, embedding_file: str = "umap embedding") -> None:
    """Four UMAP panels: label, cell type, donor, and the best model's prediction on test cells.

    obs: the cells' ``obs`` (categorical ``label``, ``cell_type``, ``donor``); embedding:
    :func:`umap_embedding`'s table for the same cells; predictions: the model's
    ``predictions.csv`` (``cell_id, split, true, pred``).
    """
    missing = obs.index.difference(embedding.index)
    if len(missing):
        raise CellgnnInputError(f"{len(missing)} cells have no UMAP coordinates (e.g. {missing[0]})",
                                file=embedding_file, field="cell_id",
                                fix="the embedding is from another preprocessing run: rerun rule umap_embedding")
    emb = embedding.reindex(obs.index)[["umap1", "umap2"]].to_numpy()
    pred = predictions.set_index("cell_id").reindex(obs.index)
    panels = [("label", "True label"), ("cell_type", "Cell type"), ("donor", "Donor / sample")]
    panels = [(k, t) for k, t in panels if k in obs]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(5.2 * (len(panels) + 1), 5))
    label_cats = list(obs["label"].cat.categories)
    for ax, (key, title) in zip(axes, panels):
        _scatter_categories(ax, emb, obs[key].astype(str).to_numpy(), list(obs[key].cat.categories))
        ax.set_title(title)
    ax = axes[-1]
    is_test = (pred["split"] == "test").to_numpy()
    ax.scatter(emb[~is_test, 0], emb[~is_test, 1], s=2, c="#DDDDDD", rasterized=True, label="train/val cells")
    _scatter_categories(ax, emb[is_test], pred["pred"].to_numpy()[is_test].astype(str), label_cats)
    ax.set_title(f"Predicted label, test cells ({title_model})")
    fig.tight_layout()
    save_figure(fig, png, pdf)


def _scatter_categories(ax, emb: np.ndarray, values: np.ndarray, categories: list[str]) -> None:
    colors = palette(len(categories))
    for cat, col in zip(categories, colors):
        m = values == cat
        ax.scatter(emb[m, 0], emb[m, 1], s=3, c=col, label=f"{cat} ({m.sum()})", rasterized=True)
    ax.set_xlabel("UMAP 1")
    ax.set_ylabel("UMAP 2")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(markerscale=4, fontsize=7, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# ---------------------------------------------------------------- confusion matrix
def plot_confusion(prediction_tables: list[pd.DataFrame], classes: list[str], png: str, pdf: str,
                   title: str) -> None:
    """Row-normalized confusion matrix of test cells, pooled over the given seeds' predictions."""
    from sklearn.metrics import confusion_matrix

    y_true, y_pred = [], []
    for df in prediction_tables:
        te = df[df["split"] == "test"]
        y_true.extend(te["true"].astype(str))
        y_pred.extend(te["pred"].astype(str))
    cm = confusion_matrix(y_true, y_pred, labels=classes).astype(float)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(classes), 0.6 + 0.65 * len(classes)))
    im = ax.imshow(norm, cmap="viridis", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{norm[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if norm[i, j] < 0.6 else "black")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("Predicted label")
    ax.set_ylabel("True label")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label="Fraction of true class (row-normalized)")
    fig.tight_layout()
    save_figure(fig, png, pdf)


# ---------------------------------------------------------------- model comparison
def plot_model_comparison(df: pd.DataFrame, summary: pd.DataFrame, png: str, pdf: str,
                          chance: dict[str, float] | None = None) -> None:
    """Bars: mean test metric per model and split mode with the 95% interval of ``summary``
    (``metrics/models_summary.csv``: bootstrap over donors on donor_cv, t over seeds otherwise);
    dots: seeds (on donor_cv each seed's metric pooled over the folds)."""
    summ = summary.set_index(["model", "split"])
    models = sorted(df["model"].unique(), key=lambda m: df[df["model"] == m]["macro_f1"].mean())
    splits = sorted(df["split"].unique())
    colors = dict(zip(splits, palette(len(splits))))
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8), sharey=False)
    width = 0.8 / len(splits)
    for ax, metric in zip(axes, METRICS):
        for s_i, split in enumerate(splits):
            for m_i, model in enumerate(models):
                vals = df[(df["model"] == model) & (df["split"] == split)][metric].to_numpy()
                if vals.size == 0:
                    continue
                mean, low, high = (summ.loc[(model, split), f"{metric}_{k}"] for k in ("mean", "low", "high"))
                x = m_i + (s_i - (len(splits) - 1) / 2) * width
                err = None if np.isnan(low) else [[mean - low], [high - mean]]
                ax.bar(x, mean, width, color=colors[split], label=split if m_i == 0 else None,
                       yerr=err, capsize=3, edgecolor="black", linewidth=0.5)
                ax.scatter(np.full(vals.size, x), vals, s=8, c="black", zorder=3)
        if chance and metric in chance:
            ax.axhline(chance[metric], ls="--", c="grey", lw=1, label="chance")
        ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
        ax.set_ylabel(f"Test {METRIC_LABELS[metric]}")
        ax.set_ylim(0, 1.02)
    axes[0].legend(title="Split mode", fontsize=8, frameon=False)
    n_seeds = df["seed"].nunique()
    fig.suptitle(f"Held-out test cells; bars: mean over {n_seeds} seeds; error bars: 95% interval (bootstrap over "
                 "donors on donor_cv, t over seeds otherwise); dots: seeds", fontsize=9)
    fig.tight_layout()
    save_figure(fig, png, pdf)


# ---------------------------------------------------------------- summary
def format_ci(mean: float, low: float, high: float) -> str:
    if np.isnan(mean):
        return "n/a"
    if np.isnan(low):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


GRAPH_MODELS = ("gcn", "gat", "gat_ef", "gat_edge", "gcn_ef", "gat_activa")
SPLIT_TEXT = {"cells": "`cells` (random cells: a donor's cells on both sides, the original study's leaky split)",
              "donors": "`donors` (one set of whole donors held out)",
              "donor_cv": "`donor_cv` (cross-validation over donors: every donor tested once, metrics on the "
                          "pooled held-out cells)"}


def model_section(summary_csv: str, margins_csv: str, calls_csv: str) -> list[str]:
    """Markdown lines: the model table with each row's interval method, the best model on held-out
    donors with its paired margins, whether a graph model beats the best baseline, and the
    donor (or sample) calls of the best model."""
    summ = pd.read_csv(summary_csv)
    lines = ["## Model comparison (held-out cells)", "",
             "Split modes: " + "; ".join(SPLIT_TEXT[s] for s in SPLIT_TEXT if s in set(summ["split"])) + ".",
             "Intervals: 95%, by the method named in each row (a bootstrap over donors and seeds on `donor_cv`, "
             "a t-interval over seeds otherwise).", ""]
    has_calls = "call_accuracy" in summ
    header = ("| split | model | seeds | interval | " + " | ".join(METRIC_LABELS[m] for m in METRICS)
              + (" | call accuracy |" if has_calls else " |"))
    lines += [header, "|" + "---|" * (4 + len(METRICS) + has_calls)]
    for _, r in summ.sort_values(["split", "balanced_accuracy_mean"], ascending=[True, False]).iterrows():
        cells = [format_ci(r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"]) for m in METRICS]
        call = ""
        if has_calls:
            call = (f" | {r['call_accuracy']:.2f} of {int(r['n_units'])} {r['unit_kind']}s"
                    if pd.notna(r.get("call_accuracy")) else " | –")
        lines.append(f"| {r['split']} | {r['model']} | {r['seeds']} | {r['ci']} | " + " | ".join(cells) + call + " |")
    lines.append("")
    margins = pd.read_csv(margins_csv)
    if not margins.empty:
        best, split, metric = margins["best"].iloc[0], margins["split"].iloc[0], margins["metric"].iloc[0]
        lines += [f"### Best model on held-out donors (`{split}`, {METRIC_LABELS[metric]})", "",
                  f"Best: **{best}**. Its margin over every other model ({margins['interval'].iloc[0]}):", ""]
        for _, r in margins.iterrows():
            verdict = "excludes 0" if r["excludes_zero"] else "includes 0: not distinguishable"
            lines.append(f"- − {r['other']}: {format_ci(r['margin'], r['low'], r['high'])} ({verdict})")
        lines.append("")
        held = summ[summ["split"] == split].set_index("model")[f"{metric}_mean"]
        graph = held[[m for m in held.index if m in GRAPH_MODELS]]
        base = held[[m for m in held.index if m not in GRAPH_MODELS]]
        if len(graph) and len(base):
            g, b = graph.idxmax(), base.idxmax()
            if g == best:
                row = margins[margins["other"] == b].iloc[0]
                lines.append(f"The best graph model ({g}) beats the best baseline ({b}) by "
                             f"{format_ci(row['margin'], row['low'], row['high'])}"
                             + ("." if row["excludes_zero"] else ", an interval that includes 0: not a clear win."))
            else:
                lines.append(f"**No graph model beats the best baseline here**: the best graph model ({g}, "
                             f"{graph[g]:.3f}) is below the best baseline ({b}, {base[b]:.3f}) on held-out donors.")
            lines.append("")
    calls = pd.read_csv(calls_csv, dtype={"unit": str})
    if not calls.empty and not margins.empty:
        best_calls = calls[(calls["model"] == margins["best"].iloc[0]) & (calls["split"] == margins["split"].iloc[0])]
        if not best_calls.empty:
            lines += [donor_table(best_calls), ""]
    return lines


def donor_table(calls: pd.DataFrame) -> str:
    """Markdown table: each held-out unit's true class, its call (mean log-probability) per seed agreeing,
    and the majority-vote call, for one model."""
    kind = calls["unit_kind"].iloc[0]
    classes = [c[len("mean_logp_"):] for c in calls.columns if c.startswith("mean_logp_")]
    n_seeds = calls["seed"].nunique()
    lines = [f"Calls per held-out {kind} ({calls['model'].iloc[0]}; cells aggregated by mean log-probability, "
             f"and by majority vote; {n_seeds} seeds):", "",
             f"| {kind} | true | cells | call | seeds agreeing | vote | " + " | ".join(f"p({c})" for c in classes) + " |",
             "|" + "---|" * (6 + len(classes))]
    for unit, g in calls.groupby("unit", sort=True):
        logp = g[[f"mean_logp_{c}" for c in classes]].to_numpy().mean(0)
        p = np.exp(logp - logp.max())
        p /= p.sum()
        call = g["call"].mode().iloc[0]
        lines.append(f"| {unit} | {g['true'].iloc[0]} | {int(g['n_cells'].iloc[0])} | {call} | "
                     f"{int((g['call'] == call).sum())}/{n_seeds} | {g['vote'].mode().iloc[0]} | "
                     + " | ".join(f"{v:.2f}" for v in p) + " |")
    acc = calls.groupby("seed")["call_correct"].mean()
    lines += ["", f"{kind.capitalize()}-level accuracy: {acc.mean():.3f} (per seed: "
              + ", ".join(f"{v:.2f}" for v in acc) + ")."]
    return "\n".join(lines)


def write_summary(summary_csv: str, margins_csv: str, calls_csv: str, qc_json: str, path: str, dataset: str,
                  notes: list[str] = (), sections: dict[str, str] | None = None) -> str:
    """``summary.md``: data after QC, the design decisions of the run, the model comparison with
    95% intervals and donor-level calls, then the sections of later stages (title -> markdown)."""
    with open(qc_json) as fh:
        qc = json.load(fh)
    lines = [f"# cellgnn summary: `{dataset}`", ""]
    lines += ["## Data", "",
              f"{qc['output']['n_cells']} cells × {qc['output']['n_genes']} genes after QC "
              f"(from {qc['input']['n_cells']} × {qc['input']['n_genes']}; cells removed: "
              + ", ".join(f"{k}: {v}" for k, v in qc["removed_cells"].items()) + ").", "",
              "Cells per label: " + ", ".join(f"{k} {v}" for k, v in qc["cells_per_label"].items()) + ".", ""]
    if notes:
        lines += ["Decisions of this run:", ""] + [f"- {n}" for n in notes] + [""]
    lines += model_section(summary_csv, margins_csv, calls_csv)
    for title, body in (sections or {}).items():
        lines += [f"## {title}", "", body.strip(), ""]
    text = "\n".join(lines)
    write_text(text, path)
    return text


# ---------------------------------------------------------------- rule entry points
def _best_predictions(models_csv: str, prediction_files: list[str], split: str) -> tuple[str, list[pd.DataFrame]]:
    """The best model on split mode ``split`` and one prediction table per seed (on ``donor_cv`` the
    folds' tables joined: each cell once as ``test``, by the fold that held it out)."""
    import re

    model = best_run(pd.read_csv(models_csv), split)
    pattern = re.compile(rf"/{re.escape(split)}(/fold\d+)?/{re.escape(model)}/seed(\d+)/")
    by_seed: dict[int, list[pd.DataFrame]] = {}
    for f in sorted(prediction_files):
        m = pattern.search(str(f).replace("\\", "/"))
        if m:
            df = pd.read_csv(f)
            by_seed.setdefault(int(m.group(2)), []).append(df[df["split"] == "test"] if m.group(1) else df)
    return model, [pd.concat(v, ignore_index=True) for _, v in sorted(by_seed.items())]


def run_umap_embedding(adata_path: str, out_csv: str, seed: int = 0, graph: dict | None = None,
                       epochs: int | None = None) -> None:
    """Rule umap_embedding: UMAP coordinates of every cell to ``out_csv`` (``cell_id, umap1, umap2``)."""
    import anndata as ad

    emb = umap_embedding(ad.read_h5ad(adata_path, backed="r"), seed=seed, graph=graph, epochs=epochs)
    with atomic_path(out_csv) as tmp:
        emb.to_csv(tmp, float_format="%.5f")


def run_model_comparison(models_csv: str, summary_csv: str, png: str, pdf: str) -> None:
    """Rule model_comparison: :func:`plot_model_comparison` of ``metrics/models.csv`` with the
    intervals of ``metrics/models_summary.csv``."""
    plot_model_comparison(pd.read_csv(models_csv), pd.read_csv(summary_csv), png, pdf)


def run_umap(adata_path: str, embedding_csv: str, models_csv: str, prediction_files: list[str], split: str,
             png: str, pdf: str) -> None:
    """Rule umap: :func:`plot_umap` with the best model's predictions on ``split`` (first seed)."""
    import anndata as ad

    model, tables = _best_predictions(models_csv, prediction_files, split)
    obs = ad.read_h5ad(adata_path, backed="r").obs
    plot_umap(obs, pd.read_csv(embedding_csv, index_col="cell_id"), tables[0], png, pdf,
              f"{model}, {split} split, first seed", embedding_file=embedding_csv)


def run_confusion_matrix(models_csv: str, prediction_files: list[str], split: str, png: str, pdf: str) -> None:
    """Rule confusion_matrix: :func:`plot_confusion` of the best model on ``split``, seeds pooled."""
    model, tables = _best_predictions(models_csv, prediction_files, split)
    classes = sorted(set(tables[0]["true"].astype(str)))
    plot_confusion(tables, classes, png, pdf,
                   f"{model} ({split} split), test cells pooled over {len(tables)} seeds")
