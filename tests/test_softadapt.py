"""SoftAdapt: hand-computed weights for the three variants."""

import math

import numpy as np
import pytest

from cellgnn.errors import CellgnnInputError
from cellgnn.softadapt import SoftAdapt, finite_difference_slopes, softadapt_weights


def test_slopes_mean_first_difference_over_window():
    # last 3 of [0, 10, 1, 2, 3] -> (3 - 1) / 2 = 1 ; falling -> negative
    s = finite_difference_slopes([[0, 10, 1, 2, 3], [9, 7, 5]], window=3)
    np.testing.assert_allclose(s, [1.0, -2.0])
    assert finite_difference_slopes([[5.0]], window=3)[0] == 0.0


def test_plain_rising_vs_falling():
    # slopes [1, -1], beta 1: w = [1, e^-2] / (1 + e^-2)
    w = softadapt_weights([[1, 2, 3], [3, 2, 1]], beta=1.0, window=3, variant="plain")
    e = math.exp(-2)
    np.testing.assert_allclose(w, [1 / (1 + e), e / (1 + e)], rtol=1e-12)
    assert w[0] > w[1]  # the rising loss gets the larger weight


def test_loss_weighted_multiplies_by_mean_loss():
    # slopes [1, -1]; window means f = [2, 5]; w ∝ [2, 5 e^-2]
    w = softadapt_weights([[1, 2, 3], [6, 5, 4]], beta=1.0, window=3, variant="loss_weighted")
    a, b = 2.0, 5 * math.exp(-2)
    np.testing.assert_allclose(w, [a / (a + b), b / (a + b)], rtol=1e-12)


def test_normalized_divides_by_absolute_sum():
    # slopes [1, -1] / 2 = [0.5, -0.5]; w ∝ [1, e^-1]
    w = softadapt_weights([[1, 2, 3], [3, 2, 1]], beta=1.0, window=3, variant="normalized")
    e = math.exp(-1)
    np.testing.assert_allclose(w, [1 / (1 + e), e / (1 + e)], rtol=1e-12)


def test_all_falling_normalized_favours_slowest_not_fastest():
    # slopes [-1, -2, -4]; |sum| = 7 -> [-1/7, -2/7, -4/7]; beta 7: w ∝ [1, e^-1, e^-3]
    hist = [[10, 9], [10, 8], [10, 6]]
    w = softadapt_weights(hist, beta=7.0, window=2, variant="normalized")
    raw = np.array([1.0, math.exp(-1), math.exp(-3)])
    np.testing.assert_allclose(w, raw / raw.sum(), rtol=1e-12)
    assert w[0] > w[1] > w[2]  # slowest-falling loss gets most weight, as in the plain variant
    plain = softadapt_weights(hist, beta=7.0, window=2, variant="plain")
    assert np.argmax(plain) == np.argmax(w) == 0
    # the public code's signed-sum normalisation gets this backwards
    s = np.array([-1.0, -2.0, -4.0])
    s_signed = s / s.sum()
    w_signed = np.exp(7 * (s_signed - s_signed.max()))
    w_signed /= w_signed.sum()
    assert np.argmax(w_signed) == 2


def test_beta_zero_uniform_and_stable_for_huge_beta():
    np.testing.assert_allclose(softadapt_weights([[1, 2], [5, 1]], beta=0.0, window=2, variant="plain"),
                               [0.5, 0.5])
    w = softadapt_weights([[0, 1e6], [0, -1e6], [0, 0]], beta=1e3, window=2, variant="plain")
    assert np.all(np.isfinite(w)) and w.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(w, [1.0, 0.0, 0.0], atol=1e-300)


def test_bad_inputs():
    with pytest.raises(CellgnnInputError, match="variant"):
        softadapt_weights([[1, 2]], variant="nope")
    with pytest.raises(CellgnnInputError, match="non-finite"):
        softadapt_weights([[1, float("nan")]])
    with pytest.raises(CellgnnInputError, match="non-negative"):
        softadapt_weights([[-1, -2], [1, 2]], variant="loss_weighted", window=2)
    with pytest.raises(CellgnnInputError, match="window"):
        SoftAdapt(2, window=1)


def test_stateful_class_window_and_checkpoint():
    sa = SoftAdapt(2, beta=1.0, window=3, variant="plain")
    np.testing.assert_allclose(sa.weights(), [0.5, 0.5])  # not enough history yet
    for a, b in [(100, 0), (1, 3), (2, 2), (3, 1)]:  # first record falls out of the window
        sa.record([a, b])
    e = math.exp(-2)
    np.testing.assert_allclose(sa.weights(), [1 / (1 + e), e / (1 + e)], rtol=1e-12)
    sb = SoftAdapt(2)
    sb.load_state_dict(sa.state_dict())
    np.testing.assert_allclose(sb.weights(), sa.weights())
    with pytest.raises(CellgnnInputError):
        sa.record([1.0])
