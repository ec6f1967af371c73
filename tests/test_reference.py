"""Reference models (the baselines a graph model must beat), fitted on the same graphs and folds."""
import numpy as np
import pytest
import torch

from cellgnn.data import simulate
from cellgnn.errors import CellgnnInputError
from cellgnn.graph import build_graph
from cellgnn.metrics import classification_metrics
from cellgnn.models.reference import FITTERS, call_units, expression
from cellgnn.preprocess import preprocess
from cellgnn.train import model_params

PRE = dict(expect_counts=True, min_genes=50, min_cells=3, max_mito_fraction=0.2, target_sum=1e4,
           transform="log1p", hvg=None, n_pcs=20)


@pytest.fixture(scope="module")
def severity_fold():
    """Donor-level labels (healthy / moderate / severe), 9 donors, one donor_cv fold holding out 3."""
    raw = simulate(preset="severity", n_cells=1200, n_genes=500, n_donors=9, n_response_genes=12, seed=2)
    adata, _ = preprocess(raw, dict(PRE))
    return adata, build_graph(adata, {"k": 10, "n_pcs": 20, "split_modes": ["donor_cv"], "cv_folds": 3},
                              "donor_cv/fold0", seed=0)


@pytest.fixture(scope="module")
def infection_fold(graphs):
    return graphs["donors"]


def _fit(name, graph, seed=0, **over):
    params = {**model_params(name, {}), **over}
    return FITTERS[name](graph, params, seed)


def _test_metrics(graph, proba):
    te = graph["test_mask"].numpy()
    return classification_metrics(graph["y"].numpy()[te], proba[te])


def test_expression_undoes_the_node_feature_scaling(severity_fold):
    adata, graph = severity_fold
    X = adata.X.toarray() if hasattr(adata.X, "toarray") else adata.X
    np.testing.assert_allclose(expression(graph)[graph["train_mask"].numpy()], X[graph["train_mask"].numpy()],
                               atol=1e-4)


def test_logreg_cv_never_sees_test_labels(severity_fold):
    _, graph = severity_fold
    a = _fit("logreg_cv", graph, Cs=[0.01, 1.0], inner_folds=2)
    shuffled = dict(graph)
    y = graph["y"].clone()
    te = graph["test_mask"]
    y[te] = torch.flip(y[te], [0])
    shuffled["y"] = y
    b = _fit("logreg_cv", shuffled, Cs=[0.01, 1.0], inner_folds=2)
    np.testing.assert_array_equal(a.proba, b.proba)
    assert set(a.estimator.cellgnn_C_scores_) == {0.01, 1.0}
    assert _test_metrics(graph, a.proba)["balanced_accuracy"] > 0.5  # 3 classes: chance 0.33


def test_pseudobulk_and_composition_call_whole_donors(severity_fold):
    _, graph = severity_fold
    units = call_units(graph)
    for name in ("pseudobulk", "composition"):
        fitted = _fit(name, graph)
        for u in np.unique(units):  # one call per donor: every cell of a donor has its donor's probabilities
            rows = fitted.proba[units == u]
            assert np.allclose(rows, rows[0])
    pb = _fit("pseudobulk", graph)
    te = graph["test_mask"].numpy()
    donor_calls = {u: pb.proba[units == u][0].argmax() for u in np.unique(units[te])}
    truth = {u: graph["y"].numpy()[units == u][0] for u in donor_calls}
    assert sum(donor_calls[u] == truth[u] for u in truth) >= 2  # of 3 held-out donors


def test_unit_models_refuse_cell_level_labels(infection_fold):
    with pytest.raises(CellgnnInputError, match="varies within donors and within samples"):
        _fit("pseudobulk", infection_fold)


def test_harmony_knn_is_seeded_and_beats_chance(infection_fold):
    a = _fit("harmony_knn", infection_fold, seed=1)
    b = _fit("harmony_knn", infection_fold, seed=1)
    np.testing.assert_array_equal(a.proba, b.proba)
    chance = 1 / len(infection_fold["classes"])
    assert _test_metrics(infection_fold, a.proba)["balanced_accuracy"] > chance + 0.05
