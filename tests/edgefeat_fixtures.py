"""A tiny graph in the graph-stage contract, built without the graph stage (for edge-feature tests)."""

from __future__ import annotations

import numpy as np
import torch

from cellgnn.knn import knn_search


def make_graph(n: int = 60, genes: int = 12, k: int = 4, n_types: int = 3, n_donors: int = 3,
               self_loops: bool = True, seed: int = 0) -> dict:
    """Clustered cells; symmetric kNN edges weighted exp(-d); edges sorted by (target, source)."""
    rng = np.random.default_rng(seed)
    ct = rng.integers(0, n_types, n)
    donor = rng.integers(0, n_donors, n)
    centres = rng.normal(0, 3, (n_types, genes))
    x = centres[ct] + rng.normal(0, 1, (n, genes)) + 0.5 * donor[:, None]
    pca = (x - x.mean(0))[:, :5].astype(np.float32)
    idx, dist = knn_search(pca, k)
    src = np.repeat(np.arange(n), k)
    dst = idx.ravel()
    w = np.exp(-dist.ravel() / dist.mean())
    pairs = {}
    for a, b, ww in zip(src, dst, w):
        key = (min(a, b), max(a, b))
        pairs[key] = max(pairs.get(key, 0), ww)
    e = [(a, b, ww) for (a, b), ww in pairs.items()] + [(b, a, ww) for (a, b), ww in pairs.items()]
    if self_loops:
        e += [(i, i, 1.0) for i in range(n)]
    e.sort(key=lambda t: (t[1], t[0]))
    ei = torch.tensor([[a for a, _, _ in e], [b for _, b, _ in e]], dtype=torch.long)
    ew = torch.tensor([ww for _, _, ww in e], dtype=torch.float32)
    xs = (x - x.min(0)) / (x.max(0) - x.min(0))
    masks = rng.permutation(n)
    train = torch.zeros(n, dtype=torch.bool)
    train[masks[: n // 2]] = True
    val = torch.zeros(n, dtype=torch.bool)
    val[masks[n // 2: 3 * n // 4]] = True
    test = ~(train | val)
    y = torch.as_tensor((ct + donor) % 2, dtype=torch.long)
    return {"x": torch.tensor(xs, dtype=torch.float32), "pca": torch.tensor(pca), "y": y,
            "edge_index": ei, "edge_weight": ew, "train_mask": train, "val_mask": val, "test_mask": test,
            "donor": torch.as_tensor(donor), "sample": torch.as_tensor(donor), "cell_type": torch.as_tensor(ct),
            "classes": ["a", "b"], "donors": [f"d{i}" for i in range(n_donors)],
            "samples": [f"d{i}" for i in range(n_donors)],
            "cell_types": [f"t{i}" for i in range(n_types)], "cell_ids": [f"c{i}" for i in range(n)],
            "genes": [f"g{i}" for i in range(genes)], "split_mode": "cells", "graph_mode": "transductive",
            "self_loops": self_loops, "seed": seed}


def permute_edges(graph: dict, perm: torch.Tensor) -> dict:
    g = dict(graph)
    g["edge_index"] = graph["edge_index"][:, perm]
    g["edge_weight"] = graph["edge_weight"][perm]
    return g
