"""Forman–Ricci curvature of every edge of a weighted cell graph.

For an undirected edge e = (i, j) with weight w_e and unit vertex weights

    F(e) = 4 − √w_e · (Σ_{e'∋i} 1/√w_e' + Σ_{e'∋j} 1/√w_e')

where the sums run over all non-loop edges at i and at j, e itself included
(the original study's code also counted the self-loop, weight 1, in both sums;
``include_self_loops=True`` reproduces that).

Self-loops are handled explicitly: a loop has no Forman curvature, so its row is
``NaN`` here and the caller decides its value (``compute_edge_features`` puts 0, the
midpoint of the [−1, 1] range, after rescaling the non-loop edges).
"""

from __future__ import annotations

import numpy as np

from ..errors import CellgnnInputError


def forman_curvature(edge_index: np.ndarray, edge_weight: np.ndarray, num_nodes: int,
                     include_self_loops: bool = False) -> np.ndarray:
    """Forman–Ricci curvature per row of ``edge_index``.

    edge_index: int ``[2, E]`` (source, target), both directions of every undirected edge
    present (as the graph contract stores them); edge_weight: float ``[E]`` in (0, ∞).
    Returns float64 ``[E]``, aligned row for row, ``NaN`` on self-loops. Vectorized:
    O(E) time and memory.
    """
    src, dst = np.asarray(edge_index[0], dtype=np.int64), np.asarray(edge_index[1], dtype=np.int64)
    w = np.asarray(edge_weight, dtype=np.float64)
    if w.shape[0] != src.shape[0]:
        raise CellgnnInputError(f"edge_weight has {w.shape[0]} rows but edge_index has {src.shape[0]}",
                                field="edge_weight", fix="rebuild the graph so both are aligned")
    if src.size and (not np.all(np.isfinite(w)) or w.min() <= 0):
        raise CellgnnInputError("edge weights must be finite and > 0 for Forman curvature",
                                field="edge_weight", fix="rebuild the graph; kNN connectivities lie in (0, 1]")
    loop = src == dst
    inv = 1.0 / np.sqrt(w)
    # Each undirected edge appears once as an incoming edge of each end, so summing
    # 1/√w over incoming rows gives the sum over edges incident to the node (a loop
    # appears once, so it adds its 1/√w once when counted).
    counted = np.ones_like(loop) if include_self_loops else ~loop
    s = np.bincount(dst[counted], weights=inv[counted], minlength=num_nodes)
    curv = 4.0 - np.sqrt(w) * (s[src] + s[dst])
    curv[loop] = np.nan
    return curv


def rescale_symmetric(values: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Min–max rescale to [−1, 1] using the ``valid`` rows' range; other rows keep their input.

    A constant feature maps to 0. Returns float64 of the same shape.
    """
    v = np.asarray(values, dtype=np.float64).copy()
    valid = np.isfinite(v) if valid is None else (valid & np.isfinite(v))
    if not valid.any():
        return v
    lo, hi = v[valid].min(), v[valid].max()
    if hi > lo:
        v[valid] = 2.0 * (v[valid] - lo) / (hi - lo) - 1.0
    else:
        v[valid] = 0.0
    return v
