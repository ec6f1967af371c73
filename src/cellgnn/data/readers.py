"""Readers for count matrices: ``.h5ad``, 10x ``.h5`` (CellRanger v2/v3 HDF5), 10x MTX directories.

``read_counts(path)`` returns an AnnData with ``X`` = raw UMI counts as
``scipy.sparse.csr_matrix`` float32 (cells × genes), ``var_names`` = gene symbols
and ``var["gene_ids"]`` where the file has them. Counts are validated (finite,
non-negative integers) and a truncated or corrupt file raises a
``CellgnnInputError`` naming the file.

Duplicate gene symbols inside one file (10x files map several Ensembl ids to one
symbol, e.g. for pseudo-autosomal genes) are made unique as ``SYMBOL-1``,
``SYMBOL-2``... with a warning, as scanpy and Seurat do; ``duplicates="error"``
refuses them instead.
"""

from __future__ import annotations

import gzip
import logging
import os
import re
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ..errors import CellgnnInputError

LOG = logging.getLogger(__name__)

FORMATS = ("auto", "h5ad", "10x_h5", "10x_mtx")


def detect_format(path: str | os.PathLike) -> str:
    """``h5ad`` | ``10x_h5`` | ``10x_mtx`` from the path (a directory is an MTX directory)."""
    p = Path(path)
    name = p.name.lower()
    if p.is_dir():
        return "10x_mtx"
    if name.endswith(".h5ad"):
        return "h5ad"
    if name.endswith(".h5") or name.endswith(".hdf5"):
        return "10x_h5"
    if re.search(r"matrix\.mtx(\.gz)?$", name):
        return "10x_mtx"
    raise CellgnnInputError(f"cannot tell the format of '{p.name}'", file=str(p), field="format",
                            fix="use a .h5ad file, a 10x .h5 file or a 10x MTX directory, or set format: "
                                "h5ad | 10x_h5 | 10x_mtx")


def read_counts(path: str | os.PathLike, format: str = "auto", *, layer: str | None = None,
                duplicates: str = "make_unique", gene_expression_only: bool = True):
    """Read raw counts from ``path``; returns AnnData (X csr float32 counts, cells × genes).

    format: ``auto`` (from the name), ``h5ad``, ``10x_h5`` or ``10x_mtx`` (a directory with
        ``[prefix]matrix.mtx[.gz]``, ``[prefix]features.tsv[.gz]`` or ``genes.tsv``,
        ``[prefix]barcodes.tsv[.gz]``; a path to the ``matrix.mtx`` file also works).
    layer: ``.h5ad`` only: take counts from ``layers[layer]`` (``"raw"`` means ``adata.raw.X``).
    duplicates: ``make_unique`` (warn and suffix -1, -2...) or ``error``.
    gene_expression_only: 10x files: keep features of type "Gene Expression" only.
    """
    p = Path(path)
    if format not in FORMATS:
        raise CellgnnInputError(f"unknown format '{format}'", file=str(p), field="format",
                                fix=f"use one of {', '.join(FORMATS)}")
    if duplicates not in ("make_unique", "error"):
        raise CellgnnInputError(f"unknown duplicates policy '{duplicates}'", field="duplicates",
                                fix="use make_unique or error")
    if not p.exists():
        raise CellgnnInputError("file or directory does not exist", file=str(p),
                                fix="check the path (relative paths are relative to the working directory)")
    fmt = detect_format(p) if format == "auto" else format
    if fmt == "h5ad":
        adata = _read_h5ad(p, layer)
    elif fmt == "10x_h5":
        adata = _read_10x_h5(p, gene_expression_only)
    else:
        adata = _read_10x_mtx(p, gene_expression_only)
    adata.X = validate_counts(adata.X, file=str(p))
    _unique_genes(adata, str(p), duplicates)
    adata.obs_names = adata.obs_names.astype(str)
    LOG.info("read %s (%s): %d cells x %d genes, %d non-zeros", p, fmt, adata.n_obs, adata.n_vars, adata.X.nnz)
    return adata


def validate_counts(X, *, file: str | None = None, field: str = "X") -> sp.csr_matrix:
    """Return ``X`` as csr float32 after checking it holds finite non-negative integers."""
    if not sp.issparse(X):
        X = np.asarray(X)
        if X.dtype.kind not in "iuf":
            raise CellgnnInputError(f"counts have non-numeric dtype {X.dtype}", file=file, field=field,
                                    fix="provide a numeric count matrix")
        X = sp.csr_matrix(X)
    X = sp.csr_matrix(X)
    data = X.data
    if data.dtype.kind not in "iuf":
        raise CellgnnInputError(f"counts have non-numeric dtype {data.dtype}", file=file, field=field,
                                fix="provide a numeric count matrix")
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        n = int((~np.isfinite(data)).sum())
        raise CellgnnInputError(f"{n} counts are NaN or infinite", file=file, field=field,
                                fix="provide raw UMI counts without missing values")
    if data.size and data.min() < 0:
        raise CellgnnInputError(f"{int((data < 0).sum())} counts are negative (min {data.min()}): "
                                "these are not raw counts", file=file, field=field,
                                fix="provide raw UMI counts (not scaled or log-transformed data); for an .h5ad "
                                    "whose X is normalized set data.file.layer to the layer holding counts")
    if data.dtype.kind == "f":
        frac = data != np.round(data)
        if frac.any():
            raise CellgnnInputError(f"{int(frac.sum())} counts are not integers (e.g. {data[frac][0]:.4g}): "
                                    "these are not raw counts", file=file, field=field,
                                    fix="provide raw UMI counts (not normalized data); for an .h5ad whose X is "
                                        "normalized set data.file.layer to the layer holding counts (e.g. 'counts' or 'raw')")
    if data.size and data.max() > np.finfo(np.float32).max:
        raise CellgnnInputError("counts exceed float32 range", file=file, field=field, fix="check the file")
    X = X.astype(np.float32)
    X.sum_duplicates()
    X.sort_indices()
    return X


def _unique_genes(adata, file: str, policy: str) -> None:
    names = adata.var_names.astype(str)
    dup = names[names.duplicated(keep=False)]
    if len(dup) == 0:
        return
    examples = ", ".join(sorted(set(dup))[:5])
    if policy == "error":
        raise CellgnnInputError(f"{len(set(dup))} gene names occur more than once (e.g. {examples})", file=file,
                                field="var_names", fix="make them unique, or set duplicates: make_unique")
    msg = (f"{file}: {len(set(dup))} gene names occur more than once (e.g. {examples}); "
           "made unique by suffixing -1, -2, ... (10x maps several gene ids to one symbol)")
    warnings.warn(msg, stacklevel=3)
    LOG.warning(msg)
    adata.var_names = names
    adata.var_names_make_unique()


# ---- h5ad --------------------------------------------------------------------------------------------

def _read_h5ad(p: Path, layer: str | None):
    import anndata as ad

    try:
        adata = ad.read_h5ad(p)
    except Exception as exc:  # h5py raises OSError/KeyError on truncated or non-HDF5 files
        raise CellgnnInputError(f"cannot read as .h5ad ({type(exc).__name__}: {exc}); the file is truncated "
                                "or not an AnnData file", file=str(p),
                                fix="download it again (delete the file first) or check its format") from exc
    if layer:
        if layer == "raw":
            if adata.raw is None:
                raise CellgnnInputError("no .raw in this file", file=str(p), field="data.file.layer",
                                        fix=f"use one of the layers {list(adata.layers)} or leave layer empty")
            adata = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var)
        elif layer not in adata.layers:
            raise CellgnnInputError(f"layer '{layer}' not found (layers: {list(adata.layers)})", file=str(p),
                                    field="data.file.layer", fix="name an existing layer, or leave layer empty to use X")
        else:
            adata = ad.AnnData(X=adata.layers[layer], obs=adata.obs, var=adata.var)
    else:
        adata = ad.AnnData(X=adata.X, obs=adata.obs, var=adata.var, uns=dict(adata.uns))
    return adata


# ---- 10x HDF5 ----------------------------------------------------------------------------------------

def _read_10x_h5(p: Path, gex_only: bool):
    import anndata as ad
    import h5py
    import pandas as pd

    try:
        with h5py.File(p, "r") as f:
            if "matrix" in f:  # CellRanger >= 3
                g = f["matrix"]
                feats = g["features"]
                ids = _str(feats["id"][:])
                names = _str(feats["name"][:])
                ftype = _str(feats["feature_type"][:]) if "feature_type" in feats else ["Gene Expression"] * len(ids)
            else:  # CellRanger 2: one group per genome
                genomes = [k for k in f.keys() if isinstance(f[k], h5py.Group)]
                if len(genomes) != 1:
                    raise CellgnnInputError(f"not a 10x HDF5 file: expected group 'matrix' (CellRanger v3) or one "
                                            f"genome group (v2), found {list(f.keys())}", file=str(p),
                                            fix="use CellRanger's filtered_feature_bc_matrix.h5")
                g = f[genomes[0]]
                ids = _str(g["genes"][:])
                names = _str(g["gene_names"][:])
                ftype = ["Gene Expression"] * len(ids)
            n_genes, n_cells = (int(v) for v in g["shape"][:])
            barcodes = _str(g["barcodes"][:])
            data = g["data"][:]
            indices = g["indices"][:]
            indptr = g["indptr"][:]
    except CellgnnInputError:
        raise
    except Exception as exc:
        raise CellgnnInputError(f"cannot read as a 10x HDF5 file ({type(exc).__name__}: {exc}); the file is "
                                "truncated, corrupt or not CellRanger output", file=str(p),
                                fix="download it again (delete the file first) or check its format") from exc
    if len(indptr) != n_cells + 1 or len(barcodes) != n_cells or len(ids) != n_genes or \
            indptr[-1] != len(data) or len(indices) != len(data):
        raise CellgnnInputError(f"inconsistent 10x HDF5 matrix (shape {n_genes}x{n_cells}, {len(barcodes)} "
                                f"barcodes, {len(ids)} features, indptr {len(indptr)}, data {len(data)})",
                                file=str(p), fix="the file is corrupt: download it again")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_genes):
        raise CellgnnInputError("feature indices out of range", file=str(p), fix="the file is corrupt: download it again")
    # stored as CSC genes x cells == CSR cells x genes
    X = sp.csr_matrix((data, indices, indptr), shape=(n_cells, n_genes))
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype}, index=pd.Index(names))
    adata = ad.AnnData(X=X, obs=pd.DataFrame(index=pd.Index(barcodes)), var=var)
    return _keep_gex(adata, gex_only, p)


def _str(a) -> list[str]:
    return [x.decode() if isinstance(x, bytes) else str(x) for x in a]


def _keep_gex(adata, gex_only: bool, p: Path):
    if gex_only and "feature_types" in adata.var:
        keep = (adata.var["feature_types"] == "Gene Expression").to_numpy()
        if not keep.any():
            raise CellgnnInputError("no 'Gene Expression' features in this file", file=str(p),
                                    fix="check the file holds RNA counts")
        if not keep.all():
            LOG.info("%s: keeping %d Gene Expression features of %d", p, keep.sum(), keep.size)
            adata = adata[:, keep].copy()
    return adata


# ---- 10x MTX directory -------------------------------------------------------------------------------

def find_mtx_files(p: Path) -> dict[str, Path]:
    """Locate ``matrix``, ``features`` and ``barcodes`` files of a 10x MTX directory.

    Accepts GEO-style names (``GSM5082289_mock_matrix.mtx.gz``, ``GSM2560248_2.1.mtx.gz``) as long
    as exactly one file of each kind (``*.mtx``, ``*features.tsv`` or ``*genes.tsv``,
    ``*barcodes.tsv``, each optionally gzipped) is present. ``p`` may be the directory or its ``matrix.mtx`` file.
    """
    if p.is_file():
        prefix = re.sub(r"matrix\.mtx(\.gz)?$", "", p.name)
        folder = p.parent
    else:
        prefix, folder = None, p
    pats = {"matrix": r"\.mtx(\.gz)?$", "features": r"(features|genes)\.tsv(\.gz)?$",
            "barcodes": r"barcodes\.tsv(\.gz)?$"}
    out = {}
    for kind, pat in pats.items():
        hits = sorted(f for f in folder.iterdir()
                      if re.search(pat, f.name) and (prefix is None or f.name.startswith(prefix))
                      and not f.name.endswith((".part", ".mismatch", ".sha256")))
        if len(hits) != 1:
            found = ", ".join(h.name for h in hits) or "none"
            raise CellgnnInputError(f"10x MTX directory needs exactly one {kind} file matching '{pat}', "
                                    f"found {found}", file=str(folder),
                                    fix="put one sample's matrix.mtx.gz, features.tsv.gz (or genes.tsv.gz) and "
                                        "barcodes.tsv.gz in the directory")
        out[kind] = hits[0]
    return out


def _read_10x_mtx(p: Path, gex_only: bool):
    import anndata as ad
    import pandas as pd
    import scipy.io

    files = find_mtx_files(p)
    try:
        with (gzip.open(files["matrix"], "rb") if files["matrix"].name.endswith(".gz")
              else open(files["matrix"], "rb")) as fh:
            M = scipy.io.mmread(fh)
        feats = pd.read_csv(files["features"], sep="\t", header=None, dtype=str, compression="infer")
        bcs = pd.read_csv(files["barcodes"], sep="\t", header=None, dtype=str, compression="infer")
    except Exception as exc:  # EOFError/BadGzipFile on truncated gzip, ValueError on bad MatrixMarket
        raise CellgnnInputError(f"cannot read the 10x MTX files ({type(exc).__name__}: {exc}); a file is "
                                "truncated or corrupt", file=str(p),
                                fix="download the sample's files again (delete them first)") from exc
    M = sp.csr_matrix(M.T)  # file is genes x cells
    n_cells, n_genes = M.shape
    if feats.shape[0] != n_genes or bcs.shape[0] != n_cells:
        raise CellgnnInputError(f"matrix is {n_genes} genes x {n_cells} cells but {files['features'].name} has "
                                f"{feats.shape[0]} rows and {files['barcodes'].name} has {bcs.shape[0]}",
                                file=str(p), fix="the three files must come from the same sample")
    ids = feats[0].to_numpy()
    names = feats[1].to_numpy() if feats.shape[1] > 1 else ids
    ftype = feats[2].to_numpy() if feats.shape[1] > 2 else np.full(n_genes, "Gene Expression", dtype=object)
    var = pd.DataFrame({"gene_ids": ids, "feature_types": ftype}, index=pd.Index(names.astype(str)))
    adata = ad.AnnData(X=M, obs=pd.DataFrame(index=pd.Index(bcs[0].to_numpy().astype(str))), var=var)
    return _keep_gex(adata, gex_only, p)
