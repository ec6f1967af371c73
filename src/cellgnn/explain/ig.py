"""Integrated gradients of a graph model, per cell, over its computation graph.

Each explained cell gets its own copy of its k-hop computation graph (a disjoint union per
batch, :mod:`.subgraphs`), so one captum pass gives exact per-cell attributions over every
node and gene that can influence the cell; a cell's gene score is the sum over the nodes of
its copy. When x enters the model only through linear layers (a GAT layer's message map and
its residual skip), IG is computed in their output space and mapped back to genes exactly
(chain rule), which makes it about G/H times cheaper. The completeness error
``|Σ attr − (f(x) − f(x₀))|`` is measured per cell, and the number of steps is doubled
until its relative size is below the tolerance.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import torch

from ..errors import CellgnnInputError
from .subgraphs import CompGraphs, SubgraphSampler, exact_sampler, root_logits

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class IGSettings:
    """How the integral is computed.

    ``n_steps`` Gauss–Legendre steps to start with, doubled (up to ``max_steps``) until a
    batch's relative completeness error ``Σ|Σ attr − Δf| / Σ|Δf|`` is at most
    ``tolerance``; ``batch_cells`` root cells per batch; ``max_floats`` bounds one captum
    step chunk (steps × nodes × features), hence memory; ``project_first_layer`` see
    :func:`integrated_gradients`; ``progress`` shows a progress bar.
    """

    n_steps: int = 8
    max_steps: int = 256
    tolerance: float = 0.01
    batch_cells: int = 32
    max_floats: int = 2**27
    project_first_layer: bool = True
    progress: bool = True

    @classmethod
    def from_params(cls, ig: dict | None) -> IGSettings:
        """Settings from the config's ``explain.ig`` section (the schema's defaults for keys it lacks)."""
        from ..config import settings

        ig = settings("explain.ig", ig)
        return cls(n_steps=int(ig["n_steps"]), max_steps=int(ig["max_steps"]), tolerance=float(ig["tolerance"]),
                   batch_cells=int(ig["batch_cells"]))


@dataclass
class IGResult:
    """Per-cell integrated gradients.

    ``cells [n]`` explained node ids, ``target [n]`` class explained, ``attr [n, G]`` gene
    attribution summed over the cell's computation graph, ``delta [n]`` = f(x) − f(x₀) of
    the explained score, ``pred [n]`` predicted class, ``node_mass [n, T]`` |attribution|
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


def integrated_gradients(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                         cells: np.ndarray, targets: np.ndarray, cell_type: np.ndarray,
                         n_cell_types: int, edge_attr: torch.Tensor | None = None,
                         num_hops: int | None = None, device: torch.device | str = "cpu",
                         reference: torch.Tensor | None = None, contrast: int | None = None,
                         reference_index: np.ndarray | None = None, settings: IGSettings | None = None,
                         **overrides) -> IGResult:
    """Integrated gradients of each cell's target score (its class logit, or the log-odds
    against ``contrast``) with respect to the node features of its computation graph.

    x ``[N, G]``, edge_index ``[2, E]``, edge_attr ``[E, F]`` or None, cells ``[n]`` node
    ids, targets ``[n]`` class per cell, cell_type ``[N]``. ``settings``: steps, tolerance,
    batch size (:class:`IGSettings`); keyword ``overrides`` replace single fields of it
    (``n_steps=16``).

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

    ``project_first_layer``: when x enters the model only through linear layers
    ``h_i = x W_iᵀ + b_i`` (checked on the first batch by comparing outputs), IG runs on
    ``x Wᵀ`` with ``W`` the stacked ``W_i`` (H dims instead of G) with captum's un-multiplied
    integrated gradient ``A``, and the gene attribution is recovered exactly as
    ``(x − x₀) ⊙ (A W)`` (chain rule); the same IG, at a fraction of the cost.
    """
    settings = replace(settings or IGSettings(), **overrides)
    cells = np.asarray(cells, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if cells.size == 0:
        raise CellgnnInputError("no cells selected to explain", field="explain.n_cells / explain.cells_from",
                                fix="select a split subset that holds cells and n_cells >= 1")
    device = torch.device(device)
    model = model.to(device).eval()
    ea_dev = edge_attr.to(device) if edge_attr is not None else None
    cell_type_t = torch.as_tensor(cell_type, dtype=torch.long, device=device)
    run = _IGRun(
        model=model, x=x.to(device), edge_attr=ea_dev,
        sampler=exact_sampler(model, x, edge_index, ea_dev, cells[:settings.batch_cells], num_hops, device),
        cell_type=cell_type_t, n_cell_types=n_cell_types,
        reference=reference.to(device=device, dtype=x.dtype) if reference is not None else None,
        reference_index=cell_type_t if reference_index is None else torch.as_tensor(
            reference_index, dtype=torch.long, device=device),
        contrast=contrast, settings=settings, device=device,
        first=_gene_linears(model, x.shape[1]) if settings.project_first_layer else None)
    with _frozen(model):
        return _ig_batches(run, cells, targets)


@dataclass
class _IGRun:
    """What stays fixed across the batches of one IG run (tensors on ``device``).

    ``reference [R, G]`` and ``reference_index [N]``: each node's baseline row (None: zeros);
    ``first``: the linear layers IG runs behind (None: on the raw features).
    """

    model: torch.nn.Module
    x: torch.Tensor
    edge_attr: torch.Tensor | None
    sampler: SubgraphSampler
    cell_type: torch.Tensor
    n_cell_types: int
    reference: torch.Tensor | None
    reference_index: torch.Tensor
    contrast: int | None
    settings: IGSettings
    device: torch.device
    first: list | None


@contextlib.contextmanager
def _frozen(model: torch.nn.Module):
    """Weights without gradients while IG runs: gradients are needed for the inputs only,
    which saves a third of the work."""
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _ig_batches(run: _IGRun, cells: np.ndarray, targets: np.ndarray) -> IGResult:
    from tqdm import tqdm

    n, g = cells.size, run.x.shape[1]
    attr = np.zeros((n, g), np.float32)
    delta = np.zeros(n, np.float32)
    pred = np.zeros(n, np.int64)
    node_mass = np.zeros((n, run.n_cell_types), np.float32)
    rows = []
    starts = range(0, n, run.settings.batch_cells)
    for bi, start in enumerate(tqdm(starts, desc="integrated gradients", disable=not run.settings.progress)):
        sl = slice(start, start + run.settings.batch_cells)
        per_root, d, logits, nm, row = _ig_batch(run, cells[sl], targets[sl], bi)
        attr[sl] = per_root.cpu().numpy()
        delta[sl] = d.cpu().numpy()
        pred[sl] = logits.argmax(1).cpu().numpy()
        node_mass[sl] = nm.cpu().numpy()
        rows.append({"batch": bi, **row})
    return IGResult(cells, targets, attr, delta, pred, node_mass, pd.DataFrame(rows))


def _ig_batch(run: _IGRun, cells: np.ndarray, targets: np.ndarray, bi: int):
    """IG of one batch of roots: ``(per-root attribution [B, G], Δ score [B], logits [B, C],
    |attribution| by node cell type [B, T], the batch's completeness row)``. On the first
    batch, checks that x enters the model only through ``run.first`` (else IG runs on x)."""
    cg = run.sampler.union(cells).to(run.device)
    tgt = torch.as_tensor(targets, device=run.device)
    con = None if run.contrast is None else torch.full_like(tgt, int(run.contrast))
    xu = run.x[cg.nodes]  # [M, G]
    x0 = torch.zeros_like(xu) if run.reference is None else run.reference[run.reference_index[cg.nodes]]
    with torch.no_grad():
        logits = root_logits(run.model, xu, cg, run.edge_attr)
        base = root_logits(run.model, x0, cg, run.edge_attr)
        if bi == 0 and run.first is not None and not _projection_is_exact(
                run.model, run.first, xu, x0, cg, run.edge_attr, logits, base):
            LOG.info("the layers %s are not the only use of x: IG runs on the raw features",
                     [name for name, _ in run.first])
            run.first = None
    d = _target_score(logits, tgt, con) - _target_score(base, tgt, con)
    a, per_root, steps, rel, err_abs = _attribute(run, cg, xu, x0, tgt, con, d)
    if rel > run.settings.tolerance:
        LOG.warning("batch %d: completeness error %.3g above tolerance %.3g at max_steps=%d",
                    bi, rel, run.settings.tolerance, run.settings.max_steps)
    mass = a.abs().sum(1)
    nm = torch.zeros(len(tgt), run.n_cell_types, device=run.device)
    nm.index_put_((cg.owner, run.cell_type[cg.nodes]), mass, accumulate=True)
    row = {"n_cells": len(tgt), "n_nodes": int(cg.nodes.numel()), "n_steps": steps,
           "space": "first_layer" if run.first is not None else "features",
           "completeness_rel_error": rel, "completeness_max_abs_error": err_abs.max().item(),
           "mean_abs_delta": d.abs().mean().item()}
    return per_root, d, logits, nm, row


def _attribute(run: _IGRun, cg: CompGraphs, xu: torch.Tensor, x0: torch.Tensor, tgt: torch.Tensor,
               con: torch.Tensor | None, d: torch.Tensor):
    """captum IG at ``n_steps``, doubled until complete: ``(per-node attribution [M, G],
    per-root attribution [B, G], steps used, relative and per-root absolute completeness error)``."""
    from captum.attr import IntegratedGradients

    s, first = run.settings, run.first
    if first is not None:  # IG in the first layer's output space, mapped back to genes exactly
        w = _stacked_weight(first)
        inputs = (xu @ w.T).unsqueeze(0)  # [1, M, H]
        baselines = (x0 @ w.T).unsqueeze(0)
    else:
        inputs, baselines = xu.unsqueeze(0), x0.unsqueeze(0)  # [1, M, G]
    fwd = _union_forward(run.model, cg, run.edge_attr, tgt, con)
    chunk = max(1, int(s.max_floats // max(1, inputs[0].numel())))
    ig = IntegratedGradients(fwd, multiply_by_inputs=first is None)
    steps = s.n_steps
    while True:
        with _swapped(run.model, first):
            a = ig.attribute(inputs, baselines=baselines, n_steps=steps, method="gausslegendre",
                             internal_batch_size=min(chunk, steps))[0].detach()
        if first is not None:
            a = (xu - x0) * (a @ w)  # d f / d x = (d f / d h) W, times x − x0: per node and gene
        per_root = torch.zeros(len(tgt), xu.shape[1], device=run.device).index_add_(0, cg.owner, a)
        err_abs = (per_root.sum(1) - d).abs()
        rel = (err_abs.sum() / d.abs().sum().clamp(min=1e-12)).item()
        if rel <= s.tolerance or steps >= s.max_steps:
            return a, per_root, steps, rel, err_abs
        steps *= 2


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
            l2 = root_logits(model, xu @ w.T, cg, ea)
            b2 = root_logits(model, x0 @ w.T, cg, ea)
    except (RuntimeError, ValueError, IndexError):
        return False
    tol = 1e-4 * max(1.0, logits.abs().max().item())
    return bool((l2 - logits).abs().max() <= tol and (b2 - base).abs().max() <= tol)


# ----------------------------------------------------------------------------- baselines

def class_means(values: np.ndarray, groups: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values [n, G]`` per group id in ``groups [n]``: ``([n_groups, G], counts [n_groups])``."""
    sums = np.zeros((n_groups, values.shape[1]), np.float64)
    np.add.at(sums, groups, values)
    counts = np.bincount(groups, minlength=n_groups)
    return sums / np.maximum(counts, 1)[:, None], counts


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
