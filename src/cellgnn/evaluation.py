"""Evaluation protocol: paired comparisons over seeds and the edge-feature ablation.

Input is the ``metrics/models.csv`` table (``model, split, seed, accuracy,
balanced_accuracy, macro_f1, auroc`` on the test cells). Two models trained with the
same seed share the split, the graph and the edge features, so their per-seed
differences are paired: we report the mean difference, a t-based 95% interval
(n − 1 degrees of freedom) and the two-sided paired t-test p-value.

Ablation models are named ``gat_ef_minus_<group>``: ``gat_ef`` retrained without one
edge-feature group; the ablation table is the paired comparison of each against the
full ``gat_ef`` (negative difference = the group helped).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .errors import CellgnnInputError
from .stats import paired_differences, t_interval

LOG = logging.getLogger(__name__)

ABLATION_PREFIX = "gat_ef_minus_"


def paired_comparison(df: pd.DataFrame, model: str, baselines, metric: str = "macro_f1",
                      level: float = 0.95) -> pd.DataFrame:
    """``model`` − each baseline, paired by seed within each split.

    Columns: ``split, model, baseline, metric, n_seeds, seeds, mean_model, mean_baseline,
    mean_diff, ci_low, ci_high, t, p_value``. Pairs exist only for seeds both models ran;
    splits where either model is absent are skipped. NaN interval/test when n < 2.
    """
    _check_columns(df, [metric])
    rows = []
    for split in sorted(df["split"].unique()):
        d = df[df["split"] == split]
        a = d[d["model"] == model].set_index("seed")[metric]
        for base in baselines:
            b = d[d["model"] == base].set_index("seed")[metric]
            paired = paired_differences(a, b)
            if paired.empty:
                continue
            seeds, diff = list(paired.index), paired.to_numpy()
            mean, lo, hi = t_interval(diff, level)
            if len(seeds) >= 2 and np.std(diff, ddof=1) > 0:
                t, p = stats.ttest_rel(a.loc[seeds], b.loc[seeds])
            elif len(seeds) >= 2:
                t, p = (0.0, 1.0) if mean == 0 else (np.sign(mean) * np.inf, 0.0)
            else:
                t, p = np.nan, np.nan
            rows.append({"split": split, "model": model, "baseline": base, "metric": metric,
                         "n_seeds": len(seeds), "seeds": " ".join(map(str, seeds)),
                         "mean_model": float(a.loc[seeds].mean()), "mean_baseline": float(b.loc[seeds].mean()),
                         "mean_diff": mean, "ci_low": lo, "ci_high": hi, "t": float(t), "p_value": float(p)})
    return pd.DataFrame(rows, columns=["split", "model", "baseline", "metric", "n_seeds", "seeds", "mean_model",
                                       "mean_baseline", "mean_diff", "ci_low", "ci_high", "t", "p_value"])


def ablation_table(df: pd.DataFrame, full: str = "gat_ef", metric: str = "macro_f1") -> pd.DataFrame:
    """Paired change of ``metric`` when ``full`` is retrained without each edge-feature group.

    Rows per (split, group): ``mean_diff`` = ablated − full (negative: the group helped),
    repeated as ``delta_<metric>`` for readers that look for that name (cellgnn.explain).
    """
    ablated = sorted(m for m in df["model"].unique() if m.startswith(ABLATION_PREFIX))
    out = []
    for m in ablated:
        t = paired_comparison(df, m, [full], metric)
        t.insert(1, "group", m[len(ABLATION_PREFIX):])
        t[f"delta_{metric}"] = t["mean_diff"]
        out.append(t)
    if not out:
        return pd.DataFrame(columns=["split", "group", "model", "baseline", "metric", "n_seeds", "seeds",
                                     "mean_model", "mean_baseline", "mean_diff", "ci_low", "ci_high", "t",
                                     "p_value", f"delta_{metric}"])
    return pd.concat(out, ignore_index=True)


def plot_comparison(comparison: pd.DataFrame, ablation: pd.DataFrame, path_png: str) -> None:
    """Two panels of paired differences with 95% intervals: model vs baselines, and the ablation.

    Writes ``path_png`` and the same figure as PDF beside it (atomically).
    """
    from .figstyle import colour, pyplot, save_figure

    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    panels = [(comparison, "baseline", "gat_ef − baseline"), (ablation, "group", "without group − full gat_ef")]
    for ax, (tab, key, title) in zip(axes, panels):
        ax.axvline(0, color="grey", lw=1, ls="--")
        if tab.empty:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes)
        splits = sorted(tab["split"].unique()) if not tab.empty else []
        labels = sorted(tab[key].unique()) if not tab.empty else []
        for s_i, split in enumerate(splits):
            d = tab[tab["split"] == split].set_index(key)
            ys = [i + 0.15 * (s_i - (len(splits) - 1) / 2) for i, lab in enumerate(labels) if lab in d.index]
            rows = d.loc[[lab for lab in labels if lab in d.index]]
            err = np.vstack([rows["mean_diff"] - rows["ci_low"], rows["ci_high"] - rows["mean_diff"]])
            ax.errorbar(rows["mean_diff"], ys, xerr=np.nan_to_num(err), fmt="o", capsize=3,
                        color=colour(s_i), label=f"split: {split}")
        ax.set_yticks(range(len(labels)), labels)
        metric = tab["metric"].iloc[0] if not tab.empty else "macro_f1"
        ax.set_xlabel(f"paired difference in test {metric} (mean, 95% t-interval over seeds)")
        ax.set_ylabel(key)
        ax.set_title(title)
        if splits:
            ax.legend(loc="best", fontsize=8)
    save_figure(fig, path_png)


def run_evaluate(models_csv: str, ablation_metrics: list[str], comparison_csv: str, ablation_csv: str,
                 figure_png: str, cfg: dict | None = None) -> None:
    """Rule evaluate: write the paired comparison, the ablation table and their figure.

    models_csv: ``metrics/models.csv``; ablation_metrics: ``metrics.json`` files of the
    ``gat_ef_minus_<group>`` runs; cfg: the ``evaluation`` config section (``model``,
    ``baselines``, ``metric``).
    """
    from .io import write_csv

    from .config import settings

    cfg = settings("evaluation", cfg)
    cfg["baselines"] = cfg["baselines"] or [m for m in ("gat", "logreg") if m != cfg["model"]]
    model, metric = cfg["model"], cfg["metric"]
    df = pd.read_csv(models_csv)
    _check_columns(df, [metric], file=models_csv)
    if model not in set(df["model"]):
        raise CellgnnInputError(f"no rows for model '{model}'", file=models_csv, field="evaluation.model",
                                fix=f"add {model} to train.models")
    rows = pd.DataFrame()
    if ablation_metrics:  # on donor_cv pooled over the folds, as models.csv
        from .heldout import pooled_metrics, read_runs, read_test_predictions

        runs = read_runs(ablation_metrics)
        cv = [f for f, split in zip(ablation_metrics, _splits(ablation_metrics)) if split == "donor_cv"]
        preds = read_test_predictions([str(Path(f).with_name("predictions.csv")) for f in cv]) if cv else \
            pd.DataFrame(columns=["split"])
        rows = pooled_metrics(runs, preds)
    abl_df = pd.concat([df[df["model"] == model], rows], ignore_index=True) if not rows.empty else df
    comp = paired_comparison(df, model, [b for b in cfg["baselines"] if b in set(df["model"])], metric)
    abl = ablation_table(abl_df, model, metric)
    write_csv(comp, comparison_csv)
    write_csv(abl, ablation_csv)
    plot_comparison(comp, abl, figure_png)
    LOG.info("paired %s differences:\n%s\nablation:\n%s", metric,
             comp[["split", "baseline", "n_seeds", "mean_diff", "ci_low", "ci_high", "p_value"]].to_string(),
             abl[["split", "group", "n_seeds", "mean_diff", "ci_low", "ci_high", "p_value"]].to_string())


def _splits(metric_files: list[str]) -> list[str]:
    import json

    return [json.loads(Path(f).read_text())["split"] for f in metric_files]


def _check_columns(df: pd.DataFrame, metrics, file: str | None = None) -> None:
    missing = [c for c in ("model", "split", "seed", *metrics) if c not in df.columns]
    if missing:
        raise CellgnnInputError(f"missing columns {missing}", file=file, field="columns",
                                fix="regenerate metrics/models.csv with the train rules")
