"""SoftAdapt: adaptive weights for the parts of a multi-part loss.

For K loss components with recorded histories, the slope ``s_k`` of component k is a
finite difference over its last ``window`` recorded values (the mean first difference,
``(L_k[t] - L_k[t-n+1]) / (n-1)``, i.e. the average rate of change per record). The
weights are a softmax of the slopes::

    w_k = f_k * exp(beta * (s_k - max_l s_l)) / sum_l f_l * exp(beta * (s_l - max_l s_l))

computed in log space (``log f_k + beta*(s_k - max s)``, then log-sum-exp), so no
exponential can overflow. Variants:

``plain``          f_k = 1.
``loss_weighted``  f_k = mean of component k's values in the window (must be >= 0).
``normalized``     slopes are first divided by ``sum_l |s_l|`` (the ABSOLUTE sum; the public
                   code divides by the signed sum, which flips the order of the weights when
                   every loss is falling), then f_k = 1.

With ``beta > 0`` the component whose loss rises fastest (or falls slowest) gets the
largest weight; ``beta < 0`` favours the fastest-falling one; ``beta = 0`` is uniform
(plain / normalized) or proportional to the losses (loss-weighted). The weights are
convex (non-negative, sum to 1).
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

import numpy as np

from .errors import CellgnnInputError

VARIANTS = ("plain", "loss_weighted", "normalized")


def finite_difference_slopes(histories: Sequence[Sequence[float]], window: int) -> np.ndarray:
    """Slope of each history over its last ``window`` values; returns float64 ``[K]``.

    The slope is the mean first difference over the window (per recorded step). A
    history shorter than 2 values has slope 0.
    """
    if window < 2:
        raise CellgnnInputError(f"window must be >= 2, got {window}", field="softadapt.window",
                                fix="use a window of at least 2 recorded values")
    out = np.zeros(len(histories), dtype=np.float64)
    for k, h in enumerate(histories):
        h = np.asarray(h, dtype=np.float64)[-window:]
        if h.size >= 2:
            out[k] = (h[-1] - h[0]) / (h.size - 1)
    return out


def softadapt_weights(histories: Sequence[Sequence[float]], beta: float = 0.1, window: int = 5,
                      variant: str = "loss_weighted") -> np.ndarray:
    """Convex weights ``[K]`` (float64) for K loss components from their histories.

    histories: one sequence of recorded loss values per component (oldest first).
    """
    if variant not in VARIANTS:
        raise CellgnnInputError(f"unknown SoftAdapt variant '{variant}'", field="softadapt.variant",
                                fix=f"use one of {', '.join(VARIANTS)}")
    k = len(histories)
    if k == 0:
        raise CellgnnInputError("no loss components given", field="softadapt",
                                fix="pass one history per loss component")
    for h in histories:
        if not np.all(np.isfinite(np.asarray(h, dtype=np.float64))):
            raise CellgnnInputError("a loss history holds a non-finite value", field="softadapt",
                                    fix="record finite loss values only")
    s = finite_difference_slopes(histories, window)
    if variant == "normalized":
        denom = np.abs(s).sum()
        s = s / denom if denom > 0 else np.zeros_like(s)
    logits = beta * (s - s.max())
    if variant == "loss_weighted":
        f = np.array([np.mean(np.asarray(h, dtype=np.float64)[-window:]) if len(h) else 1.0
                      for h in histories])
        if np.any(f < 0):
            raise CellgnnInputError("loss-weighted SoftAdapt needs non-negative losses",
                                    field="softadapt.variant",
                                    fix="use variant 'plain' or 'normalized' for losses that can be negative")
        if np.all(f == 0):
            f = np.ones_like(f)
        with np.errstate(divide="ignore"):
            logits = logits + np.log(f)
    m = logits.max()
    w = np.exp(logits - m)
    return w / w.sum()


class SoftAdapt:
    """Stateful SoftAdapt: record component losses, ask for weights.

    ``record([l_1, ..., l_K])`` appends one value per component (e.g. an epoch mean);
    ``weights()`` returns convex weights ``[K]``: uniform until 2 values are recorded.
    Only the last ``window`` values are kept. ``state_dict``/``load_state_dict`` make it
    checkpointable.
    """

    def __init__(self, n_components: int, beta: float = 0.1, window: int = 5,
                 variant: str = "loss_weighted"):
        if n_components < 1:
            raise CellgnnInputError("n_components must be >= 1", field="softadapt")
        if variant not in VARIANTS:
            raise CellgnnInputError(f"unknown SoftAdapt variant '{variant}'", field="softadapt.variant",
                                    fix=f"use one of {', '.join(VARIANTS)}")
        if window < 2:
            raise CellgnnInputError(f"window must be >= 2, got {window}", field="softadapt.window",
                                    fix="use a window of at least 2 recorded values")
        self.n_components, self.beta, self.window, self.variant = n_components, beta, window, variant
        self.history: list[deque] = [deque(maxlen=window) for _ in range(n_components)]

    def record(self, losses: Iterable[float]) -> None:
        vals = [float(v) for v in losses]
        if len(vals) != self.n_components:
            raise CellgnnInputError(f"expected {self.n_components} loss values, got {len(vals)}",
                                    field="softadapt")
        for h, v in zip(self.history, vals):
            h.append(v)

    def weights(self) -> np.ndarray:
        if len(self.history[0]) < 2:
            return np.full(self.n_components, 1.0 / self.n_components)
        return softadapt_weights([list(h) for h in self.history], self.beta, self.window, self.variant)

    def state_dict(self) -> dict:
        return {"n_components": self.n_components, "beta": self.beta, "window": self.window,
                "variant": self.variant, "history": [list(h) for h in self.history]}

    def load_state_dict(self, state: dict) -> None:
        self.__init__(state["n_components"], state["beta"], state["window"], state["variant"])
        for h, vals in zip(self.history, state["history"]):
            h.extend(vals)
