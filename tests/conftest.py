"""Shared fixtures: a small simulated study, preprocessed, and its graphs."""
from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)

from sim_config import GRAPH_CFG, PRE_CFG  # noqa: E402


@pytest.fixture(scope="session")
def sim():
    from cellgnn.data import simulate

    return simulate(n_cells=800, n_genes=600, n_donors=4, n_response_genes=12, response_log2fc=3.5, seed=1)


@pytest.fixture(scope="session")
def pre(sim):
    from cellgnn.preprocess import preprocess

    return preprocess(sim, dict(PRE_CFG))


@pytest.fixture(scope="session")
def graphs(pre):
    from cellgnn.graph import build_graph

    adata, _ = pre
    return {mode: build_graph(adata, dict(GRAPH_CFG), mode, seed=0) for mode in ("cells", "donors")}
