"""Input of the augmentation stage: library-size-normalized expression and populations.

The generative models work on counts normalized per cell to ``target_sum`` (20,000 as in
ACTIVA and scGAN), NOT logged, over the modelled genes (the highly variable genes by
default; the normalization is done over those genes, so every real and synthetic cell
sums to ``target_sum``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import CellgnnInputError


@dataclass
class ExpressionData:
    """x float32 ``[N, G]`` (normalized to ``target_sum``), labels ``[N]`` population names."""

    x: np.ndarray
    labels: np.ndarray
    genes: list[str]
    cell_ids: list[str]
    target_sum: float
    library_size: np.ndarray  # raw counts per cell over the modelled genes, float64 [N]

    @property
    def classes(self) -> list[str]:
        return sorted(set(self.labels.tolist()))

    def y(self, classes: list[str]) -> np.ndarray:
        index = {c: i for i, c in enumerate(classes)}
        return np.array([index[c] for c in self.labels], dtype=np.int64)


def library_normalize(counts, target_sum: float = 20000.0) -> np.ndarray:
    """Scale each cell (row) to sum ``target_sum``; empty cells stay zero. Returns float32 dense."""
    x = counts.toarray() if sp.issparse(counts) else np.asarray(counts)
    x = x.astype(np.float64)
    tot = x.sum(axis=1, keepdims=True)
    x = np.divide(x * target_sum, tot, out=np.zeros_like(x), where=tot > 0)
    return x.astype(np.float32)


def sample_counts(x_mean: np.ndarray, library_sizes: np.ndarray, seed: int = 0,
                  target_sum: float = 20000.0) -> np.ndarray:
    """Observation step: Poisson counts around generated expression, renormalized to ``target_sum``.

    x_mean ``[S, G]`` (data units); each cell gets a library size drawn from ``library_sizes``
    (raw counts of real cells) and counts ~ Poisson(x_mean / target_sum · L). For a generator that
    emits smooth normalized expression (the scGAN baseline, ``augment.sample_counts``): real cells
    are sparse counts, which a random forest separates on sparsity alone. Poisson noise has no
    overdispersion; ACTIVA instead samples from its own learned negative binomial.
    """
    rng = np.random.default_rng(seed)
    lib = rng.choice(np.asarray(library_sizes, dtype=np.float64), size=len(x_mean), replace=True)
    counts = rng.poisson(np.asarray(x_mean, dtype=np.float64) / target_sum * lib[:, None])
    return library_normalize(counts.astype(np.float32), target_sum)


def top_variable_genes(counts, n: int, target_sum: float = 20000.0) -> np.ndarray:
    """Sorted column indices of the ``n`` genes of largest variance of log1p(counts normalized to ``target_sum``).

    counts ``[N, G]`` dense or sparse (kept sparse: the variance is computed from the stored values).
    """
    tot = np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()
    scale = np.divide(target_sum, tot, out=np.zeros_like(tot), where=tot > 0)
    if sp.issparse(counts):
        lx = sp.diags(scale) @ sp.csr_matrix(counts, dtype=np.float64)
        lx.data = np.log1p(lx.data)
        mean = np.asarray(lx.mean(axis=0)).ravel()
        var = np.asarray(lx.multiply(lx).mean(axis=0)).ravel() - mean ** 2
    else:
        var = np.log1p(np.asarray(counts, dtype=np.float64) * scale[:, None]).var(axis=0)
    return np.sort(np.argsort(-var, kind="stable")[:n])


def load_expression(path: str | Path, population_key: str = "cell_type", layer: str = "counts",
                    genes: str = "hvg", target_sum: float = 20000.0, max_genes: int | None = None,
                    rank_cells: set[str] | None = None) -> ExpressionData:
    """Read ``preprocessed.h5ad``: raw counts from ``layers[layer]``, populations from ``obs[population_key]``.

    ``max_genes``: keep only that many of the selected genes, those with the largest variance
    of log1p(counts normalized to ``target_sum``) over the cells in ``rank_cells`` (the
    training cells; all cells when None). Cells are then normalized over the kept genes.
    """
    import anndata as ad

    adata = ad.read_h5ad(path)
    if population_key not in adata.obs:
        raise CellgnnInputError(f"no column '{population_key}' in obs (have {list(adata.obs.columns)})",
                                file=str(path), field="augment.population_key",
                                fix="set augment.population_key to a categorical obs column")
    if layer not in adata.layers:
        raise CellgnnInputError(f"no layer '{layer}'", file=str(path), field="layers",
                                fix="run the preprocess stage, which keeps raw counts in layers['counts']")
    if genes not in {"hvg", "all"}:
        raise CellgnnInputError(f"unknown gene set '{genes}'", field="augment.genes", fix="use 'hvg' or 'all'")
    keep = np.ones(adata.n_vars, dtype=bool)
    if genes == "hvg":
        if "highly_variable" not in adata.var:
            raise CellgnnInputError("no var['highly_variable']", file=str(path), field="var",
                                    fix="set augment.genes: all, or rerun preprocess")
        keep = adata.var["highly_variable"].to_numpy(dtype=bool)
    counts = adata.layers[layer][:, keep]
    data = counts.data if sp.issparse(counts) else np.asarray(counts)
    if not np.all(np.isfinite(data)) or np.any(data < 0):
        raise CellgnnInputError("counts hold negative or non-finite values", file=str(path),
                                field=f"layers['{layer}']", fix="store raw UMI counts in this layer")
    if max_genes is not None and max_genes < keep.sum():
        if max_genes < 2:
            raise CellgnnInputError(f"max_genes={max_genes} is too small", field="augment.max_genes",
                                    fix="use at least 2 genes, or null for all")
        rows = (np.isin(adata.obs_names, list(rank_cells)) if rank_cells is not None
                else np.ones(adata.n_obs, dtype=bool))
        keep = np.flatnonzero(keep)[top_variable_genes(counts[rows], max_genes, target_sum)]
        counts = adata.layers[layer][:, keep]
    return ExpressionData(x=library_normalize(counts, target_sum),
                          labels=adata.obs[population_key].astype(str).to_numpy(),
                          genes=adata.var_names[keep].tolist(), cell_ids=adata.obs_names.tolist(),
                          target_sum=float(target_sum),
                          library_size=np.asarray(counts.sum(axis=1), dtype=np.float64).ravel())


def resolve_population(labels: np.ndarray, population: str | None, min_cells: int,
                       key: str = "cell_type", file: str | None = None) -> str:
    """Check the requested population exists and has ``min_cells`` cells; ``None`` = the largest."""
    names, counts = np.unique(labels, return_counts=True)
    sizes = dict(zip(names.tolist(), counts.tolist()))
    if population is None:
        population = max(sizes, key=lambda n: (sizes[n], n))
    if population not in sizes:
        raise CellgnnInputError(f"population '{population}' does not exist (have {sorted(sizes)})",
                                file=file, field="augment.population",
                                fix=f"set augment.population to one of the values of obs['{key}']")
    if sizes[population] < min_cells:
        raise CellgnnInputError(f"population '{population}' has {sizes[population]} training cells, "
                                f"fewer than the minimum {min_cells}", file=file, field="augment.population",
                                fix="choose a larger population or lower augment.min_cells")
    return population


def split_masks(cell_ids: list[str], split: dict, file: str | None = None) -> dict[str, np.ndarray]:
    """Masks ``train``/``val``/``test`` (bool ``[N]`` aligned with ``cell_ids``) from a graph-stage split.

    ``split`` is the graph file's dict (``cell_ids``, ``train_mask``, ``val_mask``, ``test_mask``):
    the augmentation stage never re-splits.
    """
    pos = {c: i for i, c in enumerate(split["cell_ids"])}
    missing = [c for c in cell_ids if c not in pos]
    if missing:
        raise CellgnnInputError(f"{len(missing)} cells (e.g. '{missing[0]}') are not in the graph split",
                                file=file, field="cell_ids",
                                fix="rebuild the graph from the same preprocessed.h5ad")
    idx = np.array([pos[c] for c in cell_ids], dtype=np.int64)
    out = {}
    for name in ("train", "val", "test"):
        m = split[f"{name}_mask"]
        m = m.numpy() if hasattr(m, "numpy") else np.asarray(m)
        out[name] = m.astype(bool)[idx]
    return out
