"""The data-stage dispatcher: simulated, bundled pbmc68k and local-file sources."""
import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from cellgnn.data import describe, load_dataset, standardize_obs
from cellgnn.errors import CellgnnInputError


def _counts(n=40, g=30, seed=0):
    rng = np.random.default_rng(seed)
    a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (n, g)).astype(np.float32)))
    a.obs_names = [f"c{i}" for i in range(n)]
    a.var_names = [f"G{i}" for i in range(g)]
    a.obs["condition"] = ["ctrl", "covid"] * (n // 2)
    a.obs["patient"] = [f"p{i % 4}" for i in range(n)]
    a.obs["ct"] = ["T"] * n
    return a


def test_simulate_source_follows_the_raw_contract():
    adata = load_dataset({"source": "simulate", "simulate": {"n_cells": 200, "n_genes": 500}, "keys": {}})
    assert {"label", "donor", "cell_type"} <= set(adata.obs)
    assert all(isinstance(adata.obs[c].dtype, pd.CategoricalDtype) for c in ("label", "donor", "cell_type"))
    assert describe(adata)["n_cells"] == 200


def test_pbmc68k_is_bundled_cell_type_task():
    adata = load_dataset({"source": "pbmc68k", "keys": {}})
    assert adata.n_obs == 700 and adata.obs["label"].nunique() >= 5
    assert adata.uns["cellgnn"]["source"]["kind"] == "pbmc68k"


def test_file_source_renames_user_columns(tmp_path):
    path = tmp_path / "study.h5ad"
    _counts().write_h5ad(path)
    adata = load_dataset({"source": "file", "file": {"path": str(path), "format": "auto"},
                          "keys": {"label": "condition", "donor": "patient", "cell_type": "ct"}})
    assert list(adata.obs["label"].cat.categories) == ["covid", "ctrl"]
    assert adata.obs["donor"].nunique() == 4 and "condition" not in adata.obs


@pytest.mark.parametrize("keys,field", [
    ({"label": "disease", "donor": "patient", "cell_type": None}, "data.keys.label"),
    ({"label": "condition", "donor": "sample", "cell_type": None}, "data.keys.donor"),
    ({"label": "condition", "donor": "patient", "cell_type": "celltype"}, "data.keys.cell_type"),
])
def test_missing_columns_name_the_key_and_the_columns_present(keys, field):
    with pytest.raises(CellgnnInputError) as e:
        standardize_obs(_counts(), keys, where="study.h5ad")
    assert field in str(e.value) and "patient" in str(e.value) and "study.h5ad" in str(e.value)


def test_single_class_and_missing_values_are_refused():
    a = _counts()
    a.obs["condition"] = "ctrl"
    with pytest.raises(CellgnnInputError, match="single class"):
        standardize_obs(a, {"label": "condition", "donor": "patient", "cell_type": None})
    b = _counts()
    b.obs["condition"] = b.obs["condition"].astype(object)
    b.obs.iloc[3, b.obs.columns.get_loc("condition")] = np.nan
    with pytest.raises(CellgnnInputError, match="no value"):
        standardize_obs(b, {"label": "condition", "donor": "patient", "cell_type": None})


def test_duplicated_cell_or_gene_names_are_refused():
    a = _counts()
    a.obs_names = ["same"] * a.n_obs
    with pytest.raises(CellgnnInputError, match="duplicated cell names"):
        standardize_obs(a, {"label": "condition", "donor": "patient", "cell_type": None})
    b = _counts()
    b.var_names = ["G"] * b.n_vars
    with pytest.raises(CellgnnInputError, match="duplicated gene names"):
        standardize_obs(b, {"label": "condition", "donor": "patient", "cell_type": None})


def test_unknown_source():
    with pytest.raises(CellgnnInputError, match="data.source"):
        load_dataset({"source": "ftp", "keys": {}})
