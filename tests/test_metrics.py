import numpy as np
import pytest

from cellgnn.metrics import classification_metrics, majority_baseline


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


def test_majority_baseline():
    mb = majority_baseline(np.array([1, 1, 0]), np.array([1, 0, 0, 2]), 3)
    assert mb["accuracy"] == pytest.approx(0.25)


