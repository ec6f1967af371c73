"""Held-out evaluation: metrics pooled over donor folds, donor-level calls, intervals over donors.

``collect_metrics`` is the rule that gathers every training run. On ``donor_cv`` every cell is
tested exactly once, by the models of the fold that held its donor out: metrics are computed on
the pooled held-out cells per model and seed, and their 95% interval comes from a bootstrap over
donors (held-out donors resampled with replacement, the metric averaged over seeds in each
replicate), which carries the donor-to-donor variation that 3 seeds of one split do not. On
``cells`` and ``donors`` (one split) the interval is a t-interval over seeds.

Calls (``calls.csv``): each held-out donor's cells are aggregated into one call per donor — or
per sample (donor x condition, ``data.keys.sample``) where the label varies within donors but
not within samples — by the mean log-probability and by majority vote.

Margins (``margins.csv``): the best model on the held-out split against every other model,
paired (same donor resamples, same seeds), with a bootstrap interval.

Cell types (``cell_types.csv``): which cell types respond most, as Augur asks it but on held-out
donors: per model and cell type, how well the held-out cells of that type are classified
(AUROC, balanced accuracy; bootstrap over donors), ranked within each model.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd

from .metrics import METRICS, classification_metrics
from .stats import bootstrap_interval, summarize, t_interval

LOG = logging.getLogger(__name__)
CONFUSION_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")
SPLIT_LABELS = {"cells": "random cells (leaky: a donor's cells on both sides)",
                "donors": "held-out donors (one split)", "donor_cv": "donor cross-validation (every donor tested once)"}


# ---------------------------------------------------------------- reading runs
def read_runs(metric_files: list[str]) -> pd.DataFrame:
    """One row per run (model x unit x seed): ``model, split, fold, unit, seed, n_test_cells`` + test metrics."""
    rows = []
    for f in metric_files:
        with open(f) as fh:
            m = json.load(fh)
        rows.append({"model": m["model"], "split": m["split"], "fold": m.get("fold", 0),
                     "unit": m.get("unit", m["split"]), "seed": m["seed"], "n_test_cells": m.get("n_test_cells"),
                     **{k: m["test"][k] for k in METRICS}})
    return pd.DataFrame(rows).sort_values(["split", "model", "fold", "seed"]).reset_index(drop=True)


def read_test_predictions(files: list[str]) -> pd.DataFrame:
    """Test rows of every predictions.csv, tagged with ``model, split, fold, unit, seed`` from the
    metrics.json beside it."""
    from pathlib import Path

    frames = []
    for f in files:
        with open(Path(f).with_name("metrics.json")) as fh:
            m = json.load(fh)
        df = pd.read_csv(f, dtype={"donor": str, "sample": str, "true": str, "pred": str})
        df = df[df["split"] == "test"].drop(columns="split")
        frames.append(df.assign(model=m["model"], split=m["split"], fold=m.get("fold", 0),
                                unit=m.get("unit", m["split"]), seed=m["seed"]))
    return pd.concat(frames, ignore_index=True)


def pooled_metrics(runs: pd.DataFrame, preds: pd.DataFrame) -> pd.DataFrame:
    """One row per model x split mode x seed: the test metrics of a single split (``cells``,
    ``donors``) as the run wrote them, and on ``donor_cv`` those of every fold's held-out cells
    pooled (each cell once, predicted by the fold that held its donor out)."""
    rows = []
    classes = [c[len("p_"):] for c in preds.columns if c.startswith("p_")]
    for (split, model, seed), r in runs.groupby(["split", "model", "seed"], sort=True):
        if split == "donor_cv":
            g = preds[(preds["split"] == split) & (preds["model"] == model) & (preds["seed"] == seed)]
            codes = g["true"].map({c: i for i, c in enumerate(classes)}).to_numpy()
            rows.append({"model": model, "split": split, "seed": seed,
                         **classification_metrics(codes, g[[f"p_{c}" for c in classes]].to_numpy())})
        else:
            rows.append({"model": model, "split": split, "seed": seed, **r.iloc[0][list(METRICS)].to_dict()})
    return pd.DataFrame(rows, columns=["model", "split", "seed", *METRICS])


# ---------------------------------------------------------------- confusion-matrix metrics
def _confusions(true: np.ndarray, pred: np.ndarray, groups: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix of each group ``[G, C, C]`` (rows true, columns predicted)."""
    out = np.zeros((groups.max() + 1, n_classes, n_classes))
    np.add.at(out, (groups, true, pred), 1)
    return out


def confusion_metrics(conf: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro-F1 of confusion matrices ``[..., C, C]`` over the
    classes present (row sum > 0), as :func:`cellgnn.metrics.classification_metrics` computes them."""
    tp = np.diagonal(conf, axis1=-2, axis2=-1)
    support = conf.sum(-1)
    predicted = conf.sum(-2)
    present = support > 0
    n_present = np.maximum(present.sum(-1), 1)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = np.maximum(conf.sum((-1, -2)), 1)
    return {"accuracy": tp.sum(-1) / total,
            "balanced_accuracy": (recall * present).sum(-1) / n_present,
            "macro_f1": (f1 * present).sum(-1) / n_present}


def _donor_weights(n_donors: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap counts of each donor ``[B, D]`` (donors drawn with replacement)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_donors, np.full(n_donors, 1.0 / n_donors), size=n_boot).astype(float)


def weighted_auroc(scores: np.ndarray, positive: np.ndarray, group: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One-vs-rest AUROC of ``scores [N]`` for each row of ``weights [B, G]``, a cell of group ``group [N]``
    (0..G-1, e.g. its donor) counted as often as its group's weight (ties count one half): the
    Mann-Whitney statistic. One sorted pass counts, for every pair of groups, the positive-negative
    pairs in order ``[G, G]``; each replicate is then a weighted sum of those counts."""
    n_groups = weights.shape[1]
    order = np.argsort(scores, kind="stable")
    s, pos, g = scores[order], positive[order], np.asarray(group)[order]
    tie = np.cumsum(np.r_[True, s[1:] != s[:-1]]) - 1  # tie group of each sorted cell
    n_ties = int(tie[-1]) + 1 if tie.size else 0
    flat = tie * n_groups + g
    pos_n = np.bincount(flat[pos], minlength=n_ties * n_groups).reshape(n_ties, n_groups).astype(float)
    neg_n = np.bincount(flat[~pos], minlength=n_ties * n_groups).reshape(n_ties, n_groups).astype(float)
    below = np.cumsum(neg_n, axis=0) - neg_n  # negatives of each group scored strictly lower
    pairs = pos_n.T @ (below + 0.5 * neg_n)  # [G, G]: positives of group a over negatives of group b
    total = (weights @ pos_n.sum(0)) * (weights @ neg_n.sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, ((weights @ pairs) * weights).sum(1) / total, np.nan)


def _auroc_replicates(pred: pd.DataFrame, classes: list[str], donors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Macro one-vs-rest AUROC of each bootstrap replicate ``[B]`` (cells weighted by their donor's
    count; classes without positives or negatives in a replicate are left out of its mean)."""
    d_index = {d: i for i, d in enumerate(donors)}
    donor_of_cell = pred["donor"].astype(str).map(d_index).to_numpy()
    true = pred["true"].astype(str).to_numpy()
    per_class = np.stack([weighted_auroc(pred[f"p_{c}"].to_numpy(), true == c, donor_of_cell, weights)
                          for c in classes])
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.where(np.isfinite(per_class), per_class, np.nan), axis=0)


def bootstrap_over_donors(preds: dict, classes: list[str], n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """Replicates ``{metric: [B]}`` of each pooled metric, averaged over seeds, and the point
    estimates ``{metric: mean over seeds}``. preds: seed -> held-out predictions (one row per cell,
    columns ``true``, ``pred``, ``donor``, ``p_<class>``). The donor resamples (``seed``) are the
    same for every model, so replicates of two models pair up."""
    donors = np.array(sorted({str(d) for p in preds.values() for d in p["donor"]}))
    weights = _donor_weights(donors.size, n_boot, seed)
    c_index = {c: i for i, c in enumerate(classes)}
    d_index = {d: i for i, d in enumerate(donors)}
    reps = {m: np.zeros(n_boot) for m in METRICS}
    point = {m: [] for m in METRICS}
    for p in preds.values():
        true = p["true"].astype(str).map(c_index).to_numpy()
        pred = p["pred"].astype(str).map(c_index).to_numpy()
        conf = _confusions(true, pred, p["donor"].astype(str).map(d_index).to_numpy(), len(classes))
        for m, v in confusion_metrics(np.einsum("bd,dij->bij", weights, conf)).items():
            reps[m] += v / len(preds)
        reps["auroc"] += _auroc_replicates(p, classes, donors, weights) / len(preds)
        full = classification_metrics(true, p[[f"p_{c}" for c in classes]].to_numpy())
        for m in METRICS:
            point[m].append(full[m])
    return reps, {m: float(np.mean(v)) for m, v in point.items()}


# ---------------------------------------------------------------- calls
def call_unit_of(pred: pd.DataFrame) -> str | None:
    """``donor`` or ``sample``: the unit whose cells share one label; None for cell-level labels."""
    for key in ("donor", "sample"):
        if key in pred and (pred.groupby(key)["true"].nunique() == 1).all():
            return key
    return None


def unit_calls(pred: pd.DataFrame, classes: list[str], unit: str) -> pd.DataFrame:
    """One call per unit: by mean log-probability (``call``) and by majority vote (``vote``)."""
    logp = np.log(np.clip(pred[[f"p_{c}" for c in classes]].to_numpy(), 1e-12, None))
    rows = []
    for u, idx in pred.groupby(unit).indices.items():
        mean_logp = logp[idx].mean(0)
        votes = pred["pred"].iloc[idx].value_counts()
        vote = sorted(votes.index[votes == votes.max()])[0]
        true = pred["true"].iloc[idx[0]]
        row = {"unit_kind": unit, "unit": str(u), "true": true, "n_cells": int(idx.size),
               "call": classes[int(mean_logp.argmax())], "vote": vote}
        row.update({f"mean_logp_{c}": float(v) for c, v in zip(classes, mean_logp)})
        rows.append(row)
    out = pd.DataFrame(rows)
    out["call_correct"] = out["call"] == out["true"]
    out["vote_correct"] = out["vote"] == out["true"]
    return out


# ---------------------------------------------------------------- the rule
def run_collect_metrics(metric_files: list[str], prediction_files: list[str], out: dict, metric: str = "macro_f1",
                    seed: int = 0, n_boot: int = 1000) -> pd.DataFrame:
    """Write ``models.csv`` (model, split, seed + test metrics; donor_cv pooled over folds),
    ``folds.csv`` (every run), ``models_summary.csv`` (mean and 95% interval per model x split,
    with the interval's method and the donor-level call accuracy), ``calls.csv``, ``margins.csv`` and
    ``cell_types.csv`` (see the module doc). out: paths keyed ``table``, ``summary``, ``folds``,
    ``calls``, ``margins``, ``cell_types``."""
    from .io import write_csv

    runs = read_runs(metric_files)
    write_csv(runs, out["folds"])
    preds = read_test_predictions(prediction_files)
    classes = [c[len("p_"):] for c in preds.columns if c.startswith("p_")]
    table = pooled_metrics(runs, preds)
    summary_rows, calls = [], []
    boot = {}  # donor_cv model -> (replicates, point estimates), shared with the margins
    for (split, model), runs_m in runs.groupby(["split", "model"], sort=True):
        if split == "donor_cv":
            pm = preds[(preds["split"] == split) & (preds["model"] == model)]
            by_seed = {s: g for s, g in pm.groupby("seed")}
            reps, point = boot[model] = bootstrap_over_donors(by_seed, classes, n_boot=n_boot, seed=seed)
            row = {"model": model, "split": split, "n_seeds": len(by_seed),
                   "seeds": " ".join(map(str, sorted(by_seed))), "n_folds": int(runs_m["fold"].nunique()),
                   "ci": f"bootstrap over {pm['donor'].nunique()} donors x seeds"}
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_low"], row[f"{m}_high"] = bootstrap_interval(point[m], reps[m])
            summary_rows.append(row)
        else:
            row = summarize(runs_m, by=("model", "split")).iloc[0].to_dict()
            row.update({"n_folds": 1, "ci": "t-interval over seeds"})
            summary_rows.append(row)
        if split != "cells":
            pm = preds[(preds["split"] == split) & (preds["model"] == model)]
            kind = call_unit_of(pm)
            if kind is not None:
                for s, g in pm.groupby("seed"):
                    calls.append(unit_calls(g, classes, kind).assign(model=model, split=split, seed=s))
    table = table.sort_values(["split", "model", "seed"]).reset_index(drop=True)
    summary = pd.DataFrame(summary_rows)
    calls_df = (pd.concat(calls, ignore_index=True) if calls else
                pd.DataFrame(columns=["model", "split", "seed", "unit_kind", "unit", "true", "n_cells", "call", "vote",
                                      "call_correct", "vote_correct"]))
    if not calls_df.empty:
        acc = calls_df.groupby(["model", "split"]).agg(call_accuracy=("call_correct", "mean"),
                                                       vote_accuracy=("vote_correct", "mean"),
                                                       n_units=("unit", "nunique"), unit_kind=("unit_kind", "first"))
        summary = summary.join(acc, on=["model", "split"])
    margins = held_out_margins(runs, metric, boot, n_donors=preds.loc[preds["split"] == "donor_cv", "donor"].nunique())
    write_csv(table[["model", "split", "seed", *METRICS]], out["table"])
    write_csv(summary, out["summary"])
    lead = ["model", "split", "seed", "unit_kind", "unit", "true", "n_cells", "call", "vote", "call_correct", "vote_correct"]
    write_csv(calls_df[lead + [c for c in calls_df.columns if c not in lead]], out["calls"])
    write_csv(margins, out["margins"])
    write_csv(cell_type_response(preds, classes, seed=seed), out["cell_types"])
    return table


def cell_type_response(preds: pd.DataFrame, classes: list[str], seed: int = 0, n_boot: int = 200) -> pd.DataFrame:
    """Per held-out split, model and cell type: ``n_cells``, AUROC and balanced accuracy of the held-out
    cells of that type (mean over seeds, 95% bootstrap interval over donors) and the cell type's
    ``rank`` by AUROC within the model (1 = the type whose condition is easiest to tell)."""
    cols = ["split", "model", "cell_type", "n_cells", "auroc", "auroc_low", "auroc_high", "balanced_accuracy",
            "balanced_accuracy_low", "balanced_accuracy_high", "rank"]
    held = preds[preds["split"] != "cells"]
    if held.empty or "cell_type" not in held or held["cell_type"].nunique() < 2:
        return pd.DataFrame(columns=cols)
    rows = []
    for (split, model, cell_type), g in held.groupby(["split", "model", "cell_type"], sort=True):
        if g["true"].nunique() < 2 or g["donor"].nunique() < 2:
            continue
        reps, point = bootstrap_over_donors({s: d for s, d in g.groupby("seed")}, classes, n_boot=n_boot, seed=seed)
        row = {"split": split, "model": model, "cell_type": cell_type, "n_cells": int(len(g) / g["seed"].nunique())}
        for m in ("auroc", "balanced_accuracy"):
            row[m], row[f"{m}_low"], row[f"{m}_high"] = bootstrap_interval(point[m], reps[m])
        rows.append(row)
    out = pd.DataFrame(rows, columns=cols[:-1])
    out["rank"] = out.groupby(["split", "model"])["auroc"].rank(ascending=False, method="min").astype(int)
    return out.sort_values(["split", "model", "rank"], ignore_index=True)


def held_out_margins(runs: pd.DataFrame, metric: str, boot: dict, n_donors: int = 0) -> pd.DataFrame:
    """The best model on the held-out split (donor_cv, else donors) by ``metric``, and its margin over
    every other model with a paired 95% interval: on donor_cv the same donor resamples of the
    bootstrap ``boot`` (model -> (replicates, point estimates)) for both models, each averaged over
    seeds; on donors a t-interval over seeds, paired by seed."""
    cols = ["split", "best", "other", "metric", "margin", "low", "high", "interval", "excludes_zero"]
    split = next((s for s in ("donor_cv", "donors") if s in set(runs["split"])), None)
    if split is None:
        return pd.DataFrame(columns=cols)
    rows = []
    if split == "donor_cv":
        best = max(boot, key=lambda m: boot[m][1][metric])
        for other in sorted(m for m in boot if m != best):
            m, lo, hi = bootstrap_interval(boot[best][1][metric] - boot[other][1][metric],
                                           boot[best][0][metric] - boot[other][0][metric])
            rows.append({"split": split, "best": best, "other": other, "metric": metric, "margin": m, "low": lo,
                         "high": hi, "interval": f"paired bootstrap over {n_donors} donors",
                         "excludes_zero": bool(lo > 0)})
    else:
        r = runs[runs["split"] == split].pivot_table(index="seed", columns="model", values=metric)
        best = r.mean().idxmax()
        for other in sorted(c for c in r.columns if c != best):
            d = (r[best] - r[other]).dropna()
            m, lo, hi = t_interval(d)
            rows.append({"split": split, "best": best, "other": other, "metric": metric, "margin": m, "low": lo,
                         "high": hi, "interval": f"t over {d.size} paired seeds",
                         "excludes_zero": bool(np.isfinite(lo) and lo > 0)})
    return pd.DataFrame(rows, columns=cols)
