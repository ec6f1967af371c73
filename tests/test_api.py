"""The Python API (cellgnn.api): the workflow's code on an in-memory AnnData, scanpy's habits,
the workflow's errors on bad input, atomic results files, and the README example."""
import re
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch

import cellgnn as cg
from cellgnn.api import graph_from_adata
from cellgnn.errors import CellgnnInputError
from cellgnn.graph import build_graph
from cellgnn.preprocess import preprocess
from sim_config import GRAPH_CFG, PRE_CFG

ROOT = Path(__file__).resolve().parents[1]
FAST_GAT = {"max_epochs": 15, "patience": 5}


@pytest.fixture(scope="module")
def fitted(pre):
    """The shared simulated study, prepared, with a donor split, logreg and a short GAT (two seeds each)."""
    adata = pre[0].copy()
    cg.tl.build_graph(adata, split="donors", **GRAPH_CFG)
    cg.tl.fit(adata, model="logreg", seeds=[0, 1])
    cg.tl.fit(adata, model="gat", seeds=[0, 1], device="cpu", **FAST_GAT)
    return cg.tl.predict(adata)


def test_import_is_cheap_and_the_api_loads_on_first_use():
    code = ("import sys, cellgnn; heavy = {'torch', 'scanpy', 'anndata'} & set(sys.modules); "
            "assert not heavy, heavy; cellgnn.tl.fit; cellgnn.pp.prepare; cellgnn.write_results; print('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})
    assert res.stdout.strip() == "ok", res.stderr


def test_prepare_is_the_preprocess_stage(sim, pre):
    out = cg.pp.prepare(sim, **PRE_CFG)
    ref = pre[0]
    assert list(out.obs_names) == list(ref.obs_names) and list(out.var_names) == list(ref.var_names)
    np.testing.assert_array_equal(out.X.toarray(), ref.X.toarray())
    np.testing.assert_array_equal(out.obsm["X_pca"], ref.obsm["X_pca"])
    assert sim.n_obs == 800 and "counts" not in sim.layers  # the input is not modified


def test_build_graph_stores_the_graph_stage_graph(pre):
    adata = pre[0].copy()
    cg.tl.build_graph(adata, split="donors", **GRAPH_CFG)
    ref = build_graph(pre[0], dict(GRAPH_CFG), "donors", seed=0)
    got = graph_from_adata(adata)
    assert set(got) == set(ref)
    for key, value in ref.items():
        if torch.is_tensor(value):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key
    assert (adata.obs["cellgnn_split"].astype(str).to_numpy() == "test").sum() == int(ref["test_mask"].sum())


def test_predict_calls_held_out_cells_only_from_the_seed_mean(fitted):
    obs = fitted.obs
    meta = fitted.uns["cellgnn"]
    held = obs["cellgnn_split"].astype(str).to_numpy() == "test"
    assert (obs["cellgnn_heldout"].to_numpy() == held).all() and 0 < held.sum() < len(held)
    assert obs.loc[~held, "cellgnn_prediction"].isna().all() and obs.loc[held, "cellgnn_prediction"].notna().all()
    assert np.isnan(obs.loc[~held, "cellgnn_confidence"]).all()
    runs = meta["models"]
    best = runs.groupby("model")["macro_f1"].mean().idxmax()
    assert meta["best_model"] == best
    # the call is the argmax of the best model's probabilities averaged over its seeds
    mean = meta["fit"][best]["proba"].mean(axis=0)[held]
    classes = list(meta["classes"])
    np.testing.assert_allclose(fitted.obsm["cellgnn_proba"][held], mean, rtol=1e-6)
    assert (obs.loc[held, "cellgnn_prediction"].astype(str).to_numpy() == np.asarray(classes)[mean.argmax(1)]).all()
    np.testing.assert_allclose(obs.loc[held, "cellgnn_confidence"], mean.max(1), rtol=1e-6)
    for model in ("logreg", "gat"):
        assert obs.loc[~held, f"cellgnn_pred_{model}"].isna().all()
    # test metrics are those of the held-out cells: recompute one from the stored probabilities
    from cellgnn.metrics import classification_metrics

    y = obs["label"].cat.codes.to_numpy()
    gat0 = classification_metrics(y[held], meta["fit"]["gat"]["proba"][0][held].astype(np.float64))
    row = meta["fit"]["gat"]["metrics"].iloc[0]
    assert row["seed"] == 0 and row["macro_f1"] == pytest.approx(gat0["macro_f1"])


def test_explain_and_write_results_round_trip(fitted, tmp_path):
    import scanpy as sc

    adata = fitted.copy()
    cg.tl.neighbors(adata, k=10, n_pcs=20)
    cg.tl.explain(adata, model="gat", methods=["integrated_gradients", "de_control", "random"], n_cells=40,
                  ig={"n_steps": 8, "batch_cells": 40}, device="cpu")
    summary = adata.uns["cellgnn"]["explain"]["scores_summary"].set_index("method")
    assert {"integrated_gradients", "de_control", "random"} <= set(summary.index)
    ig = cg.get.attributions(adata, "integrated_gradients")
    truth = cg.get.attributions(adata, "truth")
    assert ig.shape[0] == adata.n_vars and truth.shape[0] == adata.n_vars and truth.to_numpy().any()
    assert adata.varm["cellgnn_integrated_gradients"].shape == ig.shape and truth.dtypes.eq(bool).all()
    # varm holds genes.csv's scores: the top genes of one ranking, NaN elsewhere
    genes = adata.uns["cellgnn"]["explain"]["genes"]
    one = genes[(genes["method"] == "integrated_gradients") & (genes["cell_type"] == "all")]
    cls = one["class"].iloc[0]
    top = one[one["class"] == cls].set_index("gene")["score"]
    np.testing.assert_allclose(ig.loc[top.index, cls].to_numpy(), top.to_numpy(), rtol=1e-5)
    assert ig[cls].notna().sum() == len(top)
    path = cg.write_results(adata, tmp_path / "out.h5ad")
    back = sc.read_h5ad(path)
    assert list(back.obs["cellgnn_prediction"].cat.categories) == list(adata.uns["cellgnn"]["classes"])
    pd.testing.assert_frame_equal(cg.get.attributions(back, "integrated_gradients"), ig)
    pd.testing.assert_frame_equal(back.obs[["cellgnn_prediction", "cellgnn_heldout"]],
                                  adata.obs[["cellgnn_prediction", "cellgnn_heldout"]])
    sc.tl.leiden(back, flavor="igraph", n_iterations=2, random_state=0)
    assert back.obs["leiden"].nunique() > 1
    # the stored checkpoints still explain after the round trip (predict reuses them)
    cg.tl.predict(back)
    pd.testing.assert_series_equal(back.obs["cellgnn_prediction"], adata.obs["cellgnn_prediction"])


# ---------------------------------------------------------------- bad input: the workflow's errors
def _message(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "Fix:" in msg, msg
    return msg


def test_prepare_refuses_normalized_data_with_the_preprocess_stage_message(pre):
    norm = pre[0].copy()  # X is log-normalized, not counts
    with pytest.raises(CellgnnInputError) as api_err:
        cg.pp.prepare(norm)
    with pytest.raises(CellgnnInputError) as stage_err:
        preprocess(norm, {**PRE_CFG}, source="AnnData")
    assert str(api_err.value) == str(stage_err.value)
    assert "expected raw UMI counts" in _message(api_err)
    with pytest.raises(CellgnnInputError, match="not raw counts|expected raw UMI counts"):
        cg.pp.check_counts(norm)
    bad = norm.copy()
    bad.X = bad.X.toarray()
    bad.X[0, 0] = np.nan
    with pytest.raises(CellgnnInputError, match="NaN or infinite"):
        cg.pp.check_counts(bad, expect_counts=False)


def test_missing_label_or_key_columns_are_named(sim):
    with pytest.raises(CellgnnInputError) as err:
        cg.pp.prepare(sim, label="disease")
    msg = _message(err)
    assert "'disease' not found in obs" in msg and "data.keys.label" in msg
    with pytest.raises(CellgnnInputError, match="data.keys.sample"):
        cg.pp.prepare(sim, sample="library")
    bare = ad.AnnData(sim.X.copy(), obs=pd.DataFrame(index=sim.obs_names))
    bare.obsm["X_pca"] = np.zeros((sim.n_obs, 5), np.float32)
    with pytest.raises(CellgnnInputError) as err:
        cg.tl.build_graph(bare)
    assert "obs['label']" in _message(err) and "cellgnn.pp.prepare" in str(err.value)


def test_steps_out_of_order_and_unknown_settings_are_refused(pre):
    adata = pre[0].copy()
    with pytest.raises(CellgnnInputError, match="run cellgnn.tl.build_graph"):
        cg.tl.fit(adata, model="logreg")
    with pytest.raises(CellgnnInputError, match="run cellgnn.tl.fit"):
        cg.tl.predict(adata)
    with pytest.raises(CellgnnInputError) as err:
        cg.tl.build_graph(adata, kk=3)
    assert "kk" in _message(err)
    with pytest.raises(CellgnnInputError, match="graph.k"):
        cg.tl.build_graph(adata, k="ten")
    cg.tl.build_graph(adata, split="donors", **GRAPH_CFG)
    with pytest.raises(CellgnnInputError, match="edge features"):
        cg.tl.fit(adata, model="gat_ef")


# ---------------------------------------------------------------- results file
def _tiny(classes: list[str], genes: list[str]) -> ad.AnnData:
    a = ad.AnnData(np.ones((4, len(genes)), np.float32), var=pd.DataFrame(index=genes))
    a.obs["label"] = pd.Categorical([classes[i % len(classes)] for i in range(4)])
    return a


def test_write_results_replaces_an_older_file_whole(tmp_path):
    path = tmp_path / "cellgnn.h5ad"
    cg.write_results(_tiny(["old_a", "old_b", "old_c"], ["G1", "G2", "G3"]), path)
    cg.write_results(_tiny(["mock", "stim"], ["ISG15", "MX1"]), path)
    back = ad.read_h5ad(path)
    assert list(back.var_names) == ["ISG15", "MX1"] and list(back.obs["label"].cat.categories) == ["mock", "stim"]


def test_a_failed_write_leaves_the_older_file_untouched(tmp_path):
    path = tmp_path / "cellgnn.h5ad"
    cg.write_results(_tiny(["a", "b"], ["G1", "G2"]), path)
    before = path.read_bytes()
    broken = _tiny(["x", "y"], ["G9", "G8"])
    broken.uns["cellgnn"] = {"not_writable": object()}
    with pytest.raises(Exception):
        cg.write_results(broken, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cellgnn.h5ad"]


# ---------------------------------------------------------------- README
def readme_example() -> str:
    """The README's API example: the python block after the marker line."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-example[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- api-example --> python block"
    return m.group(1)


@pytest.mark.slow  # scanpy's UMAP and numba compilation in a fresh process: minutes on the shared 2-core machine
def test_readme_example_runs(tmp_path):
    import scanpy as sc

    script = tmp_path / "example.py"
    script.write_text("import torch\ntorch.set_num_threads(1)\n" + readme_example())
    res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                              "MPLBACKEND": "Agg"})
    assert res.returncode == 0, res.stderr[-3000:]
    out = sc.read_h5ad(tmp_path / "pbmc68k_cellgnn.h5ad")
    held = out.obs["cellgnn_heldout"].to_numpy()
    assert held.any() and not held.all()
    acc = (out.obs.loc[held, "cellgnn_prediction"].astype(str) == out.obs.loc[held, "label"].astype(str)).mean()
    assert acc > 0.5, acc  # 10 cell types: chance is about 0.1
    assert (tmp_path / "figures" / "umap_cellgnn.png").stat().st_size > 10_000


def test_one_split_flags_training_cells_and_calls_samples_by_the_seed_mean():
    from cellgnn.results import add_calls, add_predictions

    cells = [f"c{i}" for i in range(8)]
    obs = pd.DataFrame({"label": pd.Categorical(["ctrl", "stim"] * 4),
                        "donor": pd.Categorical(["d1"] * 4 + ["d2"] * 4),
                        "sample": pd.Categorical(["d1_ctrl", "d1_stim"] * 2 + ["d2_ctrl", "d2_stim"] * 2)},
                       index=cells)
    adata = ad.AnnData(np.zeros((8, 2), np.float32), obs=obs)
    split = ["train", "val", "train", "val", "test", "test", "test", "test"]

    def table(p_stim):
        return pd.DataFrame({"cell_id": cells, "split": split, "unit": "donors", "p_ctrl": 1 - np.asarray(p_stim),
                             "p_stim": p_stim})

    tables = {"gat": {0: table([0.9] * 4 + [0.2, 0.9, 0.4, 0.7]), 1: table([0.9] * 4 + [0.4, 0.7, 0.8, 0.9])},
              "logreg": {0: table([0.1] * 8)}}
    add_predictions(adata, tables, "gat", "donors")
    o = adata.obs
    assert o["cellgnn_heldout"].tolist() == [False] * 4 + [True] * 4
    assert o["cellgnn_prediction"].iloc[:4].isna().all() and o["cellgnn_pred_logreg"].iloc[:4].isna().all()
    # seed means 0.3, 0.8, 0.6, 0.8 for stim
    assert o["cellgnn_prediction"].iloc[4:].astype(str).tolist() == ["ctrl", "stim", "stim", "stim"]
    np.testing.assert_allclose(o["cellgnn_confidence"].iloc[4:], [0.7, 0.8, 0.6, 0.8], rtol=1e-6)
    assert np.isnan(adata.obsm["cellgnn_proba"][:4]).all()
    # d2_ctrl: seed 0 says ctrl, seed 1 says stim more strongly: the mean log-probability decides
    calls = pd.DataFrame({"model": "gat", "split": "donors", "seed": [0, 1, 0, 1], "unit_kind": "sample",
                          "unit": ["d2_ctrl", "d2_ctrl", "d2_stim", "d2_stim"],
                          "mean_logp_ctrl": np.log([0.6, 0.1, 0.2, 0.3]), "mean_logp_stim": np.log([0.4, 0.9, 0.8, 0.7])})
    add_calls(adata, calls, "gat", "donors")
    assert adata.uns["cellgnn"]["call_unit"] == "sample"
    got = adata.obs["cellgnn_sample_call"]
    assert got.iloc[:4].isna().all() and got.iloc[4:].astype(str).tolist() == ["stim"] * 4
