import numpy as np
import pytest
import torch
from edgefeat_fixtures import make_graph

from cellgnn.batching import cluster_batches, pca_partition
from cellgnn.errors import CellgnnInputError


def test_partition_balanced_and_spatial():
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal(0, 1, (50, 3)), rng.normal(20, 1, (50, 3))])
    parts = pca_partition(pts, 2)
    assert np.bincount(parts).tolist() == [50, 50]
    assert len(set(parts[:50])) == 1 and len(set(parts[50:])) == 1 and parts[0] != parts[50]
    sizes = np.bincount(pca_partition(rng.normal(size=(103, 4)), 7))
    assert sizes.size == 7 and sizes.max() - sizes.min() <= 1


def test_batches_cover_cells_once_and_induce_subgraphs():
    g = make_graph(n=60)
    ea = torch.randn(g["edge_index"].shape[1], 3)
    batches = list(cluster_batches(g, num_parts=6, parts_per_batch=2, seed=0))
    assert len(batches) == 3
    ids = torch.cat([b["node_ids"] for b in batches])
    assert sorted(ids.tolist()) == list(range(60))
    for b in batches:
        # local edges map back to the global edges they were sliced from
        back = b["node_ids"][b["edge_index"]]
        assert torch.equal(back, g["edge_index"][:, b["edge_ids"]])
        assert ea[b["edge_ids"]].shape[0] == b["edge_index"].shape[1]
        assert torch.equal(b["y"], g["y"][b["node_ids"]])
        assert torch.equal(b["train_mask"], g["train_mask"][b["node_ids"]])
        # induced: every global edge with both ends in the batch is present
        inb = torch.zeros(60, dtype=torch.bool)
        inb[b["node_ids"]] = True
        assert b["edge_ids"].numel() == int((inb[g["edge_index"][0]] & inb[g["edge_index"][1]]).sum())
    # PCA partition keeps most kNN edges inside batches
    kept = sum(b["edge_ids"].numel() for b in batches)
    assert kept > 0.5 * g["edge_index"].shape[1]
    # seeds reshuffle which parts go together, deterministically
    again = [b["node_ids"].tolist() for b in cluster_batches(g, 6, 2, seed=0)]
    assert again == [b["node_ids"].tolist() for b in batches]
    other = [b["node_ids"].tolist() for b in cluster_batches(g, 6, 2, seed=5)]
    assert other != again


def test_bad_partition_arguments():
    g = make_graph(n=20)
    with pytest.raises(CellgnnInputError, match="num_parts"):
        list(cluster_batches(g, num_parts=50, parts_per_batch=2, seed=0))
    with pytest.raises(CellgnnInputError, match="parts_per_batch"):
        list(cluster_batches(g, num_parts=4, parts_per_batch=0, seed=0))
