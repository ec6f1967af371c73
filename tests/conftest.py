"""Shared fixtures: a small simulated study, preprocessed, and its graphs."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

PRE_CFG = dict(expect_counts=True, min_genes=50, min_cells=3, max_mito_fraction=0.2, target_sum=1e4,
               transform="log1p", hvg=None, n_pcs=20)
GRAPH_CFG = dict(k=10, metric="euclidean", n_pcs=20, self_loops=True, graph_mode="inductive",
                 fractions=dict(train=0.7, val=0.15, test=0.15), knn_method="exact")


@pytest.fixture(scope="session")
def sim():
    from cellgnn.data import simulate

    return simulate(n_cells=800, n_genes=600, n_donors=4, n_response_genes=12, seed=1)


@pytest.fixture(scope="session")
def pre(sim):
    from cellgnn.preprocess import preprocess

    return preprocess(sim, dict(PRE_CFG))


@pytest.fixture(scope="session")
def graphs(pre):
    from cellgnn.graph import build_graph

    adata, _ = pre
    return {mode: build_graph(adata, dict(GRAPH_CFG), mode, seed=0) for mode in ("cells", "donors")}
