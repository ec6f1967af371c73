import numpy as np
import pytest
import torch
from edgefeat_fixtures import make_graph

from cellgnn.batching import ClusterBatches, pca_partition
from cellgnn.errors import CellgnnInputError


def test_partition_balanced_and_spatial():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(20, 1, (50, 3))])
    parts = pca_partition(pts, 2)
    assert np.bincount(parts).tolist() == [50, 50]
    assert len(set(parts[:50])) == 1 and len(set(parts[50:])) == 1 and parts[0] != parts[50]
    sizes = np.bincount(pca_partition(rng.normal(size=(103, 4)), 7))
    assert sizes.size == 7 and sizes.max() - sizes.min() <= 1


def _epoch(batches: ClusterBatches) -> list[tuple[list, list]]:
    return [(b.node_ids.tolist(), b.edge_ids.tolist()) for b in batches]


def test_batches_cover_cells_once_and_induce_subgraphs():
    g = make_graph(n=60)
    ei = g["edge_index"]
    ea = torch.randn(ei.shape[1], 3)
    cb = ClusterBatches(ei, pca_partition(g["pca"], 6), parts_per_batch=2, seed=0)
    batches = list(cb)
    assert len(batches) == len(cb) == 3
    ids = torch.cat([b.node_ids for b in batches])
    assert sorted(ids.tolist()) == list(range(60))
    for b in batches:
        assert torch.all(b.node_ids[1:] > b.node_ids[:-1]) and torch.all(b.edge_ids[1:] > b.edge_ids[:-1])
        # local edges map back to the global edges they were sliced from
        assert torch.equal(b.node_ids[b.edge_index], ei[:, b.edge_ids])
        assert ea[b.edge_ids].shape[0] == b.edge_index.shape[1]
        # induced: every global edge with both ends in the batch is present
        inb = torch.zeros(60, dtype=torch.bool)
        inb[b.node_ids] = True
        assert b.edge_ids.numel() == int((inb[ei[0]] & inb[ei[1]]).sum())
    # PCA partition keeps most kNN edges inside batches
    kept = sum(b.edge_ids.numel() for b in batches)
    assert kept > 0.5 * ei.shape[1]


def test_epochs_reshuffle_with_seed_plus_epoch():
    g = make_graph(n=60)
    parts = pca_partition(g["pca"], 6)
    cb = ClusterBatches(g["edge_index"], parts, 2, seed=3)
    first, second = _epoch(cb), _epoch(cb)
    assert cb.epoch == 2 and first != second
    assert first == _epoch(ClusterBatches(g["edge_index"], parts, 2, seed=3))
    assert second == _epoch(ClusterBatches(g["edge_index"], parts, 2, seed=4))
    cb.epoch = 1  # resume at epoch 1
    assert _epoch(cb) == second
    fixed = ClusterBatches(g["edge_index"], parts, 2, shuffle=False)
    assert _epoch(fixed)[0][0] == np.flatnonzero(np.isin(parts, [0, 1])).tolist()


def test_duplicate_edges_and_isolated_nodes_are_kept():
    ei = torch.tensor([[0, 1, 0, 2, 0], [1, 0, 1, 3, 0]])
    batches = list(ClusterBatches(ei, np.array([0, 0, 1, 1, 1]), 1, shuffle=False))
    assert [b.node_ids.tolist() for b in batches] == [[0, 1], [2, 3, 4]]
    assert batches[0].edge_ids.tolist() == [0, 1, 2, 4] and batches[1].edge_ids.tolist() == [3]
    assert batches[0].edge_index.tolist() == [[0, 1, 0, 0], [1, 0, 1, 0]]


def test_bad_partition_arguments():
    g = make_graph(n=20)
    with pytest.raises(CellgnnInputError, match="num_parts"):
        pca_partition(g["pca"], 50)
    parts = pca_partition(g["pca"], 4)
    with pytest.raises(CellgnnInputError, match="parts_per_batch"):
        ClusterBatches(g["edge_index"], parts, parts_per_batch=0)
    with pytest.raises(CellgnnInputError, match="the partition 10 entries"):
        ClusterBatches(g["edge_index"], parts[:10], parts_per_batch=2)
    with pytest.raises(CellgnnInputError, match=r"got \[3, 2\]"):
        ClusterBatches(torch.zeros(3, 2, dtype=torch.long), parts, parts_per_batch=2)
