"""Path guards: every path built from config or a sample sheet stays inside its folder, and no
input lives where the workflow writes (Snakemake deletes a job's outputs before rerunning it)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import CellgnnInputError

# folders of the working directory that the workflow writes into (or Snakemake owns)
WRITTEN_DIRS = ("results", "logs", "benchmarks", "resources", ".snakemake")


def child_path(base: str | os.PathLike, name: str, *, field: str, source: str | None = None) -> Path:
    """``base / name``, refused unless it resolves to a path inside ``base`` (no ``..``, no absolute
    name, no symbolic link that leads out)."""
    base_r = Path(base).resolve()
    target = (base_r / name).resolve()
    if not name or target == base_r or base_r not in target.parents:
        raise CellgnnInputError(f"'{name}' would write outside {base}/", file=source, field=field,
                                fix="use a plain name of letters, digits, '_', '.', '-' (no '/', no '..')")
    return Path(base) / name


def check_not_written(path: str | os.PathLike, workdir: str | os.PathLike, *, field: str,
                      source: str | None = None) -> None:
    """Refuse an input path inside a folder the workflow writes (results/, logs/, benchmarks/,
    resources/, .snakemake/ of ``workdir``): a rerun could delete or overwrite it."""
    target = Path(workdir, path).resolve()
    for name in WRITTEN_DIRS:
        folder = Path(workdir, name).resolve()
        if target == folder or folder in target.parents:
            raise CellgnnInputError(
                f"input {path} lies under {name}/, which the workflow writes (a rerun may delete it)",
                file=source, field=field,
                fix=f"move the file out of {name}/ (e.g. to data/) and point {field} at the new place")
