import numpy as np
import pandas as pd
import pytest
import torch

from cellgnn.errors import CellgnnInputError
from cellgnn.graph import build_graph, knn_graph, load_graph, save_graph, sort_edges, split_cells

from sim_config import GRAPH_CFG


def test_graph_is_symmetric_weighted_with_explicit_self_loops(graphs):
    g = graphs["cells"]
    ei, w = g["edge_index"].numpy(), g["edge_weight"].numpy()
    n = g["x"].shape[0]
    pairs = set(map(tuple, ei.T))
    assert all((j, i) in pairs for i, j in pairs)
    loops = ei[0] == ei[1]
    assert loops.sum() == n and g["self_loops"]
    assert (w > 0).all() and (w <= 1 + 1e-6).all()
    # weights symmetric too
    wd = {(i, j): x for (i, j), x in zip(map(tuple, ei.T), w)}
    assert all(abs(wd[(i, j)] - wd[(j, i)]) < 1e-6 for i, j in list(pairs)[:500])
    # sorted by (target, source)
    order = np.lexsort((ei[0], ei[1]))
    assert (order == np.arange(ei.shape[1])).all()


def test_features_scaled_on_train_cells(graphs):
    g = graphs["cells"]
    x = g["x"].numpy()
    assert x.min() >= 0 and x.max() <= 1
    tr = g["train_mask"].numpy()
    assert np.isclose(x[tr].max(0).max(), 1.0)


def test_splits_disjoint_and_cover(graphs):
    for g in graphs.values():
        m = g["train_mask"].long() + g["val_mask"].long() + g["test_mask"].long()
        assert bool((m == 1).all())


def test_inductive_graph_has_no_edges_between_splits(graphs):
    g = graphs["donors"]
    split = np.where(g["train_mask"], 0, np.where(g["val_mask"], 1, 2))
    ei = g["edge_index"].numpy()
    assert (split[ei[0]] == split[ei[1]]).all()


def test_donor_split_leaves_no_donor_on_both_sides(graphs):
    g = graphs["donors"]
    donor = g["donor"].numpy()
    sets = [set(donor[g[f"{s}_mask"].numpy()]) for s in ("train", "val", "test")]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert all(sets)


def test_cell_split_is_stratified(graphs):
    g = graphs["cells"]
    y = g["y"].numpy()
    for c in np.unique(y):
        frac = g["test_mask"].numpy()[y == c].mean()
        assert 0.05 < frac < 0.3


def test_donor_split_stratifies_donor_level_labels():
    obs = pd.DataFrame({"donor": np.repeat([f"d{i}" for i in range(9)], 20),
                        "label": np.repeat(["healthy", "moderate", "severe"] * 3, 20)})
    s = split_cells(obs, "donors", {"train": 0.6, "val": 0.2, "test": 0.2}, seed=0)
    for part in ("train", "test"):
        assert set(obs["label"][s == part]) == {"healthy", "moderate", "severe"}


def test_donor_split_refuses_class_with_single_donor():
    obs = pd.DataFrame({"donor": np.repeat(["a", "b", "c", "d"], 10),
                        "label": np.repeat(["x", "x", "x", "y"], 10)})
    with pytest.raises(CellgnnInputError, match="class 'y' occurs in one donor only"):
        split_cells(obs, "donors", {"train": 0.7, "val": 0.15, "test": 0.15}, seed=0)


def test_fractions_must_sum_to_one():
    obs = pd.DataFrame({"donor": ["a"] * 30, "label": ["x", "y", "z"] * 10})
    with pytest.raises(CellgnnInputError, match="sum to 1"):
        split_cells(obs, "cells", {"train": 0.7, "val": 0.3, "test": 0.3}, seed=0)


def test_knn_graph_on_two_clusters_connects_within_clusters():
    rng = np.random.default_rng(0)
    pts = np.vstack([rng.normal(0, 0.1, (30, 2)), rng.normal(10, 0.1, (30, 2))]).astype(np.float32)
    ei, w = knn_graph(pts, 5, self_loops=False)
    assert ((ei[0] < 30) == (ei[1] < 30)).all()
    assert (ei[0] != ei[1]).all()


def test_k_too_large_is_a_clear_error():
    with pytest.raises(CellgnnInputError, match="graph.k"):
        knn_graph(np.zeros((5, 2), dtype=np.float32), 10)


def test_sort_edges_permutes_attributes_together():
    ei = np.array([[2, 0, 1], [0, 1, 0]])
    attr = np.array([20, 1, 10])
    out, (a,) = sort_edges(ei, attr)
    assert out.tolist() == [[1, 2, 0], [0, 0, 1]] and a.tolist() == [10, 20, 1]


def test_save_load_roundtrip_and_corrupt_file(tmp_path, graphs):
    p = tmp_path / "g.pt"
    save_graph(graphs["cells"], p)
    g = load_graph(p)
    assert torch.equal(g["edge_index"], graphs["cells"]["edge_index"])
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(CellgnnInputError, match="bad.pt"):
        load_graph(bad)


def test_transductive_mode_builds_one_graph(pre):
    adata, _ = pre
    g = build_graph(adata, dict(GRAPH_CFG, graph_mode="transductive"), "cells", seed=0)
    split = np.where(g["train_mask"], 0, np.where(g["val_mask"], 1, 2))
    ei = g["edge_index"].numpy()
    assert (split[ei[0]] != split[ei[1]]).any()


def test_donor_standardization_and_harmony_remove_a_donor_shift():
    """Two cell types in two donors, donor b shifted: both corrections remove the donor shift, and
    Harmony keeps the cell types apart."""
    from cellgnn.graph import correct_batches, standardize_per_donor

    rng = np.random.default_rng(0)
    donors = np.repeat(["a", "b"], 200)
    types = np.tile(np.repeat([0, 1], 100), 2)
    x = rng.normal(0, 1, (400, 10)).astype(np.float32)
    x[types == 1, :3] += 8.0
    x[donors == "b", 3:6] += 4.0  # the donor batch effect
    z = standardize_per_donor(x, donors)
    np.testing.assert_allclose(z[donors == "b"].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[donors == "a"].std(0), 1, atol=1e-5)
    corrected = correct_batches(x, donors, "harmony", seed=0)
    gap = lambda m, a, b: np.linalg.norm(m[a].mean(0) - m[b].mean(0))  # noqa: E731
    assert gap(corrected, donors == "a", donors == "b") < 0.35 * gap(x, donors == "a", donors == "b")
    assert gap(corrected, types == 0, types == 1) > 0.9 * gap(x, types == 0, types == 1)
    assert correct_batches(x, donors, "none", 0) is x


def test_training_hvgs_come_from_training_cells_as_scanpy_ranks_them(pre):
    import scanpy as sc

    from cellgnn.graph import training_hvgs

    adata, _ = pre
    g = build_graph(adata, dict(GRAPH_CFG, hvg_training=100), "donors", seed=0)
    train = g["train_mask"].numpy()
    assert g["x"].shape[1] == 100 and len(g["genes"]) == 100 and set(g["genes"]) < set(adata.var_names)
    ref = sc.pp.highly_variable_genes(adata[train].copy(), n_top_genes=100, flavor="seurat", inplace=False)
    assert set(g["genes"]) == set(adata.var_names[ref["highly_variable"].to_numpy()])
    changed = adata.copy()
    X = changed.X.toarray()
    X[~train] = X[~train][:, ::-1]  # held-out cells' expression scrambled across genes
    changed.X = X
    np.testing.assert_array_equal(training_hvgs(changed, train, 100), training_hvgs(adata, train, 100))
