"""Set Transformer blocks (Lee et al., ICML 2019) with key padding masks.

Sets are padded tensors ``[B, n, d]`` with ``mask [B, n]`` (True = real element).

- MAB(X, Y) = LN(H + rFF(H)), H = LN(X + Multihead(X, Y, Y))
- SAB(X) = MAB(X, X)
- ISAB_m(X) = MAB(X, MAB(I, X)), I ∈ ℝ^{m×d} learned inducing points
- PMA_k(Z) = MAB(S, rFF(Z)), S ∈ ℝ^{k×d} learned seeds: permutation invariant pooling.

As in the official code, the residual adds the projected queries and
rFF(O) = O + ReLU(W O); attention scores are scaled by √d_V. Attention runs in
``torch.nn.functional.scaled_dot_product_attention`` (the manual masked softmax only when a
set is empty), and the q/k/v projections of self-attention in one product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MAB(nn.Module):
    """Multihead attention block; ``forward(X [B,nq,dq], Y [B,nk,dk], mask [B,nk]|None) -> [B,nq,dv]``."""

    def __init__(self, dim_q: int, dim_k: int, dim_v: int, num_heads: int, ln: bool = True):
        super().__init__()
        if dim_v % num_heads:
            raise ValueError(f"dim_v={dim_v} must be divisible by num_heads={num_heads}")
        self.dim_v, self.num_heads = dim_v, num_heads
        self.fc_q, self.fc_k, self.fc_v = nn.Linear(dim_q, dim_v), nn.Linear(dim_k, dim_v), nn.Linear(dim_k, dim_v)
        self.fc_o = nn.Linear(dim_v, dim_v)
        self.ln0 = nn.LayerNorm(dim_v) if ln else nn.Identity()
        self.ln1 = nn.LayerNorm(dim_v) if ln else nn.Identity()

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, nq, nk, h = x.shape[0], x.shape[1], y.shape[1], self.num_heads
        dh = self.dim_v // h
        if x is y:  # self-attention: one product for the three projections
            q, k, v = F.linear(x, torch.cat([self.fc_q.weight, self.fc_k.weight, self.fc_v.weight]),
                               torch.cat([self.fc_q.bias, self.fc_k.bias, self.fc_v.bias])).split(self.dim_v, -1)
        else:
            q = self.fc_q(x)
            k, v = F.linear(y, torch.cat([self.fc_k.weight, self.fc_v.weight]),
                            torch.cat([self.fc_k.bias, self.fc_v.bias])).split(self.dim_v, -1)
        qh = q.reshape(b, nq, h, dh).transpose(1, 2)            # [B, h, nq, dh]
        kh = k.reshape(b, nk, h, dh).transpose(1, 2)
        vh = v.reshape(b, nk, h, dh).transpose(1, 2)
        scale = 1.0 / math.sqrt(self.dim_v)
        if mask is None or bool(mask.any(-1).all()):  # every set has an element: the fused kernel
            keep = None if mask is None else mask[:, None, None, :]
            o = qh + F.scaled_dot_product_attention(qh, kh, vh, attn_mask=keep, scale=scale)
        else:
            keep = mask[:, None, None, :]
            scores = (qh @ kh.transpose(-1, -2) * scale).masked_fill(~keep, torch.finfo(qh.dtype).min)
            o = qh + (torch.softmax(scores, dim=-1) * keep) @ vh  # empty sets attend to nothing
        o = o.transpose(1, 2).reshape(b, nq, self.dim_v)
        o = self.ln0(o)
        return self.ln1(o + torch.relu(self.fc_o(o)))


class SAB(nn.Module):
    """Self-attention block ``[B,n,d_in] -> [B,n,d_out]``."""

    def __init__(self, dim_in: int, dim_out: int, num_heads: int, ln: bool = True):
        super().__init__()
        self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mab(x, x, mask)


class ISAB(nn.Module):
    """Induced self-attention block with ``num_inds`` inducing points; O(n·m) instead of O(n²)."""

    def __init__(self, dim_in: int, dim_out: int, num_heads: int, num_inds: int, ln: bool = True):
        super().__init__()
        self.inducing = nn.Parameter(torch.empty(1, num_inds, dim_out))
        nn.init.xavier_uniform_(self.inducing)
        self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln)
        self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mab0(self.inducing.expand(x.shape[0], -1, -1), x, mask)
        return self.mab1(x, h)


class PMA(nn.Module):
    """Pooling by multihead attention: ``[B,n,d] (+mask) -> [B,num_seeds,d]``, invariant to set order."""

    def __init__(self, dim: int, num_heads: int, num_seeds: int = 1, ln: bool = True):
        super().__init__()
        self.seeds = nn.Parameter(torch.empty(1, num_seeds, dim))
        nn.init.xavier_uniform_(self.seeds)
        self.rff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
        self.mab = MAB(dim, dim, dim, num_heads, ln)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.mab(self.seeds.expand(z.shape[0], -1, -1), self.rff(z), mask)


class SetEncoder(nn.Module):
    """Encoder (one SAB or ISAB) + PMA with one seed: ``[B,n,d_in] (+mask) -> [B,d_out]``."""

    def __init__(self, dim_in: int, dim_out: int = 8, num_heads: int = 2, block: str = "sab",
                 num_inds: int = 16):
        super().__init__()
        if block == "sab":
            self.enc = SAB(dim_in, dim_out, num_heads)
        elif block == "isab":
            self.enc = ISAB(dim_in, dim_out, num_heads, num_inds)
        else:
            raise ValueError(f"unknown set block '{block}' (use sab or isab)")
        self.pool = PMA(dim_out, num_heads, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.pool(self.enc(x, mask), mask).squeeze(1)
