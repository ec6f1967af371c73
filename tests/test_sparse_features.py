"""Sparse node features (graph.sparse_features) and exact chunked inference (cellgnn.inference)."""
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from sim_config import GRAPH_CFG

from cellgnn.errors import CellgnnInputError
from cellgnn.graph import build_graph, dense_features, load_graph, save_graph
from cellgnn.inference import Neighbourhoods, chunked_logits, receptive_field
from cellgnn.models import build_model
from cellgnn.train import train_model

CFG = dict(max_epochs=12, patience=5, hyperparameters={})


@pytest.fixture(scope="module")
def pair(pre):
    """The same split and graph with dense and with sparse node features."""
    adata, _ = pre
    dense = build_graph(adata, dict(GRAPH_CFG, sparse_features=False), "cells", seed=0)
    sparse = build_graph(adata, dict(GRAPH_CFG, sparse_features=True), "cells", seed=0)
    return dense, sparse


def test_sparse_features_equal_dense_ones_where_the_training_minimum_is_zero(pair):
    dense, sparse = pair
    assert sp.isspmatrix_csr(sparse["x"]) and sparse["x"].dtype == np.float32
    assert torch.equal(dense["edge_index"], sparse["edge_index"])
    zero_min = dense["feature_min"].numpy() == 0
    assert zero_min.mean() > 0.9  # most genes are absent from some training cell
    np.testing.assert_allclose(dense_features(sparse).numpy()[:, zero_min], dense["x"].numpy()[:, zero_min], atol=1e-6)
    np.testing.assert_array_equal(sparse["feature_min"].numpy(), 0)
    x = dense_features(sparse).numpy()
    assert x.min() >= 0 and x.max() <= 1
    assert (x[sparse["train_mask"].numpy()].max(0)[sparse["feature_range"].numpy() > 0] == 1).all()


def test_sparse_graph_roundtrip(tmp_path, pair):
    _, sparse = pair
    save_graph(sparse, tmp_path / "g.pt")
    back = load_graph(tmp_path / "g.pt")
    assert (back["x"] != sparse["x"]).nnz == 0
    rows = torch.tensor([5, 1, 7])
    np.testing.assert_array_equal(dense_features(back, rows).numpy(), sparse["x"][[5, 1, 7]].toarray())


def test_sparse_features_refused_where_they_cannot_hold_the_features(pre):
    adata, _ = pre
    with pytest.raises(CellgnnInputError, match="graph.sparse_features"):
        build_graph(adata, dict(GRAPH_CFG, sparse_features=True, donor_standardize=True), "cells", seed=0)
    neg = adata.copy()
    neg.X = neg.X.copy()
    neg.X.data[0] = -1.0
    with pytest.raises(CellgnnInputError, match="negative"):
        build_graph(neg, dict(GRAPH_CFG, sparse_features=True), "cells", seed=0)
    assert not sp.issparse(build_graph(neg, dict(GRAPH_CFG, sparse_features="auto"), "cells", seed=0)["x"])


def test_subgraph_holds_every_edge_between_the_cells_within_reach():
    ei = torch.tensor([[1, 2, 3, 0, 4], [0, 1, 2, 3, 3]])  # 1->0, 2->1, 3->2, 0->3, 4->3
    hood = Neighbourhoods(ei, 5)
    nodes, local, eids, pos = hood.subgraph(np.array([0]), 2)
    assert nodes.tolist() == [0, 1, 2]
    assert sorted(map(tuple, nodes[local.numpy()].T.tolist())) == [(1, 0), (2, 1)]
    assert sorted(eids.tolist()) == [0, 1] and pos.tolist() == [0]


@pytest.mark.parametrize("name", ["gat", "gcn", "gat_ef", "gat_edge", "gcn_ef", "mlp", "scanna"])
def test_chunked_inference_equals_the_full_graph_pass(pair, name):
    _, g = pair
    torch.manual_seed(0)
    n, genes = g["x"].shape
    edge_dim = 3 if name in ("gat_ef", "gat_edge", "gcn_ef") else 0
    ea = torch.rand(g["edge_index"].shape[1], edge_dim) if edge_dim else None
    model = build_model(name, genes, len(g["classes"]), edge_dim=edge_dim).eval()
    with torch.no_grad():
        full = model(dense_features(g), g["edge_index"], ea)
    roots = np.random.default_rng(0).permutation(n)[:300]
    got = chunked_logits(model, g["x"], g["edge_index"], roots, ea, g["pca"].numpy(), chunk_cells=70)
    np.testing.assert_allclose(got.numpy(), full[roots].numpy(), atol=1e-4, rtol=1e-4)
    assert receptive_field(model) >= (0 if name in ("mlp", "scanna") else 2)


@pytest.mark.parametrize("batching", ["full", "cluster"])
def test_training_on_sparse_features_matches_dense(pair, batching):
    dense, sparse = pair
    zero_min = dense["feature_min"].numpy() == 0
    # genes with a non-zero training minimum are scaled differently; zero them in both graphs
    keep = torch.from_numpy(zero_min.astype(np.float32))
    dense = {**dense, "x": dense["x"] * keep}
    sparse = {**sparse, "x": sp.csr_matrix(sparse["x"].multiply(zero_min[None, :]), dtype=np.float32)}
    cfg = dict(CFG, batching=batching, num_parts=8, parts_per_batch=4, inference_cells=150)
    a = train_model(dense, "gat", cfg, seed=0)
    b = train_model(sparse, "gat", cfg, seed=0)
    assert a.best_epoch == b.best_epoch
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-4)
    np.testing.assert_allclose(train_model(dense, "mlp", cfg, seed=0).proba,
                               train_model(sparse, "mlp", cfg, seed=0).proba, atol=1e-4)
    # scikit-learn fits the sparse matrix itself: the same optimum to lbfgs's tolerance
    pd_, ps = train_model(dense, "logreg", cfg, seed=0).proba, train_model(sparse, "logreg", cfg, seed=0).proba
    assert np.abs(pd_ - ps).max() < 0.05 and (pd_.argmax(1) == ps.argmax(1)).mean() > 0.99


def test_transductive_training_on_sparse_features_matches_dense(pre):
    adata, _ = pre
    cfg_g = dict(GRAPH_CFG, graph_mode="transductive")
    dense = build_graph(adata, dict(cfg_g, sparse_features=False), "cells", seed=0)
    sparse = build_graph(adata, dict(cfg_g, sparse_features=True), "cells", seed=0)
    zero_min = dense["feature_min"].numpy() == 0
    dense = {**dense, "x": dense["x"] * torch.from_numpy(zero_min.astype(np.float32))}
    sparse = {**sparse, "x": sp.csr_matrix(sparse["x"].multiply(zero_min[None, :]), dtype=np.float32)}
    cfg = dict(CFG, inference_cells=150)
    a, b = train_model(dense, "gat", cfg, seed=0), train_model(sparse, "gat", cfg, seed=0)
    assert a.best_epoch == b.best_epoch
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-4)
