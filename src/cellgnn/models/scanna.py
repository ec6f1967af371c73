"""scANNA-style attention classifier: softmax attention over genes, gene scores, class logits.

Follows scANNA / N-ACT (Davalos & Heydari et al.): gene attention ``α = softmax(e(x))`` over
the G genes of each cell, gene scores ``γ = α ⊙ x``, then a read-out to class logits; the
salient genes of a class are read from ``α`` over the class's correctly predicted cells.

What differs from the public code, and why (measurements in ``bench/README.md``, ``bench/scanna.py``):

- Attention logits ``e_g = a_g·x_g + b_g`` (+ an optional rank-r context term ``(V U x)_g``):
  the diagonal of scANNA's dense ``G×G`` map plus its bias. Each gene's attention rises
  or falls with that gene's own expression, so the attention a class receives marks the
  genes whose expression carries its evidence. With the dense (or a low-rank) map alone a
  gene's attention is a function of the whole cell, the read-out can place it on any gene
  and the classifier compensates downstream: the attention ranked planted genes at random.
- Scale: ``γ`` is multiplied by G, so uniform attention (``a = b = 0``, the initialization)
  passes ``x`` through unchanged and training starts from the plain classifier; softmax
  weights of order 1/G over thousands of genes would otherwise shrink the signal and its
  gradients by G.
- Read-out: ``n_blocks = 0`` (default) is one linear layer from ``γ`` to the logits with
  dropout on ``γ``: an attention-weighted logistic regression. ``n_blocks >= 1`` restores
  scANNA's projection blocks (in a ``hidden`` dimension after one ``Linear(G, hidden)``,
  residual + LayerNorm, one position-wise feed-forward block shared between blocks); on
  the default data they overfit within a few epochs of full-batch training.
"""

from __future__ import annotations

import torch
from torch import nn

from .dropout import Dropout


class PWFF(nn.Module):
    """Position-wise feed-forward block ``LN(h + W2 relu(W1 h))``, ``[N, d] -> [N, d]``."""

    def __init__(self, dim: int, ff_dim: int, dropout: float):
        super().__init__()
        self.ff = nn.Sequential(nn.Linear(dim, ff_dim), nn.ReLU(), Dropout(dropout), nn.Linear(ff_dim, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.ff(h))


class ProjectionBlock(nn.Module):
    """Dense projection with residual and LayerNorm, ``[N, d] -> [N, d]``."""

    def __init__(self, dim: int, dropout: float):
        super().__init__()
        self.proj = nn.Linear(dim, dim)
        self.drop = Dropout(dropout)
        self.norm = nn.LayerNorm(dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.norm(h + self.drop(self.proj(h)))


class ScANNA(nn.Module):
    """Attention classifier over genes.

    ``forward(x [N, G], edge_index=None, edge_attr=None) -> logits [N, C]``; the graph
    arguments are accepted and ignored so the model fits the registry's signature.
    ``gene_attention(x) -> α [N, G]`` (rows sum to 1) is the interpretable part.

    dropout: on the gene scores ``γ`` before the read-out. context_rank: rank of the
    optional whole-cell term of the attention logits (0 = none). n_blocks, hidden, ff_dim,
    block_dropout: scANNA's projection read-out (``n_blocks = 0``: linear read-out).
    """

    def __init__(self, in_dim: int, n_classes: int, dropout: float = 0.5, context_rank: int = 0,
                 n_blocks: int = 0, hidden: int = 128, ff_dim: int = 128, block_dropout: float = 0.1):
        super().__init__()
        if in_dim < 1 or n_classes < 2:
            raise ValueError(f"ScANNA needs in_dim >= 1 and n_classes >= 2, got {in_dim}, {n_classes}")
        self.in_dim, self.n_classes = in_dim, n_classes
        self.gain = nn.Parameter(torch.zeros(in_dim))  # a: diagonal of the attention map
        self.prior = nn.Parameter(torch.zeros(in_dim))  # b: expression-independent attention
        self.context = None
        if context_rank:
            self.context = nn.Sequential(nn.Linear(in_dim, context_rank, bias=False),
                                         nn.Linear(context_rank, in_dim, bias=False))
            nn.init.xavier_uniform_(self.context[0].weight)
            nn.init.zeros_(self.context[1].weight)  # uniform attention at initialization
        self.drop = Dropout(dropout)
        if n_blocks == 0:
            self.readout = nn.Linear(in_dim, n_classes)
            self.blocks = None
        else:
            self.embed = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden))
            self.blocks = nn.ModuleList(ProjectionBlock(hidden, block_dropout) for _ in range(n_blocks))
            self.pwff = PWFF(hidden, ff_dim, block_dropout)  # one instance reused after every block, as in scANNA
            self.readout = nn.Linear(hidden, n_classes)
        for m in self.modules():
            if isinstance(m, nn.Linear) and not (self.context is not None and m is self.context[1]):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def attention_logits(self, x: torch.Tensor) -> torch.Tensor:
        """``e = a ⊙ x + b (+ V U x)``, ``[N, G] -> [N, G]``."""
        e = self.gain * x + self.prior
        return e if self.context is None else e + self.context(x)

    def gene_attention(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax attention over genes, ``[N, G] -> [N, G]``."""
        return torch.softmax(self.attention_logits(x), dim=-1)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor | None = None,
                edge_attr: torch.Tensor | None = None) -> torch.Tensor:
        gamma = self.drop(self.gene_attention(x) * x * self.in_dim)
        if self.blocks is None:
            return self.readout(gamma)
        h = self.embed(gamma)
        for block in self.blocks:
            h = self.pwff(block(h))
        return self.readout(h)


@torch.no_grad()
def attention_and_predictions(model: ScANNA, x: torch.Tensor, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Gene attention ``[N, G]`` and class probabilities ``[N, C]`` (CPU), in batches."""
    model.eval()
    device = next(model.parameters()).device
    att, proba = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start:start + batch_size].to(device)
        att.append(model.gene_attention(xb).cpu())
        proba.append(torch.softmax(model(xb), dim=1).cpu())
    return torch.cat(att), torch.cat(proba)


def salient_genes(model: ScANNA, x: torch.Tensor, y: torch.Tensor, reference: int | str | None = "rest",
                  correct_only: bool = True, batch_size: int = 4096) -> torch.Tensor:
    """Gene salience per class from the attention, ``[C, G]`` (higher = more salient).

    x: ``[N, G]`` features, y: ``[N]`` class indices. A class's salience is the mean
    attention over its correctly predicted cells (``correct_only``; all its cells when
    none is correct), as in scANNA's read-out, minus the mean attention over reference
    cells: ``"rest"`` = the cells of every other class, an int = the cells of that class
    (e.g. the control; that class itself is compared with the rest), None = no reference
    (scANNA's raw attention, dominated by genes every cell attends to). Rows of classes
    absent from ``y`` are zero.
    """
    att, proba = attention_and_predictions(model, x, batch_size)
    y = y.cpu()
    ok = proba.argmax(1) == y if correct_only else torch.ones_like(y, dtype=torch.bool)
    out = torch.zeros(model.n_classes, att.shape[1])
    for c in range(model.n_classes):
        mine = y == c
        if not bool(mine.any()):
            continue
        use = mine & ok if bool((mine & ok).any()) else mine
        s = att[use].mean(0)
        if reference is not None:
            ref = ~mine if reference == "rest" or int(reference) == c else y == int(reference)
            if bool(ref.any()):
                s = s - att[ref].mean(0)
        out[c] = s
    return out
