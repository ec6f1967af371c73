"""Reference models fitted with scikit-learn (and harmonypy): the baselines a graph model must beat.

Each ``fit_<name>(graph, params, seed) -> Fitted`` trains on the graph's training cells
(validation cells are used where a model selects a hyperparameter on held-out donors) and
returns per-cell class probabilities ``proba [N, C]`` for every cell, so they are scored on
the same test cells, folds and seeds as the graph models.

- ``logreg``: logistic regression on the node features, fixed ``C`` (the original baseline).
- ``logreg_cv``: the training donors' most variable genes, standardized on training cells,
  ``C`` chosen by inner cross-validation over training donors (balanced accuracy).
- ``pseudobulk``: mean expression per unit (donor, or sample in paired designs) x cell type,
  standardized, logistic regression on the training units; a cell gets its unit's call.
- ``composition``: centred log-ratio of cell-type proportions per unit, logistic regression.
- ``harmony_knn``: Harmony (harmonypy) on the PCA of all cells with donor as the batch (no
  labels), then the label vote of the ``k`` nearest training cells.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import CellgnnInputError


@dataclass
class Fitted:
    """A fitted reference model: the estimator (pickled into model.pt) and ``proba [N, C]``."""

    estimator: object
    proba: np.ndarray


def expression(graph: dict) -> np.ndarray:
    """Normalized expression ``[N, G]`` (the preprocessed values) recovered from the min-max scaled
    node features with the graph's scaler; the features themselves when it is not stored."""
    from ..graph import dense_features

    x = dense_features(graph).numpy().astype(np.float64)
    if "feature_min" not in graph:
        return x
    return x * graph["feature_range"].numpy() + graph["feature_min"].numpy()


def _full_proba(clf, X: np.ndarray, n_classes: int) -> np.ndarray:
    proba = np.zeros((X.shape[0], n_classes))
    proba[:, clf.classes_] = clf.predict_proba(X)
    return proba


def _masks(graph: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return graph["train_mask"].numpy(), graph["val_mask"].numpy(), graph["test_mask"].numpy()


def variable_genes(X: np.ndarray, n_genes: int) -> np.ndarray:
    """Indices of the ``n_genes`` genes of highest variance in ``X`` (all when fewer), in gene order."""
    if n_genes >= X.shape[1]:
        return np.arange(X.shape[1])
    return np.sort(np.argsort(-X.var(axis=0), kind="stable")[:n_genes])


def fit_logreg(graph: dict, params: dict, seed: int, features: str = "genes") -> Fitted:
    from sklearn.linear_model import LogisticRegression

    from ..graph import is_sparse

    if features != "genes":
        X = graph["pca"].numpy()
    else:  # scikit-learn fits sparse features as they are
        X = graph["x"] if is_sparse(graph["x"]) else graph["x"].numpy()
    y = graph["y"].numpy()
    tr = graph["train_mask"].numpy()
    clf = LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]), random_state=seed)
    clf.fit(X[tr], y[tr])
    return Fitted(clf, _full_proba(clf, X, len(graph["classes"])))


def fit_logreg_cv(graph: dict, params: dict, seed: int) -> Fitted:
    """Standardized most-variable genes of the training cells; C by inner CV over training donors."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import GroupKFold, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, _ = _masks(graph)
    fit_cells = tr | va  # validation donors are training donors too: C is chosen by inner CV
    X = expression(graph)
    genes = variable_genes(X[fit_cells], int(params["n_genes"]))
    X = X[:, genes]
    y = graph["y"].numpy()
    donors = graph["donor"].numpy()
    idx = np.flatnonzero(fit_cells)
    groups = donors[idx]
    n_inner = min(int(params["inner_folds"]), np.unique(groups).size)
    splitter = (GroupKFold(n_splits=n_inner).split(idx, y[idx], groups) if n_inner >= 2 else
                StratifiedKFold(n_splits=int(params["inner_folds"]), shuffle=True,
                                random_state=seed).split(idx, y[idx]))
    folds = list(splitter)

    def model(C):
        return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=int(params["max_iter"]),
                                                                  random_state=seed))

    scores = {}
    for C in params["Cs"]:
        fold_scores = []
        for a, b in folds:
            if np.unique(y[idx[a]]).size < 2:
                continue
            m = model(float(C)).fit(X[idx[a]], y[idx[a]])
            fold_scores.append(balanced_accuracy_score(y[idx[b]], m.predict(X[idx[b]])))
        scores[float(C)] = float(np.mean(fold_scores)) if fold_scores else -np.inf
    best = max(scores, key=lambda c: (scores[c], -c))
    clf = model(best).fit(X[fit_cells], y[fit_cells])
    clf.cellgnn_genes_, clf.cellgnn_C_scores_ = genes, scores
    proba = np.zeros((X.shape[0], len(graph["classes"])))
    proba[:, clf.classes_] = clf.predict_proba(X)
    return Fitted(clf, proba)


def call_units(graph: dict) -> np.ndarray:
    """The unit of each cell for unit-level models: the donor where the label is constant within
    donors, else the sample. Refuses a label that varies within samples."""
    y = graph["y"].numpy()
    for key in ("donor", "sample"):
        units = graph[key].numpy()
        if all(np.unique(y[units == u]).size == 1 for u in np.unique(units)):
            return units
    raise CellgnnInputError("the label varies within donors and within samples: a donor- or sample-level model "
                            "cannot be trained", field="train.models",
                            fix="remove pseudobulk / composition from train.models, or set data.keys.sample")


def _unit_labels(units: np.ndarray, y: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    us = np.unique(units[cells])
    return us, np.array([y[cells & (units == u)][0] for u in us])


def _unit_fit(graph: dict, profile, params: dict, seed: int) -> Fitted:
    """Logistic regression on one profile per unit (``profile(units_subset, cells) -> [U, F]``),
    trained on training (and validation) units; every cell gets its unit's probabilities."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr, va, _ = _masks(graph)
    y = graph["y"].numpy()
    units = call_units(graph)
    fit_cells = tr | va
    train_units, train_y = _unit_labels(units, y, fit_cells)
    if np.unique(train_y).size < 2:
        raise CellgnnInputError("the training donors hold a single class: a unit-level model cannot be trained",
                                field="train.models", fix="use a split with training donors of every class")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=float(params["C"]), max_iter=int(params["max_iter"]),
                                                             random_state=seed))
    clf.fit(profile(train_units, fit_cells), train_y)
    all_units = np.unique(units)
    unit_proba = np.zeros((all_units.size, len(graph["classes"])))
    unit_proba[:, clf.classes_] = clf.predict_proba(profile(all_units, np.ones_like(fit_cells)))
    return Fitted(clf, unit_proba[np.searchsorted(all_units, units)])


def fit_pseudobulk(graph: dict, params: dict, seed: int) -> Fitted:
    """Mean expression per unit x cell type of the most variable genes of the training cells."""
    tr, va, _ = _masks(graph)
    X = expression(graph)
    genes = variable_genes(X[tr | va], int(params["n_genes"]))
    X = X[:, genes]
    units = call_units(graph)
    ct = graph["cell_type"].numpy()
    n_types = len(graph["cell_types"])
    min_cells = int(params["min_cells"])

    def profile(unit_ids, cells):
        out = np.zeros((unit_ids.size, n_types, X.shape[1]))
        for i, u in enumerate(unit_ids):
            in_unit = cells & (units == u)
            unit_mean = X[in_unit].mean(0)
            for t in range(n_types):
                m = in_unit & (ct == t)
                out[i, t] = X[m].mean(0) if m.sum() >= min_cells else unit_mean
        return out.reshape(unit_ids.size, -1)

    fitted = _unit_fit(graph, profile, params, seed)
    fitted.estimator.cellgnn_genes_ = genes
    return fitted


def fit_composition(graph: dict, params: dict, seed: int) -> Fitted:
    """Centred log-ratio of each unit's cell-type proportions."""
    if not graph.get("has_cell_types", True) or len(graph["cell_types"]) < 2:
        raise CellgnnInputError("model 'composition' needs at least two cell types", field="train.models",
                                fix="remove it, or name the cell-type column in data.keys.cell_type")
    units = call_units(graph)
    ct = graph["cell_type"].numpy()
    n_types = len(graph["cell_types"])

    def profile(unit_ids, cells):
        counts = np.stack([np.bincount(ct[cells & (units == u)], minlength=n_types) for u in unit_ids])
        logp = np.log(counts + float(params["pseudocount"]))
        return logp - logp.mean(1, keepdims=True)

    return _unit_fit(graph, profile, params, seed)


def fit_harmony_knn(graph: dict, params: dict, seed: int) -> Fitted:
    """Harmony-corrected PCA of every cell (donor as batch, labels unused), kNN vote of training cells."""
    import harmonypy
    import pandas as pd
    from sklearn.neighbors import KNeighborsClassifier

    tr, _, _ = _masks(graph)
    pcs = graph["pca"].numpy()[:, : int(params["n_pcs"])].astype(np.float64)
    meta = pd.DataFrame({"donor": graph["donor"].numpy().astype(str)})
    if meta["donor"].nunique() > 1:
        ho = harmonypy.run_harmony(pcs, meta, ["donor"], max_iter_harmony=int(params["max_iter"]),
                                   random_state=seed, verbose=False, ncores=1)
        z = np.asarray(ho.Z_corr)
        z = z.T if z.shape[0] != pcs.shape[0] else z
    else:
        z = pcs
    y = graph["y"].numpy()
    knn = KNeighborsClassifier(n_neighbors=min(int(params["k"]), int(tr.sum())))
    knn.fit(z[tr], y[tr])
    return Fitted(knn, _full_proba(knn, z, len(graph["classes"])))


FITTERS = {"logreg": fit_logreg, "logreg_cv": fit_logreg_cv, "pseudobulk": fit_pseudobulk,
           "composition": fit_composition, "harmony_knn": fit_harmony_knn}
