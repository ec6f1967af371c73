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
from .stats import paired_margin, summarize, t_interval  # noqa: E402

LOG = logging.getLogger(__name__)
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro-F1",
                 "auroc": "AUROC (one-vs-rest)"}


def best_run(models_csv: pd.DataFrame, split: str, metric: str = "macro_f1") -> str:
    """Model with the highest mean test ``metric`` on split mode ``split``."""
    sub = models_csv[models_csv["split"] == split]
    return str(sub.groupby("model")[metric].mean().idxmax())


# ---------------------------------------------------------------- UMAP
def umap_embedding(adata, seed: int = 0) -> pd.DataFrame:
    """2-D UMAP of the cells from their PCA (scanpy neighbors + umap, seeded).

    adata: preprocessed AnnData with ``obsm["X_pca"]``; returns a DataFrame indexed by
    cell id with columns ``umap1, umap2`` (arbitrary units).
    """
    import scanpy as sc

    adata = _pca_only(adata)
    sc.pp.neighbors(adata, use_rep="X_pca", random_state=seed)
    sc.tl.umap(adata, random_state=seed)
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
def plot_model_comparison(df: pd.DataFrame, png: str, pdf: str, chance: dict[str, float] | None = None) -> None:
    """Bars: mean test metric per model and split mode, error bars = 95% CI over seeds, dots = seeds."""
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
                mean, low, high = t_interval(vals)
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
    fig.suptitle(f"Held-out test cells; bars: mean over {n_seeds} seeds, error bars: 95% CI (t), dots: seeds",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, png, pdf)


# ---------------------------------------------------------------- summary
def format_ci(mean: float, low: float, high: float) -> str:
    if np.isnan(mean):
        return "n/a"
    if np.isnan(low):
        return f"{mean:.3f}"
    return f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def paired_difference(df: pd.DataFrame, a: str, b: str, split: str, metric: str = "macro_f1"):
    """Mean and 95% CI over seeds of ``metric(a) - metric(b)``, paired by seed; None if not both present."""
    sub = df[df["split"] == split].set_index("seed")
    if a not in set(sub["model"]) or b not in set(sub["model"]):
        return None
    interval, n = paired_margin(sub.loc[sub["model"] == a, metric], sub.loc[sub["model"] == b, metric])
    return (*interval, n)


def write_summary(models_csv: str, qc_json: str, path: str, dataset: str, sections: dict[str, str] | None = None) -> str:
    """``summary.md``: data after QC, the model comparison with 95% CIs, GAT vs baselines.

    sections: extra markdown blocks (title → body) contributed by later stages.
    """
    df = pd.read_csv(models_csv)
    with open(qc_json) as fh:
        qc = json.load(fh)
    lines = [f"# cellgnn summary: `{dataset}`", ""]
    lines += ["## Data", "",
              f"{qc['output']['n_cells']} cells × {qc['output']['n_genes']} genes after QC "
              f"(from {qc['input']['n_cells']} × {qc['input']['n_genes']}; cells removed: "
              + ", ".join(f"{k}: {v}" for k, v in qc["removed_cells"].items()) + ").", "",
              "Cells per label: " + ", ".join(f"{k} {v}" for k, v in qc["cells_per_label"].items()) + ".", ""]
    summ = summarize(df)
    lines += ["## Model comparison (test cells)", "",
              "Mean over seeds with a t-based 95% confidence interval. Split mode `cells`: cells assigned at "
              "random (donors shared between train and test, as in the original study); `donors`: whole donors "
              "held out (the honest estimate for new patients).", ""]
    header = "| split | model | seeds | " + " | ".join(METRIC_LABELS[m] for m in METRICS) + " |"
    lines += [header, "|" + "---|" * (3 + len(METRICS))]
    for _, r in summ.sort_values(["split", "macro_f1_mean"], ascending=[True, False]).iterrows():
        cells = [format_ci(r[f"{m}_mean"], r[f"{m}_low"], r[f"{m}_high"]) for m in METRICS]
        lines.append(f"| {r['split']} | {r['model']} | {r['seeds']} | " + " | ".join(cells) + " |")
    lines.append("")
    comparisons = []
    for split in sorted(df["split"].unique()):
        for other in ("logreg", "mlp", "gcn"):
            res = paired_difference(df, "gat", other, split)
            if res is not None:
                mean, low, high, n = res
                comparisons.append(f"- `{split}`: GAT − {other} macro-F1 = {format_ci(mean, low, high)} "
                                   f"(paired over {n} seeds)")
    if comparisons:
        lines += ["### GAT against the baselines", ""] + comparisons + [""]
    for title, body in (sections or {}).items():
        lines += [f"## {title}", "", body.strip(), ""]
    text = "\n".join(lines)
    write_text(text, path)
    return text


# ---------------------------------------------------------------- rule entry points
def _best_predictions(models_csv: str, prediction_files: list[str], split: str) -> tuple[str, list[pd.DataFrame]]:
    """The best model on ``split`` and its per-seed prediction tables."""
    model = best_run(pd.read_csv(models_csv), split)
    files = [f for f in prediction_files if f"/{split}/{model}/seed" in str(f)]
    return model, [pd.read_csv(f) for f in sorted(files)]


def run_umap_embedding(adata_path: str, out_csv: str, seed: int = 0) -> None:
    """Rule umap_embedding: UMAP coordinates of every cell to ``out_csv`` (``cell_id, umap1, umap2``)."""
    import anndata as ad

    emb = umap_embedding(ad.read_h5ad(adata_path, backed="r"), seed=seed)
    with atomic_path(out_csv) as tmp:
        emb.to_csv(tmp, float_format="%.5f")


def run_model_comparison(models_csv: str, png: str, pdf: str) -> None:
    """Rule model_comparison: :func:`plot_model_comparison` of ``metrics/models.csv``."""
    plot_model_comparison(pd.read_csv(models_csv), png, pdf)


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
