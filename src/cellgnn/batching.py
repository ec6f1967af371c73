"""Cluster-GCN mini-batches (Chiang et al. 2019) for graphs too large for one full-graph pass.

Partitioners map PCA coordinates float ``[N, D]`` to a part id per cell, int64 ``[N]``.
The kNN graph is built in the same PCA space, so nearby cells and most of their edges
fall into the same part, as METIS would arrange (no compiled PyG extras needed):

- :func:`pca_partition`: balanced recursive bisection at the median of the axis of
  largest variance. It is deterministic (no seed) and needs no faiss. The workflow
  (``train.batching: cluster``) and the attention edge features use it.
- :func:`kmeans_partition`: seeded faiss k-means. The 1M-cell benchmark
  (``bench/scale.py``) uses it.

:class:`ClusterBatches` yields one epoch of :class:`Batch` per pass. A batch is the
subgraph induced by ``parts_per_batch`` parts: all edges between its cells, whichever
part they came from. Epoch ``e`` shuffles the parts with ``seed + e``. Each node lies in
exactly one batch per epoch, and edges between batches are dropped. A batch holds:

- ``node_ids``: int64 ``[n]``, sorted global node ids;
- ``edge_ids``: int64 ``[e]``, ascending rows of the global ``edge_index`` [2, E]
  (slice ``edge_attr[edge_ids]``);
- ``edge_index``: int64 ``[2, e]``, relabelled to local ids 0..n-1, in the order of ``edge_ids``.

Node features are sliced by the caller. :func:`gather_features` takes a dense tensor
or a scipy CSR matrix ``[N, G]``; sparse rows are densified one batch at a time, so a
1M × 2,000 feature matrix never exists densely. :func:`train_epoch` and
:func:`predict` run a model over the batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import scipy.sparse as sp
import torch

from .errors import CellgnnInputError


def pca_partition(points: np.ndarray, num_parts: int) -> np.ndarray:
    """Part id per cell, int64 ``[N]`` in ``0..num_parts-1``; part sizes differ by at most one.

    points: float ``[N, D]`` (PCA coordinates). O(N log num_parts · D). Each part is split
    at the median of its coordinate of largest variance, sizes proportional to the number
    of parts on each side.
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


def kmeans_partition(points: np.ndarray, num_parts: int, seed: int = 0, n_jobs: int = 1) -> np.ndarray:
    """Part id per cell, int64 ``[N]`` in ``0..num_parts-1``, from seeded faiss k-means on ``points [N, D]``.

    ``num_parts`` is clipped to ``1..N``; parts may differ in size (and some may be empty).
    """
    import faiss

    n, d = points.shape
    num_parts = int(max(1, min(num_parts, n)))
    if num_parts == 1:
        return np.zeros(n, dtype=np.int64)
    faiss.omp_set_num_threads(max(1, int(n_jobs)))
    x = np.ascontiguousarray(points, dtype=np.float32)
    km = faiss.Kmeans(d, num_parts, niter=10, seed=int(seed) % (2**31), max_points_per_centroid=64,
                      spherical=False, verbose=False)
    km.train(x)
    _, assign = km.index.search(x, 1)
    return assign.ravel().astype(np.int64)


@dataclass
class Batch:
    """One mini-batch: ``node_ids [n]``, ``edge_ids [e]`` (global) and local ``edge_index [2, e]``."""

    node_ids: torch.Tensor
    edge_ids: torch.Tensor
    edge_index: torch.Tensor


class ClusterBatches:
    """Cluster-GCN batches over ``edge_index`` int ``[2, E]`` for cells in parts ``parts [N]``.

    Each pass yields one epoch of ``ceil(num_parts / parts_per_batch)`` batches, with parts
    shuffled by ``seed + epoch`` (in order 0, 1, ... when ``shuffle`` is False). ``epoch``
    then advances by one; set it to pick an epoch, e.g. on resume. Built once in
    O(E log E); an epoch costs O(E) in all.
    """

    def __init__(self, edge_index: torch.Tensor | np.ndarray, parts: np.ndarray, parts_per_batch: int,
                 seed: int = 0, shuffle: bool = True):
        parts = np.asarray(parts, dtype=np.int64)
        ei = torch.as_tensor(edge_index).cpu().numpy().astype(np.int64, copy=False)
        n = parts.shape[0] if parts.ndim == 1 else 0
        if parts.ndim != 1 or (n and parts.min() < 0):
            raise CellgnnInputError(f"parts must be non-negative part ids, one per node; got shape {parts.shape}",
                                    field="parts", fix="compute it with pca_partition or kmeans_partition")
        if ei.ndim != 2 or ei.shape[0] != 2:
            raise CellgnnInputError(f"edge_index must have shape [2, E], got {list(ei.shape)}",
                                    field="edge_index", fix="pass the graph's edge_index")
        if ei.size and (ei.min() < 0 or ei.max() >= n):
            raise CellgnnInputError(f"edge_index holds node ids {ei.min()}..{ei.max()}, the partition {n} entries",
                                    field="parts", fix="partition the same nodes as the graph")
        if parts_per_batch < 1:
            raise CellgnnInputError(f"parts_per_batch must be >= 1, got {parts_per_batch}",
                                    field="train.parts_per_batch", fix="set a positive integer")
        self.num_nodes, self.num_parts = n, int(parts.max()) + 1 if n else 0
        self.parts_per_batch, self.seed, self.shuffle, self.epoch = int(parts_per_batch), seed, shuffle, 0
        by_part = np.argsort(parts, kind="stable")
        bounds = np.searchsorted(parts[by_part], np.arange(self.num_parts + 1))
        self._members = [by_part[bounds[i]:bounds[i + 1]] for i in range(self.num_parts)]
        # CSR by source node: row i holds targets `_dst[_indptr[i]:_indptr[i+1]]` and their edge ids
        # (order within a row is irrelevant: each batch sorts its edges by id)
        self._edge_ids = np.argsort(ei[0])
        self._dst = ei[1][self._edge_ids]
        self._indptr = np.concatenate([[0], np.cumsum(np.bincount(ei[0], minlength=n))])
        self._local = np.full(n, -1, dtype=np.int64)  # scratch: global -> local id of the current batch

    def __len__(self) -> int:
        return -(-self.num_parts // self.parts_per_batch)

    def __iter__(self) -> Iterator[Batch]:
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(self.num_parts) if self.shuffle else np.arange(self.num_parts)
        self.epoch += 1
        return (self._batch(order[s:s + self.parts_per_batch]) for s in range(0, self.num_parts, self.parts_per_batch))

    def _batch(self, chosen: np.ndarray) -> Batch:
        """The subgraph induced by the parts ``chosen``, edges in ascending global edge id."""
        nodes = np.sort(np.concatenate([self._members[c] for c in chosen]))
        start = self._indptr[nodes]
        count = self._indptr[nodes + 1] - start
        # positions of every out-edge of `nodes` in the CSR, row by row
        pos = np.arange(count.sum()) + np.repeat(start - np.cumsum(count) + count, count)
        self._local[nodes] = np.arange(nodes.size)
        dst = self._local[self._dst[pos]]
        self._local[nodes] = -1
        hit = np.flatnonzero(dst >= 0)  # out-edges whose target is in the batch
        edge_ids = self._edge_ids[pos[hit]]
        order = np.argsort(edge_ids)
        hit = hit[order]
        src = np.repeat(np.arange(nodes.size), count)[hit]
        return Batch(torch.from_numpy(nodes), torch.from_numpy(edge_ids[order]),
                     torch.from_numpy(np.vstack([src, dst[hit]])))


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
    """One pass over ``batches``, ``model(x, edge_index)``; loss on each batch's training nodes. Mean batch loss."""
    from tqdm import tqdm

    device = device or torch.device("cpu")
    model.train()
    losses = []
    for batch in tqdm(batches, desc="train epoch", leave=False, mininterval=5):
        m = train_mask[batch.node_ids]
        if not bool(m.any()):
            continue
        xb = gather_features(x, batch.node_ids, scale).to(device)
        optimizer.zero_grad()
        out = model(xb, batch.edge_index.to(device))
        loss = loss_fn(out[m.to(device)], y[batch.node_ids][m].to(device))
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
    out = np.zeros((batches.num_nodes, n_classes), dtype=np.float32)
    for batch in tqdm(batches, desc="inference", leave=False, mininterval=5):
        xb = gather_features(x, batch.node_ids, scale).to(device)
        out[batch.node_ids.numpy()] = torch.softmax(model(xb, batch.edge_index.to(device)), dim=1).cpu().numpy()
    return out
