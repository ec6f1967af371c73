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

__all__ = ["load_dataset", "simulate", "standardize_obs", "load_pbmc68k", "run_data"]


def load_dataset(cfg: dict, workdir: str | Path = "resources") -> ad.AnnData:
    """Load the dataset described by the config's ``data`` section; return raw-contract AnnData.

    workdir: where ``url`` / ``samplesheet`` sources keep their downloads (``resources/<dataset>``).
    """
    from ..config import settings

    cfg = settings("data", cfg)
    source = cfg["source"]
    keys = cfg["keys"]
    if source == "simulate":
        adata = simulate(**settings("data.simulate", cfg["simulate"]))
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
    adata = select_cells(adata, cfg["keep_cells"], keys if cfg["drop_missing"] else {}, where)
    return standardize_obs(adata, keys, where=where)


def select_cells(adata: ad.AnnData, keep: dict, required: dict, where: str) -> ad.AnnData:
    """Cells whose obs values are among ``keep[column]`` (``data.keep_cells``), and that have a value
    in every column of ``required`` (the configured keys, when ``data.drop_missing``)."""
    import logging

    mask = np.ones(adata.n_obs, bool)
    for col, values in keep.items():
        if col not in adata.obs:
            raise CellgnnInputError(f"column '{col}' not found in obs (columns: {list(adata.obs.columns)})",
                                    file=where, field=f"data.keep_cells.{col}", fix="name an existing obs column")
        mask &= adata.obs[col].astype(str).isin([str(v) for v in values]).to_numpy()
    for name, col in required.items():
        if col is not None and col in adata.obs:
            mask &= adata.obs[col].notna().to_numpy() & ~adata.obs[col].astype(str).isin(["", "nan", "None"])
    if mask.all():
        return adata
    if not mask.any():
        raise CellgnnInputError("no cell is left after data.keep_cells / data.drop_missing", file=where,
                                field="data.keep_cells", fix="check the columns and values to keep")
    logging.getLogger(__name__).info("keeping %d of %d cells (data.keep_cells %s, drop_missing %s)", int(mask.sum()),
                                     adata.n_obs, keep, bool(required))
    return adata[mask].copy()


def run_data(config: dict, workdir: str | Path, output: str | Path) -> ad.AnnData:
    """The data rule: load the study of ``config["data"]``, check its design against the whole
    (validated) ``config`` on the real cells (:func:`cellgnn.design.check_design`; the start-up check
    saw only what could be read without loading counts), then write ``raw.h5ad``."""
    import logging

    from ..design import check_design
    from ..io import write_h5ad

    adata = load_dataset(config["data"], workdir=workdir)
    logging.getLogger(__name__).info("loaded %s", describe(adata))
    source = config["data"]["source"]
    check_design(adata.obs, config, str((config["data"].get(source) or {}).get("path") or source))
    write_h5ad(adata, output)
    return adata


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

    keys: ``{"label": col, "donor": col, "cell_type": col or None, "sample": col or None}`` (the
    schema's defaults for keys not given). A missing column is an error naming the columns that do
    exist; the optional ones are left out when their key is null. Other columns are kept; one that
    has a standard name without being configured as it (a ``sample`` column with ``sample: null``)
    is kept as ``<name>_original`` so that it is not mistaken for the configured one.
    """
    from ..config import settings

    keys = settings("data.keys", keys)
    columns = {name: keys[name] for name in ("label", "donor", "cell_type", "sample") if keys[name] is not None}
    cols = list(adata.obs.columns)
    for name, key in columns.items():
        if key not in adata.obs:
            optional = ", or set data.keys.%s: null" % name if name in ("cell_type", "sample") else ""
            raise CellgnnInputError(f"column '{key}' not found in obs (columns: {cols})", file=where,
                                    field=f"data.keys.{name}", fix=f"name an existing obs column{optional}")
    obs = adata.obs.copy()
    new = pd.DataFrame(index=obs.index)
    for name, key in columns.items():
        new[name] = obs[key].astype(str)
        bad = new[name].isin(["nan", "None", ""]) | obs[key].isna().to_numpy()
        if bad.any():
            raise CellgnnInputError(f"{int(bad.sum())} cells have no value in '{name}' column", file=where,
                                    field=f"obs.{name}", fix="fill in or filter those cells first")
        new[name] = new[name].astype("category")
    for col in obs.columns:
        if col not in columns.values():
            new[col if col not in new and col not in ("label", "donor", "cell_type", "sample")
                else f"{col}_original"] = obs[col]
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
                                "nothing to predict", file=where, field=f"obs.{keys['label']}",
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
