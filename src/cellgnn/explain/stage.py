"""The explain stage: run the configured methods, aggregate, score and write the tables.

:func:`run_explain` is the rule's entry point (files in, tables out);
:func:`write_explanations` does the work on loaded inputs (:class:`ExplainInputs`, one per split
unit). On ``donor_cv`` every fold explains its own held-out donors with its own models: the
per-cell attributions (integrated gradients, GNNExplainer) of all folds are pooled before they
are averaged per class and cell type, so each cell counts once, explained by a model that never
saw its donor; per-model or per-training-set rankings (weights, attention, DE) are averaged
over the folds.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..errors import CellgnnInputError
from ..graph import dense_features
from .ig import IGResult, IGSettings, control_reference, donor_control_reference, integrated_gradients
from .methods import (attention_rankings, de_rankings, edge_group_weights, first_layer_weights, gnnexplainer_masks,
                      random_rankings, read_ablation)
from .rankings import (CLASS_AGNOSTIC, cell_type_table, group_rankings, long_scores, per_class_sample, select_cells,
                       top_genes_table)
from .scoring import (SCORE_COLUMNS, gene_set_truth, ground_truth_sets, read_ground_truth, score_rankings,
                      summarize_scores)

LOG = logging.getLogger(__name__)

METHODS = ("integrated_gradients", "weights", "attention", "gnnexplainer", "de", "de_control", "random")
MODEL_METHODS = ("integrated_gradients", "weights", "gnnexplainer")  # need a trained graph model


@dataclass
class ExplainInputs:
    """What the explain stage reads. ``models`` / ``attention_models`` / ``edge_models``:
    seed → checkpoint path; ``load_model(path, graph) -> nn.Module`` builds a model from a
    checkpoint and raises ``CellgnnInputError`` when it does not fit the graph."""

    graph: dict
    graph_path: str
    truth: dict | None
    models: dict[int, str]
    load_model: Callable
    attention_models: dict[int, str] = field(default_factory=dict)
    edge_models: dict[int, str] = field(default_factory=dict)
    edge_features: dict | None = None
    ablation_path: str | None = None


@dataclass
class _Selection:
    """The graph's arrays (``x [N, G]``, ``y [N]``, ``ct [N]``) and the ``cells`` to explain."""

    classes: list[str]
    genes: list[str]
    cell_types: list[str]
    explain_classes: list[str]
    x: torch.Tensor
    y: np.ndarray
    ct: np.ndarray
    subset: str
    cells: np.ndarray


@dataclass
class _IGSetup:
    """The IG settings, baseline and explained score chosen by ``explain.ig``."""

    settings: IGSettings
    reference: torch.Tensor | None = None
    reference_index: np.ndarray | None = None
    contrast: int | None = None


@dataclass
class _Tables:
    """What the methods add to, in method order; ``notes`` go to ``run.json``."""

    rankings: list[pd.DataFrame] = field(default_factory=list)
    cell_types: list[pd.DataFrame] = field(default_factory=list)
    completeness: list[pd.DataFrame] = field(default_factory=list)
    gnnexplainer_edges: list[pd.DataFrame] = field(default_factory=list)
    edge_features: list[pd.DataFrame] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def resolve_classes(requested: list[str] | None, classes: list[str]) -> list[str]:
    """Classes to explain: all by default; unknown names are an error."""
    if not requested:
        return list(classes)
    unknown = [c for c in requested if c not in classes]
    if unknown:
        raise CellgnnInputError(f"unknown class(es) {unknown}; the graph's classes are {classes}",
                                field="explain.classes", fix="use class names from the data's label column")
    return list(requested)


def write_explanations(units: list[ExplainInputs], out_dir: str | Path, params: dict,
                       device: torch.device | str = "cpu") -> dict:
    """Run every configured method on each split unit, pool, score against the truth and write the tables.

    ``params`` is the config's ``explain`` section. Writes under ``out_dir``: ``genes.csv``,
    ``ground_truth_scores.csv`` (+ ``_by_cell_type``), ``scores_summary.csv``,
    ``cell_types.csv``, ``ig_completeness.csv``, ``gnnexplainer_edges.csv``,
    ``edge_features.csv``, ``run.json``. Returns the run summary written to ``run.json``.
    """
    from ..config import settings
    from ..design import resolve_control

    params = settings("explain", params)
    methods = list(params["methods"])
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise CellgnnInputError(f"unknown method(s) {unknown}", field="explain.methods", fix=f"use some of {list(METHODS)}")
    if any(not u.models for u in units) and any(m in methods for m in MODEL_METHODS):
        raise CellgnnInputError("no trained model checkpoint to explain", field="explain.model",
                                fix="train the model named in explain.model first (rule train)")
    if params["cells_from"] not in ("train", "val", "test", "all"):
        raise CellgnnInputError(f"unknown subset '{params.get('cells_from')}'", field="explain.cells_from",
                                fix="use train, val, test or all")
    budgets = _cell_budgets(units, params)
    sels = [_select(u.graph, params, n) for u, n in zip(units, budgets)]
    out = _Tables()
    per_unit: list[pd.DataFrame] = []  # rankings averaged over the units
    pooled: dict[str, dict] = {"integrated_gradients": {}, "gnnexplainer": {}}  # method -> seed -> parts
    min_cells = int(params["min_cells_per_group"])
    control = resolve_control(sels[0].classes, params["de_control"])
    LOG.info("explaining %d %s cells of %d classes in %d split unit(s) with %s", sum(s.cells.size for s in sels),
             sels[0].subset, len(sels[0].explain_classes), len(units), methods)
    for i, (inp, sel) in enumerate(zip(units, sels)):
        notes = out.notes if i == 0 else []
        ig = _ig_setup(inp.graph, sel, params, control, min_cells, notes) if "integrated_gradients" in methods else None
        for seed, path in sorted(inp.models.items()):
            _explain_model(inp, sel, params, methods, seed, inp.load_model(path, inp.graph), ig, device, out,
                           per_unit, pooled, n_units=len(units))
        if "attention" in methods:
            _attention(inp, sel, notes, min_cells, per_unit, control)
        tr = inp.graph["train_mask"].numpy()
        if "de" in methods:
            per_unit += de_rankings("de", "rest", sel.x[tr].numpy(), sel.y[tr], sel.ct[tr], sel.classes, sel.genes,
                                    sel.cell_types, sel.explain_classes, min_cells)
        if "de_control" in methods and control not in sel.classes:
            notes.append(f"de_control: no control class among the classes (explain.de_control: "
                         f"{params['de_control']}); skipped")
        elif "de_control" in methods:
            per_unit += de_rankings("de_control", control, sel.x[tr].numpy(), sel.y[tr], sel.ct[tr], sel.classes,
                                    sel.genes, sel.cell_types, sel.explain_classes, min_cells)
        out.edge_features += _edge_feature_importance(inp, notes, ablation=i == 0)
    sel = sels[0]
    out.rankings += _pool_cells(pooled, sel, min_cells, out)
    if per_unit:
        keys = ["method", "seed", "class", "cell_type", "gene_index"]
        out.rankings.append(pd.concat(per_unit, ignore_index=True).groupby(keys, sort=False, as_index=False)["score"]
                            .mean())
    if "random" in methods:
        out.rankings += random_rankings(sorted(units[0].models) or [0], len(sel.genes))
    if len(units) > 1 and out.edge_features:
        edges = pd.concat(out.edge_features, ignore_index=True)
        out.edge_features = [edges.groupby(["method", "seed", "group"], sort=False, as_index=False)
                             [["importance", "low", "high"]].mean()]
    return _write_tables(units, sels, params, methods, out, Path(out_dir))


def _cell_budgets(units: list[ExplainInputs], params: dict) -> list[int]:
    """``explain.n_cells`` shared among the units in proportion to their explainable cells (0 = all)."""
    n = int(params["n_cells"])
    subset = params["cells_from"]
    sizes = np.array([int(u.graph[f"{subset}_mask"].sum()) if subset != "all" else u.graph["x"].shape[0]
                      for u in units], dtype=float)
    if n == 0 or len(units) == 1:
        return [n] * len(units)
    return [max(1, int(round(n * s / sizes.sum()))) for s in sizes]


def _attention(inp: ExplainInputs, sel: _Selection, notes: list[str], min_cells: int,
               rankings: list[pd.DataFrame], control: str | None) -> None:
    """scANNA gene attention of the selected cells (against the ``control`` class), for every
    attention-model seed of one unit."""
    if not inp.attention_models:
        notes.append("attention: no trained attention model (explain.attention_model) found; skipped")
    for seed, path in sorted(inp.attention_models.items()):
        model = inp.load_model(path, inp.graph)
        if not hasattr(model, "gene_attention"):
            raise CellgnnInputError("the attention model has no gene attention", file=path,
                                    field="explain.attention_model", fix="name an scANNA-style model (scanna)")
        c = sel.cells
        rankings += attention_rankings(model, seed, sel.x[c], sel.y[c], sel.ct[c], sel.classes,
                                       sel.cell_types, sel.explain_classes, min_cells, control)


def _pool_cells(pooled: dict, sel: _Selection, min_cells: int, out: _Tables) -> list[pd.DataFrame]:
    """Per-cell attributions of every unit joined per seed, then averaged per class and cell type."""
    rankings = []
    for seed, parts in sorted(pooled["integrated_gradients"].items()):
        res = IGResult(cells=np.arange(sum(p[0].cells.size for p in parts)),
                       target=np.concatenate([p[0].target for p in parts]),
                       attr=np.concatenate([p[0].attr for p in parts]),
                       delta=np.concatenate([p[0].delta for p in parts]),
                       pred=np.concatenate([p[0].pred for p in parts]),
                       node_mass=np.concatenate([p[0].node_mass for p in parts]))
        y, ct = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
        rankings += group_rankings("integrated_gradients", seed, res.attr, y, ct, sel.classes, sel.cell_types,
                                   sel.explain_classes, min_cells)
        out.cell_types.append(cell_type_table(res, y, ct, sel.classes, sel.cell_types, sel.explain_classes, seed))
    for seed, parts in sorted(pooled["gnnexplainer"].items()):
        rankings += group_rankings("gnnexplainer", seed, np.concatenate([p[0] for p in parts]),
                                   np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]),
                                   sel.classes, sel.cell_types, sel.explain_classes, 1, by_cell_type=False)
    return rankings


def _select(g: dict, params: dict, n_cells: int) -> _Selection:
    """The explained classes and ``n_cells`` cells (``explain.classes``, ``cells_from``, ``seed``)."""
    classes, genes, cell_types = list(g["classes"]), list(g["genes"]), list(g["cell_types"])
    explain_classes = resolve_classes(params["classes"], classes)
    y = g["y"].numpy()
    subset = params["cells_from"]
    masks = {"train": g["train_mask"], "val": g["val_mask"], "test": g["test_mask"],
             "all": torch.ones_like(g["train_mask"])}
    if subset not in masks:
        raise CellgnnInputError(f"unknown subset '{subset}'", field="explain.cells_from", fix="use train, val, test or all")
    keep = masks[subset].numpy() & np.isin(y, [classes.index(c) for c in explain_classes])
    cells = select_cells(keep, y, n_cells, np.random.default_rng(int(params["seed"])))
    return _Selection(classes, genes, cell_types, explain_classes, dense_features(g).float(), y, g["cell_type"].numpy(),
                      subset, cells)


def _ig_setup(g: dict, sel: _Selection, params: dict, control: str | None, min_cells: int, notes: list[str]) -> _IGSetup:
    """``explain.ig``: the baseline (mean control cell of the donor and cell type, of the cell
    type, or zeros) and the explained score (log-odds against the control, or the logit)."""
    ig_p = params["ig"]
    setup = _IGSetup(IGSettings.from_params(ig_p))
    ctrl = sel.classes.index(control) if control in sel.classes else None
    baseline, target = ig_p["baseline"], ig_p["target"]
    uses_control = baseline in ("control", "control_donor")
    if uses_control and ctrl is None:
        notes.append(f"integrated_gradients: no control class among the classes (explain.de_control: "
                     f"{params['de_control']}); zero baseline used")
    elif uses_control:
        n_types = len(sel.cell_types)
        setup.reference = control_reference(sel.x, sel.y, sel.ct, g["train_mask"].numpy(), ctrl, n_types)
        if baseline == "control_donor":
            setup.reference, setup.reference_index = donor_control_reference(
                sel.x, sel.y, sel.ct, g["donor"].numpy(), ctrl, n_types, setup.reference, min_cells)
    if target == "contrast" and ctrl is None:
        notes.append("integrated_gradients: no control class among the classes; the class logit is explained "
                     "instead of its log-odds against the control")
    elif target == "contrast":
        setup.contrast = ctrl
    return setup


def _explain_model(inp: ExplainInputs, sel: _Selection, params: dict, methods: list[str], seed: int,
                   model: torch.nn.Module, ig: _IGSetup | None, device, out: _Tables,
                   rankings: list[pd.DataFrame], pooled: dict, n_units: int = 1) -> None:
    """The methods that read one trained graph model (seed ``seed``) of one of ``n_units`` units: IG
    and GNNExplainer (per-cell results added to ``pooled``; GNNExplainer's ``cells_per_class`` is
    shared by the units), weights (a ranking added to ``rankings``)."""
    g, cells, y, ct = inp.graph, sel.cells, sel.y, sel.ct
    ea = inp.edge_features["edge_attr"].float() if inp.edge_features is not None else None  # ignored without
    hops = params["num_hops"] or None
    unit = g.get("unit", g["split_mode"])
    if "integrated_gradients" in methods:
        res = integrated_gradients(model, sel.x, g["edge_index"], cells, y[cells], ct, len(sel.cell_types),
                                   edge_attr=ea, num_hops=hops, device=device, reference=ig.reference,
                                   contrast=ig.contrast, reference_index=ig.reference_index, settings=ig.settings)
        out.completeness.append(res.batches.assign(seed=seed, unit=unit))
        pooled["integrated_gradients"].setdefault(seed, []).append((res, y[cells], ct[cells]))
    if "weights" in methods:
        w, name = first_layer_weights(model, len(sel.genes))
        LOG.info("seed %s: weight magnitudes from %s", seed, name)
        rankings.append(long_scores("weights", seed, CLASS_AGNOSTIC, CLASS_AGNOSTIC, w))
    if "gnnexplainer" in methods:
        gp = params["gnnexplainer"]
        few = per_class_sample(cells, y, sel.explain_classes, sel.classes,
                               max(1, round(int(gp["cells_per_class"]) / n_units)),
                               np.random.default_rng(int(params["seed"])))
        fm, edges = gnnexplainer_masks(model, sel.x, g["edge_index"], few, y[few], edge_attr=ea, num_hops=hops,
                                       epochs=int(gp["epochs"]), lr=float(gp["lr"]),
                                       seed=int(seed), device=device)
        out.gnnexplainer_edges.append(edges.assign(seed=seed, unit=unit))
        pooled["gnnexplainer"].setdefault(seed, []).append((fm, y[few], ct[few]))


def _edge_feature_importance(inp: ExplainInputs, notes: list[str], ablation: bool = True) -> list[pd.DataFrame]:
    """Edge-feature group importance: the ablation table's (``ablation``), and each edge model's weights."""
    out = []
    if ablation and inp.ablation_path:
        abl = read_ablation(inp.ablation_path, split=inp.graph.get("split_mode"))
        if abl is None:
            notes.append(f"edge features: {inp.ablation_path} absent (edge-feature ablation not run); ablation importance skipped")
        else:
            out.append(pd.DataFrame({"method": "ablation", "seed": "", "group": abl["group"],
                                     "importance": abl["importance"], "low": abl["low"], "high": abl["high"]}))
    if inp.edge_features is None or not inp.edge_models:
        notes.append("edge features: no edge features or no model trained with them; weight-based importance skipped")
        return out
    groups = inp.edge_features["groups"]
    for seed, path in sorted(inp.edge_models.items()):
        model = inp.load_model(path, inp.graph)
        imp, name = edge_group_weights(model, inp.edge_features["edge_attr"].shape[1], groups)
        LOG.info("seed %s: edge-feature weights from %s", seed, name)
        v = list(imp.values())
        out.append(pd.DataFrame({"method": "weights", "seed": seed, "group": list(imp), "importance": v,
                                 "low": v, "high": v}))
    return out


def _write_tables(units: list[ExplainInputs], sels: list[_Selection], params: dict, methods: list[str],
                  out: _Tables, out_dir: Path) -> dict:
    """Aggregate the rankings, score them against the truth (the simulator's planted genes, or a
    published gene set: ``explain.gene_set``) and write every table and ``run.json``."""
    from ..io import write_csv, write_json

    def table(parts: list[pd.DataFrame], columns: list[str]) -> pd.DataFrame:
        return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)

    inp, sel = units[0], sels[0]
    all_rank = pd.concat(out.rankings, ignore_index=True)
    write_csv(top_genes_table(all_rank, sel.genes, int(params["top_k"])), out_dir / "genes.csv")
    scores, summary, by_ct = pd.DataFrame(columns=SCORE_COLUMNS), pd.DataFrame(), []
    by_class, truth_ct, truth = truth_sets(inp.truth, params, sel.classes, sel.genes, sel.explain_classes)
    if truth is not None:
        scores = score_rankings(all_rank[all_rank["cell_type"] == CLASS_AGNOSTIC], sel.genes, by_class)
        summary = summarize_scores(scores)
        for (c, t), gs in truth_ct.items():
            sub = all_rank[(all_rank["cell_type"] == t) & (all_rank["class"] == c)]
            if not sub.empty:
                by_ct.append(score_rankings(sub, sel.genes, {c: gs}).assign(cell_type=t))
    else:
        out.notes.append("no ground truth (not simulated) and no explain.gene_set: gene rankings are not scored")
    write_csv(table(by_ct, SCORE_COLUMNS + ["cell_type"]), out_dir / "ground_truth_scores_by_cell_type.csv")
    write_csv(scores, out_dir / "ground_truth_scores.csv")
    write_csv(summary, out_dir / "scores_summary.csv")
    write_csv(table(out.cell_types, ["seed", "class", "cell_type", "n_cells", "accuracy", "attribution_share"]),
              out_dir / "cell_types.csv")
    write_csv(table(out.completeness, ["seed", "batch"]), out_dir / "ig_completeness.csv")
    write_csv(table(out.gnnexplainer_edges, ["cell", "source", "target", "mask", "seed"]),
              out_dir / "gnnexplainer_edges.csv")
    write_csv(table(out.edge_features, ["method", "seed", "group", "importance", "low", "high"]),
              out_dir / "edge_features.csv")
    run = {"methods": methods, "cells_from": sel.subset, "n_cells": int(sum(s.cells.size for s in sels)),
           "classes": sel.explain_classes, "model_seeds": sorted(int(s) for s in inp.models),
           "graphs": [u.graph_path for u in units], "truth": truth, "notes": out.notes,
           "summary": summary.to_dict(orient="records")}
    write_json(run, out_dir / "run.json")
    for n in out.notes:
        LOG.info("note: %s", n)
    return run


def truth_sets(truth: dict | None, params: dict, classes: list[str], genes: list[str],
               explain_classes: list[str]) -> tuple[dict, dict, str | None]:
    """What the rankings are scored against: the simulator's planted genes (``truth``, ``uns["ground_truth"]``),
    else the gene set ``explain.gene_set`` (its classes, or every explained class but the control), else
    nothing. Returns ``(by_class, by_class_cell_type, description)`` of gene-name sets (``{}``, ``{}``,
    None when there is no truth; ``by_class_cell_type`` is empty for a gene set)."""
    from ..design import resolve_control

    gene_set = (params.get("gene_set") or {}).get("path")
    if truth is not None:
        by_class, by_ct = ground_truth_sets(truth, genes, explain_classes)
        return by_class, by_ct, "planted genes (simulator)"
    if gene_set:
        control = resolve_control(classes, params.get("de_control", "auto"))
        wanted = list((params.get("gene_set") or {}).get("classes") or [c for c in explain_classes if c != control])
        by_class = gene_set_truth(gene_set, genes, [c for c in wanted if c in explain_classes])
        n = len(next(iter(by_class.values()), ()))
        return by_class, {}, f"gene set {Path(gene_set).name} ({n} of its genes measured)"
    return {}, {}, None


def run_explain(graph_paths: list[str], raw_path: str, models: list[str], out_dir: str, params: dict,
                device_pref: str = "auto", attention_models: list[str] = (), edge_models: list[str] = (),
                edge_features_paths: list[str] = (), ablation_path: str | None = None,
                load_model: Callable | None = None) -> dict:
    """The explain rule: read each split unit's graph (``.../graph/<unit>.pt``), edge features
    (``.../edge_features/<unit>.pt``) and checkpoints (``.../models/<unit>/<model>/seed<k>/model.pt``)
    and the truth, run :func:`write_explanations` and write its tables to ``out_dir``."""
    from ..config import settings
    from ..edge_features import load_edge_features
    from ..graph import load_graph
    from ..utils import get_device, seed_everything

    if load_model is None:
        from ..train import load_model as _load

        def load_model(path, graph):
            return _load(path, graph)[0]

    seed_everything(int(settings("explain", params)["seed"]))
    truth = read_ground_truth(raw_path)
    single = len(graph_paths) == 1
    units = []
    for graph_path in graph_paths:
        unit = unit_of(graph_path, "graph")
        graph = load_graph(graph_path)
        ef = [p for p in edge_features_paths if single or unit_of(p, "edge_features") == unit]
        units.append(ExplainInputs(
            graph=graph, graph_path=str(graph_path), truth=truth, models=_by_seed(models, unit, single),
            load_model=load_model, attention_models=_by_seed(attention_models, unit, single),
            edge_models=_by_seed(edge_models, unit, single),
            edge_features=load_edge_features(ef[0], graph) if ef else None, ablation_path=ablation_path))
    return write_explanations(units, out_dir, params, device=get_device(device_pref))


def unit_of(path: str | Path, folder: str) -> str:
    """The split unit of a stage file: ``.../<folder>/<unit>.pt`` (graph, edge_features) or
    ``.../models/<unit>/<model>/seed<k>/model.pt``; the unit may hold a slash (``donor_cv/fold0``)."""
    import re

    p = str(path).replace("\\", "/")
    m = (re.search(r"/models/(.+)/[^/]+/seed\d+/[^/]+$", p) if folder == "models" else
         re.search(rf"/{folder}/(.+)\.pt$", p))
    return m.group(1) if m else Path(p).stem


def _by_seed(paths, unit: str, single: bool) -> dict[int, str]:
    """Checkpoints of ``unit`` (every one given when there is a single unit), by their ``seed<k>`` folder."""
    import re

    out = {}
    for p in paths:
        if single or unit_of(p, "models") == unit:
            m = re.search(r"seed(\d+)", str(p))
            out[int(m.group(1)) if m else len(out)] = str(p)
    return out
