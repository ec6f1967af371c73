"""``summary.md`` with every stage's tables: the model comparison (figures stage), then
augmentation and explanation sections when those stages ran."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .plots import write_summary
from .plots_explain import _fmt, explanation_section
from .stats import t_interval


def augmentation_section(files: list[str]) -> str:
    """Markdown for the augment stage's outputs: scalar entries of ``*.json`` metrics and,
    for ``*.csv`` tables, numeric columns averaged over seeds (95% CI) per setting."""
    lines = []
    for f in sorted(files, key=str):
        p = Path(f)
        if p.suffix == ".json":
            data = json.loads(p.read_text())
            flat = _flatten(data)
            if flat:
                lines += [f"`{p.name}`:", ""] + [f"- {k}: {v:.4g}" if isinstance(v, float) else f"- {k}: {v}"
                                                 for k, v in flat.items()] + [""]
        elif p.suffix == ".csv":
            df = pd.read_csv(p)
            num = [c for c in df.select_dtypes("number").columns if c != "seed"]
            keys = [c for c in df.columns if c not in num and c != "seed"]
            if not num:
                continue
            lines += [f"`{p.name}` (mean over seeds, 95% CI):", "",
                      "| " + " | ".join(keys + num) + " |", "|" + "---|" * (len(keys) + len(num))]
            groups = df.groupby(keys, sort=False) if keys else [((), df)]
            for key, grp in groups:
                key = key if isinstance(key, tuple) else (key,)
                lines.append("| " + " | ".join([str(k) for k in key] + [_fmt(*t_interval(grp[c])) for c in num]) + " |")
            lines.append("")
    return "\n".join(lines)


def cell_type_section(cell_types_csv: str, best: str | None, explain_dir: str | None, truth: dict | None,
                      control: str | None) -> str:
    """Markdown: which cell types respond most. Per cell type, how well the best model tells the
    classes apart in held-out donors' cells of that type (AUROC, bootstrap interval over donors) and,
    when explanations ran, the mean |attribution| per explained non-control cell (by completeness,
    the size of the model's evidence against the control); with simulated truth, the planted
    response strength of the type and the rank correlation of each measure with it."""
    from scipy.stats import spearmanr

    table = pd.read_csv(cell_types_csv)
    if table.empty:
        return "No per-cell-type table: no cell types, or no held-out donors."
    split = "donor_cv" if "donor_cv" in set(table["split"]) else table["split"].iloc[0]
    model = best if best in set(table.loc[table["split"] == split, "model"]) else None
    if model is None:
        model = table[table["split"] == split].groupby("model")["auroc"].mean().idxmax()
    t = table[(table["split"] == split) & (table["model"] == model)].set_index("cell_type")
    cols = {"AUROC (held-out donors)": t.apply(lambda r: _fmt(r["auroc"], r["auroc_low"], r["auroc_high"]), axis=1),
            "AUROC rank": t["rank"]}
    measures = {"AUROC": t["auroc"]}
    if explain_dir and (Path(explain_dir) / "cell_types.csv").exists():
        from .design import resolve_control

        ig = pd.read_csv(Path(explain_dir) / "cell_types.csv")
        control = resolve_control(sorted(set(ig["class"]) - {"all"}), control or "auto")
        ig = ig[(ig["class"] != "all") & (ig["class"] != str(control)) & (ig["n_cells"] > 0)]
        if not ig.empty:
            ig = ig.assign(w=ig["mean_abs_attribution"] * ig["n_cells"])
            per = ig.groupby(["seed", "cell_type"])[["w", "n_cells"]].sum()
            mean_attr = (per["w"] / per["n_cells"]).groupby("cell_type").mean()
            cols["mean |IG| per cell"] = mean_attr.reindex(t.index).map(lambda v: f"{v:.3f}")
            cols["IG rank"] = mean_attr.reindex(t.index).rank(ascending=False, method="min").astype("Int64")
            measures["mean |IG|"] = mean_attr.reindex(t.index)
    lines = [f"Per cell type, {model} on `{split}` (held-out donors' cells of each type; AUROC: how well the "
             "classes are told apart, as Augur's score but on donors never trained on):", ""]
    if truth is not None:
        planted = (pd.DataFrame(truth).assign(lfc=lambda d: d["log2_fold_change"].abs())
                   .groupby("cell_type")["lfc"].mean())
        cols["planted response (mean log2FC)"] = planted.reindex(t.index).map(lambda v: f"{v:.2f}")
        cols["planted rank"] = planted.reindex(t.index).rank(ascending=False, method="min").astype("Int64")
    order = t.sort_values("rank").index
    lines += ["| cell type | cells | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
    lines += [f"| {c} | {int(t.loc[c, 'n_cells'])} | " + " | ".join(str(v.loc[c]) for v in cols.values()) + " |"
              for c in order]
    if truth is not None:
        planted_r = planted.reindex(t.index)
        corr = []
        for name, v in measures.items():
            both = v.notna() & planted_r.notna()
            if both.sum() > 2:
                corr.append(f"{name} ρ = {spearmanr(v[both], planted_r[both]).statistic:.2f} "
                            f"({int(both.sum())} cell types)")
        lines += ["", "Rank correlation (Spearman) with the planted response strength: " + "; ".join(corr) + "."]
    lines += ["", "Top: " + ", ".join(order[:2]) + "; bottom: " + ", ".join(order[-2:]) + " (by AUROC)."]
    return "\n".join(lines)


def _flatten(d, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{name}."))
        elif isinstance(v, (int, float, str, bool)) and not (isinstance(v, float) and not np.isfinite(v)):
            out[name] = v
    return out


def run_summary(metrics_dir: str, qc_json: str, path: str, dataset: str, notes: list[str] = (),
                explain_run: str | None = None, augment_files: list[str] = (), raw: str | None = None,
                control: str | None = None) -> str:
    """Rule summary: ``summary.md`` with the data, the run's design decisions and the model tables
    (from the collect_metrics rule's ``metrics_dir``), plus augmentation and explanation sections
    for the stages present in this run."""
    from .explain import read_ground_truth

    d = Path(metrics_dir)
    margins = pd.read_csv(d / "margins.csv")
    sections = {"Cell types: which respond most": cell_type_section(
        str(d / "cell_types.csv"), None if margins.empty else margins["best"].iloc[0],
        str(Path(explain_run).parent) if explain_run else None, read_ground_truth(raw) if raw else None, control)}
    if augment_files:
        sections["Augmentation (ACTIVA)"] = augmentation_section(list(augment_files))
    if explain_run:
        sections["Explanations"] = explanation_section(Path(explain_run).parent)
    return write_summary(str(d / "models_summary.csv"), str(d / "margins.csv"), str(d / "calls.csv"), qc_json, path,
                         dataset, notes=notes, sections=sections)
