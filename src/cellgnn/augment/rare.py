"""Rare-population experiment (ACTIVA paper, PBMC cluster 2).

For each seed and each fraction f: keep f of the chosen population's training cells
(at least one; the other populations untouched), then

- baseline: a class-weighted random forest, population vs rest, on the downsampled cells;
- augmented: ACTIVA trained on the downsampled cells (the kept population cells plus at most
  ``max_other_cells`` random cells of the other populations, to bound CPU time) generates
  ``n_synthetic`` cells of the population (posterior sampling around the kept cells, counts from
  ACTIVA's observation model, filtered by ACTINN; when the filter accepts too few, the
  unfiltered posterior samples are used and the row says so), added to the same forest's
  training set.

F1 (and precision, recall) of the population is measured on the held-out real test
cells, which are never downsampled nor seen by ACTIVA.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from ..errors import CellgnnInputError
from ..stats import t_interval
from .activa import ActivaConfig, ActivaTrainer, generate

LOG = logging.getLogger("cellgnn.augment.rare")


@dataclass
class RareConfig:
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.05, 0.01, 0.005])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    n_synthetic: int = 500
    epochs: int = 10  # ACTIVA's VAE epochs per run
    clf_epochs: int = 25  # its ACTINN epochs (few cells per run: more epochs for as many steps)
    n_trees: int = 100
    accept_threshold: float = 0.5
    max_other_cells: int | None = 500  # cells of other populations ACTIVA sees per run (None = all)


def _forest_f1(x_tr, y_tr, x_te, y_te, n_trees: int, seed: int, n_jobs: int = 1) -> dict:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import f1_score, precision_score, recall_score

    rf = RandomForestClassifier(n_estimators=n_trees, max_features="sqrt", class_weight="balanced",
                                random_state=seed, n_jobs=n_jobs).fit(x_tr, y_tr)
    pred = rf.predict(x_te)
    kw = {"zero_division": 0}
    return {"f1": float(f1_score(y_te, pred, **kw)), "precision": float(precision_score(y_te, pred, **kw)),
            "recall": float(recall_score(y_te, pred, **kw))}


def check_rare(cfg: RareConfig, labels_test: np.ndarray, population: str) -> None:
    """Refuse bad fractions, an empty seed list, or a population absent from the test cells."""
    if not cfg.fractions or not all(0 < f <= 1 for f in cfg.fractions):
        raise CellgnnInputError(f"fractions must lie in (0, 1], got {cfg.fractions}",
                                field="augment.rare.fractions", fix="use fractions such as [0.1, 0.01]")
    if len(cfg.seeds) < 1:
        raise CellgnnInputError("no seeds given", field="augment.rare.seeds", fix="give at least 3 seeds")
    if not np.any(labels_test == population):
        raise CellgnnInputError(f"population '{population}' has no held-out test cells",
                                field="augment.population", fix="choose a population present in the test split")


def rare_population_experiment(x_train: np.ndarray, library_train: np.ndarray, labels_train: np.ndarray,
                               x_test: np.ndarray, labels_test: np.ndarray, population: str,
                               activa_cfg: ActivaConfig, cfg: RareConfig, target_sum: float = 20000.0,
                               progress: bool = True, n_jobs: int = 1) -> pd.DataFrame:
    """Rows ``seed, fraction, n_population_train, augmented, n_synthetic, accept_threshold, f1, precision, recall``.

    x_train ``[N, G]`` normalized to ``target_sum`` with library sizes ``library_train`` ``[N]``
    (raw counts); x_test ``[M, G]`` the held-out real cells. ``n_jobs``: threads of each forest.
    """
    from tqdm.auto import tqdm

    check_rare(cfg, labels_test, population)
    pop_idx = np.flatnonzero(labels_train == population)
    others = np.flatnonzero(labels_train != population)
    classes = sorted(set(labels_train.tolist()))
    y_test = (labels_test == population).astype(int)
    rows = []
    runs = [(s, f) for s in cfg.seeds for f in cfg.fractions]
    for seed, frac in tqdm(runs, desc="rare population", disable=not progress):
        rng = np.random.default_rng(seed)
        k = max(1, int(round(frac * len(pop_idx))))
        kept = rng.choice(pop_idx, size=k, replace=False)
        idx = np.sort(np.r_[others, kept])
        x_sub, lab_sub = x_train[idx], labels_train[idx]
        y_sub = (lab_sub == population).astype(int)
        base = _forest_f1(x_sub, y_sub, x_test, y_test, cfg.n_trees, seed, n_jobs)
        rows.append({"seed": seed, "fraction": frac, "n_population_train": k, "augmented": False,
                     "n_synthetic": 0, "accept_threshold": np.nan, **base})
        gen_idx = others
        if cfg.max_other_cells is not None and len(others) > cfg.max_other_cells:
            gen_idx = rng.choice(others, size=cfg.max_other_cells, replace=False)
        gen_idx = np.sort(np.r_[gen_idx, kept])
        trainer = ActivaTrainer(x_train[gen_idx], library_train[gen_idx],
                                np.array([classes.index(c) for c in labels_train[gen_idx]]), classes,
                                replace(activa_cfg, epochs=cfg.epochs, clf_epochs=cfg.clf_epochs,
                                        warmup_epochs=min(activa_cfg.warmup_epochs, cfg.epochs), seed=seed),
                                target_sum=target_sum)
        trainer.fit(progress=False)
        thr = cfg.accept_threshold
        try:
            synth = generate(trainer.model, cfg.n_synthetic, classes, population, "posterior",
                             x_population=x_train[kept], threshold=thr, max_draws=10 * cfg.n_synthetic,
                             seed=seed)
        except CellgnnInputError as err:
            LOG.warning("seed %d fraction %g: %s; using unfiltered posterior samples", seed, frac, err)
            thr = 0.0
            synth = generate(trainer.model, cfg.n_synthetic, classes, population, "posterior",
                             x_population=x_train[kept], threshold=0.0, seed=seed)
        aug = _forest_f1(np.vstack([x_sub, synth]), np.r_[y_sub, np.ones(len(synth), dtype=int)],
                         x_test, y_test, cfg.n_trees, seed, n_jobs)
        rows.append({"seed": seed, "fraction": frac, "n_population_train": k, "augmented": True,
                     "n_synthetic": len(synth), "accept_threshold": thr, **aug})
    return pd.DataFrame(rows)


def summarize_rare(df: pd.DataFrame) -> list[dict]:
    """Mean F1 and 95% t-interval over seeds per (fraction, augmented); ``f1`` is
    ``{"mean", "ci_low", "ci_high", "n"}`` (no interval for one seed: :mod:`cellgnn.stats`)."""
    out = []
    for (frac, aug), g in df.groupby(["fraction", "augmented"], sort=True):
        f1 = t_interval(g["f1"])
        out.append({"fraction": float(frac), "augmented": bool(aug), "seeds": sorted(g["seed"].tolist()),
                    "f1": {"mean": f1.mean, "ci_low": f1.low, "ci_high": f1.high, "n": len(g)}})
    return out
