"""Cluster-GCN style mini-batches without METIS (no compiled PyG extras).

Partitioner: balanced recursive bisection of the cells in PCA space. Each part is
split at the median of its coordinate of largest variance (sizes proportional to
the number of parts on each side), until ``num_parts`` parts of near-equal size
remain. The kNN graph is built in the same PCA space, so nearby cells — and most
edges — fall into the same part, as METIS would arrange. Deterministic: no seed.

A batch is the subgraph induced by ``parts_per_batch`` randomly chosen parts
(Chiang et al. 2019): all edges between its cells, whichever part they came from.
"""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .errors import CellgnnInputError


def pca_partition(points: np.ndarray, num_parts: int) -> np.ndarray:
    """Part id per cell, int64 ``[N]`` in ``0..num_parts-1``; part sizes differ by at most one.

    points: float ``[N, D]`` (PCA coordinates). O(N log num_parts · D).
    """
    points = np.asarray(points, dtype=np.float64)
    n = points.shape[0]
    if num_parts < 1 or num_parts > max(1, n):
        raise CellgnnInputError(f"num_parts must lie in 1..{n} (cells), got {num_parts}",
                                field="train.num_parts", fix=f"set train.num_parts between 1 and {n}")
    part = np.zeros(n, dtype=np.int64)
    stack = [(np.arange(n), 0, num_parts)]
    while stack:
        idx, first, k = stack.pop()
        if k == 1:
            part[idx] = first
            continue
        k_left = k // 2
        n_left = int(round(idx.size * k_left / k))
        sub = points[idx]
        axis = int(np.argmax(sub.var(axis=0))) if sub.shape[1] else 0
        order = np.argsort(sub[:, axis], kind="stable") if sub.shape[1] else np.arange(idx.size)
        stack.append((idx[order[:n_left]], first, k_left))
        stack.append((idx[order[n_left:]], first + k_left, k - k_left))
    return part


def cluster_batches(graph: dict, num_parts: int, parts_per_batch: int, seed: int,
                    parts: np.ndarray | None = None) -> Iterator[dict]:
    """Yield one epoch of Cluster-GCN mini-batches (parts shuffled with ``seed``).

    graph: the graph contract dict (``pca``, ``edge_index`` [2, E], masks, ``y``).
    parts: optional precomputed ``pca_partition(graph["pca"], num_parts)`` (reuse it
    across epochs; pass ``seed = base_seed + epoch`` to reshuffle).

    Each batch is a dict:
      ``node_ids`` int64 ``[n]`` (sorted global cell ids), ``edge_ids`` int64 ``[e]``
      (rows of the global ``edge_index``/``edge_attr``; slice ``edge_attr[edge_ids]``),
      ``edge_index`` int64 ``[2, e]`` relabelled to 0..n-1 in the same order,
      ``x``, ``y``, ``train_mask``, ``val_mask``, ``test_mask`` restricted to the batch.
    Every cell is in exactly one batch per epoch; edges between batches are dropped.
    """
    ei = torch.as_tensor(graph["edge_index"])
    n = int(graph["y"].shape[0])
    if parts is None:
        parts = pca_partition(np.asarray(graph["pca"]), num_parts)
    parts = np.asarray(parts)
    if parts.shape[0] != n:
        raise CellgnnInputError(f"partition has {parts.shape[0]} entries for {n} cells", field="parts",
                                fix="compute it with pca_partition(graph['pca'], num_parts)")
    if parts_per_batch < 1:
        raise CellgnnInputError(f"parts_per_batch must be >= 1, got {parts_per_batch}",
                                field="train.parts_per_batch", fix="set a positive integer")
    n_parts = int(parts.max()) + 1 if n else 0
    order = np.random.default_rng(seed).permutation(n_parts)
    src_part, dst_part = parts[ei[0].numpy()], parts[ei[1].numpy()]
    local = np.full(n, -1, dtype=np.int64)
    for start in range(0, n_parts, parts_per_batch):
        chosen = np.zeros(n_parts, dtype=bool)
        chosen[order[start:start + parts_per_batch]] = True
        node_ids = np.flatnonzero(chosen[parts])
        edge_ids = np.flatnonzero(chosen[src_part] & chosen[dst_part])
        local[node_ids] = np.arange(node_ids.size)
        sub_ei = torch.as_tensor(local[ei[:, edge_ids].numpy()])
        local[node_ids] = -1
        nid, eid = torch.as_tensor(node_ids), torch.as_tensor(edge_ids)
        batch = {"node_ids": nid, "edge_ids": eid, "edge_index": sub_ei}
        for key in ("x", "y", "train_mask", "val_mask", "test_mask"):
            if key in graph:
                batch[key] = torch.as_tensor(graph[key])[nid]
        yield batch
