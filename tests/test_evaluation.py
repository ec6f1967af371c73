import numpy as np
import pandas as pd
import pytest
from scipy import stats

from cellgnn.errors import CellgnnInputError
from cellgnn.evaluation import ablation_table, paired_comparison, run_evaluate


def _df():
    rows = []
    for seed, (ef, gat, lr) in enumerate([(0.80, 0.75, 0.70), (0.82, 0.78, 0.69), (0.79, 0.77, 0.71)]):
        for model, f1 in (("gat_ef", ef), ("gat", gat), ("logreg", lr),
                          ("gat_ef_minus_curvature", ef), ("gat_ef_minus_node2vec", ef - 0.05)):
            rows.append({"model": model, "split": "cells", "seed": seed, "accuracy": f1,
                         "balanced_accuracy": f1, "macro_f1": f1, "auroc": f1})
    return pd.DataFrame(rows)


def test_paired_comparison_is_paired_by_seed():
    df = _df()
    # shuffle rows: pairing must use the seed, not the row order
    comp = paired_comparison(df.sample(frac=1, random_state=0), "gat_ef", ["gat", "logreg"])
    r = comp.set_index("baseline").loc["gat"]
    diffs = np.array([0.05, 0.04, 0.02])
    assert r["n_seeds"] == 3 and r["seeds"] == "0 1 2"
    assert r["mean_diff"] == pytest.approx(diffs.mean())
    assert (r["ci_low"], r["ci_high"]) == pytest.approx(stats.t.interval(0.95, 2, diffs.mean(), stats.sem(diffs)))
    assert r["p_value"] == pytest.approx(stats.ttest_1samp(diffs, 0).pvalue)
    # unpaired seeds are dropped
    comp2 = paired_comparison(df[~((df.model == "gat") & (df.seed == 2))], "gat_ef", ["gat"])
    assert comp2["n_seeds"].tolist() == [2]


def test_ablation_table_signs():
    abl = ablation_table(_df()).set_index("group")
    assert abl.loc["node2vec", "mean_diff"] == pytest.approx(-0.05) == abl.loc["node2vec", "delta_macro_f1"]
    assert abl.loc["curvature", "mean_diff"] == 0 and abl.loc["curvature", "p_value"] == 1.0


def test_run_evaluate_writes_tables_and_figure(tmp_path):
    import json

    df = _df()
    p = tmp_path / "models.csv"
    df[~df.model.str.startswith("gat_ef_minus")].to_csv(p, index=False)
    files = []
    for i, r in df[df.model.str.startswith("gat_ef_minus")].iterrows():  # ablation runs come as metrics.json
        f = tmp_path / f"m{i}.json"
        f.write_text(json.dumps({"model": r.model, "split": r.split, "seed": int(r.seed),
                                 "test": {m: r[m] for m in ("accuracy", "balanced_accuracy", "macro_f1", "auroc")}}))
        files.append(str(f))
    run_evaluate(str(p), files, str(tmp_path / "c.csv"), str(tmp_path / "a.csv"), str(tmp_path / "fig.png"))
    assert len(pd.read_csv(tmp_path / "c.csv")) == 2
    abl = pd.read_csv(tmp_path / "a.csv").set_index("group")
    assert abl.loc["node2vec", "mean_diff"] == pytest.approx(-0.05)
    assert (tmp_path / "fig.png").stat().st_size > 0 and (tmp_path / "fig.pdf").exists()


def test_evaluate_bad_input(tmp_path):
    p = tmp_path / "models.csv"
    _df().drop(columns=["macro_f1"]).to_csv(p, index=False)
    with pytest.raises(CellgnnInputError, match="missing columns"):
        run_evaluate(str(p), [], str(tmp_path / "c.csv"), str(tmp_path / "a.csv"), str(tmp_path / "f.png"))
    _df()[lambda d: d.model != "gat_ef"].to_csv(p, index=False)
    with pytest.raises(CellgnnInputError, match="no rows for model"):
        run_evaluate(str(p), [], str(tmp_path / "c.csv"), str(tmp_path / "a.csv"), str(tmp_path / "f.png"))
    assert not (tmp_path / "c.csv").exists()
