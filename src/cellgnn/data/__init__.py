"""Data stage: load a study into the ``raw.h5ad`` contract (see CONTRIBUTING.md).

``load_dataset(cfg)`` dispatches on ``cfg["source"]``:

- ``simulate``: the embedded default (:func:`cellgnn.data.simulate.simulate`);
- ``pbmc68k``: scanpy's bundled ``pbmc68k_reduced`` (cell-type task; log-normalized,
  not counts, so preprocessing must be told ``expect_counts: false``);
- ``file``: a local ``.h5ad``, 10x ``.h5`` or 10x MTX directory;
- ``url`` / ``samplesheet``: downloaded sources (:mod:`cellgnn.data.download`).

Whatever the source, the result has ``obs["label"]``, ``obs["donor"]`` and, when
known, ``obs["cell_type"]``, renamed from the columns named in ``cfg["keys"]``.
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import CellgnnInputError
from .simulate import simulate

__all__ = ["load_dataset", "simulate", "standardize_obs", "load_pbmc68k"]


def load_dataset(cfg: dict, workdir: str | Path = "resources") -> ad.AnnData:
    """Load the dataset described by the config's ``data`` section; return raw-contract AnnData.

    workdir: where ``url`` / ``samplesheet`` sources keep their downloads (``resources/<dataset>``).
    """
    source = cfg["source"]
    keys = cfg.get("keys", {})
    if source == "simulate":
        adata = simulate(**cfg.get("simulate", {}))
        where = "simulated data"
    elif source == "pbmc68k":
        adata = load_pbmc68k()
        where = "scanpy pbmc68k_reduced"
    elif source in {"file", "url", "samplesheet"}:
        from .sources import load_source

        adata = load_source(cfg, workdir)
        where = cfg.get(source, {}).get("url") or cfg.get(source, {}).get("path") or source
    else:
        raise CellgnnInputError(f"unknown data source '{source}'", field="data.source",
                                fix="use one of simulate, pbmc68k, file, url, samplesheet")
    return standardize_obs(adata, keys, where=where)


def load_pbmc68k() -> ad.AnnData:
    """scanpy's bundled ``pbmc68k_reduced`` (700 cells): log-normalized ``.raw``, Louvain cell types.

    The task is cell type (``label`` = ``bulk_labels``). Donors are not recorded, so all
    cells share one donor ``pbmc`` and only the ``cells`` split mode applies.
    """
    import scanpy as sc

    full = sc.datasets.pbmc68k_reduced()
    adata = full.raw.to_adata()
    adata.obs = full.obs[["bulk_labels"]].copy()
    adata.obs["label"] = adata.obs["bulk_labels"].astype("category")
    adata.obs["cell_type"] = adata.obs["bulk_labels"].astype("category")
    adata.obs["donor"] = pd.Categorical(["pbmc"] * adata.n_obs)
    adata.obs = adata.obs.drop(columns=["bulk_labels"])
    adata.uns["cellgnn"] = {"source": {"kind": "pbmc68k", "note": "log-normalized, not counts"}}
    return adata


def standardize_obs(adata: ad.AnnData, keys: dict, where: str = "input") -> ad.AnnData:
    """Rename the user's label / donor / cell-type / sample columns to ``label``, ``donor``,
    ``cell_type``, ``sample``.

    keys: ``{"label": col, "donor": col, "cell_type": col or None, "sample": col or None}``. A
    missing label or donor column is an error naming the columns that do exist; a missing
    optional cell-type or sample column is dropped silently only when its key is null.
    """
    label_key = keys.get("label", "label")
    donor_key = keys.get("donor", "donor")
    ct_key = keys.get("cell_type", "cell_type")
    sample_key = keys.get("sample")
    cols = list(adata.obs.columns)
    for field, key in (("data.keys.label", label_key), ("data.keys.donor", donor_key)):
        if key not in adata.obs:
            raise CellgnnInputError(f"column '{key}' not found in obs (columns: {cols})", file=where,
                                    field=field, fix="name an existing obs column in the config")
    for name, key in (("cell_type", ct_key), ("sample", sample_key)):
        if key is not None and key not in adata.obs:
            raise CellgnnInputError(f"column '{key}' not found in obs (columns: {cols})", file=where,
                                    field=f"data.keys.{name}",
                                    fix=f"name an existing obs column, or set data.keys.{name}: null")
    obs = adata.obs.copy()
    source = {"label": label_key, "donor": donor_key, "cell_type": ct_key, "sample": sample_key}
    new = pd.DataFrame(index=obs.index)
    for col, key in source.items():
        if key is not None:
            new[col] = obs[key].astype(str)
    for col in new.columns:
        bad = new[col].isin(["nan", "None", ""]) | obs[source[col]].isna().to_numpy()
        if bad.any():
            raise CellgnnInputError(f"{int(bad.sum())} cells have no value in '{col}' column", file=where,
                                    field=f"obs.{col}", fix="fill in or filter those cells first")
        new[col] = new[col].astype("category")
    for col in obs.columns:
        if col not in set(source.values()) and col not in new:
            new[col] = obs[col]
    adata.obs = new
    if not adata.obs_names.is_unique:
        dup = adata.obs_names[adata.obs_names.duplicated()][:3].tolist()
        raise CellgnnInputError(f"duplicated cell names, e.g. {dup}", file=where, field="obs_names",
                                fix="make cell barcodes unique (e.g. prefix them with the sample id)")
    if not adata.var_names.is_unique:
        dup = adata.var_names[adata.var_names.duplicated()][:3].tolist()
        raise CellgnnInputError(f"duplicated gene names, e.g. {dup}", file=where, field="var_names",
                                fix="make gene names unique (anndata's var_names_make_unique) or use gene ids")
    n_classes = adata.obs["label"].nunique()
    if n_classes < 2:
        raise CellgnnInputError(f"the label has a single class ({adata.obs['label'].iloc[0]!r}); "
                                "nothing to predict", file=where, field=f"obs.{label_key}",
                                fix="choose a label column with at least two classes")
    return adata


def describe(adata: ad.AnnData) -> dict:
    """Counts of cells per label / donor / cell type, for logs and provenance."""
    out = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars)}
    for col in ("label", "donor", "cell_type"):
        if col in adata.obs:
            out[col] = {str(k): int(v) for k, v in adata.obs[col].value_counts().sort_index().items()}
    return out


def is_integer_counts(X, max_check: int = 2_000_000) -> tuple[bool, str]:
    """Whether ``X`` holds finite, non-negative integers; returns (ok, reason).

    Checks the stored values of a sparse matrix, or up to ``max_check`` entries of a dense one.
    """
    import scipy.sparse as sp

    vals = X.data if sp.issparse(X) else np.asarray(X).ravel()
    vals = vals[:max_check]
    if not np.all(np.isfinite(vals)):
        return False, "contains NaN or infinite values"
    if (vals < 0).any():
        return False, "contains negative values"
    if not np.allclose(vals, np.round(vals)):
        return False, "contains non-integer values (looks normalized or log-transformed)"
    return True, ""
