"""Tests of the explain stage: IG exactness and completeness, scoring, bad input, and that
integrated gradients on a trained GAT finds planted genes better than a random ranking."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch_geometric.nn import GATConv

from cellgnn import explain as ex
from cellgnn.errors import CellgnnInputError
from cellgnn.knn import knn_search
from cellgnn.models.scanna import ScANNA, salient_genes

N_GENES, N_PLANTED = 60, 6
CLASSES = ["mock", "infected", "bystander"]
CELL_TYPES = ["ciliated", "basal"]


class TinyGAT(torch.nn.Module):
    """Two GATConv layers (8 heads × 4 units, ELU), as the study's GAT but smaller."""

    def __init__(self, in_dim, n_classes):
        super().__init__()
        self.c1 = GATConv(in_dim, 4, heads=8, add_self_loops=False)
        self.c2 = GATConv(32, n_classes, heads=1, add_self_loops=False)

    def forward(self, x, edge_index, edge_attr=None):
        return self.c2(torch.nn.functional.elu(self.c1(x, edge_index)), edge_index)


def planted_graph(n=360, seed=0, strength=0.5):
    """Graph dict (CONTRIBUTING contract) and ground truth: class ``c >= 1`` raises its
    ``N_PLANTED`` genes by ``strength`` (features in [0, 1]); cells are kNN-linked on x."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(CLASSES)), n // len(CLASSES))
    ct = rng.integers(0, len(CELL_TYPES), y.size)
    x = rng.uniform(0, 0.5, (y.size, N_GENES)).astype(np.float32)
    planted = {1: np.arange(0, N_PLANTED), 2: np.arange(N_PLANTED, 2 * N_PLANTED)}
    for c, gs in planted.items():
        x[np.ix_(y == c, gs)] += strength
    x = np.clip(x, 0, 1)
    idx, _ = knn_search(x, 8)
    src = np.concatenate([idx.ravel(), np.repeat(np.arange(y.size), 8), np.arange(y.size)])
    dst = np.concatenate([np.repeat(np.arange(y.size), 8), idx.ravel(), np.arange(y.size)])
    pairs = np.unique(np.stack([src, dst], 1), axis=0)
    pairs = pairs[np.lexsort((pairs[:, 0], pairs[:, 1]))]
    split = rng.permutation(y.size)
    masks = {k: np.zeros(y.size, bool) for k in ("train_mask", "val_mask", "test_mask")}
    masks["train_mask"][split[: y.size // 2]] = True
    masks["val_mask"][split[y.size // 2: 3 * y.size // 4]] = True
    masks["test_mask"][split[3 * y.size // 4:]] = True
    genes = [f"G{i}" for i in range(N_GENES)]
    graph = {"x": torch.from_numpy(x), "y": torch.from_numpy(y).long(),
             "edge_index": torch.from_numpy(pairs.T.copy()).long(),
             "edge_weight": torch.ones(len(pairs)), "cell_type": torch.from_numpy(ct).long(),
             "donor": torch.zeros(y.size, dtype=torch.long), "sample": torch.zeros(y.size, dtype=torch.long),
             **{k: torch.from_numpy(v) for k, v in masks.items()},
             "classes": CLASSES, "genes": genes, "cell_types": CELL_TYPES, "donors": ["d0"], "samples": ["d0"],
             "cell_ids": [f"c{i}" for i in range(y.size)], "split_mode": "cells", "graph_mode": "transductive",
             "self_loops": True, "seed": seed}
    rows = [(CLASSES[c], t, genes[gi], 1.0) for c, gs in planted.items() for t in CELL_TYPES for gi in gs]
    truth = {k: np.array(v) for k, v in zip(("class", "cell_type", "gene", "log2_fold_change"), zip(*rows))}
    return graph, truth


def train(model, graph, epochs=60, lr=0.01, graph_model=True):
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    m = graph["train_mask"]
    for _ in range(epochs):
        model.train()
        opt.zero_grad()
        out = model(graph["x"], graph["edge_index"]) if graph_model else model(graph["x"])
        torch.nn.functional.cross_entropy(out[m], graph["y"][m]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    graph, truth = planted_graph()
    model = train(TinyGAT(N_GENES, len(CLASSES)), graph)
    acc = (model(graph["x"], graph["edge_index"]).argmax(1) == graph["y"])[graph["test_mask"]].float().mean()
    assert acc > 0.9, f"test GAT did not learn the planted signal (accuracy {acc:.2f})"
    return graph, truth, model


def ig_class_scores(model, graph, cells, **kw):
    y = graph["y"].numpy()
    res = ex.integrated_gradients(model, graph["x"], graph["edge_index"], cells, y[cells],
                                  graph["cell_type"].numpy(), len(CELL_TYPES), progress=False, **kw)
    return res, {c: res.attr[y[cells] == i].mean(0) for i, c in enumerate(CLASSES) if (y[cells] == i).any()}


def test_ig_on_trained_gat_beats_random(trained):
    graph, truth, model = trained
    cells = np.flatnonzero(graph["test_mask"].numpy())
    res, scores = ig_class_scores(model, graph, cells, n_steps=16, tolerance=0.02, batch_cells=16)
    by_class, _ = ex.ground_truth_sets(truth, graph["genes"], CLASSES)
    rng = np.random.default_rng(0)
    for c, gs in by_class.items():
        mask = np.isin(graph["genes"], list(gs))
        p_ig = ex.precision_at_k(scores[c], mask)
        ap_ig = ex.average_precision(scores[c], mask)
        p_rand = np.mean([ex.precision_at_k(rng.random(N_GENES), mask) for _ in range(200)])
        assert p_ig >= 0.8, f"{c}: IG precision@k {p_ig:.2f}"
        assert p_ig > p_rand + 0.5 and ap_ig > 0.8, (c, p_ig, p_rand, ap_ig)


def test_ig_on_untrained_gat_is_not_better_than_chance():
    """The scoring can fail: a model that learned nothing does not recover the planted genes."""
    torch.manual_seed(1)
    graph, truth = planted_graph()
    model = TinyGAT(N_GENES, len(CLASSES)).eval()
    cells = np.flatnonzero(graph["test_mask"].numpy())
    _, scores = ig_class_scores(model, graph, cells, n_steps=8, tolerance=1.0)
    by_class, _ = ex.ground_truth_sets(truth, graph["genes"], CLASSES)
    p = [ex.precision_at_k(scores[c], np.isin(graph["genes"], list(gs))) for c, gs in by_class.items()]
    assert np.mean(p) < 0.8


def test_ig_completeness_and_subgraph_exactness(trained):
    graph, _, model = trained
    cells = np.flatnonzero(graph["test_mask"].numpy())[:20]
    res, _ = ig_class_scores(model, graph, cells, n_steps=1, tolerance=1e-4, batch_cells=7)
    assert (res.batches["completeness_rel_error"] <= 1e-4).all()
    assert (res.batches["n_steps"] > 1).all()  # one step is never complete: the tolerance forced more
    np.testing.assert_allclose(res.attr.sum(1), res.delta, rtol=2e-3, atol=2e-4)
    full = model(graph["x"], graph["edge_index"]).argmax(1).numpy()
    np.testing.assert_array_equal(res.pred, full[cells])
    # attribution mass comes from the cells' own neighbourhoods only, split over cell types
    assert res.node_mass.shape == (20, len(CELL_TYPES)) and (res.node_mass >= 0).all()


def test_ig_contrast_is_the_difference_of_two_logit_explanations(trained):
    """Against the control class, a cell's attribution is that of its class logit minus that
    of the control logit (IG is linear in the output); control cells keep their logit."""
    graph, _, model = trained
    y = graph["y"].numpy()
    cells = np.flatnonzero(graph["test_mask"].numpy())[::4]
    ct, kw = graph["cell_type"].numpy(), dict(n_steps=16, tolerance=1.0, progress=False)
    con = ex.integrated_gradients(model, graph["x"], graph["edge_index"], cells, y[cells], ct, 2, contrast=0, **kw)
    own = ex.integrated_gradients(model, graph["x"], graph["edge_index"], cells, y[cells], ct, 2, **kw)
    ctl = ex.integrated_gradients(model, graph["x"], graph["edge_index"], cells, np.zeros_like(cells), ct, 2, **kw)
    treated = y[cells] != 0
    assert treated.any() and (~treated).any()
    np.testing.assert_allclose(con.attr[treated], own.attr[treated] - ctl.attr[treated], atol=1e-5)
    np.testing.assert_allclose(con.attr[~treated], own.attr[~treated], atol=1e-6)
    np.testing.assert_allclose(con.delta, np.where(treated, own.delta - ctl.delta, own.delta), atol=1e-5)
    assert (con.batches["completeness_rel_error"] < 0.05).all()


def test_donor_control_reference_uses_each_donors_own_controls_or_falls_back():
    x = torch.tensor([[1.0, 0], [3, 0], [5, 0], [0, 2], [0, 4], [9, 9], [7, 7]])
    y = np.array([0, 0, 0, 0, 0, 0, 1])
    ct = np.array([0, 0, 0, 1, 1, 0, 0])
    donor = np.array([0, 0, 0, 0, 0, 1, 1])
    fallback = torch.tensor([[-1.0, -1], [-2, -2]])
    ref, idx = ex.donor_control_reference(x, y, ct, donor, 0, 2, fallback, min_cells=2)
    assert ref.shape == (4, 2) and list(idx) == [0, 0, 0, 1, 1, 2, 2]
    np.testing.assert_allclose(ref[0], [3, 0])  # donor 0, type 0: its three controls
    np.testing.assert_allclose(ref[1], [0, 3])  # donor 0, type 1
    np.testing.assert_allclose(ref[2], [-1, -1])  # donor 1 has one control of type 0: fallback
    np.testing.assert_allclose(ref[3], [-2, -2])  # none of type 1: fallback
    graph, _ = planted_graph(n=60)
    model = TinyGAT(N_GENES, len(CLASSES)).eval()
    cells = np.arange(0, 60, 7)
    res = ex.integrated_gradients(model, graph["x"], graph["edge_index"], cells, graph["y"].numpy()[cells],
                                  graph["cell_type"].numpy(), 2, reference=torch.zeros(3, N_GENES) + 0.25,
                                  reference_index=np.full(60, 2), n_steps=8, progress=False)
    np.testing.assert_allclose(res.attr.sum(1), res.delta, rtol=0.05, atol=1e-3)
    with torch.no_grad():  # every node's baseline is row 2 of the reference
        ei, t = graph["edge_index"], torch.as_tensor(graph["y"].numpy()[cells])
        f = model(graph["x"], ei)[cells].gather(1, t[:, None]).squeeze(1)
        f0 = model(torch.full_like(graph["x"], 0.25), ei)[cells].gather(1, t[:, None]).squeeze(1)
    np.testing.assert_allclose(res.delta, (f - f0).numpy(), atol=1e-5)


def test_ig_too_few_hops_is_refused(trained):
    graph, _, model = trained
    with pytest.raises(CellgnnInputError, match="num_hops"):
        ig_class_scores(model, graph, np.arange(5), num_hops=1, n_steps=4)


def test_empty_selection_is_refused(trained):
    graph, _, model = trained
    with pytest.raises(CellgnnInputError, match="no cells"):
        ig_class_scores(model, graph, np.array([], dtype=int))
    with pytest.raises(CellgnnInputError, match="no cells"):
        ex.select_cells(np.zeros(10, bool), np.zeros(10, int), 5, np.random.default_rng(0))


def test_unknown_class_is_refused():
    with pytest.raises(CellgnnInputError, match="unknown class"):
        ex.resolve_classes(["infected", "zombie"], CLASSES)
    assert ex.resolve_classes([], CLASSES) == CLASSES


def test_class_truth_is_the_programme_shared_by_all_cell_types():
    truth = {"class": np.array(["inf"] * 5), "cell_type": np.array(["a", "a", "a", "b", "b"]),
             "gene": np.array(["G0", "G1", "G2", "G0", "G3"]), "log2_fold_change": np.ones(5)}
    by_class, by_ct = ex.ground_truth_sets(truth, ["G0", "G1", "G2", "G3", "G4"], ["mock", "inf"])
    assert by_class == {"inf": {"G0"}}
    assert by_ct == {("inf", "a"): {"G0", "G1", "G2"}, ("inf", "b"): {"G0", "G3"}}


def test_method_margins_pair_seeds_and_set_deterministic_methods_against_each_seed():
    scores = pd.DataFrame({
        "method": ["ig"] * 4 + ["w"] * 4 + ["de"] * 2,
        "class": ["a", "b"] * 5,
        "seed": [0, 0, 1, 1, 0, 0, 1, 1, np.nan, np.nan],
        "precision_at_k": [0.9, 0.7, 1.0, 0.8, 0.5, 0.5, 0.7, 0.5, 0.6, 0.6]})
    m = ex.method_margins(scores, "ig", ["w", "de", "ig"]).set_index("other")
    assert list(m.index) == ["w", "de"]
    assert m.loc["w", "diff"] == pytest.approx(0.3) and m.loc["w", "low"] == pytest.approx(0.3)  # +0.3 in both seeds
    assert m.loc["de", "diff"] == pytest.approx(0.25) and m.loc["de", "n_seeds"] == 2
    assert m.loc["de", "low"] < 0.25 < m.loc["de", "high"]


def test_summarize_scores_gives_no_interval_for_a_deterministic_method():
    scores = pd.DataFrame({"method": ["ig"] * 4 + ["de"] * 2, "class": ["a", "b"] * 3,
                           "seed": [0, 0, 1, 1, np.nan, np.nan],
                           "precision_at_k": [0.9, 0.7, 1.0, 0.8, 0.6, 0.6], "auprc": [0.5] * 6})
    s = ex.summarize_scores(scores).set_index("method")
    assert list(s.index) == ["ig", "de"] and s.loc["ig", "n_seeds"] == 2 and s.loc["de", "n_seeds"] == 1
    assert s.loc["ig", "precision_at_k_low"] < 0.85 < s.loc["ig", "precision_at_k_high"]
    assert s.loc["de", "precision_at_k"] == pytest.approx(0.6) and np.isnan(s.loc["de", "precision_at_k_low"])


def test_precision_and_auprc_known_values():
    scores = np.array([0.9, 0.8, 0.1, 0.7, 0.0])
    truth = np.array([True, False, False, True, False])
    assert ex.precision_at_k(scores, truth) == 0.5  # top-2 = genes 0, 1
    assert ex.precision_at_k(scores, truth, k=3) == pytest.approx(2 / 3)
    assert ex.average_precision(scores, truth) == pytest.approx((1 + 2 / 3) / 2)
    assert np.isnan(ex.precision_at_k(scores, np.zeros(5, bool)))


def test_weights_de_and_scanna_find_planted_genes():
    torch.manual_seed(0)
    graph, truth = planted_graph(seed=3)
    by_class, _ = ex.ground_truth_sets(truth, graph["genes"], CLASSES)
    y, x = graph["y"].numpy(), graph["x"].numpy()
    de = ex.de_scores(x, y, CLASSES, graph["genes"])
    for c, gs in by_class.items():
        assert ex.precision_at_k(de[c], np.isin(graph["genes"], list(gs))) == 1.0
    model = train(ScANNA(N_GENES, len(CLASSES)), graph, epochs=80, lr=0.05, graph_model=False)
    att = salient_genes(model, graph["x"], graph["y"], reference=CLASSES.index("mock")).numpy()
    assert att.shape == (len(CLASSES), N_GENES)
    for c, gs in by_class.items():
        assert ex.precision_at_k(att[CLASSES.index(c)], np.isin(graph["genes"], list(gs))) == 1.0, c
    assert model(graph["x"], graph["edge_index"]).shape == (len(y), len(CLASSES))
    w, name = ex.first_layer_weights(TinyGAT(N_GENES, 3), N_GENES)
    assert w.shape == (N_GENES,) and name == "c1.lin.weight"


def test_read_ablation(tmp_path):
    assert ex.read_ablation(tmp_path / "absent.csv") is None
    p = tmp_path / "ablation.csv"
    pd.DataFrame({"group": ["none", "none", "node2vec", "node2vec", "curvature", "curvature"],
                  "seed": [0, 1, 0, 1, 0, 1], "macro_f1": [0.8, 0.82, 0.7, 0.72, 0.79, 0.81]}).to_csv(p, index=False)
    imp = ex.read_ablation(p).set_index("group")["importance"]
    assert imp["node2vec"] == pytest.approx(0.1) and imp["curvature"] == pytest.approx(0.01)
    pd.DataFrame({"group": ["a"], "seed": [0]}).to_csv(p, index=False)
    with pytest.raises(CellgnnInputError, match="metric"):
        ex.read_ablation(p)
    # the evaluation stage's format: mean_diff = without group - full, per split
    pd.DataFrame({"split": ["cells", "donors", "donors"], "group": ["node2vec", "node2vec", "curvature"],
                  "metric": "macro_f1", "mean_diff": [-0.2, -0.05, 0.01], "ci_low": [-0.3, -0.08, -0.02],
                  "ci_high": [-0.1, -0.02, 0.04]}).to_csv(p, index=False)
    t = ex.read_ablation(p, split="donors").set_index("group")
    assert t.loc["node2vec", "importance"] == pytest.approx(0.05) and t.loc["node2vec", "low"] == pytest.approx(0.02)
    assert t.loc["curvature", "importance"] == pytest.approx(-0.01) and len(t) == 2


def test_write_explanations_writes_contract_tables(trained, tmp_path):
    graph, truth, model = trained
    params = {"methods": ["integrated_gradients", "weights", "de", "random", "gnnexplainer"], "n_cells": 40,
              "ig": {"n_steps": 8, "tolerance": 0.05, "batch_cells": 20},
              "gnnexplainer": {"epochs": 10, "cells_per_class": 1}, "top_k": 5}
    inp = ex.ExplainInputs(graph=graph, graph_path="g.pt", truth=truth, models={0: "m0"},
                           load_model=lambda path, g: model, ablation_path=str(tmp_path / "absent.csv"))
    run = ex.write_explanations([inp], tmp_path / "out", params)
    genes = pd.read_csv(tmp_path / "out" / "genes.csv")
    assert list(genes.columns) == ["method", "class", "cell_type", "gene", "score", "rank"]
    assert genes.groupby(["method", "class", "cell_type"]).size().max() == 5
    scores = pd.read_csv(tmp_path / "out" / "ground_truth_scores.csv")
    assert list(scores.columns) == ["method", "class", "precision_at_k", "auprc", "k", "seed"]
    assert set(scores["method"]) == set(params["methods"]) and set(scores["class"]) == {"infected", "bystander"}
    best = run["summary"][0]
    assert best["method"] != "random"
    ig = scores[scores.method == "integrated_gradients"]["precision_at_k"].mean()
    assert ig > scores[scores.method == "random"]["precision_at_k"].mean()
    cts = pd.read_csv(tmp_path / "out" / "cell_types.csv")
    np.testing.assert_allclose(cts.groupby("class")["attribution_share"].sum(), 1.0, rtol=1e-5)
    assert any("ablation" in n for n in run["notes"])


def test_plot_explain_writes_png_and_pdf(trained, tmp_path):
    from cellgnn.plots_explain import FIGURES, plot_explain

    graph, truth, model = trained
    params = {"methods": ["integrated_gradients", "weights", "de", "random"], "n_cells": 30,
              "ig": {"n_steps": 8, "tolerance": 0.1, "batch_cells": 30}, "top_k": 5}
    inp = ex.ExplainInputs(graph=graph, graph_path="g.pt", truth=truth, models={0: "m0", 1: "m1"},
                           load_model=lambda path, g: model)
    ex.write_explanations([inp], tmp_path / "explain", params)
    pd.DataFrame({"method": ["ablation", "weights"], "seed": ["", 0], "group": ["node2vec", "node2vec"],
                  "importance": [0.1, 1.0]}).to_csv(tmp_path / "explain" / "edge_features.csv", index=False)
    plot_explain(tmp_path / "explain", tmp_path / "fig", truth=truth)
    for stem in FIGURES:
        for ext in ("png", "pdf"):
            assert (tmp_path / "fig" / f"{stem}.{ext}").stat().st_size > 1000


def test_first_layer_projection_gives_the_same_ig(trained):
    graph, _, model = trained
    cells = np.flatnonzero(graph["test_mask"].numpy())[:12]
    fast, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4)
    slow, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4, project_first_layer=False)
    assert set(fast.batches["space"]) == {"first_layer"} and set(slow.batches["space"]) == {"features"}
    np.testing.assert_allclose(fast.attr, slow.attr, rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(fast.node_mass, slow.node_mass, rtol=1e-3, atol=1e-5)


def test_ig_with_control_reference_is_complete_and_projection_exact(trained):
    graph, _, model = trained
    y, ct = graph["y"].numpy(), graph["cell_type"].numpy()
    ref = ex.control_reference(graph["x"], y, ct, graph["train_mask"].numpy(), 0, len(CELL_TYPES))
    cells = np.flatnonzero(graph["test_mask"].numpy())[:12]
    fast, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4, reference=ref)
    slow, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4, reference=ref,
                              project_first_layer=False)
    # delta is now f(x) - f(reference), and the attributions add up to it
    np.testing.assert_allclose(fast.attr.sum(1), fast.delta, rtol=2e-3, atol=2e-4)
    np.testing.assert_allclose(fast.attr, slow.attr, rtol=1e-3, atol=1e-5)
    zero, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4)
    assert not np.allclose(zero.delta, fast.delta)  # the baseline is used


def test_control_reference_is_the_mean_control_cell_per_type():
    x = torch.tensor([[1.0, 0.0], [3.0, 2.0], [10.0, 10.0], [5.0, 4.0], [7.0, 7.0]])
    y = np.array([0, 0, 1, 0, 0])
    ct = np.array([0, 0, 0, 1, 1])
    mask = np.array([True, True, True, True, False])  # cell 4 is not a training cell
    ref = ex.control_reference(x, y, ct, mask, control=0, n_cell_types=3)
    # type 0: cells 0, 1; type 1: cell 3; type 2 has none: mean of the three control cells
    np.testing.assert_allclose(ref.numpy(), [[2.0, 1.0], [5.0, 4.0], [3.0, 2.0]])
    with pytest.raises(CellgnnInputError, match="control class"):
        ex.control_reference(x, y, ct, mask, control=2, n_cell_types=3)


def test_projection_covers_a_residual_gat(trained):
    """x enters a residual GAT layer twice (message map and skip): both are projected, exactly."""
    from cellgnn.models.baselines import GAT

    graph, _, _ = trained
    torch.manual_seed(0)
    model = GAT(N_GENES, len(CLASSES), residual=True).eval()
    cells = np.flatnonzero(graph["test_mask"].numpy())[:10]
    fast, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4)
    slow, _ = ig_class_scores(model, graph, cells, n_steps=16, tolerance=1e-4, project_first_layer=False)
    assert set(fast.batches["space"]) == {"first_layer"}
    np.testing.assert_allclose(fast.attr, slow.attr, rtol=1e-3, atol=1e-5)


def test_first_layer_projection_refused_when_x_is_reused():
    """A model that also uses x past its first layer (skip connection) falls back to raw features."""

    class Skip(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(N_GENES, 3)
            self.conv = GATConv(3, 3, heads=1)

        def forward(self, x, edge_index, edge_attr=None):
            return self.conv(self.lin(x), edge_index) + x[:, :3]

    graph, _ = planted_graph()
    torch.manual_seed(0)
    res, _ = ig_class_scores(Skip().eval(), graph, np.arange(10), n_steps=16, tolerance=1e-3)
    assert set(res.batches["space"]) == {"features"}
    np.testing.assert_allclose(res.attr.sum(1), res.delta, rtol=1e-2, atol=1e-4)


def _stage_files(tmp_path, genes_of_model=None):
    """graph.pt, raw.h5ad (with truth) and a GAT checkpoint in the train stage's format."""
    import anndata as ad

    from cellgnn.graph import save_graph
    from cellgnn.io import torch_save
    from cellgnn.models import build_model

    graph, truth = planted_graph(n=120)
    graph["pca"] = graph["x"][:, :5].clone()
    save_graph(graph, tmp_path / "graph.pt")
    raw = ad.AnnData(X=np.zeros((2, 2), np.float32))
    raw.uns["ground_truth"] = truth
    raw.write_h5ad(tmp_path / "raw.h5ad")
    torch.manual_seed(0)
    model = build_model("gat", N_GENES, len(CLASSES))
    ckpt = {"model": "gat", "seed": 0, "params": {}, "genes": genes_of_model or graph["genes"],
            "classes": CLASSES, "split_mode": "cells", "edge_dim": 0, "state_dict": model.state_dict(), "sklearn": None}
    torch_save(ckpt, tmp_path / "seed0" / "model.pt")
    return tmp_path / "graph.pt", tmp_path / "raw.h5ad", [str(tmp_path / "seed0" / "model.pt")]


def test_run_explain_refuses_checkpoint_of_other_genes(tmp_path):
    graph, raw, models = _stage_files(tmp_path, genes_of_model=[f"X{i}" for i in range(N_GENES)])
    with pytest.raises(CellgnnInputError, match="different genes"):
        ex.run_explain([str(graph)], str(raw), models, str(tmp_path / "out"), {"methods": ["weights"]}, "cpu")
    assert not (tmp_path / "out").exists()


def test_run_explain_bad_config_fails_before_output(tmp_path):
    graph, raw, models = _stage_files(tmp_path)
    out = str(tmp_path / "out")
    for params, match in (({"classes": ["zombie"]}, "unknown class"), ({"methods": ["shap"]}, "unknown method"),
                          ({"cells_from": "holdout"}, "unknown subset")):
        with pytest.raises(CellgnnInputError, match=match):
            ex.run_explain([str(graph)], str(raw), models, out, params, "cpu")
    assert not (tmp_path / "out").exists()
    run = ex.run_explain([str(graph)], str(raw), models, out, {"methods": ["weights", "random"], "top_k": 3}, "cpu")
    assert {r["method"] for r in run["summary"]} == {"weights", "random"}


@pytest.mark.parametrize("fast_layers", [False, True])
def test_batched_gnnexplainer_equals_pyg_per_cell(trained, fast_layers):
    """Cells optimised together (batch of 3 of 5) get the masks PyG's Explainer gives each alone
    (same seed per cell), on PyG's GATConv and on the study's GAT (FastGATConv's explain path)."""
    from torch_geometric.explain import Explainer
    from torch_geometric.explain.algorithm import GNNExplainer

    from cellgnn.explain.subgraphs import exact_sampler
    from cellgnn.models.baselines import GAT

    graph, _, model = trained
    if fast_layers:
        torch.manual_seed(0)
        model = train(GAT(N_GENES, len(CLASSES)), graph, epochs=20)
    x, ei = graph["x"], graph["edge_index"]
    cells = np.flatnonzero(graph["test_mask"].numpy())[:5]
    y = graph["y"].numpy()[cells]
    masks, edges = ex.gnnexplainer_masks(model, x, ei, cells, y, epochs=30, seed=7, progress=False, batch_cells=3)
    sampler = exact_sampler(model, x, ei, None, cells, None, torch.device("cpu"))
    explainer = Explainer(model=model, algorithm=GNNExplainer(epochs=30, lr=0.01), explanation_type="phenomenon",
                          node_mask_type="common_attributes", edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    for i, (cell, tgt) in enumerate(zip(cells, y)):
        torch.manual_seed(7 + i)
        cg = sampler.union(np.array([cell]))
        exp = explainer(x[cg.nodes], cg.edge_index, target=torch.full((cg.nodes.numel(),), int(tgt)),
                        index=int(cg.root_pos[0]))
        np.testing.assert_allclose(masks[i], exp.node_mask.reshape(-1, N_GENES)[0].numpy(), atol=2e-5)
        mine = edges[edges["cell"] == cell]
        nodes = cg.nodes.numpy()
        np.testing.assert_array_equal(mine["source"], nodes[cg.edge_index[0].numpy()])
        np.testing.assert_array_equal(mine["target"], nodes[cg.edge_index[1].numpy()])
        np.testing.assert_allclose(mine["mask"], exp.edge_mask.numpy(), atol=2e-5)
    assert masks.std() > 0.01  # the masks moved away from their start
