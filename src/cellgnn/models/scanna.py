"""scANNA-style attention classifier: softmax attention over genes, projection blocks, class logits.

Follows scANNA / N-ACT (Davalos & Heydari et al.): gene attention ``α = softmax(W_a x + b)``
over the G genes of each cell, gene scores ``γ = α ⊙ x``, then projection blocks with a
residual connection and LayerNorm, a position-wise feed-forward block shared between the
blocks, and a linear read-out to class logits. Salient genes per class are read out by
averaging ``α`` over the correctly predicted cells of the class (scANNA's ``AttentionQuery``).

Differences from the public code (all for size on a CPU): the projection blocks work in a
``hidden`` dimension (default 128) after one ``Linear(G, hidden)`` instead of three dense
G×G layers (scANNA's 76M parameters at G=5000), and the output LeakyReLU is dropped (it
only rescales negative logits). The gene attention layer is a dense G×G map as in scANNA
when ``attention_rank`` is None, else a rank-r factorisation ``W_a = V U`` (G·2r
parameters instead of G²), cheap enough for a CPU; the attention is still a softmax over
all genes of each cell.
"""

from __future__ import annotations

import torch
from torch import nn


class PWFF(nn.Module):
    """Position-wise feed-forward block ``LN(h + W2 relu(W1 h))``, ``[N, d] -> [N, d]``."""

    def __init__(self, dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.ff(h))


class ProjectionBlock(nn.Module):
    """Dense projection with residual and LayerNorm, ``[N, d] -> [N, d]``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.drop(self.proj(h)))


class ScANNA(nn.Module):
    """Attention classifier over genes.

    ``forward(x [N, G], edge_index=None, edge_attr=None) -> logits [N, C]``; the graph
    arguments are accepted and ignored so the model fits the registry's signature.
    ``gene_attention(x) -> α [N, G]`` (rows sum to 1) is the interpretable part.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 128, ff_dim: int = 128,
                 n_blocks: int = 2, dropout: float = 0.1, attention_rank: int | None = 64):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(f"ScANNA needs in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        self.in_dim, self.n_classes = in_dim, n_classes
        if attention_rank is None or attention_rank >= in_dim:
            self.attention = nn.Linear(in_dim, in_dim)
        else:
            self.attention = nn.Sequential(nn.Linear(in_dim, attention_rank, bias=False), nn.Linear(attention_rank, in_dim))
        self.embed = nn.Linear(in_dim, hidden)
        self.embed_norm = nn.LayerNorm(hidden)
        self.blocks = nn.ModuleList(ProjectionBlock(hidden, dropout) for _ in range(n_blocks))
        self.pwff = PWFF(hidden, ff_dim, dropout)  # one instance reused after every block, as in scANNA
        self.out = nn.Linear(hidden, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def gene_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention over genes, ``[N, G] -> [N, G]``."""
        return torch.softmax(self.attention(x), dim=-1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None) -> torch.Tensor:
        gamma = self.gene_attention(x) * x
        # softmax weights are ~1/G; rescale so the embedding sees inputs of order x
        h = self.embed_norm(self.embed(gamma * self.in_dim))
        for block in self.blocks:
            h = self.pwff(block(h))
        return self.out(h)


@torch.no_grad()
def salient_genes(model: ScANNA, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096,
                  correct_only: bool = True) -> torch.Tensor:
    """Mean gene attention per class, ``[C, G]``.

    x: ``[N, G]`` features, y: ``[N]`` class indices. As in scANNA's read-out, only the
    correctly predicted cells of each class count (``correct_only``); a class with no such
    cell falls back to all its cells. Rows of classes absent from ``y`` are zero.
    """
    model.eval()
    sums = torch.zeros(model.n_classes, model.in_dim)
    sums_all = torch.zeros_like(sums)
    n = torch.zeros(model.n_classes)
    n_all = torch.zeros(model.n_classes)
    device = next(model.parameters()).device
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        att = model.gene_attention(xb)
        ok = model(xb).argmax(1) == yb if correct_only else torch.ones_like(yb, dtype=torch.bool)
        sums.index_add_(0, yb[ok].cpu(), att[ok].cpu())
        n.index_add_(0, yb[ok].cpu(), torch.ones(int(ok.sum())))
        sums_all.index_add_(0, yb.cpu(), att.cpu())
        n_all.index_add_(0, yb.cpu(), torch.ones(len(yb)))
    empty = n == 0
    sums[empty], n[empty] = sums_all[empty], n_all[empty]
    return sums / n.clamp(min=1)[:, None]
