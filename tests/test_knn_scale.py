"""Approximate kNN (hnsw, faiss, nndescent, auto) against exact, recall@k, and Cluster-GCN mini-batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cellgnn.errors import CellgnnInputError
from cellgnn.knn import knn_search, recall_at_k, sampled_recall
from cellgnn.batching import ClusterBatches, gather_features, kmeans_partition, predict, train_epoch


@pytest.fixture(scope="module")
def pca_like():
    """3,000 points in 20 dims with decaying variance and 6 clusters, like PCA of cells."""
    rng = np.random.default_rng(0)
    scale = 1.0 / np.sqrt(np.arange(1, 21))
    centers = rng.normal(size=(6, 20)) * 4 * scale
    return (centers[rng.integers(0, 6, 3000)] + rng.normal(size=(3000, 20)) * scale).astype(np.float32)


@pytest.mark.parametrize("method", ["hnsw", "faiss", "nndescent"])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_approximate_matches_exact(pca_like, method, metric):
    ex_idx, ex_d = knn_search(pca_like, 15, metric=metric, method="exact")
    idx, d = knn_search(pca_like, 15, metric=metric, method=method, seed=1)
    assert idx.shape == (3000, 15) and idx.dtype == np.int64 and d.dtype == np.float32
    assert not (idx == np.arange(3000)[:, None]).any()  # self excluded
    assert np.all(np.diff(d, axis=1) >= -1e-5)  # sorted by distance
    r = recall_at_k(idx, ex_idx)
    assert r >= 0.95, r
    # same distance scale as the exact method where the neighbour agrees
    agree = idx[:, 0] == ex_idx[:, 0]
    np.testing.assert_allclose(d[agree, 0], ex_d[agree, 0], rtol=1e-3, atol=1e-4)
    assert sampled_recall(pca_like, idx, 15, n_sample=300, seed=0, metric=metric) >= 0.95


def test_same_seed_same_graph(pca_like):
    a = knn_search(pca_like, 10, method="hnsw", seed=3, n_jobs=1)[0]
    b = knn_search(pca_like, 10, method="hnsw", seed=3, n_jobs=1)[0]
    np.testing.assert_array_equal(a, b)
    c = knn_search(pca_like, 10, method="faiss", seed=3)[0]
    np.testing.assert_array_equal(c, knn_search(pca_like, 10, method="faiss", seed=3)[0])
    d = knn_search(pca_like, 10, method="nndescent", seed=3, n_jobs=2)[0]
    np.testing.assert_array_equal(d, knn_search(pca_like, 10, method="nndescent", seed=3, n_jobs=2)[0])


def test_auto_switches_on_threshold(pca_like, caplog, monkeypatch):
    import logging

    import cellgnn.knn

    with caplog.at_level(logging.INFO, logger="cellgnn.knn"):
        knn_search(pca_like, 5, method="auto", ann_threshold=10_000)
        knn_search(pca_like, 5, method="auto", ann_threshold=1_000)
        monkeypatch.setattr(cellgnn.knn, "NNDESCENT_THRESHOLD", 2_000)
        knn_search(pca_like, 5, method="auto", ann_threshold=1_000)
    msgs = [r.getMessage() for r in caplog.records]
    assert [m.split(" (")[0] for m in msgs if "auto:" in m] == [
        "kNN method auto: exact", "kNN method auto: hnsw", "kNN method auto: nndescent"]


def test_recall_at_k_hand_case():
    exact = np.array([[1, 2, 3], [0, 2, 3]])
    approx = np.array([[3, 2, 9], [0, 2, 3]])
    assert recall_at_k(approx, exact) == pytest.approx((2 + 3) / 6)
    assert recall_at_k(approx, exact, k=1) == pytest.approx(0.5)  # row 0: {3} vs {1}; row 1: {0} vs {0}


def test_bad_method_and_metric(pca_like):
    with pytest.raises(CellgnnInputError, match="unknown kNN method"):
        knn_search(pca_like, 5, method="annoy")
    with pytest.raises(CellgnnInputError, match="not supported by approximate"):
        knn_search(pca_like, 5, metric="manhattan", method="hnsw")


def test_cluster_batches_cover_nodes_and_keep_induced_edges(pca_like):
    idx, _ = knn_search(pca_like, 8, method="exact")
    n = pca_like.shape[0]
    src = np.repeat(np.arange(n), 8)
    ei = torch.from_numpy(np.vstack([np.concatenate([src, idx.ravel()]), np.concatenate([idx.ravel(), src])]))
    parts = kmeans_partition(pca_like, 12, seed=0)
    assert parts.shape == (n,) and len(np.unique(parts)) == 12
    batches = ClusterBatches(ei, parts, parts_per_batch=4, seed=0)
    seen = []
    kept = 0
    edges = set(map(tuple, ei.numpy().T))
    for b in batches:
        nodes = b.node_ids.numpy()
        seen.append(nodes)
        assert torch.equal(b.node_ids[b.edge_index], ei[:, b.edge_ids])  # local edges are the global rows edge_ids
        kept += len(set(map(tuple, ei[:, b.edge_ids].numpy().T)))
    allnodes = np.concatenate(seen)
    assert len(batches) == 3 and np.array_equal(np.sort(allnodes), np.arange(n))
    assert kept / len(edges) > 0.6  # k-means partitions keep most kNN edges inside batches


def test_train_epoch_and_predict_with_sparse_features(pca_like):
    from torch_geometric.nn import GATConv

    torch.manual_seed(0)
    n = pca_like.shape[0]
    idx, _ = knn_search(pca_like, 6, method="exact")
    src = np.repeat(np.arange(n), 6)
    ei = torch.from_numpy(np.vstack([idx.ravel(), src]))
    y = torch.from_numpy((pca_like[:, 0] > 0).astype(np.int64))
    x = sp.csr_matrix(np.maximum(pca_like, 0))
    scale = 1.0 / np.maximum(x.max(axis=0).toarray().ravel(), 1e-12)
    dense = gather_features(x, torch.arange(5), scale)
    assert dense.shape == (5, 20) and float(dense.max()) <= 1.0 + 1e-6

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = GATConv(20, 8, heads=2), GATConv(16, 2, heads=1)

        def forward(self, x, edge_index):
            return self.c2(torch.nn.functional.elu(self.c1(x, edge_index)), edge_index)

    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    batches = ClusterBatches(ei, kmeans_partition(pca_like, 10, seed=0), 3, seed=0)
    mask = torch.ones(n, dtype=torch.bool)
    losses = [train_epoch(model, x, y, mask, batches, opt, torch.nn.CrossEntropyLoss(), scale=scale)
              for _ in range(8)]
    assert losses[-1] < losses[0]
    proba = predict(model, x, ClusterBatches(ei, kmeans_partition(pca_like, 10), 3, shuffle=False), 2, scale=scale)
    assert proba.shape == (n, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    assert ((proba.argmax(1) == y.numpy()).mean()) > 0.8


def test_nndescent_threads_and_tiny_inputs(pca_like):
    """NN-descent: the same neighbours on 1 or 3 threads; inputs too small for its trees are exact."""
    from cellgnn.nndescent import nndescent_knn

    a, da = nndescent_knn(pca_like, 12, seed=5, n_jobs=1)
    b, db = nndescent_knn(pca_like, 12, seed=5, n_jobs=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(da, db)
    assert recall_at_k(a, knn_search(pca_like, 12, method="exact")[0]) >= 0.95
    # hard inputs: isotropic 30-d noise (the search takes a different path in every round if
    # anything depends on the order of offers), and points given three times (exact distance ties)
    noise = np.random.default_rng(0).normal(size=(15000, 30)).astype(np.float32)
    for hard in (noise, np.repeat(noise[:3000], 3, axis=0)):
        ref = nndescent_knn(hard, 10, seed=2, n_jobs=1)
        other = nndescent_knn(hard, 10, seed=2, n_jobs=3)
        np.testing.assert_array_equal(ref[0], other[0])
        np.testing.assert_array_equal(ref[1], other[1])
    tiny = pca_like[:9]
    idx, d = knn_search(tiny, 4, method="nndescent", seed=0)
    ex_idx, ex_d = knn_search(tiny, 4, method="exact")
    np.testing.assert_array_equal(idx, ex_idx)
    np.testing.assert_allclose(d, ex_d, rtol=1e-4, atol=1e-5)
