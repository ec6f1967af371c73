"""Layered self-distillation (LSSKD-style deep supervision) for the GAT family, in training only.

:class:`LayeredSelfDistillation` wraps a GAT-family model (``gat``, ``gat_ef``, ``gat_edge``): an
auxiliary classifier (ELU → Linear) reads the output of each hidden GAT layer ``conv<i>`` (a
layer whose output is already the class logits gets none). In training, the wrapper's forward
returns the model's logits and keeps each head's logits; :meth:`aux_loss` then gives

    weight * 2 * (w_ce * mean_l CE(head_l, y) + w_kd * mean_l T^2 KL(p_teacher(l) / T || p_head(l) / T))

where the teacher of head ``l`` is the next deeper head, and of the deepest head the model's
output (teachers detached: knowledge flows from deeper to shallower layers only). ``w_ce, w_kd``
are SoftAdapt weights (:mod:`cellgnn.softadapt`, loss-weighted, over the last ``window`` training
steps; the history lives in a buffer, so it is checkpointed with the weights) or 1/2 each. In
eval mode the wrapper is the wrapped model; :meth:`student` returns it without the heads, and its
state dict is the wrapped model's with the ``base.`` prefix.

Not carried over from LSSKD (image classifiers): the self-supervised augmented labels (rotations
of the input image, no counterpart for cells) and the distillation across epochs.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

GAT_FAMILY = ("gat", "gat_ef", "gat_edge")


def _width(conv: nn.Module) -> int:
    """Output width of a GATConv-like layer (heads x channels when concatenated)."""
    heads, out = int(getattr(conv, "heads", 1)), int(conv.out_channels)
    return heads * out if getattr(conv, "concat", True) else out


def hidden_layers(model: nn.Module, n_classes: int) -> list[tuple[str, nn.Module]]:
    """The model's GAT layers ``conv<i>`` (in order) whose output is not already the class logits."""
    convs = sorted(((n, m) for n, m in model.named_children() if n.startswith("conv") and n[4:].isdigit()),
                   key=lambda nm: int(nm[0][4:]))
    return [(n, m) for n, m in convs if getattr(m, "concat", True) or int(m.out_channels) != n_classes]


class LayeredSelfDistillation(nn.Module):
    """``base`` + one auxiliary head per hidden GAT layer (see the module doc).

    Buffers: ``history [window, 2]`` (the last steps' auxiliary CE and KL) and ``steps``.
    """

    def __init__(self, base: nn.Module, n_classes: int, temperature: float = 2.0, weight: float = 1.0,
                 weighting: str = "softadapt", beta: float = 0.1, window: int = 5):
        super().__init__()
        layers = hidden_layers(base, n_classes)
        if not layers:
            raise ValueError(f"{type(base).__name__} has no hidden GAT layer (conv<i>) to attach a head to")
        self.base = base
        self.layer_names = [n for n, _ in layers]
        self.heads = nn.ModuleList(nn.Sequential(nn.ELU(), nn.Linear(_width(m), n_classes)) for _, m in layers)
        self.temperature, self.weight, self.weighting, self.beta = float(temperature), float(weight), weighting, beta
        self.register_buffer("history", torch.zeros(window, 2, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._aux: list[torch.Tensor] = []

    def forward(self, x, edge_index, edge_attr=None):
        if not self.training:
            return self.base(x, edge_index, edge_attr)
        feats: dict[str, torch.Tensor] = {}
        handles = [getattr(self.base, n).register_forward_hook(
            lambda _m, _i, out, n=n: feats.__setitem__(n, out[0] if isinstance(out, tuple) else out))
            for n in self.layer_names]
        try:
            out = self.base(x, edge_index, edge_attr)
        finally:
            for h in handles:
                h.remove()
        self._aux = [head(feats[n]) for head, n in zip(self.heads, self.layer_names)]
        return out

    def student(self) -> nn.Module:
        """The wrapped model alone (what is saved and used at inference)."""
        return self.base

    def _weights(self) -> tuple[float, float]:
        if self.weighting != "softadapt":
            return 0.5, 0.5
        from ..softadapt import softadapt_weights

        n = int(min(self.steps, self.history.shape[0]))
        if n < 2:
            return 0.5, 0.5
        hist = self.history[-n:].cpu().numpy()
        w = softadapt_weights([hist[:, 0], hist[:, 1]], self.beta, n, "loss_weighted")
        return float(w[0]), float(w[1])

    def aux_loss(self, logits: torch.Tensor, y: torch.Tensor, mask, ce: nn.Module) -> torch.Tensor:
        """Auxiliary loss of the last training forward pass. logits ``[N, C]`` its output; y ``[N]``;
        mask: the cells that carry a loss (bool ``[N]`` or None for all); ce: the output's loss
        function (class weights shared)."""
        sel = slice(None) if mask is None else mask
        t = self.temperature
        students = [a[sel] for a in self._aux]
        teachers = [s.detach() for s in students[1:]] + [logits[sel].detach()]
        l_ce = torch.stack([ce(s, y[sel]) for s in students]).mean()
        l_kd = torch.stack([F.kl_div(F.log_softmax(s / t, 1), F.log_softmax(q / t, 1), reduction="batchmean",
                                     log_target=True) for s, q in zip(students, teachers)]).mean() * t * t
        w_ce, w_kd = self._weights()
        with torch.no_grad():
            self.history.copy_(torch.roll(self.history, -1, 0))
            self.history[-1, 0], self.history[-1, 1] = float(l_ce), float(l_kd)
            self.steps += 1
        self._aux = []
        return self.weight * 2.0 * (w_ce * l_ce + w_kd * l_kd)
