"""Cluster-GCN-style mini-batches for graphs too large for one full-graph pass.

Nodes are partitioned into ``n_parts`` compact clusters by k-means on their PCA
coordinates (the kNN graph is built on the same coordinates, so most edges stay
inside a cluster; the original study used METIS partitions the same way). A
mini-batch is the union of ``parts_per_batch`` random clusters and the subgraph
they induce. Node features may be a dense tensor or a ``scipy.sparse`` CSR
matrix (cells × genes); sparse rows are densified one batch at a time, so a
1M × 2,000 feature matrix never exists densely in memory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

LOG = logging.getLogger(__name__)


def partition_nodes(points: np.ndarray, n_parts: int, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Cluster id in ``[0, n_parts)`` for each of the N rows of ``points [N, D]`` (seeded k-means)."""
    import faiss

    n, d = points.shape
    n_parts = int(max(1, min(n_parts, n)))
    if n_parts == 1:
        return np.zeros(n, dtype=np.int64)
    faiss.omp_set_num_threads(max(1, int(n_jobs)))
    x = np.ascontiguousarray(points, dtype=np.float32)
    km = faiss.Kmeans(d, n_parts, niter=10, seed=int(seed) % (2**31), max_points_per_centroid=64,
                      spherical=False, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign.ravel().astype(np.int64)


@dataclass
class Batch:
    """One mini-batch: global node ids ``nodes [B]`` and the induced edges ``edge_index [2, E_b]`` (local ids)."""

    nodes: torch.Tensor
    edge_index: torch.Tensor


class ClusterBatches:
    """Iterate Cluster-GCN mini-batches over a graph.

    edge_index: int64 ``[2, E]`` (global node ids); parts: ``[N]`` cluster ids from
    :func:`partition_nodes`; each batch joins ``parts_per_batch`` clusters, shuffled per
    epoch with ``seed + epoch`` when ``shuffle``.
    """

    def __init__(self, edge_index: torch.Tensor, parts: np.ndarray, parts_per_batch: int, seed: int = 0,
                 shuffle: bool = True):
        self.n = int(parts.shape[0])
        self.parts = np.asarray(parts, dtype=np.int64)
        self.n_parts = int(self.parts.max()) + 1
        self.ppb = max(1, int(parts_per_batch))
        self.seed, self.shuffle = seed, shuffle
        order = np.argsort(self.parts, kind="stable")
        bounds = np.searchsorted(self.parts[order], np.arange(self.n_parts + 1))
        self.members = [order[bounds[i]:bounds[i + 1]] for i in range(self.n_parts)]
        ei = edge_index.numpy() if isinstance(edge_index, torch.Tensor) else np.asarray(edge_index)
        # CSR by source so a batch's edges are gathered without scanning all E edges
        self.adj = sp.csr_matrix((np.ones(ei.shape[1], dtype=np.int8), (ei[0], ei[1])), shape=(self.n, self.n))
        self.epoch = 0

    def __len__(self) -> int:
        return (self.n_parts + self.ppb - 1) // self.ppb

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed + self.epoch)
        self.epoch += 1
        order = rng.permutation(self.n_parts) if self.shuffle else np.arange(self.n_parts)
        for b in range(len(self)):
            chosen = order[b * self.ppb:(b + 1) * self.ppb]
            nodes = np.sort(np.concatenate([self.members[c] for c in chosen]))
            sub = self.adj[nodes][:, nodes].tocoo()
            ei = torch.from_numpy(np.vstack([sub.row, sub.col]).astype(np.int64))
            yield Batch(torch.from_numpy(nodes), ei)


def gather_features(x, nodes: torch.Tensor, scale: np.ndarray | None = None) -> torch.Tensor:
    """Rows ``nodes`` of ``x`` (dense tensor or scipy CSR) as a dense float32 tensor.

    scale: optional per-column factor ``[G]`` applied to sparse rows (e.g. 1/max for
    min–max scaling of non-negative features, whose minimum is 0).
    """
    if sp.issparse(x):
        rows = x[nodes.numpy()]
        if scale is not None:
            rows = rows.multiply(scale[None, :]).tocsr()
        return torch.from_numpy(rows.toarray().astype(np.float32, copy=False))
    return x[nodes]


def train_epoch(model: torch.nn.Module, x, y: torch.Tensor, train_mask: torch.Tensor, batches: ClusterBatches,
                optimizer: torch.optim.Optimizer, loss_fn, device: torch.device | None = None,
                scale: np.ndarray | None = None) -> float:
    """One pass over all mini-batches; loss on each batch's training nodes. Returns the mean batch loss."""
    from tqdm import tqdm

    device = device or torch.device("cpu")
    model.train()
    losses = []
    for batch in tqdm(batches, desc="train epoch", leave=False, mininterval=5):
        m = train_mask[batch.nodes]
        if not bool(m.any()):
            continue
        xb = gather_features(x, batch.nodes, scale).to(device)
        optimizer.zero_grad()
        out = model(xb, batch.edge_index.to(device))
        loss = loss_fn(out[m.to(device)], y[batch.nodes][m].to(device))
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return float(np.mean(losses)) if losses else float("nan")


@torch.no_grad()
def predict(model: torch.nn.Module, x, batches: ClusterBatches, n_classes: int,
            device: torch.device | None = None, scale: np.ndarray | None = None) -> np.ndarray:
    """Class probabilities ``[N, C]`` (float32) from a batched forward pass over every node."""
    from tqdm import tqdm

    device = device or torch.device("cpu")
    model.eval()
    out = np.zeros((batches.n, n_classes), dtype=np.float32)
    for batch in tqdm(batches, desc="inference", leave=False, mininterval=5):
        xb = gather_features(x, batch.nodes, scale).to(device)
        out[batch.nodes.numpy()] = torch.softmax(model(xb, batch.edge_index.to(device)), dim=1).cpu().numpy()
    return out
