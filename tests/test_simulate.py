import numpy as np
import pytest
import scipy.sparse as sp

from cellgnn.data import is_integer_counts, simulate
from cellgnn.errors import CellgnnInputError


def test_counts_are_sparse_integers_with_realistic_depth(sim):
    assert sp.issparse(sim.X)
    ok, why = is_integer_counts(sim.X)
    assert ok, why
    X = sim.X.toarray()
    zeros = (X == 0).mean()
    assert 0.4 < zeros < 0.95  # scRNA-seq-like sparsity
    lib = X.sum(axis=1)
    assert 500 < np.median(lib) < 5000


def test_labels_donors_cell_types_and_rising_infection(sim):
    obs = sim.obs
    assert set(obs["label"].cat.categories) == {"mock", "bystander_1dpi", "infected_1dpi", "bystander_2dpi",
                                                "infected_2dpi", "bystander_3dpi", "infected_3dpi"}
    assert obs["cell_type"].nunique() >= 5 and obs["donor"].nunique() == 4
    frac = [(obs["label"] == f"infected_{t}dpi").sum() / (obs["condition"] == f"{t}dpi").sum() for t in (1, 2, 3)]
    assert frac[0] < frac[1] < frac[2]
    # ciliated cells are the most susceptible
    inf = obs["label"].str.startswith("infected")
    by_ct = inf.groupby(obs["cell_type"], observed=True).mean()
    assert by_ct.idxmax() == "Ciliated"


def test_ground_truth_genes_respond_in_infected_cells(sim):
    gt = sim.uns["ground_truth"]
    assert {"class", "cell_type", "gene", "log2_fold_change"} <= set(gt)
    rows = [(c, t, g) for c, t, g in zip(gt["class"], gt["cell_type"], gt["gene"])
            if c == "infected_3dpi" and t == "Ciliated"]
    genes = sorted({g for _, _, g in rows})
    X = sim.X.toarray()
    idx = [sim.var_names.get_loc(g) for g in genes]
    lib = X.sum(axis=1, keepdims=True)
    norm = X / lib
    inf = ((sim.obs["label"] == "infected_3dpi") & (sim.obs["cell_type"] == "Ciliated")).to_numpy()
    mock = ((sim.obs["label"] == "mock") & (sim.obs["cell_type"] == "Ciliated")).to_numpy()
    lfc = np.log2(norm[inf][:, idx].mean(0) + 1e-6) - np.log2(norm[mock][:, idx].mean(0) + 1e-6)
    assert np.median(lfc) > 1.0
    # bystander interferon response is weaker than the infected one
    by_rows = {g for c, t, g in zip(gt["class"], gt["cell_type"], gt["gene"]) if c == "bystander_3dpi"}
    fc_by = np.mean([f for c, g, f in zip(gt["class"], gt["gene"], gt["log2_fold_change"])
                     if c == "bystander_3dpi"])
    fc_inf = np.mean([f for c, g, f in zip(gt["class"], gt["gene"], gt["log2_fold_change"])
                      if c == "infected_3dpi" and g in by_rows])
    assert fc_by < fc_inf


def test_same_seed_same_data_other_seed_other_data():
    a = simulate(n_cells=200, n_genes=500, seed=3)
    b = simulate(n_cells=200, n_genes=500, seed=3)
    c = simulate(n_cells=200, n_genes=500, seed=4)
    assert (a.X != b.X).nnz == 0
    assert (a.X != c.X).nnz > 0


def test_severity_preset_label_constant_within_donor():
    a = simulate(preset="severity", n_cells=600, n_genes=600, n_donors=9, seed=0)
    assert set(a.obs["label"].cat.categories) == {"healthy", "moderate", "severe"}
    assert (a.obs.groupby("donor", observed=True)["label"].nunique() == 1).all()


@pytest.mark.parametrize("kw,field", [({"preset": "flu"}, "preset"), ({"n_genes": 50}, "n_genes"),
                                      ({"n_donors": 1}, "n_donors")])
def test_bad_parameters_name_the_field(kw, field):
    with pytest.raises(CellgnnInputError, match=field):
        simulate(**kw)
