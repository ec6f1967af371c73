"""Computation subgraphs: each explained cell's k-hop neighbourhood as its own copy.

A batch of root cells becomes a disjoint union of their computation graphs
(:class:`CompGraphs`), so one forward pass gives every root exactly the output it has on
the full graph, and gradients of one root never mix with another's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import scipy.sparse as sp
import torch

from ..errors import CellgnnInputError

LOG = logging.getLogger(__name__)


@dataclass
class CompGraphs:
    """Disjoint union of the k-hop computation graphs of a batch of root cells.

    ``nodes [M]`` original node ids, ``owner [M]`` index of the root (0..B-1) each copy
    belongs to, ``root_pos [B]`` position of each root in the union, ``edge_index [2, E']``
    in union coordinates (sorted by target then source), ``edge_ids [E']`` original edge
    ids (rows of ``edge_attr``).
    """

    nodes: torch.Tensor
    owner: torch.Tensor
    root_pos: torch.Tensor
    edge_index: torch.Tensor
    edge_ids: torch.Tensor

    def to(self, device: torch.device | str) -> CompGraphs:
        """A copy with every tensor on ``device``."""
        return CompGraphs(*(getattr(self, f.name).to(device) for f in fields(self)))


class SubgraphSampler:
    """k-hop in-neighbourhoods on a CSR adjacency (rows = targets, columns = sources)."""

    def __init__(self, edge_index: torch.Tensor, num_nodes: int, num_hops: int):
        src, dst = edge_index.cpu().numpy()
        ids = np.arange(1, src.size + 1, dtype=np.int64)  # +1: 0 is not stored in sparse data
        adj = sp.csr_matrix((ids, (dst, src)), shape=(num_nodes, num_nodes))
        if adj.nnz != src.size:
            raise CellgnnInputError("the graph has duplicate edges", field="edge_index",
                                    fix="rebuild the graph with cellgnn.graph (edges must be unique)")
        adj.sort_indices()
        self.adj = adj
        self.pattern = adj.astype(bool).astype(np.float32)
        self.num_hops = num_hops

    def union(self, roots: np.ndarray) -> CompGraphs:
        """Copies of each root's computation graph: the nodes within ``num_hops`` hops and
        the edges into nodes within ``num_hops - 1`` hops (edges into the outermost nodes
        only change representations the root never reads, so they are left out)."""
        b = len(roots)
        reach = sp.csr_matrix((np.ones(b, np.float32), (np.arange(b), roots)),
                              shape=(b, self.adj.shape[0]))
        inner = total = reach
        for hop in range(self.num_hops):
            reach = (reach @ self.pattern).astype(bool).astype(np.float32)
            total = (total + reach).astype(bool).astype(np.float32)
            if hop < self.num_hops - 1:
                inner = total
        total, inner = total.tocsr(), inner.tocsr()
        total.sort_indices()
        inner.sort_indices()
        nodes, owner, root_pos, edges_src, edges_dst, edge_ids = [], [], [], [], [], []
        offset = 0
        for r in range(b):
            sub = total.indices[total.indptr[r]:total.indptr[r + 1]]  # sorted node ids
            nodes.append(sub)
            owner.append(np.full(sub.size, r))
            root_pos.append(offset + np.searchsorted(sub, roots[r]))
            if self.num_hops > 0:
                targets = inner.indices[inner.indptr[r]:inner.indptr[r + 1]]
                block = self.adj[targets][:, sub].tocoo()
                order = np.lexsort((block.col, block.row))
                edges_dst.append(np.searchsorted(sub, targets[block.row[order]]) + offset)
                edges_src.append(block.col[order] + offset)
                edge_ids.append(block.data[order] - 1)
            offset += sub.size
        cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
        return CompGraphs(
            nodes=torch.from_numpy(np.concatenate(nodes)).long(),
            owner=torch.from_numpy(np.concatenate(owner)).long(),
            root_pos=torch.tensor(root_pos, dtype=torch.long),
            edge_index=torch.from_numpy(np.stack([cat(edges_src), cat(edges_dst)])).long(),
            edge_ids=torch.from_numpy(cat(edge_ids)).long(),
        )


def root_logits(model: torch.nn.Module, xu: torch.Tensor, cg: CompGraphs,
                edge_attr: torch.Tensor | None) -> torch.Tensor:
    """The model's outputs ``[B, C]`` at the roots of ``cg``, from node features ``xu [M, G]``
    and the full graph's ``edge_attr [E, F]`` (or None)."""
    ea = edge_attr[cg.edge_ids] if edge_attr is not None else None
    return model(xu, cg.edge_index, ea)[cg.root_pos]


def count_hops(model: torch.nn.Module) -> int:
    """Number of message-passing layers in ``model`` (the receptive field of a sequential stack)."""
    from torch_geometric.nn.conv import MessagePassing

    return sum(isinstance(m, MessagePassing) for m in model.modules())


@torch.no_grad()
def exact_sampler(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                  edge_attr: torch.Tensor | None, probe: np.ndarray, num_hops: int | None,
                  device: torch.device) -> SubgraphSampler:
    """A sampler whose computation-graph copies reproduce the model's full-graph outputs on
    the ``probe`` cells. ``num_hops`` None: try the number of message-passing layers, then
    one and two more (degree-normalised layers such as GCNConv need the in-degree of the
    outermost nodes, i.e. one hop more); an explicit ``num_hops`` that is not exact is an error.
    """
    model = model.to(device).eval()
    full = model(x.to(device), edge_index.to(device), edge_attr)[torch.as_tensor(probe, device=device)]
    base = count_hops(model)
    tries = [num_hops] if num_hops is not None else [base, base + 1, base + 2]
    err = float("nan")
    for hops in tries:
        sampler = SubgraphSampler(edge_index, x.shape[0], hops)
        cg = sampler.union(np.asarray(probe)).to(device)
        sub = root_logits(model, x.to(device)[cg.nodes], cg, edge_attr)
        err = (full - sub).abs().max().item()
        if err <= 1e-4 * max(1.0, full.abs().max().item()):
            if hops != base:
                LOG.info("computation graphs use %d hops (the model has %d message-passing layers)", hops, base)
            return sampler
    raise CellgnnInputError(
        f"the model's output on {tries[-1]}-hop computation graphs differs from the full graph (max |diff| {err:.3g})",
        field="explain.num_hops",
        fix="set explain.num_hops to the model's receptive field (0 = try the number of message-passing layers and two more)")
