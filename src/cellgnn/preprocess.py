"""Preprocess stage: QC filters, library-size normalization, optional HVG selection, PCA.

``preprocess(adata, cfg)`` returns ``(adata, qc)``: the filtered, normalized AnnData
(``layers["counts"]`` raw counts, ``X`` normalized, ``obsm["X_pca"]``,
``var["highly_variable"]``, ``uns["preprocess"]``) and a QC report counting the
cells and genes removed per reason.
"""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from .data import is_integer_counts
from .errors import CellgnnInputError

LOG = logging.getLogger(__name__)


def check_matrix(X, expect_counts: bool = True, source: str = "raw.h5ad") -> None:
    """Refuse an expression matrix with NaN or infinite values, or (``expect_counts``) one that is
    not raw counts (negative or non-integer values)."""
    if not np.all(np.isfinite(X.data if sp.issparse(X) else np.asarray(X))):
        raise CellgnnInputError("expression matrix contains NaN or infinite values", file=source, field="X",
                                fix="remove or repair those cells/genes before running cellgnn")
    ok, why = is_integer_counts(X)
    if expect_counts and not ok:
        raise CellgnnInputError(f"expected raw UMI counts but X {why}", file=source, field="X",
                                fix="give the raw count matrix (e.g. adata.raw or layers['counts']), or set "
                                    "preprocess.expect_counts: false for already-normalized data")


def preprocess(adata: ad.AnnData, cfg: dict, seed: int = 0, source: str = "raw.h5ad") -> tuple[ad.AnnData, dict]:
    """Filter, normalize and reduce ``adata`` (not modified in place).

    cfg keys: ``expect_counts`` (bool), ``min_genes`` (genes detected per cell),
    ``min_cells`` (cells expressing a gene), ``max_mito_fraction`` (0–1, of a cell's
    UMIs in ``MT-`` genes; 1 disables), ``target_sum`` (UMIs per cell after scaling),
    ``transform`` (``log1p`` | ``sqrt`` | ``none``), ``hvg`` (``n_top_genes`` or null),
    ``n_pcs``.
    """
    import scanpy as sc

    from .config import settings

    cfg = settings("preprocess", cfg)
    adata = adata.copy()
    X = adata.X
    if sp.issparse(X):
        adata.X = sp.csr_matrix(X, dtype=np.float32)
    else:
        adata.X = np.asarray(X, dtype=np.float32)
    check_matrix(adata.X, cfg["expect_counts"], source)

    qc: dict = {"input": {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars)}, "removed_cells": {},
                "removed_genes": {}, "params": dict(cfg)}
    n_genes_per_cell = np.asarray((adata.X > 0).sum(axis=1)).ravel()
    total = np.asarray(adata.X.sum(axis=1)).ravel()
    mito = adata.var_names.str.upper().str.startswith("MT-")
    mito_frac = (np.asarray(adata.X[:, mito].sum(axis=1)).ravel() / np.maximum(total, 1e-12)
                 if mito.any() else np.zeros(adata.n_obs))
    adata.obs["n_genes"] = n_genes_per_cell
    adata.obs["total_counts"] = total
    adata.obs["mito_fraction"] = mito_frac

    low_genes = n_genes_per_cell < cfg["min_genes"]
    high_mito = (mito_frac > cfg["max_mito_fraction"]) & ~low_genes
    qc["removed_cells"] = {"min_genes": int(low_genes.sum()), "max_mito_fraction": int(high_mito.sum())}
    keep_cells = ~(low_genes | high_mito)
    if keep_cells.sum() == 0:
        raise CellgnnInputError(f"QC removed every cell ({int(low_genes.sum())} below min_genes="
                                f"{cfg['min_genes']}, {int(high_mito.sum())} above max_mito_fraction="
                                f"{cfg['max_mito_fraction']})", file=source, field="preprocess.min_genes",
                                fix="lower preprocess.min_genes or raise preprocess.max_mito_fraction")
    adata = adata[keep_cells].copy()
    n_cells_per_gene = np.asarray((adata.X > 0).sum(axis=0)).ravel()
    keep_genes = n_cells_per_gene >= cfg["min_cells"]
    qc["removed_genes"] = {"min_cells": int((~keep_genes).sum())}
    if keep_genes.sum() == 0:
        raise CellgnnInputError("QC removed every gene", file=source, field="preprocess.min_cells",
                                fix="lower preprocess.min_cells")
    adata = adata[:, keep_genes].copy()
    dropped_classes = sorted(set(map(str, adata.obs["label"].cat.categories))
                             - set(map(str, adata.obs["label"].unique())))
    for col in ("label", "donor", "cell_type"):
        if col in adata.obs:
            adata.obs[col] = adata.obs[col].cat.remove_unused_categories()
    if adata.obs["label"].nunique() < 2:
        raise CellgnnInputError("fewer than two classes remain after QC", file=source, field="obs.label",
                                fix="relax the QC thresholds (preprocess.min_genes, max_mito_fraction)")

    adata.layers["counts"] = adata.X.copy()
    if cfg["expect_counts"]:
        sc.pp.normalize_total(adata, target_sum=cfg["target_sum"])
        if cfg["transform"] == "log1p":
            sc.pp.log1p(adata)
        elif cfg["transform"] == "sqrt":
            adata.X = adata.X.sqrt() if sp.issparse(adata.X) else np.sqrt(adata.X)
    hvg = cfg["hvg"]
    if hvg:
        n_top = min(int(hvg), adata.n_vars)
        if cfg["expect_counts"]:
            sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat_v3", layer="counts")
        else:
            sc.pp.highly_variable_genes(adata, n_top_genes=n_top, flavor="seurat")
        qc["removed_genes"]["not_highly_variable"] = int((~adata.var["highly_variable"]).sum())
        adata = adata[:, adata.var["highly_variable"].to_numpy()].copy()
    else:
        adata.var["highly_variable"] = True
    n_pcs = min(cfg["n_pcs"], adata.n_obs - 1, adata.n_vars - 1)
    if n_pcs < cfg["n_pcs"]:
        LOG.warning("field 'preprocess.n_pcs': %d PCs asked for, %d computed (%d cells x %d genes after QC)",
                    cfg["n_pcs"], n_pcs, adata.n_obs, adata.n_vars)
    sc.pp.pca(adata, n_comps=n_pcs, random_state=seed, mask_var=None)
    adata.obsm["X_pca"] = adata.obsm["X_pca"].astype(np.float32)
    adata.uns["preprocess"] = {k: v for k, v in cfg.items() if v is not None}
    qc["output"] = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars)}
    qc["dropped_classes"] = dropped_classes
    qc["cells_per_label"] = {str(k): int(v) for k, v in adata.obs["label"].value_counts().sort_index().items()}
    LOG.info("QC: %s cells -> %s, %s genes -> %s", qc["input"]["n_cells"], adata.n_obs,
             qc["input"]["n_genes"], adata.n_vars)
    return adata, qc

