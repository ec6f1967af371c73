"""Statistics over repeated runs: 95% intervals, per-seed summaries and paired margins.

Every interval function returns an :class:`Interval` ``(mean, low, high)``: the t-interval
over seeds (:func:`t_interval`), or the percentile interval of bootstrap replicates
(:func:`bootstrap_interval`; :mod:`cellgnn.heldout` resamples held-out donors), so that
summaries, margins and reports can take either.

The single-value rule: an interval needs a spread, and one value (one seed, or a method
that does not depend on the seed) has none. Such an interval is ``(mean, nan, nan)``,
never zero-width: a zero-width interval would claim a certainty one run cannot give.
Reports print the mean alone and tables leave ``low``/``high`` empty. Non-finite values
are dropped first; no finite value gives ``(nan, nan, nan)``. Two or more values that
agree exactly do give a zero-width interval, which is what the t-interval is there.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from .metrics import METRICS

CONFIDENCE = 0.95


class Interval(NamedTuple):
    """A mean and its interval; ``low``/``high`` are NaN when there is no interval."""

    mean: float
    low: float
    high: float


def finite(values) -> np.ndarray:
    """The finite entries of ``values`` as float64 ``[n]``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean and two-sided t-interval (n − 1 degrees of freedom) of the finite ``values``;
    one value: ``(mean, nan, nan)`` (see the module's single-value rule)."""
    from scipy import stats

    v = finite(values)
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    m = float(v.mean())
    if v.size < 2:
        return Interval(m, float("nan"), float("nan"))
    h = float(stats.t.ppf(0.5 + confidence / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return Interval(m, m - h, m + h)


def bootstrap_interval(estimate: float, replicates, confidence: float = CONFIDENCE) -> Interval:
    """``estimate`` with the percentile interval of its finite bootstrap ``replicates``; none
    (``nan``) without at least two finite replicates."""
    v = finite(replicates)
    if v.size < 2:
        return Interval(float(estimate), float("nan"), float("nan"))
    lo, hi = np.percentile(v, [50 * (1 - confidence), 50 * (1 + confidence)])
    return Interval(float(estimate), float(lo), float(hi))


def seed_summary(per_seed: pd.DataFrame, columns) -> dict:
    """One summary row from a table with one row per seed (index = seed): ``n_seeds``,
    ``seeds`` (space-separated) and ``<column>_mean``, ``_low``, ``_high`` per column."""
    row = {"n_seeds": len(per_seed), "seeds": " ".join(map(str, per_seed.index))}
    for c in columns:
        row[f"{c}_mean"], row[f"{c}_low"], row[f"{c}_high"] = t_interval(per_seed[c])
    return row


def summarize(df: pd.DataFrame, by=("model", "split"), metrics=METRICS, seed: str = "seed") -> pd.DataFrame:
    """One row per group of ``by``: :func:`seed_summary` of the metrics' per-seed means
    (``n_seeds``, ``seeds``, ``<metric>_mean/_low/_high``), groups in sorted order."""
    rows = []
    for key, g in df.groupby(list(by), sort=True):
        per_seed = g.groupby(seed, sort=True)[list(metrics)].mean()
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))), **seed_summary(per_seed, metrics)})
    return pd.DataFrame(rows)


def _seedless(s: pd.Series) -> bool:
    """One value whose seed is missing (NaN or ""): a result that does not depend on the seed."""
    return len(s) == 1 and (pd.isna(s.index[0]) or s.index[0] == "")


def paired_differences(a: pd.Series, b: pd.Series) -> pd.Series:
    """``a − b`` paired by seed, indexed by seed (ascending).

    a, b: one value per seed (index = seed). Pairs are the seeds both have; a side that
    does not depend on the seed (a single value with a missing seed, NaN or "") is set
    against every seed of the other side.
    """
    if _seedless(a) and not _seedless(b):
        return (a.iloc[0] - b).sort_index()
    if _seedless(b) and not _seedless(a):
        return (a - b.iloc[0]).sort_index()
    if _seedless(a):
        return pd.Series([a.iloc[0] - b.iloc[0]], index=a.index)
    common = sorted(set(a.index) & set(b.index))
    return pd.Series(a.loc[common].to_numpy(float) - b.loc[common].to_numpy(float), index=pd.Index(common))


def paired_margin(a: pd.Series, b: pd.Series, confidence: float = CONFIDENCE) -> tuple[Interval, int]:
    """Mean of :func:`paired_differences` with its t-interval, and the number of pairs."""
    d = paired_differences(a, b)
    return t_interval(d, confidence), len(d)
