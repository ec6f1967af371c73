"""Start-up checks: everything that can be checked before the first job, in one place.

``preflight(cfg, workdir, source)`` runs when Snakemake parses the workflow (common.smk),
after the schema has filled the defaults. It refuses, with one message naming the file,
the field and the fix:

- paths built from the config that leave their folder, and inputs that live where the
  workflow writes (``results/``, ``logs/``, ``benchmarks/``, ``resources/``);
- requests that cannot fit in this machine's memory (with the estimate);
- designs that cannot be split, classes / controls / populations that do not exist,
  ``graph.k`` or ``preprocess.n_pcs`` beyond the data — wherever the study's ``obs`` can be
  read cheaply (simulated designs, ``.h5ad`` files, sample sheets, bundled data); the data
  stage checks the real cells again before writing anything.

It returns the :class:`Plan` of the run: the split units (graph files) and the stages the
design leaves in or out, with notes that ``summary.md`` repeats.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .design import cell_types_source, check_design, split_units
from .errors import CellgnnInputError
from .paths import check_not_written, child_path

LOG = logging.getLogger(__name__)
GIB = 1024**3


@dataclass
class Plan:
    """What this run builds. units: graph files (``cells``, ``donors``, ``donor_cv/fold<i>``);
    n_donors: donors of the study (None when unknown before download); cell_types: where cell
    types come from (``data``, ``celltype`` stage, or None); notes: decisions for summary.md."""

    units: list[str]
    n_donors: int | None
    design: dict | None
    cell_types: str | None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- obs at start-up
def startup_obs(cfg: dict, workdir: str | Path = ".") -> tuple[pd.DataFrame | None, str]:
    """``label``, ``donor`` (and ``cell_type``, ``sample`` when configured) of every cell, when they
    can be had without loading counts; ``(None, where)`` for downloads not yet made."""
    data = cfg["data"]
    source = data["source"]
    keys = data["keys"]
    if source == "simulate":
        from .data.simulate import check_params, design_obs

        check_params(**data["simulate"])
        return design_obs(**data["simulate"]), "data.simulate"
    if source == "pbmc68k":
        import importlib.util

        spec = importlib.util.find_spec("scanpy")
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "10x_pbmc68k_reduced.h5ad"
        obs = _read_h5ad_obs(path)
        return pd.DataFrame({"label": obs["bulk_labels"].astype(str), "donor": "pbmc",
                             "cell_type": obs["bulk_labels"].astype(str)}), "scanpy pbmc68k_reduced"
    if source == "file":
        path = Path(workdir, data["file"]["path"])
        if _is_h5ad(path, data["file"]["format"]):
            return _standard_columns(_read_h5ad_obs(path), keys, str(data["file"]["path"])), str(data["file"]["path"])
        return None, str(data["file"]["path"])
    if source == "url":
        from .data.samplesheet import url_filename

        name = data["url"]["filename"] or url_filename(data["url"]["url"])
        path = Path(workdir, "resources", cfg["dataset"], name)
        if path.exists() and _is_h5ad(path, data["url"]["format"]):
            return _standard_columns(_read_h5ad_obs(path), keys, str(path)), str(path)
        return None, data["url"]["url"]
    if source == "samplesheet":
        meta = data["samplesheet"]["cell_metadata"]
        if meta["url"] or meta["path"]:  # donors / cell types come per cell: known once the table is read
            return None, data["samplesheet"]["path"]
        return _samplesheet_obs(data), data["samplesheet"]["path"]
    return None, source


def _is_h5ad(path: Path, fmt: str) -> bool:
    return path.is_file() and (fmt == "h5ad" or (fmt == "auto" and path.suffix == ".h5ad"))


def _read_h5ad_obs(path: Path) -> pd.DataFrame:
    """``obs`` of an .h5ad file, read alone (no counts)."""
    import h5py
    from anndata.io import read_elem

    try:
        with h5py.File(path, "r") as f:
            return read_elem(f["obs"])
    except Exception as e:  # noqa: BLE001 - any failure here is an unreadable file
        raise CellgnnInputError(f"cannot read obs ({type(e).__name__}: {e}); the file is truncated or not an "
                                "AnnData", file=str(path), fix="check the file (re-download or re-export it)") from e


def _standard_columns(obs: pd.DataFrame, keys: dict, where: str) -> pd.DataFrame:
    """obs renamed to ``label``, ``donor``, ``cell_type``, ``sample`` (the configured ones)."""
    out = pd.DataFrame(index=obs.index)
    for name in ("label", "donor", "cell_type", "sample"):
        col = keys[name]
        if col is None:
            continue
        if col not in obs:
            fix = ("name an existing obs column" + (", or set it to null" if name in ("cell_type", "sample") else ""))
            raise CellgnnInputError(f"column '{col}' not found in obs (columns: {list(obs.columns)})", file=where,
                                    field=f"data.keys.{name}", fix=fix)
        values = obs[col]
        if values.isna().any():
            raise CellgnnInputError(f"{int(values.isna().sum())} cells have no value in obs column '{col}'", file=where,
                                    field=f"data.keys.{name}", fix="fill in or filter those cells first")
        out[name] = values.astype(str).to_numpy()
    return out


def _samplesheet_obs(data: dict) -> pd.DataFrame:
    """One pseudo-cell block per sample of the sheet: the design, without reading any counts."""
    from .data.samplesheet import load_samplesheet

    sheet = load_samplesheet(data["samplesheet"]["path"])
    mock = data["infection"]["mock_condition"]
    rows = []
    for row in sheet.itertuples():
        donor = row.donor or row.sample
        if data["samplesheet"]["label"] == "infection_time" and row.condition != mock:
            labels = [f"infected_{row.time}", f"bystander_{row.time}"]
        else:
            labels = ["mock" if data["samplesheet"]["label"] == "infection_time" else row.condition]
        rows += [(lab, donor, row.sample) for lab in labels for _ in range(50)]
    return pd.DataFrame(rows, columns=["label", "donor", "sample"])


# ---------------------------------------------------------------- checks
def check_paths(cfg: dict, workdir: str | Path, source: str) -> None:
    """Paths built from the config stay inside their folders; inputs are not where the workflow writes."""
    for folder in ("results", "logs", "benchmarks", "resources"):
        child_path(Path(workdir, folder), cfg["dataset"], field="dataset", source=source)
    data = cfg["data"]
    if data["source"] == "file" and data["file"].get("path"):
        check_not_written(data["file"]["path"], workdir, field="data.file.path", source=source)
        if not Path(workdir, data["file"]["path"]).exists():
            raise CellgnnInputError("file or directory does not exist", file=str(data["file"]["path"]),
                                    field="data.file.path",
                                    fix="check the path (relative paths are relative to the working directory)")
    gene_set = cfg["explain"]["gene_set"]["path"]
    if gene_set:
        from .genesets import gene_set_path

        gene_set_path(gene_set, workdir)
    if data["source"] == "url":
        from .data.samplesheet import url_filename

        name = data["url"]["filename"] or url_filename(data["url"]["url"])
        child_path(Path(workdir, "resources", cfg["dataset"]), name, field="data.url.filename", source=source)
    if data["source"] == "samplesheet" and data["samplesheet"]["path"]:
        sheet_path = data["samplesheet"]["path"]
        check_not_written(sheet_path, workdir, field="data.samplesheet.path", source=source)
        if Path(workdir, sheet_path).exists():
            from .data.samplesheet import load_samplesheet, url_filename

            sheet = load_samplesheet(Path(workdir, sheet_path))
            for row in sheet.itertuples():
                where = f"{sheet_path} (sample '{row.sample}')"
                if row.path:
                    check_not_written(row.path, workdir, field="path", source=where)
                sample_dir = child_path(Path(workdir, "resources", cfg["dataset"]), row.sample, field="sample",
                                        source=where)
                for url in filter(None, row.url.split(";")):
                    child_path(sample_dir, url_filename(url), field="url", source=where)


def memory_estimate_gib(n_cells: int, n_genes: int, simulate: bool) -> float:
    """Peak memory (GiB) of the largest stage for ``n_cells`` x ``n_genes``: the graph stage's dense
    float32 node features (three copies while scaling), or the simulator's dense float64 means."""
    graph = 3 * 4 * n_cells * n_genes
    sim = 5 * 8 * n_cells * n_genes if simulate else 0
    return max(graph, sim) / GIB


def check_memory(cfg: dict, n_cells: int | None, n_genes: int | None, source: str) -> None:
    """Refuse a study whose estimated peak memory exceeds this machine's."""
    if not n_cells or not n_genes:
        return
    import psutil

    need = memory_estimate_gib(n_cells, n_genes, cfg["data"]["source"] == "simulate")
    have = psutil.virtual_memory().total / GIB
    if need > have:
        field_ = "data.simulate.n_cells" if cfg["data"]["source"] == "simulate" else "data"
        raise CellgnnInputError(f"{n_cells:,} cells x {n_genes:,} genes need about {need:,.1f} GiB of memory; this "
                                f"machine has {have:,.1f} GiB", file=source, field=field_,
                                fix="use fewer cells or genes (e.g. preprocess.hvg), or run on a machine with more "
                                    "memory (the SLURM profile's mem_mb)")


def _shape(cfg: dict, workdir: str | Path) -> tuple[int | None, int | None]:
    data = cfg["data"]
    if data["source"] == "simulate":
        return data["simulate"]["n_cells"], data["simulate"]["n_genes"]
    if data["source"] == "file":
        path = Path(workdir, data["file"]["path"])
        if _is_h5ad(path, data["file"]["format"]):
            import h5py

            try:
                with h5py.File(path, "r") as f:
                    x = f["X"]
                    shape = x.attrs.get("shape", getattr(x, "shape", None))
                    return int(shape[0]), int(shape[1])
            except Exception:  # noqa: BLE001 - unreadable files are refused by the obs reader
                return None, None
    return None, None


def preflight(cfg: dict, workdir: str | Path = ".", source: str = "config") -> Plan:
    """Every start-up check; returns the run's :class:`Plan` (see module doc). A refusal that names
    no file names the config file(s) ``source``."""
    try:
        return _preflight(cfg, workdir, source)
    except CellgnnInputError as err:
        if err.file:
            raise
        raise CellgnnInputError(err.problem, file=source, field=err.field, fix=err.fix) from None


def _preflight(cfg: dict, workdir: str | Path, source: str) -> Plan:
    check_paths(cfg, workdir, source)
    n_cells, n_genes = _shape(cfg, workdir)
    check_memory(cfg, n_cells, n_genes, source)
    obs, where = startup_obs(cfg, workdir)
    notes: list[str] = []
    design = None
    graph = cfg["graph"]
    if obs is not None:
        design = check_design(obs, cfg, where)
        total = n_cells or len(obs)
        if graph["k"] >= total:
            raise CellgnnInputError(f"graph.k={graph['k']} neighbours but the study has {total} cells", file=source,
                                    field="graph.k", fix=f"use k < {total} (10-30 is usual)")
        n_donors = len(design["donors"])
    else:
        n_donors = None
        if "donor_cv" in graph["split_modes"] and graph["cv_folds"] == 0:
            raise CellgnnInputError("donor_cv with graph.cv_folds: 0 (one fold per donor) needs the number of donors, "
                                    f"which is known only once {where} is downloaded", file=source,
                                    field="graph.cv_folds", fix="set graph.cv_folds to the number of folds (>= 2)")
    if n_genes is not None and cfg["preprocess"]["n_pcs"] >= min(n_genes, n_cells or n_genes):
        raise CellgnnInputError(f"preprocess.n_pcs={cfg['preprocess']['n_pcs']} but the data has {n_genes} genes and "
                                f"{n_cells} cells", file=source, field="preprocess.n_pcs",
                                fix=f"use fewer than {min(n_genes, n_cells or n_genes)} PCs")
    units = split_units(graph["split_modes"], n_donors or graph["cv_folds"], graph["cv_folds"])
    cell_types = cell_types_source(cfg, obs)
    if cell_types == "celltype":
        notes.append("no cell types in the data (data.keys.cell_type is null): the celltype stage's clusters "
                     "(obs['cellgnn_cell_type']) are the cell types of every per-cell-type feature")
    elif cell_types is None:
        notes.append("no cell types (data.keys.cell_type is null, celltype.enabled: false): per-cell-type "
                     "rankings, the cell-type edge features and the cell-type response table are left out")
    return Plan(units, n_donors, design, cell_types, notes)
