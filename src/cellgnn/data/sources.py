"""Downloaded and local data sources: ``file``, ``url`` and ``samplesheet``.

``load_source(cfg, workdir)`` is called by :func:`cellgnn.data.load_dataset` with the
config's ``data`` section; ``workdir`` is where downloads go (the data rule passes
``resources/{dataset}``; that folder is not a Snakemake output, so a failed run never
deletes what was already downloaded).

Labels for sample sheets (``data.samplesheet.label``):

- ``condition``: the sample's ``condition`` (e.g. BALF control / moderate / severe;
  donor = sample).
- ``infection_time``: the organoid time course. Cells of samples whose condition is
  ``data.infection.mock_condition`` are ``mock``; in the other samples a cell is
  ``infected_<time>`` when its viral UMI count (sum over genes matching
  ``data.infection.viral_gene_regex``) is at least ``data.infection.min_viral_umi``,
  else ``bystander_<time>``. Mock cells with viral reads above the threshold are
  dropped (``drop_mock_viral``, as the original study did). The viral genes are then
  removed from the features (``exclude_viral_genes``, default true) so that a model
  cannot read the label off the viral counts.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import CellgnnInputError
from .download import download, read_sidecar
from .readers import read_counts
from .samplesheet import fetch_samples, load_samplesheet, read_samples, url_filename

LOG = logging.getLogger(__name__)

DEFAULT_INFECTION = {"viral_gene_regex": r"(?i)^(scv2|sars[-_]?cov[-_]?2|cov[-_]?2)",
                     "min_viral_umi": 10, "mock_condition": "mock", "exclude_viral_genes": True,
                     "drop_mock_viral": True}
DEFAULT_DOWNLOAD = {"retries": 5, "backoff": 2.0, "timeout": 60.0, "progress": True}


def load_source(cfg: dict, workdir: str | Path = "resources"):
    """Load ``cfg["source"]`` ∈ {file, url, samplesheet}; returns AnnData with counts in ``X``.

    cfg: the ``data`` config section. Keys used: ``file: {path, format, layer}``,
    ``url: {url, sha256, format, layer, filename}``, ``samplesheet: {path, label, duplicates}``,
    ``infection: {...}`` (see module doc), ``download: {retries, backoff, timeout, progress}``.
    The caller renames columns to ``label``/``donor``/``cell_type`` (``data.keys``).
    """
    source = cfg.get("source")
    dl = {**DEFAULT_DOWNLOAD, **(cfg.get("download") or {})}
    workdir = Path(workdir)
    if source == "file":
        fc = cfg.get("file") or {}
        _require(fc, "path", "data.file.path", "the path of a .h5ad, 10x .h5 or 10x MTX directory")
        adata = read_counts(fc["path"], fc.get("format", "auto"), layer=fc.get("layer") or None)
        adata.uns["cellgnn"] = {"source": {"kind": "file", "path": str(fc["path"])}}
        return adata
    if source == "url":
        uc = cfg.get("url") or {}
        _require(uc, "url", "data.url.url", "the http(s) URL of a .h5ad or 10x .h5 file")
        dest = workdir / (uc.get("filename") or url_filename(uc["url"]))
        path = download(uc["url"], dest, uc.get("sha256") or None, **dl)
        adata = read_counts(path, uc.get("format", "auto"), layer=uc.get("layer") or None)
        adata.uns["cellgnn"] = {"source": {"kind": "url", "url": uc["url"], "path": str(path),
                                           "sha256": read_sidecar(path) or str(uc.get("sha256") or "")}}
        return adata
    if source == "samplesheet":
        sc_cfg = cfg.get("samplesheet") or {}
        _require(sc_cfg, "path", "data.samplesheet.path", "a TSV sample sheet (see config/samples/)")
        sheet = load_samplesheet(sc_cfg["path"])  # validate everything before any download
        scheme = sc_cfg.get("label", "condition")
        if scheme not in ("condition", "infection_time"):
            raise CellgnnInputError(f"unknown label scheme '{scheme}'", field="data.samplesheet.label",
                                    fix="use condition or infection_time")
        paths = fetch_samples(sheet, workdir, **dl)
        adata = read_samples(sheet, paths, duplicates=sc_cfg.get("duplicates", "make_unique"),
                             where=str(sc_cfg["path"]))
        meta = sc_cfg.get("cell_metadata") or {}
        if meta.get("url") or meta.get("path"):
            adata = join_cell_metadata(adata, sheet, meta, workdir, dl)
        if scheme == "condition":
            adata.obs["label"] = adata.obs["condition"]
        else:
            adata = infection_labels(adata, {**DEFAULT_INFECTION, **(cfg.get("infection") or {})},
                                     where=str(sc_cfg["path"]))
        adata.uns["cellgnn"] = {"source": {
            "kind": "samplesheet", "samplesheet": str(sc_cfg["path"]), "label": scheme,
            "samples": {r.sample: {"url": r.url, "path": str(paths[r.sample]), "condition": r.condition,
                                   "donor": r.donor, "time": r.time} for r in sheet.itertuples(index=False)},
            "sha256": _recorded_sums(paths)}}
        return adata
    raise CellgnnInputError(f"load_source does not handle source '{source}'", field="data.source",
                            fix="use file, url or samplesheet")


def join_cell_metadata(adata, sheet: pd.DataFrame, meta: dict, workdir: Path, dl: dict):
    """Per-cell annotations (``data.samplesheet.cell_metadata``: a TSV, gzipped or not, of one row
    per barcode, e.g. donors demultiplexed from pooled samples and author cell types) joined to the
    cells by barcode, within the sample whose sheet column ``match`` equals the table's
    ``sample_column`` when that is given. Cells without a row are dropped (counted in the log);
    a table column that clashes with an obs column is added as ``<name>_cell``."""
    from ..paths import child_path

    if meta.get("url"):
        name = url_filename(meta["url"])
        dest = child_path(workdir / "cell_metadata", name, field="data.samplesheet.cell_metadata.url")
        path = download(meta["url"], dest, meta.get("sha256") or None, **dl)
    else:
        path = Path(meta["path"])
    where = str(meta.get("url") or meta.get("path"))
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, compression="infer")
    except Exception as exc:  # noqa: BLE001 - any parse failure is a bad table
        raise CellgnnInputError(f"cannot read the cell metadata as TSV ({exc})", file=where,
                                field="data.samplesheet.cell_metadata", fix="give a tab-separated table") from exc
    barcode = meta.get("barcode_column") or table.columns[0]
    sample_col = meta.get("sample_column")
    for col in filter(None, (barcode, sample_col)):
        if col not in table:
            raise CellgnnInputError(f"column '{col}' not found (columns: {list(table.columns)})", file=where,
                                    field="data.samplesheet.cell_metadata", fix="name an existing column")
    if sample_col:
        match = sheet.set_index("sample")[meta.get("match", "sample")].astype(str)
        key_obs = (adata.obs["sample"].astype(str).map(match) + "\x1f" + adata.obs["barcode"].astype(str))
        table.index = table[sample_col].astype(str) + "\x1f" + table[barcode].astype(str)
    else:
        key_obs = adata.obs["barcode"].astype(str)
        table.index = table[barcode].astype(str)
    if not table.index.is_unique:
        raise CellgnnInputError("the cell metadata has repeated barcodes" + (" within a sample" if sample_col else ""),
                                file=where, field="data.samplesheet.cell_metadata.sample_column",
                                fix="name the column that tells the samples apart (sample_column)")
    keep = key_obs.isin(table.index).to_numpy()
    LOG.info("cell metadata %s: %d of %d cells annotated, the rest dropped", where, int(keep.sum()), adata.n_obs)
    if not keep.any():
        raise CellgnnInputError("no cell's barcode is in the cell metadata", file=where,
                                field="data.samplesheet.cell_metadata",
                                fix="check barcode_column, sample_column and match against the samples' barcodes")
    out = adata[keep].copy()
    rows = table.loc[key_obs[keep].to_numpy()].drop(columns=[c for c in (barcode, sample_col) if c])
    for col in rows.columns:
        out.obs[col if col not in out.obs else f"{col}_cell"] = rows[col].to_numpy()
    return out


def infection_labels(adata, icfg: dict, where: str = "sample sheet"):
    """Label cells mock / infected_<time> / bystander_<time> from viral UMI counts (see module doc).

    adata: concatenated samples with obs ``condition`` and ``time``; returns a new AnnData
    with obs ``label`` and ``viral_umi`` (float, UMIs summed over viral genes), viral genes
    removed when ``icfg["exclude_viral_genes"]``.
    """
    try:
        pat = re.compile(icfg["viral_gene_regex"])
    except re.error as exc:
        raise CellgnnInputError(f"invalid regular expression ({exc})", field="data.infection.viral_gene_regex",
                                fix="give a Python regular expression matching the viral gene names") from exc
    viral = np.array([bool(pat.search(g)) for g in adata.var_names])
    if not viral.any():
        hint = [g for g in adata.var_names if re.search(r"(?i)cov|sars|orf|virus|viral", g)][:10]
        raise CellgnnInputError(f"no gene matches the viral pattern '{icfg['viral_gene_regex']}' "
                                f"(genes that look viral: {hint or 'none'})", file=where,
                                field="data.infection.viral_gene_regex",
                                fix="set viral_gene_regex to match the viral gene(s) in the count matrix")
    vcount = np.asarray(adata.X[:, np.flatnonzero(viral)].sum(axis=1)).ravel()
    thr = float(icfg["min_viral_umi"])
    cond = adata.obs["condition"].astype(str).to_numpy()
    time = adata.obs["time"].astype(str).to_numpy()
    mock = cond == icfg["mock_condition"]
    if mock.all() or not mock.any():
        raise CellgnnInputError(f"infection_time labels need mock samples (condition "
                                f"'{icfg['mock_condition']}') and infected samples; conditions found: "
                                f"{sorted(set(cond))}", file=where, field="condition",
                                fix="set data.infection.mock_condition to the mock samples' condition")
    no_time = ~mock & (time == "")
    if no_time.any():
        bad = sorted(set(adata.obs["sample"].astype(str).to_numpy()[no_time]))
        raise CellgnnInputError(f"infected samples {bad} have no time point", file=where, field="time",
                                fix="fill in the time column (e.g. 1dpi) for every infected sample")
    label = np.where(mock, "mock", np.where(vcount >= thr, "infected_", "bystander_").astype(object) + time)
    keep = np.ones(adata.n_obs, bool)
    if icfg["drop_mock_viral"]:
        keep = ~(mock & (vcount >= thr))
        LOG.info("dropping %d mock cells with >= %g viral UMIs", int((~keep).sum()), thr)
    out = adata[keep].copy()
    out.obs["label"] = pd.Categorical(label[keep].astype(str))
    out.obs["viral_umi"] = vcount[keep].astype(np.float32)
    if icfg["exclude_viral_genes"]:
        LOG.info("excluding viral genes from the features: %s", list(out.var_names[viral]))
        out = out[:, ~viral].copy()
    out.uns["viral_genes"] = [str(g) for g in adata.var_names[viral]]
    counts = out.obs["label"].value_counts().sort_index()
    LOG.info("infection labels: %s", ", ".join(f"{k} {v}" for k, v in counts.items()))
    return out


def _recorded_sums(paths: dict[str, Path]) -> dict[str, str]:
    out = {}
    for sample, p in paths.items():
        files = sorted(f for f in p.iterdir() if f.name.endswith(".sha256")) if p.is_dir() else \
            [p.with_name(p.name + ".sha256")]
        for f in files:
            if f.exists():
                out[f"{sample}:{f.name.removesuffix('.sha256')}"] = f.read_text().split()[0]
    return out


def _require(section: dict, key: str, field: str, what: str) -> None:
    if not section.get(key):
        raise CellgnnInputError(f"{field} is empty", field=field, fix=f"set it to {what}")
