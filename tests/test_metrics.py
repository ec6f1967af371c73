import numpy as np
import pandas as pd
import pytest

from cellgnn.metrics import classification_metrics, majority_baseline, mean_ci, summarize


def test_metrics_on_a_hand_made_case():
    y = np.array([0, 0, 0, 1, 1, 2])
    proba = np.array([[.9, .1, 0], [.8, .2, 0], [.2, .7, .1], [.1, .8, .1], [.3, .6, .1], [.1, .1, .8]])
    m = classification_metrics(y, proba)
    # predictions 0 0 1 1 1 2: 5/6 correct
    assert m["accuracy"] == pytest.approx(5 / 6)
    # recalls: 2/3, 1, 1
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 + 1) / 3)
    # F1: class0 p=1 r=2/3 -> 0.8; class1 p=2/3 r=1 -> 0.8; class2 1
    assert m["macro_f1"] == pytest.approx((0.8 + 0.8 + 1) / 3)
    # one-vs-rest AUROC by counting pairs: class0 8/9, class1 7/8, class2 1
    assert m["auroc"] == pytest.approx((8 / 9 + 7 / 8 + 1) / 3)


def test_auroc_skips_absent_classes():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[.6, .4, 0], [.4, .6, 0], [.3, .7, 0], [.8, .2, 0]])
    m = classification_metrics(y, proba)
    # class 2 never occurs: averaged over classes 0 (2/4 pairs) and 1 (2/4 pairs) only
    assert m["auroc"] == pytest.approx(0.5)
    proba[:, 2] = [0.9, 0.1, 0.1, 0.1]  # a score on the absent class changes nothing
    assert classification_metrics(y, proba)["auroc"] == pytest.approx(0.5)


def test_mean_ci_t_interval():
    m, lo, hi = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0
    assert hi - m == pytest.approx(4.302652729911275 * 1.0 / np.sqrt(3))
    assert np.isnan(mean_ci([1.0])[1])


def test_summarize_and_majority():
    df = pd.DataFrame({"model": ["a", "a"], "split": ["cells"] * 2, "seed": [0, 1], "accuracy": [.5, .7],
                       "balanced_accuracy": [.5, .5], "macro_f1": [.4, .6], "auroc": [.6, .6]})
    s = summarize(df)
    assert s.loc[0, "macro_f1_mean"] == pytest.approx(0.5) and s.loc[0, "seeds"] == "0 1"
    mb = majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 0, 2]), 3)
    assert mb["accuracy"] == pytest.approx(0.25)


def test_mean_ci_matches_scipy():
    from scipy import stats

    v = [1.0, 2.0, 4.0]
    m, lo, hi = mean_ci(v)
    ref = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(7 / 3) and (lo, hi) == pytest.approx(ref)
