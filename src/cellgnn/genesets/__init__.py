"""Published gene sets shipped with cellgnn (one TSV each, source and licence in its header).

``hallmark_interferon_alpha_response``: MSigDB Hallmark interferon-alpha response (97 genes),
the truth that explanations of IFN-stimulated cells are scored against on real data.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CellgnnInputError

HERE = Path(__file__).resolve().parent
BUNDLED = tuple(sorted(p.stem for p in HERE.glob("*.tsv")))


def gene_set_path(name_or_path: str, workdir: str | Path = ".") -> Path:
    """The TSV of a bundled gene set (by name) or of a user's file (relative to ``workdir``)."""
    if name_or_path in BUNDLED:
        return HERE / f"{name_or_path}.tsv"
    path = Path(workdir, name_or_path)
    if not path.is_file():
        raise CellgnnInputError(f"no such file, and not a bundled gene set ({', '.join(BUNDLED)})",
                                file=str(name_or_path), field="explain.gene_set.path",
                                fix="give a TSV with a 'gene' column, or a bundled gene set's name")
    return path
