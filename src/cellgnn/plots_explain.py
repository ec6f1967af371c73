"""Figures of the explain stage (PNG + PDF, Okabe–Ito colours: :mod:`cellgnn.figstyle`; labelled axes).

Each ``plot_*`` function reads the explain stage's tables and writes ``<stem>.png`` and
``<stem>.pdf``. ``plot_explain(explain_dir, figure_dir, truth_genes)`` writes all four.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from .figstyle import colour, pyplot, save_figure
from .stats import t_interval

LOG = logging.getLogger(__name__)

METHOD_LABELS = {"integrated_gradients": "Integrated gradients", "weights": "First-layer weight magnitude",
                 "attention": "scANNA attention", "gnnexplainer": "GNNExplainer",
                 "de": "Wilcoxon DE (vs rest)",
                 "de_control": "Wilcoxon DE (vs control)", "random": "Random"}
FIGURES = ("explain_top_genes", "explain_methods", "explain_edge_features", "explain_cell_types")


def _empty(stem, title: str, message: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 2))
    ax.axis("off")
    ax.set_title(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    save_figure(fig, stem)


def plot_top_genes(genes: pd.DataFrame, stem, method: str = "integrated_gradients", n_top: int = 5,
                   planted: set[tuple[str, str]] | None = None) -> None:
    """Dot plot: top ``n_top`` genes of each class × cell type (columns) for one method.

    Colour = score scaled to [0, 1] within each column, size = 1/rank; genes planted in
    that class are marked with a black ring when ``planted`` (pairs ``(class, gene)``) is given.
    """
    plt = pyplot()
    d = genes[(genes["method"] == method) & (genes["rank"] <= n_top)]
    if d.empty:
        _empty(stem, "Top genes per class × cell type", f"no {method} rankings in this run")
        return
    d = d.assign(column=d["class"] + " · " + d["cell_type"])
    cols = sorted(d["column"].unique(), key=lambda c: (c.split(" · ")[0], c.split(" · ")[1] != "all", c))
    rows = list(dict.fromkeys(d.sort_values(["class", "rank"])["gene"]))
    full = genes[(genes["method"] == method)]
    full = full.assign(column=full["class"] + " · " + full["cell_type"])
    full = full[full["column"].isin(cols) & full["gene"].isin(rows)]
    scaled = full.groupby("column")["score"].transform(lambda s: (s - s.min()) / (s.max() - s.min() + 1e-12))
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 3, 0.28 * len(rows) + 2))
    xs = full["column"].map({c: i for i, c in enumerate(cols)})
    ys = full["gene"].map({g: i for i, g in enumerate(rows)})
    size = lambda rank: 120 / np.clip(rank, 1, None) ** 0.5  # noqa: E731 - dot area from the rank
    sc = ax.scatter(xs, ys, c=scaled, s=size(full["rank"].to_numpy()), cmap="cividis", vmin=0, vmax=1)
    for r in sorted({1, n_top, int(full["rank"].max())}):  # dot-size key
        ax.scatter([], [], s=size(r), color="grey", label=f"rank {r}")
    if planted:
        hit = [(c, g) in planted for c, g in zip(full["class"], full["gene"])]
        ax.scatter(xs[hit], ys[hit], s=170, facecolors="none", edgecolors="black", linewidths=0.8,
                   label="planted response gene")
    ax.legend(loc="upper left", bbox_to_anchor=(1.25, 1.0), frameon=False, fontsize=8)
    ax.set_xticks(range(len(cols)), cols, rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), rows, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("class · cell type")
    ax.set_ylabel("gene")
    ax.set_title(f"Top {n_top} genes per class × cell type ({METHOD_LABELS.get(method, method)})")
    fig.colorbar(sc, ax=ax, label="score (scaled per column)", shrink=0.6)
    save_figure(fig, stem)


def plot_method_comparison(scores: pd.DataFrame, stem) -> None:
    """Precision@k and AUPRC per method: mean over classes per seed (points), mean and 95%
    interval over seeds (bar and error bar)."""
    plt = pyplot()
    if scores.empty:
        _empty(stem, "Attribution methods against planted genes", "no ground truth (real data): nothing to score")
        return
    per_seed = scores.groupby(["method", "seed"], dropna=False)[["precision_at_k", "auprc"]].mean().reset_index()
    order = per_seed.groupby("method")["precision_at_k"].mean().sort_values(ascending=False).index.tolist()
    fig, axes = plt.subplots(1, 2, figsize=(2 + 1.1 * len(order), 3.6), sharey=True)
    for ax, metric, label in zip(axes, ("precision_at_k", "auprc"), ("precision@k (k = planted genes)", "AUPRC")):
        for i, m in enumerate(order):
            v = per_seed.loc[per_seed["method"] == m, metric].to_numpy()
            mean, lo, hi = t_interval(v)
            ax.bar(i, mean, color=colour(i), alpha=0.8, yerr=_yerr(mean, lo, hi), capsize=3)
            ax.scatter(np.full(v.size, i) + np.linspace(-0.15, 0.15, v.size), v, s=10, color="black", zorder=3)
        ax.set_xticks(range(len(order)), [METHOD_LABELS.get(m, m) for m in order], rotation=40, ha="right")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.05)
        ax.set_title(label.split(" ")[0])
        ax.tick_params(labelleft=True)
    fig.suptitle("Attribution methods against the known response genes (bars: mean, error bars: 95% CI over "
                 "model seeds, points: seeds)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem)


def plot_edge_features(edge: pd.DataFrame, stem) -> None:
    """Edge-feature group importance: ablation (drop in the metric when a group is removed)
    beside weight magnitudes (mean |W| of the first edge-feature layer, min–max scaled)."""
    plt = pyplot()
    if edge.empty:
        _empty(stem, "Edge-feature group importance",
               "no edge-feature model or ablation in this run (see explain/run.json notes)")
        return
    methods = list(dict.fromkeys(edge["method"]))
    groups = sorted(edge["group"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(3.2 * len(methods) + 1, 3.2), squeeze=False)
    ylabels = {"ablation": "metric drop without group (95% CI)", "weights": "mean |W| (min–max scaled; s.d.)"}
    for ax, m in zip(axes[0], methods):
        d = edge[edge["method"] == m]
        g = d.groupby("group")["importance"]
        mean = g.mean().reindex(groups)
        if m == "ablation" and {"low", "high"} <= set(d.columns):  # one row per group with its interval
            lo, hi = d.groupby("group")["low"].mean().reindex(groups), d.groupby("group")["high"].mean().reindex(groups)
            err = np.vstack([(mean - lo).clip(lower=0).fillna(0), (hi - mean).clip(lower=0).fillna(0)])
        else:
            err = g.std().reindex(groups).fillna(0).to_numpy()
        ax.bar(range(len(groups)), mean, yerr=err, capsize=3,
               color=[colour(i) for i in range(len(groups))])
        ax.set_xticks(range(len(groups)), groups, rotation=30, ha="right")
        ax.set_xlabel("edge-feature group")
        ax.set_ylabel(ylabels.get(m, "importance"))
        ax.set_title(m)
        ax.axhline(0, color="grey", lw=0.5)
    fig.suptitle("Edge-feature group importance", fontsize=9)
    fig.tight_layout()
    save_figure(fig, stem)


def plot_cell_types(cell_types: pd.DataFrame, stem) -> None:
    """Per cell type: test accuracy of the explained model, and the share of integrated-
    gradient mass each cell type's nodes carry (all classes together); 95% CI over seeds."""
    plt = pyplot()
    d = cell_types[cell_types["class"] == "all"] if not cell_types.empty else cell_types
    if d.empty:
        _empty(stem, "Per-cell-type accuracy", "integrated gradients not run: no per-cell-type table")
        return
    types = list(dict.fromkeys(d["cell_type"]))
    n_cells = d.groupby("cell_type")["n_cells"].mean() if "n_cells" in d else None
    ticks = [t if n_cells is None else f"{t} (n={n_cells[t]:.0f})" for t in types]
    fig, axes = plt.subplots(1, 2, figsize=(max(7.0, 3 + 0.9 * len(types)), 3.6))
    for ax, col, label in zip(axes, ("accuracy", "attribution_share"),
                              ("accuracy on explained cells", "share of |IG| mass from its nodes")):
        for i, t in enumerate(types):
            v = d.loc[d["cell_type"] == t, col].to_numpy(dtype=float)
            mean, lo, hi = t_interval(v)
            ax.bar(i, mean, color=colour(i), yerr=_yerr(mean, lo, hi), capsize=3)
        ax.set_xticks(range(len(types)), ticks, rotation=40, ha="right")
        ax.set_xlabel("cell type (explained cells)")
        ax.set_ylabel(label)
        ax.set_ylim(0, 1.05 if col == "accuracy" else None)
    axes[0].set_title("Per-cell-type accuracy")
    axes[1].set_title("Which cell types carry the signal")
    fig.tight_layout()
    save_figure(fig, stem)


def plot_explain(explain_dir: str | Path, figure_dir: str | Path, truth: dict | None = None,
                 method: str = "integrated_gradients", n_top: int = 5) -> list[Path]:
    """Write the four explain figures from the tables in ``explain_dir``; returns the stems."""
    e, f = Path(explain_dir), Path(figure_dir)
    genes = pd.read_csv(e / "genes.csv")
    planted = None
    if truth is not None:
        planted = set(zip(np.asarray(truth["class"]).astype(str), np.asarray(truth["gene"]).astype(str)))
    if method not in set(genes["method"]) and not genes.empty:
        method = genes["method"].iloc[0]
    stems = [f / s for s in FIGURES]
    plot_top_genes(genes, stems[0], method=method, n_top=n_top, planted=planted)
    plot_method_comparison(pd.read_csv(e / "ground_truth_scores.csv"), stems[1])
    plot_edge_features(pd.read_csv(e / "edge_features.csv"), stems[2])
    plot_cell_types(pd.read_csv(e / "cell_types.csv"), stems[3])
    return stems


def run_explain_figures(run_json: str, raw_path: str, first_png: str, method: str, n_top: int) -> list[Path]:
    """Rule explain_figures: tables beside ``run_json``, truth from ``raw_path``, figures beside ``first_png``."""
    from .explain import read_ground_truth

    return plot_explain(Path(run_json).parent, Path(first_png).parent, truth=read_ground_truth(raw_path),
                        method=method, n_top=n_top)


def _yerr(mean: float, low: float, high: float):
    """Error-bar extents ``[[below], [above]]`` of an interval; None when there is none (one seed)."""
    return None if not np.isfinite(low) else [[mean - low], [high - mean]]


def _fmt(mean: float, low: float, high: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.3f}" if not np.isfinite(low) or high - low < 1e-9 else f"{mean:.3f} [{low:.3f}, {high:.3f}]"


def _fmt_margin(diff: float, low: float, high: float) -> str:
    """A signed difference with its interval; no interval for a single pair of runs."""
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]" if np.isfinite(low) else f"{diff:+.3f} (one seed, no interval)"


def explanation_section(explain_dir: str | Path) -> str:
    """Markdown for ``summary.md``: methods against the planted truth, winner and margins,
    IG completeness, cell-type accuracy and edge-feature importance."""
    import json

    e = Path(explain_dir)
    run = json.loads((e / "run.json").read_text())
    graphs = run.get("graphs", [run.get("graph")])
    lines = [f"Explained {run['n_cells']} `{run['cells_from']}` cells with model seeds {run['model_seeds']}"
             + (f" (graph `{graphs[0]}`)." if len(graphs) == 1 else
                f", pooled over {len(graphs)} folds (each cell explained by the models of the fold that held its "
                "donor out).")]
    summ = pd.read_csv(e / "scores_summary.csv") if (e / "scores_summary.csv").stat().st_size > 1 else pd.DataFrame()
    truth = run.get("truth") or "planted genes (simulator)"
    if summ.empty:
        lines.append("No ground truth and no gene set (explain.gene_set): the gene rankings are in "
                     "`explain/genes.csv`, unscored.")
    else:
        what = ("Planted response genes recovered by each method (mean over classes; mean and 95% CI over seeds; "
                "k = number of genes planted in every cell type of the class):" if truth.startswith("planted") else
                f"Genes of the published {truth} recovered by each method for the classes it describes (k = "
                "the set's genes measured; DE is the baseline, random the floor; mean and 95% CI over seeds):")
        lines += ["", what, "", "| method | seeds | precision@k | AUPRC |", "|---|---|---|---|"]
        for _, r in summ.iterrows():
            lines.append(f"| {METHOD_LABELS.get(r['method'], r['method'])} | {r['seeds'] if pd.notna(r['seeds']) else 'deterministic'} | "
                         f"{_fmt(r['precision_at_k'], r['precision_at_k_low'], r['precision_at_k_high'])} | "
                         f"{_fmt(r['auprc'], r['auprc_low'], r['auprc_high'])} |")
        best = summ.iloc[0]
        from .explain import method_margins

        marg = method_margins(pd.read_csv(e / "ground_truth_scores.csv"), best["method"],
                              [m for m in summ["method"] if m != best["method"]])
        margins = [f"{_fmt_margin(r['diff'], r['low'], r['high'])} over {METHOD_LABELS.get(r['other'], r['other'])}"
                   for _, r in marg.iterrows()]
        lines += ["", f"Best: **{METHOD_LABELS.get(best['method'], best['method'])}**, precision@k "
                  f"{best['precision_at_k']:.3f}" + (f"; margins paired by model seed, 95% CI: {'; '.join(margins)}."
                                                      if margins else ".")]
        close = marg[(marg["low"] <= 0) & (marg["n_seeds"] > 1)]
        if not close.empty:
            lines.append("Not distinguishable from the best at these seeds (interval includes 0): "
                         + ", ".join(METHOD_LABELS.get(o, o) for o in close["other"]) + ".")
        by_ct_path = e / "ground_truth_scores_by_cell_type.csv"
        by_ct = pd.read_csv(by_ct_path) if by_ct_path.stat().st_size > 1 else pd.DataFrame()
        if not by_ct.empty:
            from .explain import summarize_scores

            ct_summ = summarize_scores(by_ct)
            lines += ["", "Per class × cell type, against every gene planted there (shared and cell-type-specific "
                      "programmes; mean over the groups a method ranks):",
                      "", "| method | precision@k | AUPRC |", "|---|---|---|"]
            lines += [f"| {METHOD_LABELS.get(r['method'], r['method'])} | "
                      f"{_fmt(r['precision_at_k'], r['precision_at_k_low'], r['precision_at_k_high'])} | "
                      f"{_fmt(r['auprc'], r['auprc_low'], r['auprc_high'])} |" for _, r in ct_summ.iterrows()]
    comp = pd.read_csv(e / "ig_completeness.csv")
    if "completeness_rel_error" in comp and not comp.empty:
        lines += ["", f"Integrated gradients: completeness error (|Σ attributions − Δf| / |Δf|, f the explained log-odds or logit) at most "
                  f"{comp['completeness_rel_error'].max():.2e} over {len(comp)} batches, with "
                  f"{int(comp['n_steps'].min())}–{int(comp['n_steps'].max())} Gauss–Legendre steps."]
    ct = pd.read_csv(e / "cell_types.csv")
    ct = ct[ct["class"] == "all"] if not ct.empty else ct
    if not ct.empty:
        lines += ["", "| cell type | cells | accuracy | share of IG mass |", "|---|---|---|---|"]
        for t, grp in ct.groupby("cell_type", sort=False):
            lines.append(f"| {t} | {int(grp['n_cells'].iloc[0])} | {_fmt(*t_interval(grp['accuracy']))} | "
                         f"{_fmt(*t_interval(grp['attribution_share']))} |")
    edge = pd.read_csv(e / "edge_features.csv")
    if not edge.empty:
        piv = edge.groupby(["group", "method"])["importance"].mean().unstack()
        lines += ["", "Edge-feature groups: " + "; ".join(
            f"{g}: " + ", ".join(f"{m} {v:.3f}" for m, v in row.items() if np.isfinite(v)) for g, row in piv.iterrows())
            + "."]
    if run.get("notes"):
        lines += ["", "Notes: " + " ".join(f"{n}." if not n.endswith(".") else n for n in run["notes"])]
    return "\n".join(lines)
