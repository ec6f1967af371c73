"""Study design: which cells are held out, checked before any heavy stage.

The split of the cells is decided here and only here, from ``obs`` alone (columns ``label``,
``donor`` and, where known, ``sample``), so the same function that the graph stage runs can
be run on a study's ``obs`` at start-up: a design that cannot be split is refused before any
job with a message that names the design and the fix.

Split modes:

``cells``
    Random cells, stratified by label (the original study's split: a donor's cells are in
    train and test, so it is the leaky comparison).
``donors``
    One set of whole donors held out for test (``fractions.test`` of the donors, at least
    one per class where the label is a donor property).
``donor_cv``
    Cross-validation over donors: fold ``i`` of ``K`` tests its donors; every donor is
    tested exactly once. Donors are dealt to folds stratified by label where the label is
    a donor property.

In ``donors`` and ``donor_cv`` validation comes from the training donors only: whole
donors when every class keeps at least two training donors besides them, else a stratified
fraction of the training donors' cells (``graph.validation``).

The unit of a call (``call_unit``): ``donor`` where the label is constant within donors,
else ``sample`` where it is constant within the ``sample`` column (paired designs: every
donor in several conditions), else none (the label is a property of cells).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import CellgnnInputError

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("cells", "donors", "donor_cv")
CONTROL_NAMES = ("mock", "control", "ctrl", "healthy", "untreated", "unstimulated")
# models that need a label constant within a donor or sample (one profile per unit)
UNIT_MODELS = frozenset({"pseudobulk", "composition"})


@dataclass
class DonorPlan:
    """Whole-donor assignment of one split: donors tested, donors used for validation, and
    whether validation is instead a fraction of the training donors' cells."""

    test: list[str]
    val: list[str]
    train: list[str]
    val_from_cells: bool
    fold: int = 0
    n_folds: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def validation(self) -> str:
        return "cells" if self.val_from_cells else "donors"


def label_is_per(obs: pd.DataFrame, key: str) -> bool:
    """Whether every value of ``obs[key]`` has a single label."""
    return key in obs and bool((obs.groupby(obs[key].astype(str), observed=True)["label"].nunique() == 1).all())


def call_unit(obs: pd.DataFrame) -> str | None:
    """``donor``, ``sample`` or None: the coarsest unit within which the label is constant."""
    if label_is_per(obs, "donor"):
        return "donor"
    if "sample" in obs and label_is_per(obs, "sample"):
        return "sample"
    return None


def n_folds_for(n_donors: int, cv_folds: int) -> int:
    """Folds of ``donor_cv``: ``cv_folds``, or one per donor when it is 0."""
    return n_donors if cv_folds == 0 else cv_folds


def resolve_control(classes: list[str], setting: str) -> str | None:
    """The control class: ``setting`` itself, or with ``auto`` the class named like a control."""
    if setting != "auto":
        return setting
    lower = {str(c).lower(): str(c) for c in classes}
    return next((lower[n] for n in CONTROL_NAMES if n in lower), None)


# ---------------------------------------------------------------- donor plans
def _donor_labels(obs: pd.DataFrame) -> pd.Series | None:
    """Label of each donor when the label is a donor property, else None."""
    if not label_is_per(obs, "donor"):
        return None
    return obs.groupby(obs["donor"].astype(str), observed=True)["label"].first().astype(str).sort_index()


def plan_donor_folds(obs: pd.DataFrame, n_folds: int, seed: int) -> list[list[str]]:
    """Deal the donors into ``n_folds`` test folds (every donor in exactly one).

    Where the label is a donor property, the donors of each class are dealt round-robin,
    continuing from the fold where the previous class stopped, so every fold gets donors of
    as many classes as possible and folds differ in size by at most one donor.
    """
    rng = np.random.default_rng(seed)
    donors = np.array(sorted(obs["donor"].astype(str).unique()))
    if n_folds > donors.size:
        raise CellgnnInputError(f"{n_folds} folds asked for but the study has {donors.size} donors",
                                field="graph.cv_folds",
                                fix=f"set graph.cv_folds to at most {donors.size} (0 = one fold per donor)")
    per_donor = _donor_labels(obs)
    groups = ([rng.permutation(donors)] if per_donor is None else
              [rng.permutation(per_donor.index[per_donor == lab].to_numpy()) for lab in sorted(per_donor.unique())])
    folds: list[list[str]] = [[] for _ in range(n_folds)]
    k = 0
    for group in groups:
        for d in group:
            folds[k % n_folds].append(str(d))
            k += 1
    return [sorted(f) for f in folds]


def plan_donor_split(obs: pd.DataFrame, mode: str, fractions: dict, seed: int, fold: int = 0,
                     cv_folds: int = 0, validation: str = "auto") -> DonorPlan:
    """Whole donors for test and validation in split ``mode`` (``donors`` or ``donor_cv``).

    Raises :class:`CellgnnInputError` naming the design when it cannot be split: fewer than
    two donors, a class seen in one donor only, a fold that would leave a class out of training.
    """
    donors = sorted(obs["donor"].astype(str).unique())
    if len(donors) < 2:
        raise CellgnnInputError(f"split mode '{mode}' holds whole donors out, but the study has "
                                f"{len(donors)} donor ({donors[0]})", field="graph.split_modes",
                                fix="use split mode 'cells' (or name the donor column in data.keys.donor)")
    classes_of = obs.groupby(obs["donor"].astype(str), observed=True)["label"].agg(lambda s: set(map(str, s)))
    donors_of_class: dict[str, list[str]] = {}
    for d, labs in classes_of.items():
        for lab in labs:
            donors_of_class.setdefault(lab, []).append(str(d))
    single = {lab: ds[0] for lab, ds in donors_of_class.items() if len(ds) == 1}
    if single:
        lab, d = next(iter(sorted(single.items())))
        raise CellgnnInputError(
            f"class '{lab}' occurs in one donor only ({d}; {len(single)} such class(es): {sorted(single)}): "
            f"with whole donors held out ({mode}) it cannot be both trained on and tested",
            field="graph.split_modes",
            fix="add donors of that class, drop the class, or use split mode 'cells' (leaky: same donors in train "
                "and test)")
    rng = np.random.default_rng(seed)
    per_donor = _donor_labels(obs)
    n_folds = 1
    if mode == "donors":
        if per_donor is None:
            ds = rng.permutation(donors)
            test = list(ds[: max(1, int(round(fractions["test"] * len(ds))))])
        else:
            test = []
            for lab in sorted(per_donor.unique()):
                ds = rng.permutation(per_donor.index[per_donor == lab].to_numpy())
                test += list(ds[: max(1, min(ds.size - 1, int(round(fractions["test"] * ds.size))))])
    elif mode == "donor_cv":
        n_folds = n_folds_for(len(donors), cv_folds)
        if n_folds < 2:
            raise CellgnnInputError(f"donor_cv needs at least 2 folds, got graph.cv_folds={cv_folds}",
                                    field="graph.cv_folds", fix="set 0 (one fold per donor) or a number >= 2")
        if not 0 <= fold < n_folds:
            raise CellgnnInputError(f"fold {fold} does not exist ({n_folds} folds)", field="graph.cv_folds",
                                    fix=f"use folds 0..{n_folds - 1}")
        test = plan_donor_folds(obs, n_folds, seed)[fold]
    else:
        raise CellgnnInputError(f"split mode '{mode}' holds no donors out", field="graph.split_modes",
                                fix="use donors or donor_cv")
    rest = [d for d in donors if d not in set(test)]
    missing = sorted(lab for lab, ds in donors_of_class.items() if not set(ds) & set(rest))
    if missing:
        what = f"fold {fold} of {n_folds}" if mode == "donor_cv" else "the test donors"
        raise CellgnnInputError(
            f"{what} ({', '.join(map(str, test))}) hold every donor of class(es) {missing}: those classes would "
            "be missing from training", field="graph.cv_folds" if mode == "donor_cv" else "graph.split_modes",
            fix="add donors of those classes, use fewer folds, or use split mode 'cells'")
    val, val_from_cells, notes = _validation_donors(rest, donors_of_class, fractions, validation, rng)
    train = [d for d in rest if d not in set(val)]
    return DonorPlan(sorted(test), sorted(val), sorted(train), val_from_cells, fold, n_folds, notes)


def _validation_donors(rest: list[str], donors_of_class: dict[str, list[str]], fractions: dict, validation: str,
                       rng: np.random.Generator) -> tuple[list[str], bool, list[str]]:
    """Whole validation donors from the training donors ``rest`` (about ``val / (train + val)`` of
    each class's training donors), or none with validation drawn from their cells."""
    share = fractions["val"] / (fractions["val"] + fractions["train"])
    train_of = {lab: set(ds) & set(rest) for lab, ds in donors_of_class.items()}
    fewest = min(len(v) for v in train_of.values())
    if validation == "cells" or (validation == "auto" and fewest < 3):
        why = ("graph.validation is 'cells'" if validation == "cells" else
               f"a class has {fewest} training donor(s), too few to spare whole donors")
        return [], True, [f"validation: {share:.0%} of the training donors' cells, stratified by label and donor ({why})"]
    if fewest < 2:
        raise CellgnnInputError(f"graph.validation is 'donors' but a class has {fewest} training donor(s): "
                                "none can be spared for validation", field="graph.validation",
                                fix="set graph.validation: auto or cells (a fraction of the training donors' cells)")
    keep = 2 if validation == "auto" else 1  # training donors every class keeps
    classes_of = {d: {lab for lab, ds in train_of.items() if d in ds} for d in rest}
    val: set[str] = set()
    for lab in sorted(train_of):
        want = max(1, int(round(share * len(train_of[lab]))))
        for d in rng.permutation(sorted(train_of[lab] - val)):
            if len(train_of[lab] & val) >= want:
                break
            if all(len(train_of[c] - val - {d}) >= keep for c in classes_of[d]):
                val.add(str(d))
    return sorted(val), False, [f"validation: whole training donors {sorted(val)}"]


# ---------------------------------------------------------------- cell assignment
def split_cells(obs: pd.DataFrame, mode: str, fractions: dict, seed: int, fold: int = 0, cv_folds: int = 0,
                validation: str = "auto") -> np.ndarray:
    """Assign each cell to ``train`` / ``val`` / ``test``; returns a string array ``[N]``.

    ``cells``: stratified by label. ``donors`` / ``donor_cv``: whole donors as planned by
    :func:`plan_donor_split`; validation cells from training donors only. Raises when a class
    would be missing from training (or, for ``cells`` and ``donors``, from the test cells).
    """
    fr = {s: float(fractions[s]) for s in SPLITS}
    if any(f <= 0 for f in fr.values()) or abs(sum(fr.values()) - 1.0) > 1e-6:
        raise CellgnnInputError(f"split fractions {fr} must be > 0 and sum to 1", field="graph.fractions",
                                fix="e.g. train: 0.7, val: 0.15, test: 0.15")
    rng = np.random.default_rng(seed)
    labels = obs["label"].astype(str).to_numpy()
    out = np.full(len(obs), "train", dtype=object)
    if mode == "cells":
        for lab in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == lab))
            if idx.size < 3:
                raise CellgnnInputError(f"class '{lab}' has {idx.size} cells, too few for train/val/test",
                                        field="obs.label", fix="drop that class or merge it with another")
            n_test = max(1, int(round(fr["test"] * idx.size)))
            n_val = max(1, int(round(fr["val"] * idx.size)))
            out[idx[:n_test]] = "test"
            out[idx[n_test:n_test + n_val]] = "val"
    elif mode in ("donors", "donor_cv"):
        plan = plan_donor_split(obs, mode, fr, seed, fold, cv_folds, validation)
        donors = obs["donor"].astype(str).to_numpy()
        out[np.isin(donors, plan.test)] = "test"
        out[np.isin(donors, plan.val)] = "val"
        if plan.val_from_cells:
            share = fr["val"] / (fr["val"] + fr["train"])
            train = np.flatnonzero(out == "train")
            strata = pd.Series(labels[train]) + "\x1f" + pd.Series(donors[train])
            for _, pos in pd.Series(np.arange(train.size)).groupby(strata.to_numpy()):
                idx = rng.permutation(train[pos.to_numpy()])
                n_val = int(round(share * idx.size)) if idx.size >= 2 else 0
                out[idx[:n_val]] = "val"
    else:
        raise CellgnnInputError(f"unknown split mode '{mode}'", field="graph.split_modes",
                                fix=f"use one of {', '.join(SPLIT_MODES)}")
    must_cover = ("train",) if mode == "donor_cv" else ("train", "test")
    for s in must_cover:
        missing = sorted(set(labels) - set(labels[out == s]))
        if missing:
            raise CellgnnInputError(f"the {s} split has no cells of class(es) {missing} in split mode '{mode}'",
                                    field="graph.split_modes",
                                    fix="add donors of those classes, drop the classes, or use split mode 'cells'")
    if not (out == "val").any():
        raise CellgnnInputError(f"split mode '{mode}' left no validation cells (early stopping needs them)",
                                field="graph.fractions", fix="raise fractions.val, or add cells or donors")
    return out.astype(str)


def split_units(split_modes: list[str], n_donors: int, cv_folds: int) -> list[str]:
    """Graph files of a run: ``cells``, ``donors``, ``donor_cv/fold<i>`` (one per fold)."""
    units = []
    for mode in split_modes:
        if mode == "donor_cv":
            units += [f"donor_cv/fold{i}" for i in range(n_folds_for(n_donors, cv_folds))]
        else:
            units.append(mode)
    return units


def parse_unit(unit: str) -> tuple[str, int]:
    """``donor_cv/fold3`` -> (``donor_cv``, 3); ``cells`` -> (``cells``, 0)."""
    if unit.startswith("donor_cv/fold"):
        return "donor_cv", int(unit[len("donor_cv/fold"):])
    return unit, 0


# ---------------------------------------------------------------- design checks
def cell_types_source(cfg: dict, obs: pd.DataFrame | None) -> str | None:
    """Where the run's cell types come from: ``data`` (``data.keys.cell_type``, present in
    ``obs`` when ``obs`` is known), ``celltype`` (the data has none and the celltype stage is
    on) or None."""
    if cfg["data"]["keys"]["cell_type"] is not None and (obs is None or "cell_type" in obs):
        return "data"
    return "celltype" if cfg["celltype"]["enabled"] in ("auto", True) else None


def check_design(obs: pd.DataFrame, cfg: dict, where: str) -> dict:
    """Check that every split of the config can be made from ``obs`` and that every class,
    control and population the config names exists; returns a summary of the design.

    obs: ``label``, ``donor`` (and ``cell_type``, ``sample`` where known) of every cell.
    cfg: the validated config. where: the file or stage named in errors.
    """
    classes = sorted(obs["label"].astype(str).unique())
    donors = sorted(obs["donor"].astype(str).unique())
    graph = cfg["graph"]
    if len(classes) < 2:
        raise CellgnnInputError(f"the label has a single class ({classes[0]!r}); nothing to predict", file=where,
                                field="data.keys.label", fix="choose a label column with at least two classes")
    for mode in graph["split_modes"]:
        folds = range(n_folds_for(len(donors), graph["cv_folds"])) if mode == "donor_cv" else [0]
        for fold in folds:
            try:
                split_cells(obs, mode, graph["fractions"], cfg["seed"], fold, graph["cv_folds"], graph["validation"])
            except CellgnnInputError as err:
                raise CellgnnInputError(f"design ({len(donors)} donors, {len(classes)} classes): {err.problem}",
                                        file=where, field=err.field, fix=err.fix) from None
    unit = call_unit(obs)
    unit_models = sorted(UNIT_MODELS & set(cfg["train"]["models"]))
    if unit_models and unit is None:
        raise CellgnnInputError(f"model(s) {unit_models} need a label constant within each donor or sample, but the "
                                "label varies within donors" + ("" if "sample" in obs else " and no sample column is "
                                                                "given"), file=where, field="train.models",
                                fix="remove them from train.models, or name the sample column in data.keys.sample")
    if "composition" in cfg["train"]["models"] and cell_types_source(cfg, obs) is None:
        raise CellgnnInputError("model 'composition' needs cell types", file=where, field="train.models",
                                fix="remove it, name the cell-type column in data.keys.cell_type, or let the "
                                    "celltype stage type the cells (celltype.enabled: auto)")
    explain = cfg["explain"]
    unknown = sorted(set(explain["classes"]) - set(classes))
    if unknown:
        raise CellgnnInputError(f"explain.classes {unknown} are not classes of the data {classes}", file=where,
                                field="explain.classes", fix="name existing classes, or [] for all")
    if explain["de_control"] != "auto" and explain["de_control"] not in classes:
        raise CellgnnInputError(f"control class '{explain['de_control']}' is not a class of the data {classes}",
                                file=where, field="explain.de_control", fix="name an existing class, or auto")
    aug = cfg["augment"]
    pop = aug["population"]
    if pop is not None:
        key = "cell_type" if aug["population_key"] == "cell_type" else aug["population_key"]
        if key in obs and pop not in set(obs[key].astype(str)):
            raise CellgnnInputError(f"population '{pop}' not found in obs column '{aug['population_key']}' "
                                    f"(values: {sorted(obs[key].astype(str).unique())[:12]})", file=where,
                                    field="augment.population", fix="name an existing population, or null")
    return {"n_cells": int(len(obs)), "classes": classes, "donors": donors, "call_unit": unit,
            "label_per_donor": unit == "donor",
            "cells_per_class": {c: int(n) for c, n in obs["label"].astype(str).value_counts().sort_index().items()}}
