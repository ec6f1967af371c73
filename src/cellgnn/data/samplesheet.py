"""Sample sheets: one TSV row per sample, validated by ``workflow/schemas/samples.schema.yaml``.

Columns: ``sample`` (unique id), ``url`` (one or several ``;``-separated URLs) or
``path`` (local file/directory), ``sha256`` (optional, ``;``-separated like ``url``),
``condition``, ``donor`` (empty = the sample id), ``time``, ``format``.

``load_samplesheet`` validates the whole sheet before anything is downloaded or
read; ``fetch_samples`` downloads URL rows into ``<download_dir>/<sample>/``;
``read_samples`` reads every sample and concatenates them into one AnnData
(cells prefixed ``<sample>_``, ``obs`` columns ``sample``, ``condition``,
``donor``, ``time``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import pandas as pd

from ..errors import CellgnnInputError
from .download import download
from .readers import read_counts

LOG = logging.getLogger(__name__)

SCHEMA = Path(__file__).resolve().parents[3] / "workflow" / "schemas" / "samples.schema.yaml"


def load_samplesheet(path: str | os.PathLike, schema: str | os.PathLike = SCHEMA) -> pd.DataFrame:
    """Read and validate a TSV sample sheet; returns a DataFrame (all columns strings).

    Raises ``CellgnnInputError`` naming the file, row and column for: a row that fails the
    schema, a duplicated sample id, a row with both or neither of url/path, a ``sha256``
    list whose length differs from the URL list, or a ``path`` that does not exist.
    """
    import jsonschema
    import yaml

    path = Path(path)
    if not path.exists():
        raise CellgnnInputError("sample sheet not found", file=str(path), field="data.samplesheet.path",
                                fix="point data.samplesheet.path at a TSV file (see config/samples/)")
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, comment="#")
    except Exception as exc:
        raise CellgnnInputError(f"cannot parse as TSV ({exc})", file=str(path),
                                fix="write the sample sheet as tab-separated values with a header row") from exc
    df.columns = [c.strip() for c in df.columns]
    df = df.apply(lambda col: col.str.strip())
    if df.empty:
        raise CellgnnInputError("sample sheet has no rows", file=str(path), fix="add one row per sample")
    with open(schema) as fh:
        sch = yaml.safe_load(fh)
    validator = jsonschema.Draft202012Validator(sch)
    for i, row in enumerate(df.to_dict("records")):
        rowname = f"row {i + 2} (sample '{row.get('sample', '?')}')"  # +2: header line, 1-based
        err = next(iter(sorted(validator.iter_errors(row), key=lambda e: e.path)), None)
        if err is not None:
            col = ".".join(str(x) for x in err.path) or (err.validator_value if err.validator == "required" else "")
            raise CellgnnInputError(f"{rowname}: {err.message}", file=str(path), field=str(col) or None,
                                    fix=f"fix this row to match {Path(schema).name} (columns: "
                                        f"{', '.join(sch['properties'])})")
    dup = df["sample"][df["sample"].duplicated()].unique().tolist()
    if dup:
        raise CellgnnInputError(f"duplicated sample ids: {dup}", file=str(path), field="sample",
                                fix="give every row a unique sample id")
    for col in ("url", "path", "sha256", "donor", "time", "format"):
        if col not in df:
            df[col] = ""
    for i, row in df.iterrows():
        rowname = f"row {i + 2} (sample '{row['sample']}')"
        if bool(row["url"]) == bool(row["path"]):
            raise CellgnnInputError(f"{rowname}: give exactly one of 'url' and 'path'", file=str(path),
                                    field="url", fix="fill in url (to download) or path (a local file)")
        if row["url"] and row["sha256"]:
            n_url, n_sum = len(row["url"].split(";")), len(row["sha256"].split(";"))
            if n_url != n_sum:
                raise CellgnnInputError(f"{rowname}: {n_url} URLs but {n_sum} sha256 sums", file=str(path),
                                        field="sha256", fix="give one sum per URL (';'-separated, empty to record)")
        if row["path"] and not Path(row["path"]).exists():
            raise CellgnnInputError(f"{rowname}: file '{row['path']}' does not exist", file=str(path),
                                    field="path", fix="correct the path (relative to the working directory) "
                                                      "or use url to download it")
        if not row["donor"]:
            df.at[i, "donor"] = row["sample"]
        if not row["format"]:
            df.at[i, "format"] = "auto"
    return df


def url_filename(url: str) -> str:
    """The last path component of ``url`` (URL-decoded); what the download is saved as."""
    name = Path(unquote(urlparse(url).path)).name
    if not name:
        raise CellgnnInputError(f"cannot derive a file name from URL '{url}'", field="url",
                                fix="use a URL that ends in the file name")
    return name


def fetch_samples(sheet: pd.DataFrame, download_dir: str | os.PathLike, *, retries: int = 5,
                  backoff: float = 2.0, timeout: float = 60.0, progress: bool = True) -> dict[str, Path]:
    """Download every URL row into ``<download_dir>/<sample>/``; returns sample → path to read.

    A row with one URL maps to the downloaded file; a row with several URLs (10x MTX)
    maps to its directory. ``path`` rows map to their path. Already verified files are
    not downloaded again; a failure deletes nothing already downloaded.
    """
    out: dict[str, Path] = {}
    root = Path(download_dir)
    for row in sheet.itertuples(index=False):
        if row.path:
            out[row.sample] = Path(row.path)
            continue
        urls = row.url.split(";")
        sums = row.sha256.split(";") if row.sha256 else [""] * len(urls)
        folder = root / row.sample
        files = [download(u, folder / url_filename(u), s or None, retries=retries, backoff=backoff,
                          timeout=timeout, progress=progress) for u, s in zip(urls, sums)]
        out[row.sample] = files[0] if len(files) == 1 else folder
    return out


def read_samples(sheet: pd.DataFrame, paths: dict[str, Path], *, duplicates: str = "make_unique",
                 where: str = "sample sheet"):
    """Read each sample and concatenate (inner join on gene names) into one AnnData.

    obs: ``sample``, ``condition``, ``donor``, ``time`` (categorical), ``barcode``; obs_names
    ``<sample>_<barcode>``. Genes: a gene name that maps to different gene ids in two
    samples (e.g. a symbol duplicated in one sample's reference but not the other's) is
    an error, as silently joining them would mix different genes; genes missing from some
    samples are dropped with a warning.
    """
    import anndata as ad

    parts = []
    for row in sheet.itertuples(index=False):
        a = read_counts(paths[row.sample], row.format or "auto", duplicates=duplicates)
        barcodes = list(a.obs_names)
        a.obs_names = [f"{row.sample}_{b}" for b in a.obs_names]
        a.obs = pd.DataFrame({"sample": row.sample, "condition": row.condition, "donor": row.donor,
                              "time": row.time, "barcode": barcodes}, index=a.obs_names)
        parts.append((row.sample, a))
    _check_gene_ids(parts, where)
    common = parts[0][1].var_names
    for _, a in parts[1:]:
        common = common.intersection(a.var_names, sort=False)
    if len(common) == 0:
        raise CellgnnInputError("the samples share no gene names", file=where, field="var_names",
                                fix="use count matrices from the same reference annotation")
    for s, a in parts:
        n_drop = a.n_vars - len(common)
        if n_drop:
            LOG.warning("sample %s: %d genes absent from other samples dropped (%d kept)", s, n_drop, len(common))
    gene_ids = parts[0][1].var["gene_ids"].reindex(common) if "gene_ids" in parts[0][1].var else None
    adata = ad.concat([a[:, common] for _, a in parts], join="inner", merge=None)
    if gene_ids is not None:
        adata.var["gene_ids"] = gene_ids.to_numpy()
    if not adata.obs_names.is_unique:
        raise CellgnnInputError("cell names are not unique after prefixing with sample ids", file=where,
                                field="obs_names", fix="check barcodes files for repeated barcodes")
    for col in ("sample", "condition", "donor", "time"):
        adata.obs[col] = pd.Categorical(adata.obs[col].astype(str))
    LOG.info("concatenated %d samples: %d cells x %d genes", len(parts), adata.n_obs, adata.n_vars)
    return adata


def _check_gene_ids(parts, where: str) -> None:
    """Refuse gene names that stand for different gene ids in different samples."""
    seen: dict[str, tuple[str, str]] = {}
    for sample, a in parts:
        if "gene_ids" not in a.var:
            continue
        ids = a.var["gene_ids"].astype(str).to_numpy()
        for name, gid in zip(a.var_names, ids):
            prev = seen.setdefault(name, (gid, sample))
            if prev[0] != gid:
                raise CellgnnInputError(
                    f"gene name '{name}' is duplicated across samples with different gene ids: "
                    f"{prev[0]} in sample '{prev[1]}', {gid} in sample '{sample}'", file=where, field="var_names",
                    fix="use count matrices made with the same reference annotation for every sample, or "
                        "rename the duplicated genes so that each name means one gene")


