"""cellgnn.stats: the one place intervals, per-seed summaries and paired margins are computed."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from cellgnn.stats import Interval, paired_differences, paired_margin, seed_summary, summarize, t_interval


def test_t_interval_matches_scipy():
    v = [1.0, 2.0, 4.0]
    m, lo, hi = t_interval(v)
    assert m == pytest.approx(7 / 3)
    assert (lo, hi) == pytest.approx(sps.t.interval(0.95, 2, loc=np.mean(v), scale=sps.sem(v)))
    assert t_interval([1.0, 2.0, 3.0]).high - 2.0 == pytest.approx(4.302652729911275 / np.sqrt(3))


def test_single_value_has_no_interval_and_non_finite_values_are_dropped():
    one = t_interval([0.7])
    assert isinstance(one, Interval) and one.mean == 0.7 and np.isnan(one.low) and np.isnan(one.high)
    assert t_interval([0.7, np.nan, np.inf]).mean == 0.7 and np.isnan(t_interval([0.7, np.nan]).low)
    assert all(np.isnan(t_interval([])))
    assert all(np.isnan(t_interval([np.nan])))
    # two seeds that agree exactly: a real (zero-width) t-interval, not "no interval"
    assert t_interval([0.5, 0.5]) == (0.5, 0.5, 0.5)


def test_summarize_is_per_seed_with_intervals():
    df = pd.DataFrame({"model": ["a", "a", "a", "b"], "split": ["cells"] * 4, "seed": [1, 0, 2, 0],
                       "macro_f1": [0.6, 0.4, 0.5, 0.3]})
    s = summarize(df, metrics=["macro_f1"]).set_index("model")
    assert list(s.columns) == ["split", "n_seeds", "seeds", "macro_f1_mean", "macro_f1_low", "macro_f1_high"]
    assert s.loc["a", "seeds"] == "0 1 2" and s.loc["a", "n_seeds"] == 3
    assert (s.loc["a", "macro_f1_low"], s.loc["a", "macro_f1_high"]) == pytest.approx(
        sps.t.interval(0.95, 2, loc=0.5, scale=sps.sem([0.4, 0.5, 0.6])))
    assert s.loc["b", "macro_f1_mean"] == 0.3 and np.isnan(s.loc["b", "macro_f1_low"])  # one seed


def test_seed_summary_names_the_seeds():
    row = seed_summary(pd.DataFrame({"p": [0.2, 0.4]}, index=[3, 5]), ["p"])
    assert row["n_seeds"] == 2 and row["seeds"] == "3 5" and row["p_mean"] == pytest.approx(0.3)


def test_paired_differences_pair_by_seed_and_set_seedless_results_against_every_seed():
    a = pd.Series([0.9, 0.8, 0.7], index=[2, 0, 1])
    b = pd.Series([0.5, 0.6], index=[0, 1])
    d = paired_differences(a, b)
    assert list(d.index) == [0, 1] and d.to_numpy() == pytest.approx([0.3, 0.1])  # seed 2 has no pair
    de = pd.Series([0.4], index=[np.nan])  # a deterministic method: no seed
    assert paired_differences(a, de).to_numpy() == pytest.approx([0.4, 0.3, 0.5])
    assert paired_differences(de, b).to_numpy() == pytest.approx([-0.1, -0.2])
    assert paired_differences(de, pd.Series([0.1], index=[""])).to_numpy() == pytest.approx([0.3])
    (m, lo, hi), n = paired_margin(a, b)
    assert n == 2 and m == pytest.approx(0.2) and lo < 0.2 < hi
    (m, lo, hi), n = paired_margin(de, de)
    assert n == 1 and m == 0 and np.isnan(lo)
