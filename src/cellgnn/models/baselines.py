"""Baseline models: MLP, GCN and the original study's two-layer GAT.

All take node features ``x [N, G]`` and return class logits ``[N, C]``;
``forward(x, edge_index, edge_attr=None)`` (the MLP ignores the graph).
"""

from __future__ import annotations

import torch
from torch import nn
from torch_geometric.nn import GATConv

from .dropout import Dropout, dropout
from .fast_conv import FastGATConv, FastGCNConv


class MLP(nn.Module):
    """Two hidden layers with ReLU and dropout; ignores the graph."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, dropout: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), Dropout(dropout),
                                 nn.Linear(hidden, hidden), nn.ReLU(), Dropout(dropout),
                                 nn.Linear(hidden, n_classes))

    def forward(self, x, edge_index=None, edge_attr=None):
        return self.net(x)


class GCN(nn.Module):
    """GCNConv(G→hidden) → ReLU → dropout → GCNConv(hidden→C), as the study's GCN baseline."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 64, dropout: float = 0.5):
        super().__init__()
        self.conv1 = FastGCNConv(in_dim, hidden)
        self.conv2 = FastGCNConv(hidden, n_classes)
        self.dropout = dropout

    def forward(self, x, edge_index, edge_attr=None):
        h = torch.relu(self.conv1(x, edge_index))
        h = dropout(h, self.dropout, self.training)
        return self.conv2(h, edge_index)


class GAT(nn.Module):
    """The study's GAT: GATConv(G→heads×hidden, concat) → ELU → GATConv(→C, heads averaged).

    Layers are :class:`~cellgnn.models.fast_conv.FastGATConv` (PyG's ``GATConv``, same parameters
    and outputs, faster kernels).

    Attention dropout ``attn_dropout`` (0.4 in the study) applies to the attention
    coefficients only; LeakyReLU slope 0.2. ``residual``: each layer also adds a linear
    map of the cell's own input (PyG ``GATConv(residual=True)``), so a cell's features
    are not averaged away among neighbours of other classes; ``False`` is the study's layer.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 8, heads: int = 8, attn_dropout: float = 0.4,
                 residual: bool = True):
        super().__init__()
        self.conv1 = FastGATConv(in_dim, hidden, heads=heads, dropout=attn_dropout, residual=residual)
        self.conv2 = FastGATConv(hidden * heads, n_classes, heads=heads, concat=False, dropout=attn_dropout,
                             residual=residual)

    def forward(self, x, edge_index, edge_attr=None):
        h = nn.functional.elu(self.conv1(x, edge_index))
        return self.conv2(h, edge_index)

    def first_layer_weight(self) -> torch.Tensor:
        """First-layer linear weights ``[heads*hidden, G]`` (for weight-magnitude explanations);
        with ``residual``, the skip map's rows follow: ``[2*heads*hidden, G]``."""
        return first_gat_weight(self.conv1)


def first_gat_weight(conv: GATConv) -> torch.Tensor:
    """Rows of every linear map from a GATConv's input genes: message ``lin`` and, when
    the layer is residual, its skip ``res``; ``[rows, G]``."""
    lin = getattr(conv, "lin", None) or conv.lin_src
    res = getattr(conv, "res", None)
    return lin.weight if not isinstance(res, nn.Linear) else torch.cat([lin.weight, res.weight], 0)
