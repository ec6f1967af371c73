"""Atomic file output: write to a temporary sibling, then rename.

A reader (or a Snakemake rerun) never sees a half-written file: either the old
file, the complete new one, or nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the destination's folder; rename it onto ``path`` on success.

    On any exception the temporary file is removed and ``path`` is left untouched.
    The temporary name keeps the destination's suffix so writers that dispatch on
    it (``.h5ad``, ``.png``) still work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; outputs follow the user's umask like any file
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def write_text(text: str, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_csv(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame as CSV (no index, fixed float format), atomically."""
    kwargs.setdefault("index", False)
    kwargs.setdefault("float_format", "%.6g")
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_h5ad(adata, path: str | os.PathLike) -> None:
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression="gzip")


def read_h5ad(path: str | os.PathLike, rule: str = "the stage that writes it"):
    """Read an ``.h5ad`` written by an earlier stage; a truncated or corrupt file is a clear error."""
    import anndata as ad

    from .errors import CellgnnInputError

    try:
        return ad.read_h5ad(path)
    except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError on truncated or non-HDF5 files
        raise CellgnnInputError(f"cannot read as .h5ad ({type(exc).__name__}: {exc}); the file is truncated or "
                                "not an AnnData file", file=str(path),
                                fix=f"delete it and rerun {rule}") from exc


def torch_save(obj: Any, path: str | os.PathLike) -> None:
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_resume(path: str | os.PathLike, key: str, what: str) -> dict | None:
    """The resume checkpoint at ``path`` when it exists and belongs to this run (its ``key``);
    None otherwise, with a warning that ``what`` (e.g. "training") starts from scratch."""
    import logging

    import torch

    if not Path(path).exists():
        return None
    log = logging.getLogger(__name__)
    try:
        state = torch.load(path, weights_only=False, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - a checkpoint cut short by a kill is not worth failing for
        log.warning("cannot read resume checkpoint %s (%s); %s from scratch", path, e, what)
        return None
    if not isinstance(state, dict) or state.get("key") != key:
        log.warning("resume checkpoint %s is from another configuration or dataset; %s from scratch", path, what)
        return None
    return state


def _json_default(o: Any):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
