"""Graph models that use edge features: ``gat_ef``, ``gat_edge``, ``gcn_ef``.

All take ``forward(x [N,G], edge_index [2,E], edge_attr [E,F]) -> logits [N,C]``.

- ``GATEF`` (the original study's model, with PMA pooling instead of its
  position-dependent Linear-over-slots): GATConv(G→heads×hidden) → ELU →
  GATConv(heads·hidden→heads×hidden), concatenated with a Set Transformer branch
  over each node's incoming-edge features (SAB or ISAB, then PMA to ``set_dim``),
  → Linear → classes.
- ``GATEdge``: the edge features enter the attention logits
  (PyG ``GATConv(edge_dim=F)``: α_ij ∝ exp LeakyReLU(aᵀ[Θx_i ‖ Θx_j ‖ Θ_e e_ij])).
- ``GCNEF``: GCNConv(G→64) → ReLU → dropout → GCNConv(64→64), ‖ set branch → Linear.

Edge sets: node i's set is {e_ji : j→i in edge_index} (for the symmetric kNN graph,
all edges incident to i, its self-loop included when the graph has loops), padded to
the maximum degree of each chunk of nodes with a key padding mask.
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv, GCNConv

from .set_transformer import SetEncoder


def incident_edge_sets(edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int,
                       nodes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded sets of incoming-edge features.

    Returns ``sets [n, D, F]`` and ``mask [n, D]`` (True = real edge) for ``nodes``
    (default all ``num_nodes``), D = their maximum in-degree (at least 1); within a
    set, edges keep their order in ``edge_index``.
    """
    dst = edge_index[1]
    if nodes is not None:
        sel = torch.zeros(num_nodes, dtype=torch.long, device=dst.device) - 1
        sel[nodes] = torch.arange(nodes.numel(), device=dst.device)
        keep = sel[dst] >= 0
        dst, edge_attr = sel[dst[keep]], edge_attr[keep]
        num_nodes = nodes.numel()
    order = torch.sort(dst, stable=True).indices
    dst_s = dst[order]
    deg = torch.bincount(dst_s, minlength=num_nodes)
    ptr = torch.cumsum(deg, 0) - deg
    pos = torch.arange(dst_s.numel(), device=dst.device) - ptr[dst_s]
    d_max = max(1, int(deg.max())) if num_nodes else 1
    sets = edge_attr.new_zeros(num_nodes, d_max, edge_attr.shape[1])
    mask = torch.zeros(num_nodes, d_max, dtype=torch.bool, device=dst.device)
    sets[dst_s, pos] = edge_attr[order]
    mask[dst_s, pos] = True
    return sets, mask


def complete_self_loops(edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int):
    """Append (i, i) with zero features for nodes that lack a loop; existing rows untouched."""
    loops = edge_index[0] == edge_index[1]
    has = torch.zeros(num_nodes, dtype=torch.bool, device=edge_index.device)
    has[edge_index[0, loops]] = True
    if bool(has.all()):
        return edge_index, edge_attr
    missing = torch.nonzero(~has).view(-1)
    return (torch.cat([edge_index, missing.repeat(2, 1)], 1),
            torch.cat([edge_attr, edge_attr.new_zeros(missing.numel(), edge_attr.shape[1])], 0))


def _need_edges(edge_attr, name):
    if edge_attr is None:
        raise ValueError(f"model '{name}' needs edge features: pass edge_attr [E, F] "
                         "(set train.edge_features / run the edge_features rule)")


class EdgeSetBranch(nn.Module):
    """Set Transformer over each node's incoming-edge features: ``-> [N, set_dim]``.

    Nodes are processed in chunks of ``chunk`` to bound the padded tensor size
    (chunk · D² · heads attention scores).
    """

    def __init__(self, edge_dim: int, set_dim: int = 8, set_heads: int = 2, set_block: str = "sab",
                 num_inds: int = 16, chunk: int = 8192):
        super().__init__()
        self.encoder = SetEncoder(edge_dim, set_dim, set_heads, set_block, num_inds)
        self.chunk = chunk

    def forward(self, edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int) -> torch.Tensor:
        if num_nodes <= self.chunk:
            return self.encoder(*incident_edge_sets(edge_index, edge_attr, num_nodes))
        outs = []
        for start in range(0, num_nodes, self.chunk):
            nodes = torch.arange(start, min(num_nodes, start + self.chunk), device=edge_index.device)
            outs.append(self.encoder(*incident_edge_sets(edge_index, edge_attr, num_nodes, nodes)))
        return torch.cat(outs, 0)


class GATEF(nn.Module):
    """``gat_ef``: 2-layer GAT ‖ edge-set Set Transformer → Linear."""

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 8, heads: int = 8,
                 dropout: float = 0.4, set_dim: int = 8, set_heads: int = 2, set_block: str = "sab",
                 num_inds: int = 16, chunk: int = 8192):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gat_ef needs edge_dim >= 1 (edge features)")
        self.conv1 = GATConv(in_dim, hidden, heads=heads, dropout=dropout)
        self.conv2 = GATConv(hidden * heads, hidden, heads=heads, dropout=dropout)
        self.sets = EdgeSetBranch(edge_dim, set_dim, set_heads, set_block, num_inds, chunk)
        self.out = nn.Linear(hidden * heads + set_dim, n_classes)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gat_ef")
        h = self.conv2(torch.nn.functional.elu(self.conv1(x, edge_index)), edge_index)
        s = self.sets(edge_index, edge_attr, x.shape[0])
        return self.out(torch.cat([h, s], dim=1))


class GATEdge(nn.Module):
    """``gat_edge``: 2-layer GAT whose attention logits see the edge features.

    Self-loops: the graph's own loops (and their features) are used; nodes without a
    loop get one with zero features (PyG's own loop filling would drop ours).
    """

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 8, heads: int = 8,
                 dropout: float = 0.4):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gat_edge needs edge_dim >= 1 (edge features)")
        self.conv1 = GATConv(in_dim, hidden, heads=heads, dropout=dropout, edge_dim=edge_dim,
                             add_self_loops=False)
        self.conv2 = GATConv(hidden * heads, n_classes, heads=heads, concat=False, dropout=dropout,
                             edge_dim=edge_dim, add_self_loops=False)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gat_edge")
        ei, ea = complete_self_loops(edge_index, edge_attr, x.shape[0])
        return self.conv2(torch.nn.functional.elu(self.conv1(x, ei, ea)), ei, ea)


class GCNEF(nn.Module):
    """``gcn_ef``: 2-layer GCN (64 units) ‖ edge-set Set Transformer → Linear."""

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 64, dropout: float = 0.5,
                 set_dim: int = 8, set_heads: int = 2, set_block: str = "sab", num_inds: int = 16,
                 chunk: int = 8192):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gcn_ef needs edge_dim >= 1 (edge features)")
        self.conv1 = GCNConv(in_dim, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.dropout = dropout
        self.sets = EdgeSetBranch(edge_dim, set_dim, set_heads, set_block, num_inds, chunk)
        self.out = nn.Linear(hidden + set_dim, n_classes)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gcn_ef")
        h = torch.relu(self.conv1(x, edge_index))
        h = torch.nn.functional.dropout(h, self.dropout, self.training)
        h = self.conv2(h, edge_index)
        s = self.sets(edge_index, edge_attr, x.shape[0])
        return self.out(torch.cat([h, s], dim=1))
