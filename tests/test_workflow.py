"""End-to-end: the real Snakemake workflow on the tiny config in a temporary directory."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny.yaml"


def snakemake(*args, cwd=None, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), *args]
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake failed:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("tiny")
    # no GPU here: let the gpu-tagged jobs use both cores
    snakemake("--cores", "2", "--resources", "gpu=2", "--configfile", str(TINY), "--directory", str(work))
    return work


def test_outputs_exist_and_metrics_are_sane(tiny_run):
    res = tiny_run / "results" / "tiny"
    for f in ["raw.h5ad", "preprocessed.h5ad", "qc.json", "summary.md", "metrics/models.csv",
              "figures/umap.png", "figures/umap.pdf", "figures/confusion_matrix.png",
              "figures/model_comparison.png", "explain/genes.csv", "explain/ground_truth_scores.csv",
              "figures/explain_methods.png", "figures/explain_top_genes.pdf", "figures/explain_cell_types.png"]:
        assert (res / f).stat().st_size > 0, f
    df = pd.read_csv(res / "metrics" / "models.csv")
    assert list(df.columns) == ["model", "split", "seed", "accuracy", "balanced_accuracy", "macro_f1", "auroc"]
    assert len(df) == (2 + 1) * 2 * 2  # (models + gat_activa) × split modes × seeds (donor_cv pooled over folds)
    assert set(df["split"]) == {"cells", "donor_cv"}
    folds = pd.read_csv(res / "metrics" / "folds.csv")
    assert set(folds["unit"]) == {"cells", "donor_cv/fold0", "donor_cv/fold1"}
    summ = pd.read_csv(res / "metrics" / "models_summary.csv")
    assert set(summ.loc[summ["split"] == "donor_cv", "ci"]) == {"bootstrap over 4 donors x seeds"}
    assert set(df["model"]) == {"logreg", "gat", "gat_activa"}
    for f in ["augment/activa.pt", "augment/synthetic.h5ad", "augment/metrics.json",
              "augment/rare_population.csv", "augment/figures/rare_population_f1.pdf"]:
        assert (res / f).stat().st_size > 0, f
    for split in ("cells", "donor_cv/fold0", "donor_cv/fold1"):
        m = json.loads((res / "models" / split / "gat" / "seed0" / "metrics.json").read_text())
        # tiny data, short training: the GAT must still beat the majority-class baseline clearly
        assert m["test"]["macro_f1"] > m["majority_baseline_test"]["macro_f1"] + 0.03
        assert m["test"]["balanced_accuracy"] > m["majority_baseline_test"]["balanced_accuracy"] + 0.03
        assert m["test"]["auroc"] > 0.58
        assert m["n_test_cells"] > 0
    # the whole chain (simulated truth, trained GAT, IG) recovers planted genes far above a random ranking
    summ = pd.read_csv(res / "explain" / "scores_summary.csv").set_index("method")["precision_at_k"]
    assert summ["integrated_gradients"] > max(0.3, summ["random"] + 0.25), summ.to_dict()
    assert "Best: **" in (res / "summary.md").read_text()
    assert (tiny_run / "logs" / "tiny" / "train" / "cells" / "gat.log").exists()
    assert (tiny_run / "benchmarks" / "tiny" / "data.tsv").exists()


def test_rerun_has_nothing_to_do(tiny_run):
    res = snakemake("--cores", "1", "--configfile", str(TINY), "--directory", str(tiny_run), "-n")
    assert "Nothing to be done" in res.stdout + res.stderr
    # `rule all` already made every figure: the paper target has nothing left to do either
    res = snakemake("paper", "--cores", "1", "--configfile", str(TINY), "--directory", str(tiny_run), "-n")
    assert "Nothing to be done" in res.stdout + res.stderr


def test_lint_is_clean():
    res = snakemake("--lint", "--configfile", str(TINY), cwd=ROOT, check=False)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Lints for rule" not in out and "Lints for snakefile" not in out, out


def test_bad_config_stops_before_any_job(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY.read_text() + "\ngraph_typo: 3\n")
    res = snakemake("--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path), check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "bad.yaml" in out and "graph_typo" in out
    assert not (tmp_path / "results").exists()


def test_bad_data_stops_with_one_clear_message_and_no_output(tmp_path):
    import anndata as ad
    import numpy as np

    adata = ad.AnnData(np.random.default_rng(0).random((50, 20)).astype("float32"))
    adata.obs["label"] = ["a", "b"] * 25
    adata.obs["donor"] = ["d1"] * 50
    path = tmp_path / "mine.h5ad"
    adata.write_h5ad(path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"dataset: mine\ndata:\n  source: file\n  file: {{path: {path}}}\n  keys: {{cell_type: null}}\n"
                   "preprocess: {n_pcs: 10}\ngraph: {split_modes: [cells], n_pcs: 10}\n")
    res = snakemake("--cores", "1", "--configfile", str(cfg), "--directory", str(tmp_path), check=False)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    tail = out.splitlines()[-10:]  # the last screen: cellgnn's failure report, then Snakemake's closing lines
    last = [ln for ln in tail if ln.strip().startswith("cellgnn: ")][-1]
    assert "not integers" in last and "mine.h5ad" in last and "Fix:" in last, out[-3000:]
    assert any(ln.strip() == "log: logs/mine/data.log" for ln in tail), tail
    assert not (tmp_path / "results" / "mine" / "raw.h5ad").exists()
    assert list((tmp_path / "results" / "mine").glob("*.tmp*")) == []
