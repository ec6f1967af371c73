"""Exact batched inference: a model's outputs on chunks of cells, each chunk's from its receptive field.

A message-passing model with L layers gives a cell the output it reads from the cells within L
hops. :func:`chunked_logits` runs the model on one chunk of target cells at a time, on the
subgraph induced by the cells within :func:`receptive_field` hops of the chunk, so the targets'
outputs equal the full-graph pass (to float rounding) while neither the full graph's activations
nor a dense ``[N, G]`` feature matrix ever exist. Chunks follow the PCA bisection partition of
:mod:`cellgnn.batching`, so neighbouring cells share a chunk and the halo around it stays small.
"""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .batching import gather_features, pca_partition


def receptive_field(model: torch.nn.Module) -> int:
    """Hops of in-neighbourhood the model reads: one per message-passing or edge-set layer, plus one
    when a layer normalises by degree (GCN: a source's weight needs that source's own in-edges)."""
    from torch_geometric.nn import GCNConv
    from torch_geometric.nn.conv import MessagePassing

    from .models.edge_models import EdgeSetBranch

    layers = sum(isinstance(m, (MessagePassing, EdgeSetBranch)) for m in model.modules())
    return layers + int(any(isinstance(m, GCNConv) and m.normalize for m in model.modules()))


class Neighbourhoods:
    """In-edges of every node of ``edge_index`` int64 ``[2, E]`` (row 0 source, row 1 target), as CSR
    by target; :meth:`subgraph` gives the subgraph induced by the cells within ``hops`` of some roots."""

    def __init__(self, edge_index: torch.Tensor | np.ndarray, num_nodes: int):
        src, dst = np.asarray(torch.as_tensor(edge_index).cpu().numpy(), dtype=np.int64)
        self.edge_ids = np.lexsort((src, dst))  # (target, source) order
        self.sources = src[self.edge_ids]
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(dst, minlength=num_nodes))])
        self.num_nodes = num_nodes

    def _rows(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR positions of the in-edges of ``nodes`` (row by row) and each row's length."""
        start = self.indptr[nodes]
        count = self.indptr[nodes + 1] - start
        return np.arange(count.sum()) + np.repeat(start - np.cumsum(count) + count, count), count

    def subgraph(self, roots: np.ndarray, hops: int) -> tuple[np.ndarray, torch.Tensor, np.ndarray, np.ndarray]:
        """``(nodes [M] sorted, edge_index [2, e] local, edge_ids [e] into the graph's edges, root_pos [B])``:
        the cells within ``hops`` of ``roots`` and every edge between them, in (target, source) order."""
        inside = np.zeros(self.num_nodes, dtype=bool)
        inside[roots] = True
        frontier = np.asarray(roots)
        for _ in range(hops):
            pos, _ = self._rows(frontier)
            reached = np.unique(self.sources[pos])
            frontier = reached[~inside[reached]]
            inside[frontier] = True
        nodes = np.flatnonzero(inside)
        local = np.full(self.num_nodes, -1, dtype=np.int64)
        local[nodes] = np.arange(nodes.size)
        pos, count = self._rows(nodes)
        src = local[self.sources[pos]]
        keep = src >= 0
        dst = np.repeat(np.arange(nodes.size), count)[keep]
        edge_index = torch.from_numpy(np.vstack([src[keep], dst]))
        return nodes, edge_index, self.edge_ids[pos[keep]], local[roots]


@torch.no_grad()
def chunked_logits(model: torch.nn.Module, x, edge_index: torch.Tensor, roots: np.ndarray,
                   edge_attr: torch.Tensor | None = None, pca: np.ndarray | None = None,
                   chunk_cells: int = 65536, device: torch.device | None = None) -> torch.Tensor:
    """The model's logits ``[B, C]`` at ``roots [B]`` (node ids, in that order), chunk by chunk.

    x: node features ``[N, G]``, a dense tensor or a scipy CSR matrix (densified per chunk);
    edge_index ``[2, E]``; edge_attr ``[E, F]`` or None; pca ``[N, D]``: coordinates that order the
    roots into chunks of about ``chunk_cells`` neighbouring cells (input order when None).
    """
    device = device or torch.device("cpu")
    model.eval()
    roots = np.asarray(roots, dtype=np.int64)
    hops = receptive_field(model)
    hood = Neighbourhoods(edge_index, x.shape[0]) if hops else None
    n_chunks = max(1, -(-roots.size // int(chunk_cells)))
    if pca is not None and n_chunks > 1:
        part = pca_partition(np.asarray(pca)[roots], n_chunks)
        chunks = [np.flatnonzero(part == c) for c in range(n_chunks)]
    else:
        chunks = np.array_split(np.arange(roots.size), n_chunks)
    out = None
    for where in tqdm(chunks, desc="inference", leave=False, mininterval=5, disable=n_chunks == 1):
        chunk = roots[where]
        if hood is None:
            nodes, ei, eids, pos = chunk, torch.zeros((2, 0), dtype=torch.long), np.zeros(0, np.int64), None
        else:
            nodes, ei, eids, pos = hood.subgraph(chunk, hops)
        xb = gather_features(x, torch.from_numpy(nodes)).to(device)
        ea = None if edge_attr is None else edge_attr[torch.from_numpy(eids)].to(device)
        logits = model(xb, ei.to(device), ea)
        logits = logits if pos is None else logits[torch.from_numpy(pos).to(device)]
        if out is None:
            out = torch.empty((roots.size, logits.shape[1]), dtype=logits.dtype)
        out[torch.from_numpy(where)] = logits.cpu()
    return out
