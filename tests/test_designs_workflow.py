"""Real study designs through the real workflow, without workarounds: two donors per class, no
cell-type column, one graph over all cells (transductive), and a user config validated on its own."""
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from cellgnn.config import schema_defaults
from test_workflow import snakemake


def six_donor_study(path: Path) -> Path:
    """6 donors, 2 per class (healthy / moderate / severe), no cell types; severity genes respond."""
    rng = np.random.default_rng(0)
    n_per, genes = 110, 300
    rows, X = [], []
    base = rng.gamma(0.6, 2.0, genes)
    for d, lab in enumerate(["healthy", "healthy", "moderate", "moderate", "severe", "severe"]):
        donor_fx = rng.normal(0, 0.2, genes)
        mu = base * np.exp(donor_fx)
        mu[:15] *= {"healthy": 1.0, "moderate": 2.0, "severe": 4.0}[lab]
        X.append(rng.poisson(mu * rng.lognormal(0, 0.3, (n_per, 1))))
        rows += [(f"p{d}", lab)] * n_per
    a = ad.AnnData(sp.csr_matrix(np.vstack(X).astype(np.float32)),
                   obs=pd.DataFrame(rows, columns=["patient", "severity"], index=[f"c{i}" for i in range(len(rows))]))
    a.var_names = [f"G{i}" for i in range(genes)]
    a.write_h5ad(path)
    return path


@pytest.mark.slow
def test_two_donors_per_class_without_cell_types_in_transductive_mode(tmp_path):
    """The 6-donor study a user could not run: every split mode builds, training never crashes,
    and summary.md states what the design left out."""
    data = six_donor_study(tmp_path / "study.h5ad")
    cfg = {"dataset": "six", "device": "cpu",
           "data": {"source": "file", "file": {"path": str(data)},
                    "keys": {"label": "severity", "donor": "patient", "cell_type": None}},
           "preprocess": {"min_genes": 20, "n_pcs": 20, "max_mito_fraction": 1.0},
           "graph": {"split_modes": ["cells", "donors", "donor_cv"], "cv_folds": 3, "graph_mode": "transductive",
                     "k": 10, "n_pcs": 20},
           "train": {"models": ["logreg", "pseudobulk", "gat"], "seeds": [0], "max_epochs": 40, "patience": 10},
           "explain": {"methods": ["integrated_gradients", "de", "random"], "n_cells": 60},
           "celltype": {"enabled": False}}  # the simulated study has no cell-type structure to cluster
    (tmp_path / "six.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    snakemake("--cores", "2", "--resources", "gpu=2", "--configfile", str(tmp_path / "six.yaml"), "--directory",
              str(work))
    res = work / "results" / "six"
    summary = (res / "summary.md").read_text()
    assert "no cell types" in summary and "augmentation left out" in summary
    for unit in ("donors", "donor_cv/fold0", "donor_cv/fold2"):
        m = json.loads((res / "models" / unit / "gat" / "seed0" / "metrics.json").read_text())
        assert m["epochs_run"] > 1 and np.isfinite(m["test"]["balanced_accuracy"])
    calls = pd.read_csv(res / "metrics" / "calls.csv")
    cv = calls[(calls["split"] == "donor_cv") & (calls["model"] == "pseudobulk")]
    assert sorted(cv["unit"]) == [f"p{i}" for i in range(6)]  # every donor called once, by the fold that held it out


@pytest.mark.slow
def test_a_user_config_inherits_nothing_from_the_demo(tmp_path):
    """A user's --configfile is validated on its own: keys they did not write take the schema's
    defaults, not the demo's (config/config.yaml sets augment.graph_model.splits: [cells], ...)."""
    data = six_donor_study(tmp_path / "study.h5ad")
    user = {"dataset": "mine", "data": {"source": "file", "file": {"path": str(data)},
                                        "keys": {"label": "severity", "donor": "patient", "cell_type": None}}}
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(user))
    snakemake("--cores", "1", "--configfile", str(tmp_path / "mine.yaml"), "--directory", str(tmp_path / "w"),
              "results/mine/provenance/config.yaml")
    resolved = yaml.safe_load((tmp_path / "w" / "results" / "mine" / "provenance" / "config.yaml").read_text())
    defaults = schema_defaults()
    for section in ("graph", "train", "augment", "evaluation"):
        assert resolved[section] == defaults[section], section
    assert resolved["explain"]["split"] is None and resolved["explain"]["model"] == "auto"


@pytest.mark.slow
def test_atlas_settings_sparse_features_cluster_batches_and_no_optional_stages(tmp_path):
    """The settings of an atlas-scale run on a small study: sparse node features, Cluster-GCN training,
    chunked inference, explain and augment switched off; the results file holds every cell's call."""
    data = six_donor_study(tmp_path / "study.h5ad")
    cfg = {"dataset": "atlas", "device": "cpu",
           "data": {"source": "file", "file": {"path": str(data)},
                    "keys": {"label": "severity", "donor": "patient", "cell_type": None}},
           "preprocess": {"min_genes": 20, "n_pcs": 20, "max_mito_fraction": 1.0},
           "celltype": {"enabled": False},
           "graph": {"split_modes": ["cells"], "k": 10, "n_pcs": 20, "sparse_features": True},
           "train": {"models": ["logreg", "gat"], "seeds": [0], "max_epochs": 20, "patience": 5,
                     "batching": "cluster", "num_parts": 8, "parts_per_batch": 3, "inference_cells": 100},
           "explain": {"enabled": False}, "augment": {"enabled": False}}
    (tmp_path / "atlas.yaml").write_text(yaml.safe_dump(cfg))
    work = tmp_path / "work"
    snakemake("--cores", "2", "--resources", "gpu=2", "--configfile", str(tmp_path / "atlas.yaml"), "--directory",
              str(work))
    res = work / "results" / "atlas"
    assert not (res / "explain").exists() and not (res / "augment").exists()
    import torch

    graph = torch.load(res / "graph" / "cells.pt", weights_only=False)
    assert sp.isspmatrix_csr(graph["x"])
    m = json.loads((res / "models" / "cells" / "gat" / "seed0" / "metrics.json").read_text())
    assert m["test"]["balanced_accuracy"] > 0.5  # three classes: chance 0.33
    out = ad.read_h5ad(res / "cellgnn.h5ad")
    assert out.n_obs == graph["x"].shape[0] and "explanations left out (explain.enabled: false)" in (
        res / "summary.md").read_text()
