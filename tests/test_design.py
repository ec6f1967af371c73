"""Study designs: splits decided from obs alone, real designs accepted, impossible ones refused early."""
import numpy as np
import pandas as pd
import pytest

from cellgnn.config import resolve_run, validate_config
from cellgnn.design import (call_unit, check_design, n_folds_for, plan_donor_folds, plan_donor_split,
                            resolve_control, split_cells, split_units)
from cellgnn.errors import CellgnnInputError
from cellgnn.preflight import preflight

FR = {"train": 0.7, "val": 0.15, "test": 0.15}


def donor_level(n_per_class=2, classes=("healthy", "moderate", "severe"), cells=40):
    """Label is a donor property: ``n_per_class`` donors of each class."""
    rows = [(c, f"{c[:3]}{i}") for c in classes for i in range(n_per_class)]
    return pd.DataFrame([(lab, d) for lab, d in rows for _ in range(cells)], columns=["label", "donor"])


def paired(n_donors=8, cells=30):
    """Every donor in both conditions (Kang-like); sample = donor x condition."""
    rows = [(cond, f"d{i}", f"d{i}_{cond}") for i in range(n_donors) for cond in ("ctrl", "stim") for _ in range(cells)]
    return pd.DataFrame(rows, columns=["label", "donor", "sample"])


def test_donor_cv_tests_every_donor_exactly_once_and_validates_on_training_donors():
    obs = donor_level(n_per_class=4)
    donors = obs["donor"].to_numpy()
    k = 4
    tested = []
    for fold in range(k):
        s = split_cells(obs, "donor_cv", FR, seed=3, fold=fold, cv_folds=k)
        test_donors = set(donors[s == "test"])
        tested += sorted(test_donors)
        assert not test_donors & set(donors[s != "test"])  # whole donors
        assert set(donors[s == "val"]) <= set(donors[s != "test"])  # validation from training donors
        assert set(obs["label"][s == "train"]) == {"healthy", "moderate", "severe"}
        assert set(obs["label"][s == "val"]) == {"healthy", "moderate", "severe"}
    assert sorted(tested) == sorted(set(donors))  # every donor once


def test_folds_are_stratified_by_donor_label():
    obs = donor_level(n_per_class=4)
    folds = plan_donor_folds(obs, 4, seed=0)
    labels = obs.groupby("donor")["label"].first()
    for f in folds:
        assert len(f) == 3 and set(labels[f]) == {"healthy", "moderate", "severe"}


def test_two_donors_per_class_never_leave_a_split_empty():
    """The 6-donor study of the issue: whole-donor validation is impossible, so a stated fraction of
    the training donors' cells is used; nothing is empty, nothing fails on graph.k."""
    obs = donor_level(n_per_class=2)
    for mode, fold in [("donors", 0), ("donor_cv", 0), ("donor_cv", 1)]:
        s = split_cells(obs, mode, FR, seed=0, fold=fold, cv_folds=2)
        assert {"train", "val", "test"} <= set(s)
        plan = plan_donor_split(obs, mode, FR, 0, fold, 2)
        assert plan.val_from_cells and plan.val == []
        assert "training donors' cells" in plan.notes[0]
        val_donors = set(obs["donor"][s == "val"])
        assert val_donors <= set(plan.train)
        share = (s == "val").sum() / ((s == "val") | (s == "train")).sum()
        assert abs(share - 0.15 / 0.85) < 0.02


def test_paired_design_holds_donors_out_with_both_conditions():
    obs = paired()
    s = split_cells(obs, "donor_cv", FR, seed=0, fold=2, cv_folds=0)
    held = obs[s == "test"]
    assert held["donor"].nunique() == 1 and set(held["label"]) == {"ctrl", "stim"}
    assert call_unit(obs) == "sample" and call_unit(obs.drop(columns="sample")) is None
    assert call_unit(donor_level()) == "donor"
    assert n_folds_for(8, 0) == 8 and split_units(["cells", "donor_cv"], 3, 0) == [
        "cells", "donor_cv/fold0", "donor_cv/fold1", "donor_cv/fold2"]


def test_validation_donors_when_there_are_enough():
    obs = donor_level(n_per_class=5)
    plan = plan_donor_split(obs, "donor_cv", FR, 0, fold=0, cv_folds=5)
    assert not plan.val_from_cells and plan.val
    labels = obs.groupby("donor")["label"].first()
    assert set(labels[plan.val]) == set(labels)  # one validation donor per class
    for lab in set(labels):  # and two training donors of each class left
        assert (labels[plan.train] == lab).sum() >= 2


@pytest.mark.parametrize("obs,mode,kw,message,field", [
    (donor_level(n_per_class=1), "donors", {}, "occurs in one donor only", "graph.split_modes"),
    (donor_level(n_per_class=2), "donor_cv", {"cv_folds": 7}, "7 folds asked for but the study has 6 donors",
     "graph.cv_folds"),
    (pd.DataFrame({"label": ["a", "b"] * 20, "donor": "d0"}), "donors", {}, "the study has 1 donor",
     "graph.split_modes"),
    (donor_level(n_per_class=2), "donors", {"validation": "donors"}, "none can be spared", "graph.validation"),
])
def test_impossible_designs_name_the_design_not_graph_k(obs, mode, kw, message, field):
    with pytest.raises(CellgnnInputError) as e:
        split_cells(obs, mode, FR, seed=0, **kw)
    msg = str(e.value)
    assert message in msg and f"field '{field}'" in msg and "Fix:" in msg and "graph.k" not in msg


def _cfg(**over):
    cfg = {"dataset": "x", "data": {"source": "simulate", "simulate": {"n_cells": 600, "n_genes": 500}}}
    for key, value in over.items():
        section, _, name = key.partition("__")
        cfg.setdefault(section, {})[name] = value
    return validate_config(cfg)


def test_check_design_names_classes_controls_and_populations():
    obs = paired()
    obs["cell_type"] = np.where(np.arange(len(obs)) % 2, "B", "T")
    with pytest.raises(CellgnnInputError, match="explain.classes"):
        check_design(obs, _cfg(explain__classes=["nope"]), "study.h5ad")
    with pytest.raises(CellgnnInputError, match="explain.de_control"):
        check_design(obs, _cfg(explain__de_control="mock"), "study.h5ad")
    with pytest.raises(CellgnnInputError, match="augment.population"):
        check_design(obs, _cfg(augment__population="NK"), "study.h5ad")
    with pytest.raises(CellgnnInputError, match="need a label constant within each donor or sample"):
        check_design(obs.drop(columns="sample"), _cfg(train__models=["logreg", "pseudobulk"]), "study.h5ad")
    design = check_design(obs, _cfg(train__models=["logreg", "pseudobulk"]), "study.h5ad")
    assert design["call_unit"] == "sample" and len(design["donors"]) == 8
    assert resolve_control(["ctrl", "stim"], "auto") == "ctrl" and resolve_control(["a", "b"], "auto") is None


def test_preflight_simulated_design_and_plan():
    cfg = _cfg(graph__split_modes=["cells", "donor_cv"])
    plan = preflight(cfg)
    assert plan.units == ["cells", "donor_cv/fold0", "donor_cv/fold1", "donor_cv/fold2", "donor_cv/fold3"]
    run = resolve_run(cfg, plan)
    assert run["held_out_mode"] == "donor_cv" and run["explain"]["split"] == "donor_cv"
    assert run["explain"]["model"] == "gat" and run["augment_unit"] == "donor_cv/fold0"
    with pytest.raises(CellgnnInputError, match="graph.cv_folds"):
        preflight(_cfg(graph__split_modes=["donor_cv"], graph__cv_folds=5))  # 4 simulated donors


def test_no_cell_types_adapts_the_run_and_says_so(tmp_path):
    obs = paired()
    a = _h5ad(tmp_path / "study.h5ad", obs)
    cfg = validate_config({"dataset": "x", "data": {"source": "file", "file": {"path": str(a)},
                                                    "keys": {"label": "label", "donor": "donor", "cell_type": None}},
                           "train": {"models": ["logreg", "gat", "gat_ef"]}, "preprocess": {"n_pcs": 20},
                           "graph": {"n_pcs": 20}, "celltype": {"enabled": False}})
    plan = preflight(cfg)
    run = resolve_run(cfg, plan)
    assert "celltype_attention" not in cfg["edge_features"]["groups"] and not run["augment"]
    assert any("no cell types" in n for n in plan.notes) and any("augmentation left out" in n for n in plan.notes)


def test_no_cell_types_takes_them_from_the_celltype_stage(tmp_path):
    obs = paired()
    a = _h5ad(tmp_path / "study.h5ad", obs)
    cfg = validate_config({"dataset": "x", "data": {"source": "file", "file": {"path": str(a)},
                                                    "keys": {"label": "label", "donor": "donor", "cell_type": None}},
                           "train": {"models": ["logreg", "gat", "gat_ef"]}, "preprocess": {"n_pcs": 20},
                           "graph": {"n_pcs": 20}})
    plan = preflight(cfg)
    run = resolve_run(cfg, plan)
    assert plan.cell_types == "celltype" and run["celltype"]
    assert "celltype_attention" in cfg["edge_features"]["groups"]


def _h5ad(path, obs):
    import anndata as ad
    import scipy.sparse as sp

    rng = np.random.default_rng(0)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (len(obs), 30)).astype(np.float32)),
                   obs=obs.reset_index(drop=True).set_axis([f"c{i}" for i in range(len(obs))]))
    a.var_names = [f"G{i}" for i in range(30)]
    a.write_h5ad(path)
    return path


def test_composition_takes_cell_types_from_the_celltype_stage():
    obs = paired()  # no cell-type column
    no_types = {"data": {"source": "simulate", "keys": {"label": "label", "donor": "donor", "cell_type": None}},
                "train": {"models": ["logreg", "composition"]}}
    assert check_design(obs, validate_config({**no_types, "dataset": "x"}), "study.h5ad")["call_unit"] == "sample"
    with pytest.raises(CellgnnInputError, match="needs cell types"):
        check_design(obs, validate_config({**no_types, "dataset": "x", "celltype": {"enabled": False}}), "study.h5ad")


def test_explain_and_augment_can_be_switched_off():
    cfg = _cfg(explain__enabled=False, augment__enabled=False)
    plan = preflight(cfg)
    run = resolve_run(cfg, plan)
    assert not run["explain"]["run"] and not run["augment"] and run["gat_activa_units"] == []
    assert "explanations left out (explain.enabled: false)" in plan.notes
    assert "augmentation left out (augment.enabled: false)" in plan.notes
    on = resolve_run(_cfg(), preflight(_cfg()))
    assert on["explain"]["run"] and on["augment"]
