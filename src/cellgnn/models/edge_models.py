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
the maximum degree of each degree bucket of nodes, with a key padding mask.
"""

from __future__ import annotations

import torch
from torch import nn

from .baselines import first_gat_weight
from .dropout import dropout
from .fast_conv import FastGATConv, FastGCNConv, cached
from .set_transformer import SetEncoder


class EdgeIndex:
    """Incoming edges grouped by target node (one stable sort), to gather padded sets quickly.

    :meth:`sets` gives each node's padded set of incoming-edge features, D = the nodes'
    maximum in-degree (at least 1); within a set, edges keep their order in ``edge_index``.
    """

    def __init__(self, edge_index: torch.Tensor, num_nodes: int):
        dst = edge_index[1]
        self.order = torch.sort(dst, stable=True).indices
        self.deg = torch.bincount(dst, minlength=num_nodes)
        self.ptr = torch.cumsum(self.deg, 0) - self.deg

    def slots(self, nodes: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Edge row of each padded set slot of ``nodes``: int64 ``[n, D]``, -1 where a set is padded; and D."""
        deg = self.deg[nodes]
        d_max = max(1, int(deg.max())) if nodes.numel() else 1
        row = torch.repeat_interleave(torch.arange(nodes.numel(), device=deg.device), deg)
        start = torch.cumsum(deg, 0) - deg
        pos = torch.arange(row.numel(), device=deg.device) - start[row]
        slots = torch.full((nodes.numel(), d_max), -1, dtype=torch.long, device=deg.device)
        slots[row, pos] = self.order[self.ptr[nodes][row] + pos]
        return slots, d_max

    def sets(self, edge_attr: torch.Tensor, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``sets [n, D, F]``, ``mask [n, D]`` (True = a real edge) for ``nodes`` (O(their edges))."""
        slots, _ = self.slots(nodes)
        mask = slots >= 0
        padded = torch.cat([edge_attr, edge_attr.new_zeros(1, edge_attr.shape[1])])
        return padded[slots.masked_fill(~mask, edge_attr.shape[0])], mask


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

    Memory: nodes are sorted by degree and processed in buckets, each padded to its
    own maximum degree, with at most ``max_scores`` padded (set × set) attention
    scores per head in a bucket. A hub of degree 200 thus never pads the other
    nodes' sets; the total cost is ≈ Σ_i deg(i)² instead of N · max deg². The default
    2**18 keeps buckets tight (its measured effect: ``bench/README.md``).
    """

    def __init__(self, edge_dim: int, set_dim: int = 8, set_heads: int = 2, set_block: str = "sab",
                 num_inds: int = 16, max_scores: int = 2**18):
        super().__init__()
        self.encoder = SetEncoder(edge_dim, set_dim, set_heads, set_block, num_inds)
        self.max_scores = max_scores

    def buckets(self, deg: torch.Tensor) -> list[torch.Tensor]:
        """Node ids grouped into degree buckets (ascending degree)."""
        order = torch.sort(deg, stable=True).indices
        d = deg[order].clamp(min=1).cpu().numpy().astype("int64")
        out, i, n = [], 0, d.size
        while i < n:
            lo, hi = i + 1, n  # largest j with (j - i) * d[j-1]^2 <= max_scores (at least one node)
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if (mid - i) * d[mid - 1] ** 2 <= self.max_scores:
                    lo = mid
                else:
                    hi = mid - 1
            out.append(order[i:lo])
            i = lo
        return out

    def layout(self, edge_index: torch.Tensor, num_nodes: int):
        """Per degree bucket: edge rows of its padded sets (``E`` = padding) and masks; the inverse
        of the bucket order. Built once per ``edge_index`` tensor (and ``max_scores``)."""
        def build():
            index = EdgeIndex(edge_index, num_nodes)
            groups = self.buckets(index.deg)
            slots = [index.slots(nodes)[0] for nodes in groups]
            masks = [s >= 0 for s in slots]
            slots = [s.masked_fill(~m, edge_index.shape[1]) for s, m in zip(slots, masks)]
            inverse = torch.empty(num_nodes, dtype=torch.long, device=edge_index.device)
            inverse[torch.cat(groups)] = torch.arange(num_nodes, device=edge_index.device)
            return slots, masks, inverse

        return cached(edge_index, ("sets", num_nodes, self.max_scores), build)

    def forward(self, edge_index: torch.Tensor, edge_attr: torch.Tensor, num_nodes: int) -> torch.Tensor:
        slots, masks, inverse = self.layout(edge_index, num_nodes)
        padded = torch.cat([edge_attr, edge_attr.new_zeros(1, edge_attr.shape[1])])
        res = [self.encoder(padded[s], m) for s, m in zip(slots, masks)]
        return torch.cat(res, 0)[inverse]


class GATEF(nn.Module):
    """``gat_ef``: 2-layer GAT ‖ edge-set Set Transformer → Linear."""

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 8, heads: int = 8,
                 attn_dropout: float = 0.4, set_dim: int = 8, set_heads: int = 2, set_block: str = "sab",
                 num_inds: int = 16, max_scores: int = 2**18, residual: bool = True):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gat_ef needs edge_dim >= 1 (edge features)")
        self.conv1 = FastGATConv(in_dim, hidden, heads=heads, dropout=attn_dropout, residual=residual)
        self.conv2 = FastGATConv(hidden * heads, hidden, heads=heads, dropout=attn_dropout, residual=residual)
        self.sets = EdgeSetBranch(edge_dim, set_dim, set_heads, set_block, num_inds, max_scores)
        self.out = nn.Linear(hidden * heads + set_dim, n_classes)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gat_ef")
        h = self.conv2(torch.nn.functional.elu(self.conv1(x, edge_index)), edge_index)
        s = self.sets(edge_index, edge_attr, x.shape[0])
        return self.out(torch.cat([h, s], dim=1))

    def first_layer_weight(self) -> torch.Tensor:
        """First-layer linear weights ``[heads*hidden, G]`` (for weight-magnitude explanations);
        with ``residual``, the skip map's rows follow."""
        return first_gat_weight(self.conv1)


class GATEdge(nn.Module):
    """``gat_edge``: 2-layer GAT whose attention logits see the edge features.

    Self-loops: the graph's own loops (and their features) are used; nodes without a
    loop get one with zero features (PyG's own loop filling would drop ours).
    """

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 8, heads: int = 8,
                 attn_dropout: float = 0.4, residual: bool = True):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gat_edge needs edge_dim >= 1 (edge features)")
        self.conv1 = FastGATConv(in_dim, hidden, heads=heads, dropout=attn_dropout, edge_dim=edge_dim,
                             add_self_loops=False, residual=residual)
        self.conv2 = FastGATConv(hidden * heads, n_classes, heads=heads, concat=False, dropout=attn_dropout,
                             edge_dim=edge_dim, add_self_loops=False, residual=residual)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gat_edge")
        ei, ea = complete_self_loops(edge_index, edge_attr, x.shape[0])
        return self.conv2(torch.nn.functional.elu(self.conv1(x, ei, ea)), ei, ea)


class GCNEF(nn.Module):
    """``gcn_ef``: 2-layer GCN (64 units) ‖ edge-set Set Transformer → Linear."""

    def __init__(self, in_dim: int, n_classes: int, edge_dim: int, hidden: int = 64, dropout: float = 0.5,
                 set_dim: int = 8, set_heads: int = 2, set_block: str = "sab", num_inds: int = 16,
                 max_scores: int = 2**18):
        super().__init__()
        if edge_dim < 1:
            raise ValueError("gcn_ef needs edge_dim >= 1 (edge features)")
        self.conv1 = FastGCNConv(in_dim, hidden)
        self.conv2 = FastGCNConv(hidden, hidden)
        self.dropout = dropout
        self.sets = EdgeSetBranch(edge_dim, set_dim, set_heads, set_block, num_inds, max_scores)
        self.out = nn.Linear(hidden + set_dim, n_classes)

    def forward(self, x, edge_index, edge_attr=None):
        _need_edges(edge_attr, "gcn_ef")
        h = torch.relu(self.conv1(x, edge_index))
        h = dropout(h, self.dropout, self.training)
        h = self.conv2(h, edge_index)
        s = self.sets(edge_index, edge_attr, x.shape[0])
        return self.out(torch.cat([h, s], dim=1))
