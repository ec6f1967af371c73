"""Held-out evaluation: metrics pooled over donor folds, bootstrap over donors, donor calls, margins."""
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cellgnn.heldout import (bootstrap_over_donors, run_collect_metrics, confusion_metrics, unit_calls,
                             weighted_auroc)
from cellgnn.metrics import classification_metrics

CLASSES = ["ctrl", "stim"]


def test_weighted_auroc_equals_sklearn_with_repeated_cells():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random(200), 2)  # ties included
    pos = rng.random(200) < 0.4
    group = rng.integers(0, 7, 200)  # each cell's donor
    weights = rng.integers(0, 4, size=(5, 7)).astype(float)  # each donor's bootstrap count
    got = weighted_auroc(scores, pos, group, weights)
    for b in range(5):
        w = weights[b][group]
        keep = w > 0
        want = roc_auc_score(pos[keep], scores[keep], sample_weight=w[keep])
        assert got[b] == pytest.approx(want, abs=1e-12)
    assert np.isnan(weighted_auroc(scores, np.zeros(200, bool), group, weights)).all()  # no positives


def test_confusion_metrics_match_classification_metrics():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    y[y == 3] = 2  # a class never present
    proba = rng.dirichlet(np.ones(4), 300)
    pred = proba.argmax(1)
    conf = np.zeros((4, 4))
    np.add.at(conf, (y, pred), 1)
    want = classification_metrics(y, proba)
    got = confusion_metrics(conf)
    for m in ("accuracy", "balanced_accuracy", "macro_f1"):
        assert got[m] == pytest.approx(want[m], abs=1e-12)


def _predictions(n_donors=6, cells=40, seed=0, skill=1.0):
    """Held-out predictions of a paired study: stim cells get a higher p(stim) by ``skill``, twice as
    much in monocytes (``Mono``) as in T cells (``T``)."""
    rng = np.random.default_rng(seed)
    rows = []
    for d in range(n_donors):
        for cond in CLASSES:
            for i in range(cells):
                ct, gain = ("Mono", 1.5) if i % 2 else ("T", 0.5)
                p = 1 / (1 + np.exp(-(gain * skill * (1 if cond == "stim" else -1) + rng.normal(0, 1))))
                rows.append({"donor": f"d{d}", "sample": f"d{d}_{cond}", "cell_type": ct, "true": cond,
                             "p_ctrl": 1 - p, "p_stim": p})
    df = pd.DataFrame(rows)
    df["pred"] = np.where(df["p_stim"] > 0.5, "stim", "ctrl")
    return df


def test_bootstrap_over_donors_is_deterministic_and_brackets_the_estimate():
    preds = {0: _predictions(seed=0), 1: _predictions(seed=1)}
    reps, point = bootstrap_over_donors(preds, CLASSES, n_boot=300, seed=5)
    again, _ = bootstrap_over_donors(preds, CLASSES, n_boot=300, seed=5)
    for m in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        np.testing.assert_array_equal(reps[m], again[m])
        lo, hi = np.percentile(reps[m], [2.5, 97.5])
        assert lo <= point[m] <= hi and hi - lo > 0
    full = classification_metrics((preds[0]["true"] == "stim").to_numpy().astype(int),
                                  preds[0][["p_ctrl", "p_stim"]].to_numpy())
    assert point["auroc"] == pytest.approx(np.mean([full["auroc"], classification_metrics(
        (preds[1]["true"] == "stim").to_numpy().astype(int), preds[1][["p_ctrl", "p_stim"]].to_numpy())["auroc"]]))


def test_unit_calls_aggregate_each_sample():
    df = _predictions(n_donors=2, skill=3.0)
    calls = unit_calls(df, CLASSES, "sample")
    assert len(calls) == 4 and calls["call_correct"].all() and calls["vote_correct"].all()
    assert set(calls["unit"]) == {"d0_ctrl", "d0_stim", "d1_ctrl", "d1_stim"}


def _write_run(root, model, fold, seed, pred: pd.DataFrame, n_folds=2):
    d = root / "models" / "donor_cv" / f"fold{fold}" / model / f"seed{seed}"
    d.mkdir(parents=True)
    codes = (pred["true"] == "stim").astype(int).to_numpy()
    m = classification_metrics(codes, pred[["p_ctrl", "p_stim"]].to_numpy())
    (d / "metrics.json").write_text(json.dumps({"model": model, "split": "donor_cv", "fold": fold,
                                                "unit": f"donor_cv/fold{fold}", "seed": seed, "test": m,
                                                "n_test_cells": len(pred)}))
    full = pred.assign(cell_id=[f"{fold}_{i}" for i in range(len(pred))], split="test")
    full.to_csv(d / "predictions.csv", index=False)
    return str(d / "metrics.json"), str(d / "predictions.csv")


def test_collect_metrics_pools_folds_and_names_the_best_model(tmp_path):
    metrics, predictions = [], []
    pooled = {}
    for model, skill in (("good", 2.5), ("weak", 0.3)):
        for seed in (0, 1):
            pred = _predictions(n_donors=6, seed=seed + (10 if model == "weak" else 0), skill=skill)
            pooled[(model, seed)] = pred
            for fold, donors in enumerate((["d0", "d1", "d2"], ["d3", "d4", "d5"])):
                m, p = _write_run(tmp_path, model, fold, seed, pred[pred["donor"].isin(donors)].reset_index(drop=True))
                metrics.append(m)
                predictions.append(p)
    out = {k: str(tmp_path / f"{k}.csv") for k in ("table", "summary", "folds", "calls", "margins", "cell_types")}
    table = run_collect_metrics(metrics, predictions, out, metric="balanced_accuracy", n_boot=200)
    row = table[(table["model"] == "good") & (table["seed"] == 0)].iloc[0]
    want = classification_metrics((pooled[("good", 0)]["true"] == "stim").astype(int).to_numpy(),
                                  pooled[("good", 0)][["p_ctrl", "p_stim"]].to_numpy())
    assert row["balanced_accuracy"] == pytest.approx(want["balanced_accuracy"])  # pooled over both folds
    assert len(pd.read_csv(out["folds"])) == 8
    summ = pd.read_csv(out["summary"]).set_index("model")
    assert summ.loc["good", "ci"] == "bootstrap over 6 donors x seeds" and summ.loc["good", "n_folds"] == 2
    assert summ.loc["good", "unit_kind"] == "sample" and summ.loc["good", "n_units"] == 12
    assert summ.loc["good", "call_accuracy"] > summ.loc["weak", "call_accuracy"]
    margins = pd.read_csv(out["margins"])
    assert margins.iloc[0]["best"] == "good" and margins.iloc[0]["other"] == "weak"
    assert margins.iloc[0]["low"] > 0 and bool(margins.iloc[0]["excludes_zero"])
    types = pd.read_csv(out["cell_types"]).set_index(["model", "cell_type"])
    assert types.loc[("good", "Mono"), "rank"] == 1 and types.loc[("good", "T"), "rank"] == 2
    assert types.loc[("good", "Mono"), "auroc_low"] > types.loc[("good", "T"), "auroc_high"]
