"""The attribution methods other than integrated gradients, and edge-feature importance.

- ``weights``: the original study's first-layer weight magnitude (class-agnostic);
- ``attention``: the scANNA-style classifier's gene attention over a class's correctly predicted
  cells minus its attention over the control class's cells (the other classes' without a control);
- ``gnnexplainer``: PyG's GNNExplainer on a few cells per class;
- ``de`` / ``de_control``: Wilcoxon rank-sum scores of each class against the rest / the control;
- ``random``: a seeded random ranking, the floor every method must beat;
- edge-feature groups: first-layer weight magnitudes, and the evaluation stage's ablation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..errors import CellgnnInputError
from .rankings import CLASS_AGNOSTIC, long_scores
from .subgraphs import CompGraphs, exact_sampler


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


def attention_rankings(model: torch.nn.Module, seed, x: torch.Tensor, y: np.ndarray, cell_type: np.ndarray,
                       classes: list[str], cell_types: list[str], explain_classes: list[str],
                       min_cells: int, control: str | None = None) -> list[pd.DataFrame]:
    """scANNA gene attention of the cells ``x [n, G]`` (classes ``y [n]``, cell types
    ``cell_type [n]``) per class, and per cell type × class where the cell type has at least
    ``min_cells`` cells and the class ``min_cells`` among them (long tables, see :func:`long_scores`).
    A class's score is its attention minus the ``control`` class's (as ``de_control`` and IG's
    contrast), or minus the other classes' when ``control`` is None or absent."""
    from ..models.scanna import salient_genes

    yc = torch.as_tensor(y)
    ref = classes.index(control) if control in classes else "rest"
    att = salient_genes(model.cpu(), x, yc, reference=ref)
    out = [long_scores("attention", seed, c, CLASS_AGNOSTIC, att[classes.index(c)].numpy()) for c in explain_classes]
    for t, tname in enumerate(cell_types):
        m = cell_type == t
        if m.sum() < min_cells:
            continue
        att_t = salient_genes(model.cpu(), x[m], yc[m], reference=ref)
        for c in explain_classes:
            if (yc[m] == classes.index(c)).sum() >= min_cells:
                out.append(long_scores("attention", seed, c, tname, att_t[classes.index(c)].numpy()))
    return out


def gnnexplainer_masks(model: torch.nn.Module, x: torch.Tensor, edge_index: torch.Tensor,
                       cells: np.ndarray, targets: np.ndarray, edge_attr: torch.Tensor | None = None,
                       num_hops: int | None = None, epochs: int = 200, lr: float = 0.01,
                       seed: int = 0, device: torch.device | str = "cpu",
                       progress: bool = True, batch_cells: int = 64) -> tuple[np.ndarray, pd.DataFrame]:
    """GNNExplainer (PyG's algorithm and coefficients) on each cell's k-hop subgraph.

    Returns ``(feature masks [n, G], edges)``: one gene mask per cell (shared by the nodes
    of its subgraph, PyG's ``common_attributes``) and a table ``cell, source, target, mask`` of
    the edge mask (original node ids). Coefficients are PyG's defaults, which are the
    study's (edge_size 0.005, node_feat_size 1, edge_ent 1, node_feat_ent 0.1).

    ``batch_cells`` cells are optimised together on the disjoint union of their subgraphs: each
    cell's masks, loss terms and Adam moments are its own (the loss is the sum of the cells'
    PyG losses, and Adam works element by element), so every cell gets what PyG's ``Explainer``
    gives it alone (same initial masks from ``seed + i``; tested), for one forward and backward
    pass per epoch and batch instead of one per cell.
    """
    import torch.nn.functional as F
    from torch_geometric.explain.algorithm import GNNExplainer
    from torch_geometric.explain.algorithm.utils import clear_masks, set_masks
    from tqdm import tqdm

    cells = np.asarray(cells, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    if cells.size == 0:
        raise CellgnnInputError("no cells selected for GNNExplainer", field="explain.gnnexplainer.cells_per_class",
                                fix="set cells_per_class >= 1 and check the subset holds cells")
    coeffs = GNNExplainer.default_coeffs
    device = torch.device(device)
    model = model.to(device).eval()
    sampler = exact_sampler(model, x, edge_index, edge_attr.to(device) if edge_attr is not None else None,
                            cells, num_hops, device)
    masks = np.zeros((cells.size, x.shape[1]), np.float32)
    edges = []
    starts = range(0, cells.size, batch_cells)
    bar = tqdm(total=epochs * len(starts), desc="GNNExplainer epochs", disable=not progress)
    for lo in starts:
        batch = cells[lo:lo + batch_cells]
        cg = sampler.union(batch).to(device)
        xs = x[cg.nodes.cpu()].to(device)
        ea = edge_attr[cg.edge_ids.cpu()].to(device) if edge_attr is not None else None
        kwargs = {"edge_attr": ea} if ea is not None else {}
        edge_owner = cg.owner[cg.edge_index[1]]
        node_mask, edge_mask = _gnnexplainer_init(cg, edge_owner, x.shape[1], seed + lo, device)
        set_masks(model, edge_mask, cg.edge_index, apply_sigmoid=True)
        optimizer = torch.optim.Adam([node_mask, edge_mask], lr=lr)
        target = torch.as_tensor(targets[lo:lo + batch_cells], device=device)
        hard_node = hard_edge = None
        try:
            for epoch in range(epochs):
                optimizer.zero_grad()
                logits = model(xs * node_mask.sigmoid()[cg.owner], cg.edge_index, **kwargs)[cg.root_pos]
                loss = F.cross_entropy(logits, target, reduction="sum")
                if hard_edge is not None:  # PyG regularises from the second epoch, on the masks' hard part
                    loss = (loss + _mask_penalty(edge_mask, hard_edge, edge_owner, batch.size, coeffs["edge_size"],
                                                 "sum", coeffs["edge_ent"], coeffs["EPS"])
                            + _mask_penalty(node_mask, hard_node, None, batch.size, coeffs["node_feat_size"],
                                            "mean", coeffs["node_feat_ent"], coeffs["EPS"]))
                loss.backward()
                optimizer.step()
                if epoch == 0:
                    hard_node, hard_edge = node_mask.grad != 0, edge_mask.grad != 0
                bar.update()
        finally:
            clear_masks(model)
        masks[lo:lo + batch.size] = (node_mask.detach().sigmoid() * hard_node).cpu().numpy()
        em = (edge_mask.detach().sigmoid() * hard_edge).cpu().numpy()
        nodes = cg.nodes.cpu().numpy()
        src, dst = cg.edge_index.cpu().numpy()
        edges.append(pd.DataFrame({"cell": batch[edge_owner.cpu().numpy()], "source": nodes[src],
                                   "target": nodes[dst], "mask": em}))
    bar.close()
    return masks, pd.concat(edges, ignore_index=True)


def _gnnexplainer_init(cg: CompGraphs, edge_owner: torch.Tensor, n_genes: int, first_seed: int,
                       device: torch.device) -> tuple[torch.nn.Parameter, torch.nn.Parameter]:
    """Initial masks of a batch, cell by cell as PyG draws them after ``torch.manual_seed(first_seed + i)``:
    gene mask ``[B, G]`` (N(0, 0.1)) and edge mask ``[E]`` (N(0, gain(relu) · sqrt(2 / (2 · nodes))))."""
    b = cg.root_pos.numel()
    n_nodes = torch.bincount(cg.owner, minlength=b).tolist()
    n_edges = torch.bincount(edge_owner, minlength=b).tolist()
    gain = torch.nn.init.calculate_gain("relu")
    node_mask = torch.empty(b, n_genes, device=device)
    parts = []
    for i in range(b):
        torch.manual_seed(first_seed + i)
        node_mask[i] = torch.randn(1, n_genes, device=device) * 0.1
        parts.append(torch.randn(n_edges[i], device=device) * (gain * np.sqrt(2.0 / (2 * n_nodes[i]))))
    return torch.nn.Parameter(node_mask), torch.nn.Parameter(torch.cat(parts))


def _mask_penalty(mask: torch.Tensor, hard: torch.Tensor, owner: torch.Tensor | None, n_cells: int,
                  size_coeff: float, reduction: str, ent_coeff: float, eps: float) -> torch.Tensor:
    """PyG GNNExplainer's size and entropy penalties of each cell's mask, summed over cells.

    ``mask``/``hard``: ``[E]`` edge masks with ``owner [E]`` (the cell of each edge), or ``[B, G]``
    gene masks (``owner`` None: one row per cell). Only the hard part (elements with a gradient in
    the first epoch) counts; ``reduction`` (sum | mean) is the size term's within a cell."""
    m = mask.sigmoid()
    ent = -m * torch.log(m + eps) - (1 - m) * torch.log(1 - m + eps)
    keep = hard.to(m.dtype)
    if owner is None:
        size, ent_sum, count = (m * keep).sum(1), (ent * keep).sum(1), keep.sum(1)
    else:
        zeros = torch.zeros(n_cells, device=m.device, dtype=m.dtype)
        size = zeros.index_add(0, owner, m * keep)
        ent_sum = zeros.index_add(0, owner, ent * keep)
        count = zeros.index_add(0, owner, keep)
    count = count.clamp(min=1)
    if reduction == "mean":
        size = size / count
    return (size_coeff * size + ent_coeff * ent_sum / count).sum()


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


def de_rankings(method: str, reference: str, x: np.ndarray, y: np.ndarray, cell_type: np.ndarray,
                classes: list[str], genes: list[str], cell_types: list[str], explain_classes: list[str],
                min_cells: int) -> list[pd.DataFrame]:
    """:func:`de_scores` of the cells ``x [n, G]`` against ``reference``, per class and, with
    more than one cell type, per cell type × class where the type has at least
    ``2 · min_cells`` cells (long tables named ``method``, seed empty: DE has none)."""
    out = [long_scores(method, "", c, CLASS_AGNOSTIC, s)
           for c, s in de_scores(x, y, classes, genes, reference=reference).items() if c in explain_classes]
    for t, tname in enumerate(cell_types):
        m = cell_type == t
        if len(cell_types) > 1 and m.sum() >= 2 * min_cells:
            de_t = de_scores(x[m], y[m], classes, genes, min_cells=min_cells, reference=reference)
            out += [long_scores(method, "", c, tname, s) for c, s in de_t.items() if c in explain_classes]
    return out


def random_rankings(seeds, n_genes: int) -> list[pd.DataFrame]:
    """One seeded random, class-agnostic ranking of ``n_genes`` genes per seed."""
    return [long_scores("random", seed, CLASS_AGNOSTIC, CLASS_AGNOSTIC,
                        np.random.default_rng(10_000 + int(seed)).random(n_genes)) for seed in seeds]


# ----------------------------------------------------------------------------- edge features

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
