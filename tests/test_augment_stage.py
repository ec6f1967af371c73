"""Augmentation stage: data loading, metrics, scGAN, rare-population run, end to end, bad input."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from _augment_toy import toy_cells, toy_counts

from cellgnn.augment.activa import ActivaConfig
from cellgnn.augment.data import (library_normalize, load_expression, resolve_population, sample_counts,
                                  split_masks)
from cellgnn.augment.evaluate import (PcaSpace, correlation_discrepancy, marker_genes, mmd_pcs, rf_auc,
                                      separating_features)
from cellgnn.augment.gan import GanConfig, GanTrainer, generate_gan
from cellgnn.augment.rare import RareConfig, rare_population_experiment, summarize_rare
from cellgnn.augment.stage import run_augment
from cellgnn.errors import CellgnnInputError

torch.set_num_threads(1)
TINY = {"hidden": [32, 16, 8], "latent": 4}


def test_library_normalize_rows_sum_to_target():
    x = library_normalize(sp.csr_matrix(np.array([[1, 3], [0, 0], [2, 2]], dtype=np.float32)), 20000)
    np.testing.assert_allclose(x, [[5000, 15000], [0, 0], [10000, 10000]])


def test_sample_counts_is_sparse_and_normalized():
    mean = np.full((200, 10), 2000.0, dtype=np.float32)  # 10 genes, 20,000 per cell
    out = sample_counts(mean, np.array([10.0]), seed=0)
    assert (out == 0).mean() > 0.2  # ~10 counts over 10 genes: many zeros
    np.testing.assert_allclose(out.sum(1)[out.sum(1) > 0], 20000, rtol=1e-4)
    np.testing.assert_array_equal(out, sample_counts(mean, np.array([10.0]), seed=0))
    deep = sample_counts(mean, np.array([1e6]), seed=0)
    np.testing.assert_allclose(deep, mean, rtol=0.05)


def test_resolve_population():
    labels = np.array(["a"] * 5 + ["b"] * 2)
    assert resolve_population(labels, None, 1) == "a"
    assert resolve_population(labels, "b", 2) == "b"
    with pytest.raises(CellgnnInputError, match="does not exist"):
        resolve_population(labels, "zzz", 1)
    with pytest.raises(CellgnnInputError, match="fewer than the minimum 3"):
        resolve_population(labels, "b", 3)


def test_split_masks_follow_cell_ids():
    split = {"cell_ids": ["c", "a", "b"], "train_mask": torch.tensor([True, False, False]),
             "val_mask": torch.tensor([False, True, False]), "test_mask": torch.tensor([False, False, True])}
    m = split_masks(["a", "b", "c"], split)
    assert m["train"].tolist() == [False, False, True] and m["test"].tolist() == [False, True, False]
    with pytest.raises(CellgnnInputError, match="not in the graph split"):
        split_masks(["a", "zz"], split)


def test_rf_auc_separates_and_mixes():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 5))
    sep = rf_auc(a, a + 5, n_trees=20)
    assert sep["mean"] > 0.95 and sep["ci_low"] <= sep["mean"] <= sep["ci_high"] and len(sep["folds"]) == 5
    assert abs(rf_auc(a, rng.normal(size=(60, 5)), n_trees=50)["mean"] - 0.5) < 0.2


def test_separating_features_find_the_planted_differences():
    x, _, _ = toy_cells(n_per=(60, 60, 60))
    rng = np.random.default_rng(0)
    real, synth = x[rng.permutation(len(x))[:90]], x[rng.permutation(len(x))[:90]].copy()
    synth[:, 13] = 0.0  # one gene never expressed
    synth[:, 5] *= 3.0  # one gene three times too high
    genes = [f"g{i}" for i in range(x.shape[1])]
    d = separating_features(real, synth, genes, n_top=3, n_trees=50)
    assert {r["gene"] for r in d["top_genes"][:2]} == {"g13", "g5"}
    top = {r["gene"]: r for r in d["top_genes"]}
    assert top["g13"]["zero_synthetic"] == 1.0 and top["g5"]["mean_synthetic"] > 2 * top["g5"]["mean_real"]
    assert d["cell_summaries"]["zero_fraction"]["synthetic"] > d["cell_summaries"]["zero_fraction"]["real"]
    same = separating_features(real, real[::-1].copy(), genes, n_top=3, n_trees=20)
    assert same["mean_variance"]["median_log2_mean_ratio"] == pytest.approx(0.0, abs=1e-6)


def test_mmd_and_correlation_discrepancy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(100, 3)), rng.normal(size=(100, 3))
    assert abs(mmd_pcs(a, b)) < 0.05 < mmd_pcs(a, b + 3)
    x, lab, _ = toy_cells()
    genes = marker_genes(x, lab, n_top=2)
    assert set(genes.tolist()) <= set(range(12)) and len(genes) == 6  # markers are the planted blocks
    assert correlation_discrepancy(x, x, genes) == 0
    assert correlation_discrepancy(x, x[:, ::-1].copy(), genes) > 0


def test_gan_outputs_library_size_and_keeps_best_epoch():
    x, _, _ = toy_cells()
    t = GanTrainer(x, GanConfig(epochs=3, batch_size=16, device="cpu", **TINY))
    scores = iter([2.0, 1.0, 3.0])
    h = t.fit(lambda g: next(scores), progress=False)
    assert len(h) == 3 and all(np.isfinite(r["critic"]) for r in h) and t.best["epoch"] == 2
    assert all(torch.equal(a, b) for a, b in zip(t.best["state"].values(), t.generator.state_dict().values()))
    cells = generate_gan(t.generator, 9, seed=1)
    np.testing.assert_allclose(cells.sum(1), 20000, rtol=1e-4)
    np.testing.assert_array_equal(cells, generate_gan(t.generator, 9, seed=1))


def test_rare_population_experiment_rows():
    x, lab, lib = toy_cells(n_per=(60, 60, 60))
    rng = np.random.default_rng(1)
    test = rng.random(len(lab)) < 0.3
    df = rare_population_experiment(x[~test], lib[~test], lab[~test], x[test], lab[test], "pop1",
                                    ActivaConfig(epochs=2, warmup_epochs=1, clf_epochs=1, batch_size=32,
                                                 device="cpu", **TINY, clf_hidden=[8, 8, 4]),
                                    RareConfig(fractions=[0.5, 0.1], seeds=[0, 1], n_synthetic=20,
                                               epochs=2, n_trees=10),
                                    progress=False)
    assert len(df) == 8 and set(df["augmented"]) == {True, False}
    assert (df.loc[df.augmented, "n_synthetic"] == 20).all()
    assert df["f1"].between(0, 1).all()
    s = summarize_rare(df)
    assert len(s) == 4 and s[0]["seeds"] == [0, 1]


def _write_inputs(tmp_path, n_per=(60, 50, 40)):
    counts, lab = toy_counts(n_per=n_per, n_genes=16)
    n = len(lab)
    a = ad.AnnData(X=sp.csr_matrix(np.log1p(counts)), obs=pd.DataFrame(
        {"cell_type": pd.Categorical(lab), "label": pd.Categorical(["x"] * n)},
        index=[f"cell{i}" for i in range(n)]), var=pd.DataFrame(index=[f"g{i}" for i in range(16)]))
    a.layers["counts"] = sp.csr_matrix(counts)
    a.var["highly_variable"] = True
    a.write_h5ad(tmp_path / "pre.h5ad")
    u = np.random.default_rng(0).random(n)
    torch.save({"cell_ids": a.obs_names.tolist(), "train_mask": torch.tensor(u < 0.6),
                "val_mask": torch.tensor((u >= 0.6) & (u < 0.8)), "test_mask": torch.tensor(u >= 0.8),
                "split_mode": "cells"}, tmp_path / "cells.pt")
    return tmp_path / "pre.h5ad", tmp_path / "cells.pt"


def _outputs(d):
    names = {"model": "activa.pt", "synthetic": "synthetic.h5ad", "metrics": "metrics.json",
             "rare": "rare_population.csv", "embedding": "figs/embedding.png", "auc": "figs/auc.png",
             "rare_plot": "figs/rare.png"}
    return {k: str(d / v) for k, v in names.items()}


def _cfg(**kw):
    cfg = {"population": "pop2", "min_cells": 5, "n_generate": 10, "accept_threshold": 0.0, "device": "cpu",
           "activa": {"epochs": 2, "warmup_epochs": 1, "clf_epochs": 1, "batch_size": 32, "clf_hidden": [8, 8, 4],
                      **TINY},
           "gan": {"epochs": 2, "batch_size": 32, **TINY},
           "rare": {"fractions": [0.5], "seeds": [0, 1, 2], "n_synthetic": 10, "epochs": 1, "n_trees": 10},
           "eval": {"n_trees": 10, "n_pcs": 5, "n_folds": 3}}
    cfg.update(kw)
    return cfg


def test_stage_end_to_end(tmp_path):
    pre, graph = _write_inputs(tmp_path)
    out = _outputs(tmp_path / "out")
    m = run_augment(pre, graph, out, _cfg(), checkpoint=tmp_path / "ck.pt", progress=False)
    for path in out.values():
        assert (tmp_path / "out" / path).exists()
    assert (tmp_path / "out/figs/auc.pdf").exists()
    saved = json.loads((tmp_path / "out/metrics.json").read_text())
    assert set(saved["generators"]) == {"ACTIVA", "scGAN", "real (train)", "ACTIVA (population)"}
    assert saved["generators"]["ACTIVA (population)"]["n_real"] == saved["generators"]["ACTIVA (population)"][
        "n_synthetic"]
    assert saved["seconds_to_best_ratio_scgan_over_activa"] > 0
    assert saved["population"] == "pop2" and saved["rare_population"]["seeds"] == [0, 1, 2]
    syn = ad.read_h5ad(out["synthetic"])
    assert (syn.obs["source"] == "ACTIVA population").sum() == 10
    assert set(syn.obs.loc[syn.obs.source == "ACTIVA population", "cell_type"]) == {"pop2"}
    rare = pd.read_csv(out["rare"])
    assert len(rare) == 6
    assert m["generators"]["ACTIVA"]["training"]["epoch"] in (1, 2)


@pytest.mark.parametrize("cfg, match", [
    ({"population": "nope"}, "does not exist"),
    ({"population": "pop2", "min_cells": 10_000}, "fewer than the minimum"),
    ({"population_key": "missing"}, "no column 'missing'"),
    ({"rare": {"fractions": [0.0]}}, "fractions"),
    ({"activa": {"bogus": 1}}, "unknown keys"),
    ({"eval": {"embedding": "tsne"}}, "unknown embedding"),
])
def test_stage_bad_input_leaves_no_output(tmp_path, cfg, match):
    pre, graph = _write_inputs(tmp_path)
    out_dir = tmp_path / "out"
    with pytest.raises(CellgnnInputError, match=match):
        run_augment(pre, graph, _outputs(out_dir), _cfg(**cfg), progress=False)
    assert not out_dir.exists() or not any(out_dir.rglob("*"))


def test_load_expression_max_genes(tmp_path):
    pre, _ = _write_inputs(tmp_path)
    d = load_expression(pre, max_genes=4)
    assert d.x.shape[1] == 4 and np.allclose(d.x.sum(1)[d.x.sum(1) > 0], 20000, rtol=1e-4)
    with pytest.raises(CellgnnInputError, match="no layer"):
        load_expression(pre, layer="raw")
