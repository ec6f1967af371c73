"""Explanations that can be checked: gene, cell-type and edge-feature attributions.

Methods (each returns a gene score per class, and per cell type × class where it can):

- ``integrated_gradients``: captum IG on node features through a trained graph model. Each
  explained cell gets its own copy of its k-hop computation graph (a disjoint union per
  batch), so one IG pass gives exact per-cell attributions over every node and gene that
  can influence the cell; a cell's gene score is the sum over the nodes of its copy.
  Baseline (``explain.ig.baseline``): the mean control-class cell of the same donor and
  cell type (default: a held-out donor is compared with its own controls, not with other
  donors' batch effects), the mean control-class training cell of the cell type, or
  all-zero features. Explained score (``explain.ig.target``): the
  log-odds of the cell's class against the control class (default; the planted truth is
  defined against the control), or the class logit. When x enters the model only through linear layers
  (a GAT layer's message map and its residual skip), IG is computed in their output space
  and mapped back to genes exactly (chain rule), which makes it ~G/H times cheaper. The
  completeness error ``|Σ attr − (f(x) − f(x₀))|`` is
  measured per cell, and the number of steps is doubled until its relative size is below
  the tolerance.
- ``weights``: the original study's first-layer weight magnitude, ``max |W[:, g]|`` over
  the first layer's output units (heads × units); class-agnostic.
- ``attention``: mean gene attention of the scANNA-style classifier over a class's correctly
  predicted cells minus its mean over the control class's cells (``explain.de_control``;
  the other classes' cells when there is no control), per class and per class × cell
  type (``cellgnn.models.scanna.salient_genes``).
- ``gnnexplainer``: PyG ``Explainer`` + ``GNNExplainer`` on a few cells per class, with a
  feature mask shared by the nodes of each cell's subgraph and an edge mask.
- ``de`` / ``de_control``: scanpy ``rank_genes_groups`` (Wilcoxon) on training cells, each
  class against the rest / against the control class (``explain.de_control``, ``mock``).
- ``random``: a seeded random ranking, the floor every method must beat.

Scores are compared with the simulator's planted response genes
(``uns["ground_truth"]``): precision@k with k = number of planted genes, and average
precision (AUPRC), per class (the genes planted in every cell type of the class) and per
class × cell type (every gene planted there).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from .errors import CellgnnInputError

LOG = logging.getLogger(__name__)

CLASS_AGNOSTIC = "all"


# ----------------------------------------------------------------------------- subgraphs

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
        cg = sampler.union(np.asarray(probe))
        cg = CompGraphs(*(t.to(device) for t in (cg.nodes, cg.owner, cg.root_pos, cg.edge_index, cg.edge_ids)))
        sub = _root_logits(model, x.to(device)[cg.nodes], cg, edge_attr)
        err = (full - sub).abs().max().item()
        if err <= 1e-4 * max(1.0, full.abs().max().item()):
            if hops != base:
                LOG.info("computation graphs use %d hops (the model has %d message-passing layers)", hops, base)
            return sampler
    raise CellgnnInputError(
        f"the model's output on {tries[-1]}-hop computation graphs differs from the full graph (max |diff| {err:.3g})",
        field="explain.num_hops",
        fix="set explain.num_hops to the model's receptive field (0 = try the number of message-passing layers and two more)")


# ----------------------------------------------------------------------------- integrated gradients

@dataclass
class IGResult:
    """Per-cell integrated gradients.

    ``cells [n]`` explained node ids, ``target [n]`` class explained, ``attr [n, G]`` gene
    attribution summed over the cell's computation graph, ``delta [n]`` = f(x) − f(0) of
    the target logit, ``pred [n]`` predicted class, ``node_mass [n, T]`` |attribution|
    summed by the cell type of the contributing node, ``batches`` one row per batch
    (n_steps used, completeness errors).
    """

    cells: np.ndarray
    target: np.ndarray
    attr: np.ndarray
    delta: np.ndarray
    pred: np.ndarray
    node_mass: np.ndarray
    batches: pd.DataFrame = field(default_factory=pd.DataFrame)


def _target_score(logits: torch.Tensor, targets: torch.Tensor, contrast: torch.Tensor | None) -> torch.Tensor:
    """``logits [..., B, C] -> [..., B]``: each root's target logit, minus its ``contrast``
    class logit where that is another class (the log-odds of target against contrast)."""
    t = logits.gather(-1, targets.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    if contrast is None:
        return t
    other = (contrast != targets).to(logits.dtype)
    return t - other * logits.gather(-1, contrast.expand(*logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)


def _union_forward(model, cg: CompGraphs, edge_attr, targets: torch.Tensor, contrast: torch.Tensor | None = None):
    """Forward function for captum: ``xb [b, M, D] -> [b]`` (sum over roots of the target
    score, see :func:`_target_score`)."""
    m = cg.nodes.numel()
    n_edges = cg.edge_index.shape[1]
    ea = edge_attr[cg.edge_ids] if edge_attr is not None else None

    def forward(xb: torch.Tensor) -> torch.Tensor:
        b = xb.shape[0]
        offs = (torch.arange(b, device=xb.device) * m).repeat_interleave(n_edges)
        ei = cg.edge_index.repeat(1, b) + offs
        out = model(xb.reshape(b * m, -1), ei, ea.repeat(b, 1) if ea is not None else None)
        out = out.reshape(b, m, -1)[:, cg.root_pos, :]  # [b, B, C]
        return _target_score(out, targets, contrast).sum(1)

    return forward


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                         cells: np.ndarray, targets: np.ndarray, cell_type: np.ndarray,
                         n_cell_types: int, edge_attr: torch.Tensor | None = None,
                         num_hops: int | None = None, n_steps: int = 32, max_steps: int = 512,
                         tolerance: float = 0.01, batch_cells: int = 32,
                         max_floats: int = 2**27, device: torch.device | str = "cpu",
                         project_first_layer: bool = True, progress: bool = True,
                         reference: torch.Tensor | None = None, contrast: int | None = None,
                         reference_index: np.ndarray | None = None) -> IGResult:
    """Integrated gradients of each cell's target score (its class logit, or the log-odds
    against ``contrast``) with respect to the node features of its computation graph.

    ``contrast``: a class index; the explained score is then ``logit[target] −
    logit[contrast]`` (the log-odds of the cell's class against, e.g., the control class:
    what makes it infected rather than mock), and the plain logit for cells whose target is
    that class. A raw logit is also moved by what separates the class from every other
    class (1 dpi from 3 dpi), which a truth defined against the control does not hold.

    Baseline: zeros, or with ``reference [R, G]`` each node's row ``reference[reference_index]``
    (``reference_index [N]`` defaults to the cell type; e.g. :func:`control_reference`, the
    mean control cell of its type, or :func:`donor_control_reference`), so that a gene's
    attribution is ``(x − x_ref) ⊙ ∫ gradient``: what differs from an uninfected cell of
    the same type, rather than everything the cell expresses.

    x ``[N, G]``, edge_index ``[2, E]``, edge_attr ``[E, F]`` or None, cells ``[n]`` node
    ids, targets ``[n]`` class per cell, cell_type ``[N]``. Steps start at ``n_steps`` and
    double (up to ``max_steps``) until the batch's relative completeness error
    ``Σ|Σ attr − Δf| / Σ|Δf|`` is at most ``tolerance``. ``max_floats`` bounds the size of
    one captum step chunk (``steps × nodes × genes``), hence memory.

    ``project_first_layer``: when x enters the model only through linear layers
    ``h_i = x W_iᵀ + b_i`` (checked on the first batch by comparing outputs), IG runs on
    ``x Wᵀ`` with ``W`` the stacked ``W_i`` (H dims instead of G) with captum's un-multiplied
    integrated gradient ``A``, and the gene attribution is recovered exactly as
    ``(x − x₀) ⊙ (A W)`` (chain rule); the same IG, at a fraction of the cost.
    """
    cells = np.asarray(cells, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if cells.size == 0:
        raise CellgnnInputError("no cells selected to explain", field="explain.n_cells / explain.cells_from",
                                fix="select a split subset that holds cells and n_cells >= 1")
    device = torch.device(device)
    model = model.to(device).eval()
    x_dev = x.to(device)
    ea_dev = edge_attr.to(device) if edge_attr is not None else None
    sampler = exact_sampler(model, x, edge_index, ea_dev, cells[:batch_cells], num_hops, device)
    cell_type_t = torch.as_tensor(cell_type, dtype=torch.long, device=device)
    # gradients are needed for the inputs only: freezing the weights saves a third of the work
    ref_dev = reference.to(device=device, dtype=x_dev.dtype) if reference is not None else None
    ref_idx = cell_type_t if reference_index is None else torch.as_tensor(reference_index, dtype=torch.long,
                                                                          device=device)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        return _ig_batches(model, x_dev, ea_dev, sampler, cells, targets, cell_type_t, n_cell_types,
                           n_steps, max_steps, tolerance, batch_cells, max_floats, device,
                           project_first_layer, progress, ref_dev, contrast, ref_idx)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _ig_batches(model, x_dev, ea_dev, sampler, cells, targets, cell_type_t, n_cell_types,
                n_steps, max_steps, tolerance, batch_cells, max_floats, device,
                project_first_layer, progress, ref_dev=None, contrast=None, ref_idx=None) -> IGResult:
    from captum.attr import IntegratedGradients
    from tqdm import tqdm

    n, g = cells.size, x_dev.shape[1]
    attr = np.zeros((n, g), np.float32)
    delta = np.zeros(n, np.float32)
    pred = np.zeros(n, np.int64)
    node_mass = np.zeros((n, n_cell_types), np.float32)
    rows = []
    first = _gene_linears(model, g) if project_first_layer else None
    starts = range(0, n, batch_cells)
    for bi, start in enumerate(tqdm(starts, desc="integrated gradients", disable=not progress)):
        sl = slice(start, start + batch_cells)
        cg = sampler.union(cells[sl])
        cg = CompGraphs(*(t.to(device) for t in (cg.nodes, cg.owner, cg.root_pos, cg.edge_index, cg.edge_ids)))
        tgt = torch.as_tensor(targets[sl], device=device)
        con = None if contrast is None else torch.full_like(tgt, int(contrast))
        xu = x_dev[cg.nodes]  # [M, G]
        x0 = torch.zeros_like(xu) if ref_dev is None else ref_dev[ref_idx[cg.nodes]]
        with torch.no_grad():
            logits = _root_logits(model, xu, cg, ea_dev)
            base = _root_logits(model, x0, cg, ea_dev)
            if bi == 0:
                if first is not None and not _projection_is_exact(model, first, xu, x0, cg, ea_dev, logits, base):
                    LOG.info("the layers %s are not the only use of x: IG runs on the raw features",
                             [name for name, _ in first])
                    first = None
        d = _target_score(logits, tgt, con) - _target_score(base, tgt, con)
        if first is not None:  # IG in the first layer's output space, mapped back to genes exactly
            w = _stacked_weight(first)
            inputs = (xu @ w.T).unsqueeze(0)  # [1, M, H]
            baselines = (x0 @ w.T).unsqueeze(0)
        else:
            inputs, baselines = xu.unsqueeze(0), x0.unsqueeze(0)  # [1, M, G]
        fwd = _union_forward(model, cg, ea_dev, tgt, con)
        chunk = max(1, int(max_floats // max(1, inputs[0].numel())))
        ig = IntegratedGradients(fwd, multiply_by_inputs=first is None)
        steps = n_steps
        while True:
            with _swapped(model, first):
                a = ig.attribute(inputs, baselines=baselines, n_steps=steps, method="gausslegendre",
                                 internal_batch_size=min(chunk, steps))[0].detach()
            if first is not None:
                a = (xu - x0) * (a @ w)  # d f / d x = (d f / d h) W, times x − x0: per node and gene
            per_root = torch.zeros(len(tgt), g, device=device).index_add_(0, cg.owner, a)
            err_abs = (per_root.sum(1) - d).abs()
            rel = (err_abs.sum() / d.abs().sum().clamp(min=1e-12)).item()
            if rel <= tolerance or steps >= max_steps:
                break
            steps *= 2
        if rel > tolerance:
            LOG.warning("batch %d: completeness error %.3g above tolerance %.3g at max_steps=%d",
                        bi, rel, tolerance, max_steps)
        mass = a.abs().sum(1)
        nm = torch.zeros(len(tgt), n_cell_types, device=device)
        nm.index_put_((cg.owner, cell_type_t[cg.nodes]), mass, accumulate=True)
        attr[sl] = per_root.cpu().numpy()
        delta[sl] = d.cpu().numpy()
        pred[sl] = logits.argmax(1).cpu().numpy()
        node_mass[sl] = nm.cpu().numpy()
        rows.append({"batch": bi, "n_cells": len(tgt), "n_nodes": int(cg.nodes.numel()), "n_steps": steps,
                     "space": "first_layer" if first is not None else "features",
                     "completeness_rel_error": rel, "completeness_max_abs_error": err_abs.max().item(),
                     "mean_abs_delta": d.abs().mean().item()})
    return IGResult(cells, targets, attr, delta, pred, node_mass, pd.DataFrame(rows))


class _SliceBias(torch.nn.Module):
    """Stand-in for a linear layer whose product ``x Wᵀ`` is precomputed as columns
    ``[start, stop)`` of the model's input: selects them and adds the bias."""

    def __init__(self, bias: torch.Tensor | None, start: int, stop: int):
        super().__init__()
        self.bias, self.start, self.stop = bias, start, stop

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        u = u[..., self.start:self.stop]
        return u if self.bias is None else u + self.bias


def _gene_linears(model: torch.nn.Module, n_genes: int):
    """``[(name, module), ...]``: every ``nn.Linear`` leaf reading ``n_genes`` inputs (the
    layers that can take x directly), or None when there is none."""
    found = []
    for name, mod in model.named_modules():
        w = getattr(mod, "weight", None)
        if name and not list(mod.children()) and isinstance(w, torch.Tensor) and w.dim() == 2 \
                and w.shape[1] == n_genes and type(mod).__name__ == "Linear":
            found.append((name, mod))
    return found or None


def _stacked_weight(first) -> torch.Tensor:
    """The layers' weights stacked: ``[Σ H_i, G]``."""
    return torch.cat([lin.weight.detach() for _, lin in first], 0)


@contextlib.contextmanager
def _swapped(model: torch.nn.Module, first):
    """Replace each linear layer of ``first`` by its slice of the stacked ``x Wᵀ`` plus its bias
    (inputs are then ``x Wᵀ``); no-op for None."""
    if first is None:
        yield
        return
    saved, start = [], 0
    for name, lin in first:
        parent = model.get_submodule(name.rpartition(".")[0])
        attr_name = name.rpartition(".")[2]
        stop = start + lin.weight.shape[0]
        setattr(parent, attr_name, _SliceBias(lin.bias.detach() if lin.bias is not None else None, start, stop))
        saved.append((parent, attr_name, lin))
        start = stop
    try:
        yield
    finally:
        for parent, attr_name, lin in saved:
            setattr(parent, attr_name, lin)


def _projection_is_exact(model, first, xu, x0, cg, ea, logits, base) -> bool:
    """True when feeding ``x Wᵀ`` to the model with the layers swapped out gives the same
    outputs (i.e. x is used only through them), at x and at the baseline x0."""
    w = _stacked_weight(first)
    try:
        with _swapped(model, first):
            l2 = _root_logits(model, xu @ w.T, cg, ea)
            b2 = _root_logits(model, x0 @ w.T, cg, ea)
    except (RuntimeError, ValueError, IndexError):
        return False
    tol = 1e-4 * max(1.0, logits.abs().max().item())
    return bool((l2 - logits).abs().max() <= tol and (b2 - base).abs().max() <= tol)


def control_reference(x: torch.Tensor, y: np.ndarray, cell_type: np.ndarray, mask: np.ndarray,
                      control: int, n_cell_types: int) -> torch.Tensor:
    """IG reference ``[T, G]``: per cell type, the mean features of the ``mask`` cells of class
    ``control``; a type without such cells gets the mean over all of them."""
    sel = mask & (y == control)
    if not sel.any():
        raise CellgnnInputError("no cells of the control class among the cells given", field="explain.de_control",
                                fix="name a class with training cells, or set explain.ig.baseline: zeros")
    xs = x[torch.as_tensor(sel)].double().numpy()
    means, counts = class_means(xs, cell_type[sel], n_cell_types)
    means[counts == 0] = xs.mean(0)
    return torch.as_tensor(means, dtype=x.dtype)


def donor_control_reference(x: torch.Tensor, y: np.ndarray, cell_type: np.ndarray, donor: np.ndarray,
                            control: int, n_cell_types: int, fallback: torch.Tensor,
                            min_cells: int = 3) -> tuple[torch.Tensor, np.ndarray]:
    """IG reference per donor and cell type: the mean features of that donor's control cells
    of the type (any split: a held-out donor is compared with its own control, not with
    other donors' batch effects); ``fallback [T, G]`` (e.g. :func:`control_reference`) where
    a donor has fewer than ``min_cells`` such cells. Returns ``reference [D·T, G]`` and each
    node's row ``[N]`` (``donor · T + cell_type``)."""
    n_donors = int(donor.max()) + 1
    rows = fallback.repeat(n_donors, 1).double()
    key = donor.astype(np.int64) * n_cell_types + cell_type
    sel = y == control
    means, counts = class_means(x[torch.as_tensor(sel)].double().numpy(), key[sel], n_donors * n_cell_types)
    ok = counts >= min_cells
    rows[torch.as_tensor(ok)] = torch.as_tensor(means[ok])
    return rows.to(x.dtype), key


def _root_logits(model, xu: torch.Tensor, cg: CompGraphs, edge_attr) -> torch.Tensor:
    ea = edge_attr[cg.edge_ids] if edge_attr is not None else None
    return model(xu, cg.edge_index, ea)[cg.root_pos]


# ----------------------------------------------------------------------------- other methods

def first_layer_weights(model: torch.nn.Module, n_genes: int) -> tuple[np.ndarray, str]:
    """The study's weight-magnitude ranking: ``max |W[:, g]|`` over the first layer's outputs.

    Returns ``(scores [G], parameter name)``; the first layer is the first 2-D parameter
    whose input dimension is ``n_genes`` (for a GAT: the heads × units projection), or the
    model's own ``first_layer_weight()`` when it has one.
    """
    if hasattr(model, "first_layer_weight"):
        w = model.first_layer_weight()
        if w.dim() == 2 and w.shape[1] == n_genes:
            return w.detach().abs().amax(0).cpu().numpy().astype(np.float32), "first_layer_weight()"
    for name, p in model.named_parameters():
        if p.dim() == 2 and p.shape[1] == n_genes and "attention" not in name:
            return p.detach().abs().amax(0).cpu().numpy().astype(np.float32), name
    raise CellgnnInputError(f"no first-layer weight with input dimension {n_genes} in the model",
                            field="explain.model", fix="explain a model whose first layer reads the genes")


def edge_group_weights(model: torch.nn.Module, n_edge_features: int,
                       groups: dict[str, list[int]]) -> tuple[dict[str, float], str]:
    """Weight-based edge-feature group importance: mean |W| of the first layer reading the
    ``F`` edge features, per group, min–max normalised to [0, 1] across groups (as the study)."""
    for name, p in model.named_parameters():
        if p.dim() == 2 and p.shape[1] == n_edge_features:
            w = p.detach().abs().mean(0).cpu().numpy()
            raw = {grp: float(w[idx].mean()) for grp, idx in groups.items()}
            lo, hi = min(raw.values()), max(raw.values())
            return {grp: (v - lo) / (hi - lo) if hi > lo else 1.0 for grp, v in raw.items()}, name
    raise CellgnnInputError(f"no layer with input dimension {n_edge_features} (edge features) in the model",
                            field="explain.edge_model", fix="name a model trained with edge features")


def gnnexplainer_masks(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                       cells: np.ndarray, targets: np.ndarray, edge_attr: torch.Tensor | None = None,
                       num_hops: int | None = None, epochs: int = 200, lr: float = 0.01,
                       seed: int = 0, device: torch.device | str = "cpu",
                       progress: bool = True) -> tuple[np.ndarray, pd.DataFrame]:
    """GNNExplainer (PyG ``Explainer``) on each cell's k-hop subgraph.

    Returns ``(feature masks [n, G], edges)``: one gene mask per cell (shared by the nodes
    of its subgraph, ``common_attributes``) and a table ``cell, source, target, mask`` of
    the edge mask (original node ids). Coefficients are PyG's defaults, which are the
    study's (edge_size 0.005, node_feat_size 1, edge_ent 1, node_feat_ent 0.1).
    """
    from torch_geometric.explain import Explainer
    from torch_geometric.explain.algorithm import GNNExplainer
    from tqdm import tqdm

    cells = np.asarray(cells, dtype=np.int64)
    if cells.size == 0:
        raise CellgnnInputError("no cells selected for GNNExplainer", field="explain.gnnexplainer.cells_per_class",
                                fix="set cells_per_class >= 1 and check the subset holds cells")
    device = torch.device(device)
    model = model.to(device).eval()
    sampler = exact_sampler(model, x, edge_index, edge_attr.to(device) if edge_attr is not None else None,
                            cells, num_hops, device)
    explainer = Explainer(model=model, algorithm=GNNExplainer(epochs=epochs, lr=lr),
                          explanation_type="phenomenon", node_mask_type="common_attributes",
                          edge_mask_type="object",
                          model_config=dict(mode="multiclass_classification", task_level="node", return_type="raw"))
    masks = np.zeros((cells.size, x.shape[1]), np.float32)
    edges = []
    for i, (cell, tgt) in enumerate(tqdm(list(zip(cells, targets)), desc="GNNExplainer", disable=not progress)):
        torch.manual_seed(seed + i)
        cg = sampler.union(np.array([cell]))
        xs = x[cg.nodes].to(device)
        ea = edge_attr[cg.edge_ids].to(device) if edge_attr is not None else None
        kwargs = {"edge_attr": ea} if ea is not None else {}
        exp = explainer(xs, cg.edge_index.to(device), target=torch.full((xs.shape[0],), int(tgt), device=device),
                        index=int(cg.root_pos[0]), **kwargs)
        masks[i] = exp.node_mask.detach().reshape(-1, x.shape[1])[0].cpu().numpy()
        nodes = cg.nodes.numpy()
        em = exp.edge_mask.detach().cpu().numpy()
        edges.append(pd.DataFrame({"cell": cell, "source": nodes[cg.edge_index[0].numpy()],
                                   "target": nodes[cg.edge_index[1].numpy()], "mask": em}))
    return masks, pd.concat(edges, ignore_index=True)


def de_scores(x: np.ndarray, labels: np.ndarray, classes: list[str], genes: list[str],
              min_cells: int = 3, reference: str = "rest") -> dict[str, np.ndarray]:
    """Wilcoxon rank-sum z-scores of each class against ``reference`` (``rest`` = all other
    cells, or a control class such as ``mock``), with scanpy ``rank_genes_groups``.

    x ``[n, G]`` (any monotone transform of expression: ranks are what count), labels
    ``[n]`` class indices. Returns class name → scores ``[G]`` in gene order; classes with
    fewer than ``min_cells`` cells (or too small a reference) are left out.
    """
    import anndata as ad
    import scanpy as sc

    counts = np.bincount(labels, minlength=len(classes))
    if reference == "rest":
        groups = [c for i, c in enumerate(classes) if counts[i] >= min_cells and counts.sum() - counts[i] >= min_cells]
    else:
        if reference not in classes:
            raise CellgnnInputError(f"unknown reference class '{reference}'", field="explain.de_control",
                                    fix=f"use one of {classes} or 'rest'")
        if counts[classes.index(reference)] < min_cells:
            return {}
        groups = [c for i, c in enumerate(classes) if c != reference and counts[i] >= min_cells]
    if not groups:
        return {}
    a = ad.AnnData(X=np.asarray(x, dtype=np.float32),
                   obs=pd.DataFrame({"label": pd.Categorical(np.asarray(classes)[labels])}, index=[str(i) for i in range(len(labels))]),
                   var=pd.DataFrame(index=genes))
    sc.tl.rank_genes_groups(a, "label", groups=groups, reference=reference, method="wilcoxon",
                            n_genes=len(genes), use_raw=False, tie_correct=True)
    res = a.uns["rank_genes_groups"]
    out = {}
    gene_pos = {gname: i for i, gname in enumerate(genes)}
    for c in groups:
        s = np.zeros(len(genes), np.float32)
        names, scores = res["names"][c], res["scores"][c]
        s[[gene_pos[n] for n in names]] = np.nan_to_num(np.asarray(scores, dtype=np.float32))
        out[c] = s
    return out


# ----------------------------------------------------------------------------- scoring

def ground_truth_sets(truth: dict, genes: list[str], classes: list[str]) -> tuple[dict, dict]:
    """Planted genes per class and per (class, cell type), restricted to the model's genes.

    truth: ``uns["ground_truth"]`` (equal-length arrays ``class, cell_type, gene,
    log2_fold_change``). Returns ``(by_class, by_class_cell_type)`` of gene-name sets. A
    class's set holds the genes planted in every cell type of the class (its shared
    response programme); genes that respond in one cell type only are scored in the
    (class, cell type) sets, since a single ranking for the whole class cannot rank a gene
    that responds in a sixth of its cells among the genes that respond in all of them.
    """
    need = {"class", "cell_type", "gene", "log2_fold_change"}
    if not need <= set(truth):
        raise CellgnnInputError(f"ground truth lacks {sorted(need - set(truth))}", field='uns["ground_truth"]',
                                fix="regenerate the simulated data with cellgnn.data")
    df = pd.DataFrame({k: np.asarray(truth[k]).astype(str) for k in ("class", "cell_type", "gene")})
    unknown = sorted(set(df["class"]) - set(classes))
    if unknown:
        LOG.warning("ground-truth classes not among the model's classes, ignored: %s", unknown)
    gene_set = set(genes)
    n_lost = (~df["gene"].isin(gene_set)).sum()
    if n_lost:
        LOG.info("%d ground-truth rows name genes not among the model's features (filtered upstream)", n_lost)
    df = df[df["gene"].isin(gene_set) & df["class"].isin(classes)]
    by_ct = {k: set(g["gene"]) for k, g in df.groupby(["class", "cell_type"])}
    by_class = {c: set.intersection(*(set(gg["gene"]) for _, gg in g.groupby("cell_type")))
                for c, g in df.groupby("class")}
    return by_class, by_ct


def precision_at_k(scores: np.ndarray, truth_mask: np.ndarray, k: int | None = None) -> float:
    """Fraction of the ``k`` top-scoring genes (ties broken by gene order) that are planted;
    ``k`` defaults to the number of planted genes."""
    k = int(truth_mask.sum()) if k is None else k
    if k == 0:
        return float("nan")
    top = np.argsort(-scores, kind="stable")[:k]
    return float(truth_mask[top].mean())


def average_precision(scores: np.ndarray, truth_mask: np.ndarray) -> float:
    """Area under the precision–recall curve (average precision) of ranking genes by score."""
    from sklearn.metrics import average_precision_score

    if truth_mask.sum() == 0:
        return float("nan")
    return float(average_precision_score(truth_mask.astype(int), scores))


def score_rankings(rankings: pd.DataFrame, genes: list[str], truth_by_class: dict[str, set]) -> pd.DataFrame:
    """Score class-level rankings against the planted genes.

    rankings: long table ``method, seed, class, gene_index, score`` holding full rankings
    (class ``all`` = class-agnostic method, scored against every class). Returns
    ``method, class, precision_at_k, auprc, k, seed``.
    """
    rows = []
    g = len(genes)
    gene_idx = {n: i for i, n in enumerate(genes)}
    for (method, seed, cls), grp in rankings.groupby(["method", "seed", "class"], dropna=False, sort=True):
        s = np.full(g, -np.inf, np.float64)
        s[grp["gene_index"].to_numpy()] = grp["score"].to_numpy()
        targets = truth_by_class if cls == CLASS_AGNOSTIC else {cls: truth_by_class[cls]} if cls in truth_by_class else {}
        for c, gs in targets.items():
            mask = np.zeros(g, bool)
            mask[[gene_idx[n] for n in gs]] = True
            rows.append({"method": method, "class": c, "precision_at_k": precision_at_k(s, mask),
                         "auprc": average_precision(np.nan_to_num(s, neginf=-1e30), mask), "k": int(mask.sum()),
                         "seed": seed})
    return pd.DataFrame(rows, columns=["method", "class", "precision_at_k", "auprc", "k", "seed"])


def interval95(values) -> tuple[float, float, float]:
    """Mean and 95% t-interval over seeds; a single value has a zero-width interval."""
    from scipy import stats

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=float)
    if v.size == 0:
        return float("nan"), float("nan"), float("nan")
    m = float(v.mean())
    if v.size < 2 or v.std() == 0:
        return m, m, m
    h = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - h, m + h


def _seed_means(scores: pd.DataFrame, columns=("precision_at_k", "auprc")) -> pd.DataFrame:
    """Mean of ``columns`` over classes per seed (one row for a deterministic method)."""
    return scores.groupby("seed", dropna=False)[list(columns)].mean()


def summarize_scores(scores: pd.DataFrame) -> pd.DataFrame:
    """Per method: mean over classes per seed, then mean and 95% interval over seeds."""
    rows = []
    for method, grp in scores.groupby("method", sort=False):
        per_seed = _seed_means(grp)
        p = interval95(per_seed["precision_at_k"])
        a = interval95(per_seed["auprc"])
        rows.append({"method": method, "n_seeds": len(per_seed), "seeds": " ".join(map(str, per_seed.index)),
                     "precision_at_k": p[0], "precision_at_k_low": p[1], "precision_at_k_high": p[2],
                     "auprc": a[0], "auprc_low": a[1], "auprc_high": a[2]})
    return pd.DataFrame(rows).sort_values("precision_at_k", ascending=False, ignore_index=True)


def method_margins(scores: pd.DataFrame, method: str, others: list[str]) -> pd.DataFrame:
    """Precision@k of ``method`` minus each of ``others``, paired by model seed.

    scores: ``ground_truth_scores.csv``. Each method's score per seed is its mean over
    classes; a deterministic method (empty seed) is one value, set against every seed of
    the other. Returns ``other, n_seeds, diff, low, high`` (mean and 95% t-interval).
    """
    a = _seed_means(scores[scores["method"] == method], ["precision_at_k"])["precision_at_k"]
    rows = []
    for other in others:
        b = _seed_means(scores[scores["method"] == other], ["precision_at_k"])["precision_at_k"]
        if other == method or a.empty or b.empty:
            continue
        if len(a) == 1 or len(b) == 1:
            d = (a.to_numpy()[:, None] - b.to_numpy()[None, :]).ravel()
        else:
            common = a.index.intersection(b.index)
            d = (a[common] - b[common]).to_numpy()
        mean, low, high = interval95(d)
        rows.append({"other": other, "n_seeds": len(d), "diff": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=["other", "n_seeds", "diff", "low", "high"])


# ----------------------------------------------------------------------------- aggregation

def class_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values [n, G]`` per group id in ``groups [n]``: ``([n_groups, G], counts [n_groups])``."""
    sums = np.zeros((n_groups, values.shape[1]), np.float64)
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=n_groups)
    return sums / np.maximum(counts, 1)[:, None], counts


def long_scores(method: str, seed, cls: str, cell_type: str, scores: np.ndarray) -> pd.DataFrame:
    """One ranking as a long table (``method, seed, class, cell_type, gene_index, score``)."""
    return pd.DataFrame({"method": method, "seed": seed, "class": cls, "cell_type": cell_type,
                         "gene_index": np.arange(scores.size), "score": scores.astype(np.float64)})


def top_genes_table(rankings: pd.DataFrame, genes: list[str], top_k: int) -> pd.DataFrame:
    """``genes.csv``: score averaged over seeds, top ``top_k`` genes per method × class × cell type."""
    mean = (rankings.groupby(["method", "class", "cell_type", "gene_index"], sort=False)["score"].mean()
            .reset_index())
    mean["rank"] = mean.groupby(["method", "class", "cell_type"])["score"].rank(ascending=False, method="first").astype(int)
    out = mean[mean["rank"] <= top_k].copy()
    out["gene"] = np.asarray(genes)[out["gene_index"].to_numpy()]
    return out.sort_values(["method", "class", "cell_type", "rank"])[
        ["method", "class", "cell_type", "gene", "score", "rank"]].reset_index(drop=True)


def select_cells(mask: np.ndarray, y: np.ndarray, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """Node ids to explain: all cells of ``mask``, or ``n_cells`` of them drawn stratified by class."""
    idx = np.flatnonzero(mask)
    if idx.size == 0:
        raise CellgnnInputError("the selected subset holds no cells", field="explain.cells_from",
                                fix="choose train, val, test or all")
    if n_cells <= 0 or n_cells >= idx.size:
        return idx
    # proportional allocation, at least one per class present
    classes, counts = np.unique(y[idx], return_counts=True)
    take = np.maximum(1, np.floor(counts / counts.sum() * n_cells)).astype(int)
    chosen = [rng.choice(idx[y[idx] == c], size=min(t, n), replace=False) for c, t, n in zip(classes, take, counts)]
    return np.sort(np.concatenate(chosen))


def per_cell_type_accuracy(pred: np.ndarray, y: np.ndarray, cell_type: np.ndarray,
                           cell_types: list[str]) -> pd.DataFrame:
    """Accuracy of ``pred`` against ``y`` per cell type: ``cell_type, n_cells, accuracy``."""
    rows = []
    for t, name in enumerate(cell_types):
        m = cell_type == t
        if m.any():
            rows.append({"cell_type": name, "n_cells": int(m.sum()), "accuracy": float((pred[m] == y[m]).mean())})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- edge features

def read_ablation(path: str | Path, split: str | None = None) -> pd.DataFrame | None:
    """Edge-feature group importance by ablation from the evaluation stage's ``ablation.csv``.

    The evaluation stage writes one row per split × group with ``mean_diff`` = metric of
    the model retrained without the group − metric of the full model (``ci_low``,
    ``ci_high``: its 95% interval over seeds); importance = −mean_diff (positive: the
    group helped). Rows of ``split`` only, when the table has a ``split`` column. Also
    accepted: per-run rows with ``group`` (``none`` = full model) and ``macro_f1`` /
    ``accuracy``. Returns ``group, importance, low, high, metric`` or None when absent.
    """
    path = Path(path)
    if not path.exists():
        return None
    df = pd.read_csv(path)
    if "group" not in df.columns:
        raise CellgnnInputError("no group column", file=str(path), field="group",
                                fix="write ablation.csv with a 'group' column naming the left-out group")
    if split is not None and "split" in df.columns:
        df = df[df["split"] == split]
    if "mean_diff" in df.columns:
        metric = str(df["metric"].iloc[0]) if "metric" in df.columns and len(df) else "metric"
        low = -df["ci_high"] if "ci_high" in df.columns else -df["mean_diff"]
        high = -df["ci_low"] if "ci_low" in df.columns else -df["mean_diff"]
        return pd.DataFrame({"group": df["group"].astype(str).to_numpy(), "importance": -df["mean_diff"].to_numpy(),
                             "low": low.to_numpy(), "high": high.to_numpy(), "metric": metric})
    metric = next((c for c in ("macro_f1", "balanced_accuracy", "accuracy") if c in df.columns), None)
    if metric is None:
        raise CellgnnInputError("no metric column", file=str(path), field="mean_diff",
                                fix="write ablation.csv with mean_diff, or macro_f1 / accuracy per group")
    groups = df["group"].fillna("none").astype(str)
    full = groups.str.lower().isin({"none", "full", "", "all"})
    if not full.any():
        raise CellgnnInputError("no row for the full model", file=str(path), field="group",
                                fix="add rows with group 'none' for the model with every group")
    ref = df.loc[full, metric].mean()
    abl = df[~full].groupby(groups[~full])[metric].mean()
    imp = (ref - abl).to_numpy()
    return pd.DataFrame({"group": abl.index, "importance": imp, "low": imp, "high": imp, "metric": metric})


# ----------------------------------------------------------------------------- checks

def resolve_classes(requested: list[str] | None, classes: list[str]) -> list[str]:
    """Classes to explain: all by default; unknown names are an error."""
    if not requested:
        return list(classes)
    unknown = [c for c in requested if c not in classes]
    if unknown:
        raise CellgnnInputError(f"unknown class(es) {unknown}; the graph's classes are {classes}",
                                field="explain.classes", fix="use class names from the data's label column")
    return list(requested)


# ----------------------------------------------------------------------------- the stage

METHODS = ("integrated_gradients", "weights", "attention", "gnnexplainer", "de", "de_control", "random")


@dataclass
class ExplainInputs:
    """What the explain stage reads. ``models`` / ``attention_models`` / ``edge_models``:
    seed → checkpoint path; ``load_model(path, graph) -> nn.Module`` builds a model from a
    checkpoint and raises ``CellgnnInputError`` when it does not fit the graph."""

    graph: dict
    graph_path: str
    truth: dict | None
    models: dict[int, str]
    load_model: Callable
    attention_models: dict[int, str] = field(default_factory=dict)
    edge_models: dict[int, str] = field(default_factory=dict)
    edge_features: dict | None = None
    ablation_path: str | None = None


def run_explain(inp: ExplainInputs, out_dir: str | Path, params: dict, device: torch.device | str = "cpu") -> dict:
    """Run every configured method, aggregate, score against the truth and write the tables.

    ``params`` is the config's ``explain`` section. Writes under ``out_dir``: ``genes.csv``,
    ``ground_truth_scores.csv`` (+ ``_by_cell_type``), ``scores_summary.csv``,
    ``cell_types.csv``, ``ig_completeness.csv``, ``gnnexplainer_edges.csv``,
    ``edge_features.csv``, ``run.json``. Returns the run summary written to ``run.json``.
    """
    from .io import write_csv, write_json

    out_dir = Path(out_dir)
    g = inp.graph
    methods = list(params.get("methods", METHODS))
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise CellgnnInputError(f"unknown method(s) {unknown}", field="explain.methods", fix=f"use some of {list(METHODS)}")
    classes, genes, cell_types = list(g["classes"]), list(g["genes"]), list(g["cell_types"])
    explain_classes = resolve_classes(params.get("classes"), classes)
    x, y = g["x"].float(), g["y"].numpy()
    ct = g["cell_type"].numpy()
    subset = params.get("cells_from", "test")
    masks = {"train": g["train_mask"], "val": g["val_mask"], "test": g["test_mask"],
             "all": torch.ones_like(g["train_mask"])}
    if subset not in masks:
        raise CellgnnInputError(f"unknown subset '{subset}'", field="explain.cells_from", fix="use train, val, test or all")
    keep = masks[subset].numpy() & np.isin(y, [classes.index(c) for c in explain_classes])
    rng = np.random.default_rng(int(params.get("seed", 0)))
    cells = select_cells(keep, y, int(params.get("n_cells", 0)), rng)
    if not inp.models and any(m in methods for m in ("integrated_gradients", "weights", "gnnexplainer")):
        raise CellgnnInputError("no trained model checkpoint to explain", field="explain.model",
                                fix="train the model named in explain.model first (rule train)")
    notes: list[str] = []
    rankings: list[pd.DataFrame] = []
    ct_rows: list[pd.DataFrame] = []
    completeness: list[pd.DataFrame] = []
    gx_edges: list[pd.DataFrame] = []
    edge_rows: list[pd.DataFrame] = []
    min_cells = int(params.get("min_cells_per_group", 3))
    edge_attr = inp.edge_features["edge_attr"].float() if inp.edge_features is not None else None
    LOG.info("explaining %d %s cells of %d classes with %s", cells.size, subset, len(explain_classes), methods)
    ig_p = params.get("ig", {}) or {}
    control = params.get("de_control", "mock")
    ctrl = classes.index(control) if control in classes else None
    ig_reference = ig_reference_index = ig_contrast = None
    if "integrated_gradients" in methods:
        baseline, target = ig_p.get("baseline", "control_donor"), ig_p.get("target", "contrast")
        uses_control = baseline in ("control", "control_donor")
        if uses_control and ctrl is None:
            notes.append(f"integrated_gradients: control class '{control}' (explain.de_control) not among the "
                         "classes; zero baseline used")
        elif uses_control:
            ig_reference = control_reference(x, y, ct, g["train_mask"].numpy(), ctrl, len(cell_types))
            if baseline == "control_donor":
                ig_reference, ig_reference_index = donor_control_reference(
                    x, y, ct, g["donor"].numpy(), ctrl, len(cell_types), ig_reference, min_cells)
        if target == "contrast" and ctrl is None:
            notes.append(f"integrated_gradients: control class '{control}' not among the classes; the class "
                         "logit is explained instead of its log-odds against the control")
        elif target == "contrast":
            ig_contrast = ctrl

    for seed, path in sorted(inp.models.items()):
        model = inp.load_model(path, g)
        ea = edge_attr  # models without edge features ignore it
        hops = params.get("num_hops") or None
        if "integrated_gradients" in methods:
            res = integrated_gradients(model, x, g["edge_index"], cells, y[cells], ct, len(cell_types),
                                       edge_attr=ea, num_hops=hops, n_steps=int(ig_p.get("n_steps", 32)),
                                       max_steps=int(ig_p.get("max_steps", 512)),
                                       tolerance=float(ig_p.get("tolerance", 0.01)),
                                       batch_cells=int(ig_p.get("batch_cells", 32)), device=device,
                                       reference=ig_reference, contrast=ig_contrast,
                                       reference_index=ig_reference_index)
            completeness.append(res.batches.assign(seed=seed))
            rankings += _group_rankings("integrated_gradients", seed, res.attr, y[cells], ct[cells],
                                        classes, cell_types, explain_classes, min_cells)
            ct_rows.append(_cell_type_table(res, y, ct, classes, cell_types, explain_classes, seed))
        if "weights" in methods:
            w, name = first_layer_weights(model, len(genes))
            LOG.info("seed %s: weight magnitudes from %s", seed, name)
            rankings.append(long_scores("weights", seed, CLASS_AGNOSTIC, CLASS_AGNOSTIC, w))
        if "gnnexplainer" in methods:
            gp = params.get("gnnexplainer", {})
            sel = _per_class_sample(cells, y, explain_classes, classes, int(gp.get("cells_per_class", 3)),
                                    np.random.default_rng(int(params.get("seed", 0))))
            fm, edges = gnnexplainer_masks(model, x, g["edge_index"], sel, y[sel], edge_attr=ea, num_hops=hops,
                                           epochs=int(gp.get("epochs", 200)), lr=float(gp.get("lr", 0.01)),
                                           seed=int(seed), device=device)
            gx_edges.append(edges.assign(seed=seed))
            rankings += _group_rankings("gnnexplainer", seed, fm, y[sel], ct[sel], classes, cell_types,
                                        explain_classes, 1, by_cell_type=False)
    if "attention" in methods:
        if not inp.attention_models:
            notes.append("attention: no trained attention model (explain.attention_model) found; skipped")
        from .models.scanna import salient_genes
        for seed, path in sorted(inp.attention_models.items()):
            model = inp.load_model(path, g)
            if not hasattr(model, "gene_attention"):
                raise CellgnnInputError("the attention model has no gene attention", file=path,
                                        field="explain.attention_model", fix="name an scANNA-style model (scanna)")
            yc, ctc = torch.as_tensor(y[cells]), ct[cells]
            # attention a class gets beyond what the control class gets (as de_control and IG's contrast)
            ref = ctrl if ctrl is not None else "rest"
            att = salient_genes(model.cpu(), x[cells], yc, reference=ref)
            for c in explain_classes:
                rankings.append(long_scores("attention", seed, c, CLASS_AGNOSTIC, att[classes.index(c)].numpy()))
            for t, tname in enumerate(cell_types):
                m = ctc == t
                if m.sum() < min_cells:
                    continue
                att_t = salient_genes(model.cpu(), x[cells][m], yc[m], reference=ref)
                for c in explain_classes:
                    if (yc[m] == classes.index(c)).sum() >= min_cells:
                        rankings.append(long_scores("attention", seed, c, tname, att_t[classes.index(c)].numpy()))
    if "de" in methods:
        tr = g["train_mask"].numpy()
        de = de_scores(x[tr].numpy(), y[tr], classes, genes)
        rankings += [long_scores("de", "", c, CLASS_AGNOSTIC, s) for c, s in de.items() if c in explain_classes]
        for t, tname in enumerate(cell_types):
            m = tr & (ct == t)
            if len(cell_types) > 1 and m.sum() >= 2 * min_cells:
                de_t = de_scores(x[m].numpy(), y[m], classes, genes, min_cells=min_cells)
                rankings += [long_scores("de", "", c, tname, s) for c, s in de_t.items() if c in explain_classes]
    if "de_control" in methods and control not in classes:
        notes.append(f"de_control: control class '{control}' not among the classes; skipped")
    elif "de_control" in methods:
        tr = g["train_mask"].numpy()
        de = de_scores(x[tr].numpy(), y[tr], classes, genes, reference=control)
        rankings += [long_scores("de_control", "", c, CLASS_AGNOSTIC, s) for c, s in de.items() if c in explain_classes]
        for t, tname in enumerate(cell_types):
            m = tr & (ct == t)
            if len(cell_types) > 1 and m.sum() >= 2 * min_cells:
                de_t = de_scores(x[m].numpy(), y[m], classes, genes, min_cells=min_cells, reference=control)
                rankings += [long_scores("de_control", "", c, tname, s) for c, s in de_t.items()
                             if c in explain_classes]
    if "random" in methods:
        seeds = sorted(inp.models) or [0]
        for seed in seeds:
            r = np.random.default_rng(10_000 + int(seed)).random(len(genes))
            rankings.append(long_scores("random", seed, CLASS_AGNOSTIC, CLASS_AGNOSTIC, r))
    edge_rows += _edge_feature_importance(inp, notes)

    all_rank = pd.concat(rankings, ignore_index=True)
    write_csv(top_genes_table(all_rank, genes, int(params.get("top_k", 50))), out_dir / "genes.csv")
    scores = pd.DataFrame(columns=["method", "class", "precision_at_k", "auprc", "k", "seed"])
    summary = pd.DataFrame()
    if inp.truth is not None:
        by_class, by_ct = ground_truth_sets(inp.truth, genes, explain_classes)
        cls_rank = all_rank[all_rank["cell_type"] == CLASS_AGNOSTIC]
        scores = score_rankings(cls_rank, genes, by_class)
        summary = summarize_scores(scores)
        ct_scores = []
        for (c, t), gs in by_ct.items():
            sub = all_rank[(all_rank["cell_type"] == t) & (all_rank["class"] == c)]
            if not sub.empty:
                ct_scores.append(score_rankings(sub, genes, {c: gs}).assign(cell_type=t))
        write_csv(pd.concat(ct_scores, ignore_index=True) if ct_scores else
                  pd.DataFrame(columns=list(scores.columns) + ["cell_type"]),
                  out_dir / "ground_truth_scores_by_cell_type.csv")
    else:
        notes.append("no ground truth in the data (not simulated): gene rankings are not scored")
        write_csv(pd.DataFrame(columns=list(scores.columns) + ["cell_type"]), out_dir / "ground_truth_scores_by_cell_type.csv")
    write_csv(scores, out_dir / "ground_truth_scores.csv")
    write_csv(summary, out_dir / "scores_summary.csv")
    write_csv(pd.concat(ct_rows, ignore_index=True) if ct_rows else
              pd.DataFrame(columns=["seed", "class", "cell_type", "n_cells", "accuracy", "attribution_share"]),
              out_dir / "cell_types.csv")
    write_csv(pd.concat(completeness, ignore_index=True) if completeness else pd.DataFrame(columns=["seed", "batch"]),
              out_dir / "ig_completeness.csv")
    write_csv(pd.concat(gx_edges, ignore_index=True) if gx_edges else
              pd.DataFrame(columns=["cell", "source", "target", "mask", "seed"]), out_dir / "gnnexplainer_edges.csv")
    write_csv(pd.concat(edge_rows, ignore_index=True) if edge_rows else
              pd.DataFrame(columns=["method", "seed", "group", "importance", "low", "high"]),
              out_dir / "edge_features.csv")
    run = {"methods": methods, "cells_from": subset, "n_cells": int(cells.size), "classes": explain_classes,
           "model_seeds": sorted(int(s) for s in inp.models), "graph": inp.graph_path, "notes": notes,
           "summary": summary.to_dict(orient="records")}
    write_json(run, out_dir / "run.json")
    for n in notes:
        LOG.info("note: %s", n)
    return run


def _per_class_sample(cells, y, explain_classes, classes, n_per_class, rng) -> np.ndarray:
    out = []
    for c in explain_classes:
        pool = cells[y[cells] == classes.index(c)]
        if pool.size:
            out.append(rng.choice(pool, size=min(n_per_class, pool.size), replace=False))
    return np.sort(np.concatenate(out)) if out else np.array([], dtype=np.int64)


def _group_rankings(method, seed, values, yc, ctc, classes, cell_types, explain_classes, min_cells,
                    by_cell_type=True) -> list[pd.DataFrame]:
    """Mean per class (cell_type ``all``) and per cell type × class of per-cell scores ``values [n, G]``."""
    out = []
    for c in explain_classes:
        m = yc == classes.index(c)
        if m.sum() >= min_cells:
            out.append(long_scores(method, seed, c, CLASS_AGNOSTIC, values[m].mean(0)))
        if by_cell_type and len(cell_types) > 1:
            for t, tname in enumerate(cell_types):
                mt = m & (ctc == t)
                if mt.sum() >= min_cells:
                    out.append(long_scores(method, seed, c, tname, values[mt].mean(0)))
    return out


def _cell_type_table(res: IGResult, y, ct, classes, cell_types, explain_classes, seed) -> pd.DataFrame:
    """Per class × cell type: accuracy on the explained cells, the share of |IG| mass coming
    from nodes of each cell type (which cell types carry the signal), and the mean
    per-cell |attribution| of the cell type's own cells."""
    yc, ctc = y[res.cells], ct[res.cells]
    rows = []
    for c in [CLASS_AGNOSTIC] + list(explain_classes):
        m = np.ones_like(yc, bool) if c == CLASS_AGNOSTIC else yc == classes.index(c)
        if not m.any():
            continue
        mass = res.node_mass[m].sum(0)
        share = mass / max(mass.sum(), 1e-12)
        for t, tname in enumerate(cell_types):
            mt = m & (ctc == t)
            rows.append({"seed": seed, "class": c, "cell_type": tname, "n_cells": int(mt.sum()),
                         "accuracy": float((res.pred[mt] == yc[mt]).mean()) if mt.any() else float("nan"),
                         "attribution_share": float(share[t]),
                         "mean_abs_attribution": float(np.abs(res.attr[mt]).sum(1).mean()) if mt.any() else float("nan")})
    return pd.DataFrame(rows)


def _edge_feature_importance(inp: ExplainInputs, notes: list[str]) -> list[pd.DataFrame]:
    out = []
    if inp.ablation_path:
        abl = read_ablation(inp.ablation_path, split=inp.graph.get("split_mode"))
        if abl is None:
            notes.append(f"edge features: {inp.ablation_path} absent (edge-feature ablation not run); ablation importance skipped")
        else:
            out.append(pd.DataFrame({"method": "ablation", "seed": "", "group": abl["group"],
                                     "importance": abl["importance"], "low": abl["low"], "high": abl["high"]}))
    if inp.edge_features is None or not inp.edge_models:
        notes.append("edge features: no edge features or no model trained with them; weight-based importance skipped")
        return out
    groups = inp.edge_features["groups"]
    for seed, path in sorted(inp.edge_models.items()):
        model = inp.load_model(path, inp.graph)
        imp, name = edge_group_weights(model, inp.edge_features["edge_attr"].shape[1], groups)
        LOG.info("seed %s: edge-feature weights from %s", seed, name)
        v = list(imp.values())
        out.append(pd.DataFrame({"method": "weights", "seed": seed, "group": list(imp), "importance": v,
                                 "low": v, "high": v}))
    return out


def read_ground_truth(raw_path: str | Path) -> dict | None:
    """``uns["ground_truth"]`` of the data stage's ``raw.h5ad`` (None for real data)."""
    import anndata as ad

    a = ad.read_h5ad(raw_path, backed="r")
    try:
        truth = a.uns.get("ground_truth")
        return None if truth is None else {k: np.asarray(v) for k, v in truth.items()}
    finally:
        a.file.close()


def explain_stage(graph_path: str, raw_path: str, models: list[str], out_dir: str, params: dict,
                  device_pref: str = "auto", attention_models: list[str] = (), edge_models: list[str] = (),
                  edge_features_path: str | None = None, ablation_path: str | None = None,
                  load_model: Callable | None = None) -> dict:
    """The explain rule: read the graph, the truth and the checkpoints
    (``.../seed{seed}/model.pt``), run :func:`run_explain` and write its tables to ``out_dir``."""
    import re

    from .graph import load_graph
    from .utils import get_device, seed_everything

    if load_model is None:
        from .train import load_model as _load

        def load_model(path, graph):
            return _load(path, graph)[0]

    def by_seed(paths) -> dict[int, str]:
        out = {}
        for p in paths:
            m = re.search(r"seed(\d+)", str(p))
            out[int(m.group(1)) if m else len(out)] = str(p)
        return out

    seed_everything(int(params.get("seed", 0)))
    graph = load_graph(graph_path)
    edge_features = None
    if edge_features_path:
        edge_features = torch.load(edge_features_path, weights_only=False, map_location="cpu")
        if not torch.equal(edge_features["edge_index"], graph["edge_index"]):
            raise CellgnnInputError("edge features are not aligned with the graph's edge_index",
                                    file=str(edge_features_path), field="edge_index",
                                    fix="rerun the edge_features rule on this graph")
    inp = ExplainInputs(graph=graph, graph_path=str(graph_path), truth=read_ground_truth(raw_path),
                        models=by_seed(models), load_model=load_model, attention_models=by_seed(attention_models),
                        edge_models=by_seed(edge_models), edge_features=edge_features, ablation_path=ablation_path)
    return run_explain(inp, out_dir, params, device=get_device(device_pref))
