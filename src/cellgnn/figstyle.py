"""What every figure module shares: one colour-blind-safe palette and one saver.

Categories take the Okabe–Ito colours (Okabe & Ito 2008) in :data:`OKABE_ITO`'s order,
extended with tab20 beyond eight; continuous values use viridis or cividis. Every figure
is written as PNG (:data:`DPI` dots per inch) and PDF, atomically, by :func:`save_figure`.
"""

from __future__ import annotations

from pathlib import Path

from .io import atomic_path

OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000")
DPI = 300


def pyplot():
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def palette(n: int) -> list[str]:
    """``n`` colours: Okabe–Ito first, then tab20's."""
    if n <= len(OKABE_ITO):
        return list(OKABE_ITO[:n])
    import matplotlib

    extra = [matplotlib.colors.to_hex(c) for c in pyplot().get_cmap("tab20").colors]
    return (list(OKABE_ITO) + extra)[:n]


def colour(i: int) -> str:
    """The ``i``-th palette colour, cycling through the eight Okabe–Ito colours."""
    return OKABE_ITO[i % len(OKABE_ITO)]


def save_figure(fig, path: str | Path, pdf: str | Path | None = None) -> tuple[Path, Path]:
    """Write ``fig`` as ``<path>.png`` and as PDF (``pdf``, default ``<path>.pdf``), then close it.

    ``path``: the PNG's path or its stem (a suffix is replaced by ``.png``). Returns both paths.
    """
    png = Path(path).with_suffix(".png")
    pdf = Path(pdf) if pdf is not None else png.with_suffix(".pdf")
    for p, fmt in ((png, "png"), (pdf, "pdf")):
        with atomic_path(p) as tmp:
            fig.savefig(tmp, dpi=DPI, bbox_inches="tight", format=fmt)
    pyplot().close(fig)
    return png, pdf
