"""Attention edge features: first-layer attention of auxiliary GATs.

An auxiliary 2-layer GAT (GATConv(G→heads×hidden, concat) → ELU →
GATConv(heads·hidden→C, heads averaged), attention dropout 0.4, as in the original
study) is trained on the **training cells only** to predict an auxiliary label
(cell type, or donor). Its first layer's attention coefficients α_ij, one column per
head, read out in eval mode on the whole graph, are the edge features.

Alignment: both GATConv layers (:class:`~cellgnn.models.fast_conv.FastGATConv`) run with
``add_self_loops=False`` on an edge list that already holds every self-loop, so the
layer neither drops nor re-appends loops and returns α in exactly our edge order (asserted). If the graph has no self-loops,
they are appended *after* our E edges for the auxiliary GAT (a GAT needs them) and
only the first E rows of α are kept.

Order independence: attention dropout draws one mask entry per edge row, so the
auxiliary GAT always trains on the edges sorted by (target, source); α is then
scattered back to the caller's row order. Permuting the input edge list therefore
permutes the features exactly (tested).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..batching import ClusterBatches, pca_partition
from ..graph import dense_features
from ..io import load_resume
from ..models.fast_conv import FastGATConv

LOG = logging.getLogger(__name__)


class AuxGAT(torch.nn.Module):
    """2-layer GAT; ``forward(x [N,G], edge_index [2,E]) -> (logits [N,C], alpha [E,heads])``."""

    def __init__(self, in_dim: int, n_classes: int, heads: int = 8, hidden: int = 8, dropout: float = 0.4):
        super().__init__()
        self.conv1 = FastGATConv(in_dim, hidden, heads=heads, dropout=dropout, add_self_loops=False)
        self.conv2 = FastGATConv(heads * hidden, n_classes, heads=heads, concat=False, dropout=dropout,
                             add_self_loops=False)

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor):
        h, (ei_out, alpha) = self.conv1(x, edge_index, return_attention_weights=True)
        if ei_out.shape != edge_index.shape or not torch.equal(ei_out, edge_index):
            raise RuntimeError("GATConv reordered the edges; attention would be misaligned")
        return self.conv2(torch.nn.functional.elu(h), edge_index), alpha


def with_all_self_loops(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """``edge_index`` followed by (i, i) for every node lacking a loop; the first E rows unchanged."""
    has_loop = torch.zeros(num_nodes, dtype=torch.bool)
    loops = edge_index[0] == edge_index[1]
    has_loop[edge_index[0, loops]] = True
    missing = torch.nonzero(~has_loop).view(-1)
    return torch.cat([edge_index, missing.repeat(2, 1)], dim=1)


def attention_features(graph: dict, target: np.ndarray, train_mask: np.ndarray, *, heads: int = 8,
                       hidden: int = 8, dropout: float = 0.4, epochs: int = 100, lr: float = 0.005,
                       weight_decay: float = 5e-4, batching: str = "full", num_parts: int = 64,
                       parts_per_batch: int = 8, seed: int = 0, device: torch.device | str = "cpu",
                       name: str = "aux", checkpoint: str | Path | None = None,
                       checkpoint_every: int = 10) -> np.ndarray:
    """Train an AuxGAT on ``target`` (int ``[N]``) over ``train_mask`` cells; return α float32 ``[E, heads]``.

    ``batching``: ``full`` (one full-graph step per epoch) or ``cluster`` (Cluster-GCN
    mini-batches from ``cellgnn.batching.ClusterBatches`` on a ``pca_partition``). Readout is always one full-graph eval pass.
    ``checkpoint``: atomic resumable state (model, optimizer, torch RNG, epoch) written there
    every ``checkpoint_every`` epochs and continued from when it exists and matches this run
    (same α as an uninterrupted run on CPU); the caller deletes it.
    """
    run_key = hashlib.sha256(repr((name, heads, hidden, dropout, epochs, lr, weight_decay, batching, num_parts,
                                   parts_per_batch, seed)).encode()
                             + np.asarray(target).tobytes() + np.asarray(train_mask).tobytes()
                             + np.asarray(graph["edge_index"]).tobytes()).hexdigest()[:16]
    torch.manual_seed(seed)
    x = dense_features(graph).float()
    n = x.shape[0]
    ei_in = torch.as_tensor(graph["edge_index"], dtype=torch.long)
    n_edges = ei_in.shape[1]
    order = torch.from_numpy(np.lexsort((ei_in[0].numpy(), ei_in[1].numpy())))
    ei_full = with_all_self_loops(ei_in[:, order], n)
    y = torch.as_tensor(target, dtype=torch.long)
    mask = torch.as_tensor(train_mask, dtype=torch.bool)
    # classes seen in training only (donor head in `donors` mode: training donors only)
    seen, y_local = torch.unique(y[mask], return_inverse=True)
    y_train = torch.full_like(y, -100)
    y_train[mask] = y_local
    model = AuxGAT(x.shape[1], max(2, seen.numel()), heads, hidden, dropout).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=-100)
    if batching == "cluster":
        batches = ClusterBatches(ei_full, pca_partition(np.asarray(graph["pca"]), num_parts), parts_per_batch,
                                 seed=seed)
    else:
        xd, eid, yd = x.to(device), ei_full.to(device), y_train.to(device)
    start = 0
    state = load_resume(checkpoint, run_key, f"aux GAT {name}") if checkpoint is not None else None
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
        start = state["epoch"] + 1
        LOG.info("aux GAT %s: resumed from %s after epoch %d", name, checkpoint, state["epoch"])
    model.train()
    for epoch in tqdm(range(start, epochs), desc=f"aux GAT ({name})", mininterval=10, leave=False):
        if batching == "cluster":
            total = 0.0
            batches.epoch = epoch  # parts shuffled with seed + epoch, also after a resume
            for b in batches:
                yb = y_train[b.node_ids]
                if not (yb >= 0).any():
                    continue
                opt.zero_grad()
                logits, _ = model(x[b.node_ids].to(device), b.edge_index.to(device))
                loss = loss_fn(logits, yb.to(device))
                loss.backward()
                opt.step()
                total += float(loss.detach())
        else:
            opt.zero_grad()
            logits, _ = model(xd, eid)
            loss = loss_fn(logits, yd)
            loss.backward()
            opt.step()
            total = float(loss.detach())
        if epoch == 0 or (epoch + 1) % max(1, epochs // 5) == 0:
            LOG.info("aux GAT %s epoch %d/%d: train loss %.4f", name, epoch + 1, epochs, total)
        if checkpoint is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
            from ..io import torch_save

            torch_save({"key": run_key, "epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                        "rng": torch.get_rng_state()}, checkpoint)
    model.eval()
    with torch.no_grad():
        logits, alpha = model(x.to(device), ei_full.to(device))
        acc = (logits.argmax(1).cpu()[mask] == y_train[mask]).float().mean().item()
    LOG.info("aux GAT %s: train accuracy %.3f over %d classes", name, acc, seen.numel())
    out = torch.empty(n_edges, alpha.shape[1])
    out[order] = alpha[:n_edges].cpu()
    return out.numpy().astype(np.float32)
