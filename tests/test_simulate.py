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


def test_planted_genes_are_expressed_before_the_response():
    """Response genes are drawn among genes expected at >= 1 UMI per unstimulated cell;
    with the threshold off, many are nearly silent (a truth no method can recover)."""
    def mock_mean_of_planted(**kw):
        a = simulate(n_cells=1500, n_genes=1500, seed=0, **kw)
        planted = np.unique(a.uns["ground_truth"]["gene"])
        mock = (a.obs["label"] == "mock").to_numpy()
        return np.asarray(a[mock, planted].X.mean(0)).ravel()

    default, anywhere = mock_mean_of_planted(), mock_mean_of_planted(response_min_umi=0.0)
    assert np.median(default) > 0.8 and (default < 0.2).mean() < 0.05
    assert (anywhere < 0.2).mean() > 0.25


def oracle_precision(adata) -> dict[str, float]:
    """Precision@k of the class-level truth for an oracle that knows every cell's label:
    genes ranked by the mean, over donors and cell types, of log1p-normalized expression in
    the class minus that in mock cells of the same donor and cell type."""
    from cellgnn.explain import ground_truth_sets, precision_at_k

    x = np.log1p(adata.X.toarray() / adata.X.sum(1).A * 1e4)
    obs = adata.obs.astype(str)
    genes = list(adata.var_names)
    by_class, _ = ground_truth_sets(dict(adata.uns["ground_truth"]), genes, sorted(obs["label"].unique()))
    out = {}
    for c, truth in by_class.items():
        diffs = []
        for _, grp in obs.groupby(["donor", "cell_type"]):
            pos, ctl = grp.index[grp["label"] == c], grp.index[grp["label"] == "mock"]
            if len(pos) >= 3 and len(ctl) >= 3:
                diffs.append(x[adata.obs_names.get_indexer(pos)].mean(0) - x[adata.obs_names.get_indexer(ctl)].mean(0))
        out[c] = precision_at_k(np.mean(diffs, 0), np.isin(genes, list(truth)))
    return out


def test_default_study_truth_is_identifiable_by_an_oracle():
    """The default data (config/config.yaml) let an oracle with the true labels recover the
    planted class programmes: a method's precision@k is then bounded by the method, not by
    genes the counts cannot show. Library effects as large as the donor effects (the old
    default) drown the weak 1 dpi bystander response."""
    kw = dict(n_cells=3500, n_genes=1500, n_donors=4, seed=0)
    good = oracle_precision(simulate(**kw))
    assert np.mean(list(good.values())) >= 0.9 and min(good.values()) >= 0.75, good
    noisy = oracle_precision(simulate(sample_effect_sd=0.3, response_min_umi=0.0, **kw))
    assert np.mean(list(noisy.values())) < 0.6, noisy


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
