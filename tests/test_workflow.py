"""End-to-end: the real Snakemake workflow on the tiny config in a temporary directory."""
import json
import os
import re
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
    assert (tiny_run / "logs" / "tiny" / "train" / "cells" / "node_models.log").exists()
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


# ---------------------------------------------------------------- the results file (rule results)
def documented_keys() -> dict[str, list[re.Pattern]]:
    """Keys of README's "The results file" table, by slot (obs, obsm, obsp, varm, uns, uns.cellgnn);
    ``<name>`` placeholders match any name."""
    text = (ROOT / "README.md").read_text()
    table = text.split("## The results file", 1)[1].split("\n## ", 1)[0]
    keys: dict[str, list[re.Pattern]] = {}
    for slot, name in re.findall(r'(obs|obsm|obsp|varm|layers|var|uns)\["([^"]+)"\]', table):
        keys.setdefault(slot, []).append(name)
    for sub in re.findall(r'uns\["cellgnn"\]((?:\["[^"]+"\])(?:, `\["[^"]+"\])*)', table):
        keys.setdefault("uns.cellgnn", []).extend(re.findall(r'\["([^"]+)"\]', sub))
    for extra in re.findall(r'`\["([^"]+)"\]`', table):  # continued lists: `["held_out_split"]`, ...
        keys.setdefault("uns.cellgnn", []).append(extra)
    return {slot: [re.compile(re.sub(r"<[^>]+>", r"[A-Za-z0-9_]+", re.escape(k).replace(r"\<", "<")
                                     .replace(r"\>", ">")) + "$") for k in names] for slot, names in keys.items()}


def undocumented(adata) -> list[str]:
    docs = documented_keys()

    def missing(slot, names, prefix=""):
        return [f"{slot}[{n!r}]" for n in names if n.startswith(prefix)
                and not any(p.match(n) for p in docs.get(slot, []))]

    return (missing("obs", adata.obs.columns, "cellgnn") + missing("obsm", adata.obsm) + missing("obsp", adata.obsp)
            + missing("varm", adata.varm) + missing("uns", adata.uns) + missing("uns.cellgnn", adata.uns["cellgnn"]))


def test_results_file_is_a_scanpy_anndata_with_held_out_calls(tiny_run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    import scanpy as sc

    res = tiny_run / "results" / "tiny"
    adata = sc.read_h5ad(res / "cellgnn.h5ad")
    pre = sc.read_h5ad(res / "preprocessed.h5ad")
    assert list(adata.obs_names) == list(pre.obs_names) and list(adata.var_names) == list(pre.var_names)
    assert undocumented(adata) == []
    meta = adata.uns["cellgnn"]
    classes = list(meta["classes"])
    assert meta["held_out_split"] == "donor_cv" and adata.obs["cellgnn_heldout"].all()
    margins = pd.read_csv(res / "metrics" / "margins.csv")
    best = meta["best_model"]
    assert best == margins["best"].iloc[0]
    # each cell is called by the fold that held its donor out, with the seed-mean probabilities
    for unit in sorted(adata.obs["cellgnn_unit"].unique()):
        seeds = [pd.read_csv(res / "models" / unit / best / f"seed{s}" / "predictions.csv", index_col="cell_id")
                 for s in meta["seeds"]]
        test = seeds[0].index[seeds[0]["split"] == "test"]
        assert set(adata.obs_names[adata.obs["cellgnn_unit"] == unit]) == set(test)
        mean = np.mean([s.loc[test, [f"p_{c}" for c in classes]].to_numpy() for s in seeds], axis=0)
        np.testing.assert_allclose(adata[test].obsm["cellgnn_proba"], mean, rtol=1e-5)
        assert (adata.obs.loc[test, "cellgnn_prediction"].astype(str).to_numpy()
                == np.asarray(classes)[mean.argmax(1)]).all()
        donors = set(adata.obs.loc[test, "donor"].astype(str))
        assert not donors & set(seeds[0].loc[seeds[0]["split"] != "test", "donor"].astype(str))
    for model in ("logreg", "gat"):
        assert adata.obs[f"cellgnn_pred_{model}"].notna().all()
    # scanpy works on it as it is: plot, UMAP from the stored graph (the figures' UMAP again), leiden
    sc.pl.umap(adata, color="cellgnn_prediction", show=False)
    plt.savefig(tmp_path / "umap.png")
    assert (tmp_path / "umap.png").stat().st_size > 10_000
    figure_umap = adata.obsm["X_umap"].copy()
    sc.tl.umap(adata, random_state=0)
    np.testing.assert_allclose(adata.obsm["X_umap"], figure_umap, atol=1e-3)
    sc.tl.leiden(adata, flavor="igraph", n_iterations=2, random_state=0)
    assert adata.obs["leiden"].nunique() > 1
    assert adata.obsp["distances"].getnnz(axis=1).min() == adata.uns["neighbors"]["params"]["n_neighbors"] - 1 == 10
    # tables, attributions against the planted truth, provenance
    pd.testing.assert_frame_equal(meta["models_summary"].reset_index(drop=True)[["model", "split", "macro_f1_mean"]],
                                  pd.read_csv(res / "metrics" / "models_summary.csv")[["model", "split", "macro_f1_mean"]])
    assert len(meta["cell_type_response"]) == len(pd.read_csv(res / "metrics" / "cell_types.csv")) > 0
    from cellgnn.results import attributions

    ig = attributions(adata, "integrated_gradients")
    truth = attributions(adata, "truth")
    shared = [c for c in ig.columns if c in truth.columns]
    assert shared and truth[shared].to_numpy().sum() > 0
    # the planted genes come first: share of planted genes among each class's top 5 (chance: 10 of ~500 genes)
    hits = [truth.loc[ig[c].dropna().nlargest(5).index, c].mean() for c in shared if " | " not in c]
    assert hits and np.mean(hits) > 0.3, hits
    assert set(meta["explain"]["cell_types"]["cell_type"]) == set(adata.obs["cell_type"].astype(str))
    record = json.loads((res / "provenance" / "provenance.json").read_text())
    assert meta["provenance"]["git_commit"] == record["git"]["commit"]
    assert "dataset: tiny" in meta["provenance"]["config"]


@pytest.mark.slow
def test_report_renders_in_a_real_browser(tiny_run, tmp_path):
    """`snakemake --report` of the tiny run opened by headless Chromium: the main page and the UMAP
    figure's page are neither blank nor showing errors. CELLGNN_REPORT_PNG_DIR keeps the screenshots."""
    from report_browser import blank_fraction, browser, error_lines, render

    if browser() is None:
        if os.environ.get("CELLGNN_REQUIRE_BROWSER"):
            pytest.fail("no Chromium: apt-get install -y chromium (CI: tests/slurm/run_ci_slurm.sh installs it)")
        pytest.skip("no Chromium (apt-get install -y chromium)")
    report = tmp_path / "report.html"
    snakemake("--report", str(report), "--configfile", str(TINY), "--directory", str(tiny_run))
    out = Path(os.environ.get("CELLGNN_REPORT_PNG_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    main = render(report, out / "report_main.png")
    figure = render(report, out / "report_umap.png", figure="figures/umap.png")
    for page, png in ((main, out / "report_main.png"), (figure, out / "report_umap.png")):
        share, spread = blank_fraction(png)
        # a text page on a white background is ~95% one colour; a blank page is 100%
        assert share < 0.99 and spread > 10, (png, share, spread)
        assert error_lines(page) == [], (png, error_lines(page))
    assert "predicts the disease state" in main.text
    assert "UMAP of all preprocessed cells" in figure.text and "umap.png" in figure.text
