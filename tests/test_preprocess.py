import json

import numpy as np
import pytest
import scipy.sparse as sp

from cellgnn.errors import CellgnnInputError
from cellgnn.preprocess import preprocess

from sim_config import PRE_CFG


def test_qc_counts_removed_per_reason(sim, pre):
    adata, qc = pre
    X = sim.X.toarray()
    n_genes = (X > 0).sum(1)
    mito = sim.var_names.str.startswith("MT-")
    frac = X[:, mito].sum(1) / X.sum(1)
    low = n_genes < PRE_CFG["min_genes"]
    high = (frac > PRE_CFG["max_mito_fraction"]) & ~low
    assert qc["removed_cells"] == {"min_genes": int(low.sum()), "max_mito_fraction": int(high.sum())}
    assert qc["removed_cells"]["min_genes"] > 0 and qc["removed_cells"]["max_mito_fraction"] > 0
    assert adata.n_obs == sim.n_obs - low.sum() - high.sum()
    assert qc["output"]["n_cells"] == adata.n_obs
    json.dumps(qc)  # serializable as qc.json


def test_layers_and_normalization(pre):
    adata, _ = pre
    counts = adata.layers["counts"]
    lib = np.asarray(counts.sum(1)).ravel()
    X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    # log1p of counts scaled to target_sum
    np.testing.assert_allclose(np.expm1(X).sum(1), PRE_CFG["target_sum"], rtol=1e-3)
    assert lib.min() > 0
    assert adata.obsm["X_pca"].shape == (adata.n_obs, PRE_CFG["n_pcs"])


def test_sqrt_transform_and_hvg(sim):
    adata, _ = preprocess(sim, dict(PRE_CFG, transform="sqrt"))
    X = adata.X.toarray() if sp.issparse(adata.X) else adata.X
    np.testing.assert_allclose((X ** 2).sum(1), 1e4, rtol=1e-3)
    hv, qc = preprocess(sim, dict(PRE_CFG, hvg=200))
    assert hv.n_vars == 200 and qc["removed_genes"]["not_highly_variable"] == adata.n_vars - 200


@pytest.mark.parametrize("mutate,match", [
    (lambda X: X * 0.5, "non-integer"),
    (lambda X: X - 5, "negative"),
])
def test_refuses_non_counts(sim, mutate, match):
    bad = sim.copy()
    bad.X = mutate(bad.X.toarray())
    with pytest.raises(CellgnnInputError, match=match) as e:
        preprocess(bad, dict(PRE_CFG), source="raw.h5ad")
    assert "raw.h5ad" in str(e.value) and "expect_counts" in str(e.value)


def test_refuses_nan(sim):
    bad = sim.copy()
    X = bad.X.toarray()
    X[0, 0] = np.nan
    bad.X = X
    with pytest.raises(CellgnnInputError, match="NaN"):
        preprocess(bad, dict(PRE_CFG))


def test_empty_after_qc_is_an_error(sim):
    with pytest.raises(CellgnnInputError, match="removed every cell"):
        preprocess(sim, dict(PRE_CFG, min_genes=100000))
