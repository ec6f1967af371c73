"""Config validation: JSON schema with defaults, then the checks a schema cannot express.

``validate_config(cfg, schema_path, source)`` fills defaults in place and raises
:class:`~cellgnn.errors.CellgnnInputError` naming the config file, the dotted key and
the fix. The Snakefile calls it before any rule runs.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from jsonschema import Draft202012Validator, validators

from .errors import CellgnnInputError

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


def _with_defaults(cls):
    validate_props = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = _copy(sub["default"])
        yield from validate_props(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


def _copy(value):
    import copy

    return copy.deepcopy(value)


DefaultValidator = _with_defaults(Draft202012Validator)


def load_schema(path: str | Path = SCHEMA) -> dict:
    with open(path) as fh:
        return yaml.safe_load(fh)


_DEFAULTS: dict | None = None


def schema_defaults() -> dict:
    """The config every key of which is the schema's default (the one place defaults live);
    library callers that pass a partial section get the rest from here."""
    global _DEFAULTS
    if _DEFAULTS is None:
        cfg: dict = {}
        for e in DefaultValidator(load_schema()).iter_errors(cfg):
            raise AssertionError(f"the schema's defaults do not validate: {e.message}")
        _DEFAULTS = cfg
    return _copy(_DEFAULTS)


def settings(section: str, given: dict | None = None) -> dict:
    """The config section ``section`` (dotted, e.g. ``graph`` or ``explain.ig``): the schema's
    defaults overlaid, key by key and nested sections too, with ``given`` (a validated config's
    section, or a library caller's partial one)."""
    out = schema_defaults()
    for key in section.split("."):
        out = out[key]
    return _overlay(out, given or {})


def _overlay(base: dict, given: dict) -> dict:
    out = dict(base)
    for key, value in given.items():
        out[key] = _overlay(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return out


# the models of cellgnn.models.MODELS, and those that read edge features, named here so that
# checking a config and parsing the workflow (which every Snakemake start does, also inside
# each cluster job) do not import torch
MODEL_NAMES = ("logreg", "logreg_cv", "pseudobulk", "composition", "harmony_knn", "mlp", "gcn", "gat", "gat_ef",
               "gat_edge", "gcn_ef", "scanna")
EDGE_FEATURE_MODELS = frozenset({"gat_ef", "gat_edge", "gcn_ef"})
# models explain.model: auto picks, in this order (IG, weights and GNNExplainer need a torch model)
EXPLAINABLE = ("gat", "gat_ef", "gat_edge", "gcn", "gcn_ef", "mlp", "scanna")
HELD_OUT_ORDER = ("donor_cv", "donors", "cells")


def validate_config(cfg: dict, schema_path: str | Path = SCHEMA, source: str = "config", semantic: bool = True) -> dict:
    """Fill defaults into ``cfg`` (in place) and validate it against the schema and (``semantic``) the
    checks across sections; return it."""
    schema = load_schema(schema_path)
    errors = sorted(DefaultValidator(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        key = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        if e.validator == "additionalProperties":
            fix = "remove or correct the misspelt key; valid keys are listed in " + str(schema_path)
        elif e.validator in {"type", "enum"}:
            fix = f"use a value of the expected {e.validator}: {e.validator_value}"
        else:
            fix = f"see the allowed values for '{key}' in {schema_path}"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise CellgnnInputError(e.message + more, file=source, field=key, fix=fix)
    if semantic:
        _semantic_checks(cfg, source)
    return cfg


def _semantic_checks(cfg: dict, source: str) -> None:
    fr = cfg["graph"]["fractions"]
    total = sum(fr.values())
    if abs(total - 1.0) > 1e-6:
        raise CellgnnInputError(f"split fractions sum to {total:g}, not 1", file=source, field="graph.fractions",
                                fix="e.g. train: 0.7, val: 0.15, test: 0.15")
    data = cfg["data"]
    if data["source"] == "file" and not data["file"].get("path"):
        raise CellgnnInputError("data.source is 'file' but no path is given", file=source, field="data.file.path",
                                fix="set data.file.path to an .h5ad, 10x .h5 or 10x MTX directory")
    modes = cfg["graph"]["split_modes"]
    for key, value in (("augment.graph_model.splits", cfg["augment"]["graph_model"]["splits"]),
                       ("augment.split", [cfg["augment"]["split"]] if cfg["augment"]["split"] else []),
                       ("explain.split", [cfg["explain"]["split"]] if cfg["explain"]["split"] else [])):
        missing = [s for s in value if s not in modes]
        if missing:
            raise CellgnnInputError(f"split mode(s) {missing} are not among graph.split_modes {modes}", file=source,
                                    field=key, fix="name split modes the graph stage builds (or leave the default)")
    unknown = [m for m in cfg["train"]["models"] if m not in MODEL_NAMES]
    if unknown:
        raise CellgnnInputError(f"unknown model(s) {unknown}", file=source, field="train.models",
                                fix=f"use models from {sorted(MODEL_NAMES)}")
    models = cfg["train"]["models"]
    for key, value in (("explain.model", [cfg["explain"]["model"]]),
                       ("evaluation.baselines", cfg["evaluation"]["baselines"] or [])):
        missing = [m for m in value if m != "auto" and m not in models]
        if missing:
            raise CellgnnInputError(f"{missing} not among train.models {models}", file=source, field=key,
                                    fix="add them to train.models, or leave the default (auto / null)")
    if cfg["graph"]["n_pcs"] > cfg["preprocess"]["n_pcs"]:
        raise CellgnnInputError(f"graph.n_pcs={cfg['graph']['n_pcs']} but preprocess.n_pcs="
                                f"{cfg['preprocess']['n_pcs']} PCs are computed", file=source, field="graph.n_pcs",
                                fix="use graph.n_pcs <= preprocess.n_pcs")
    if cfg["data"]["source"] == "pbmc68k" and cfg["preprocess"]["expect_counts"]:
        raise CellgnnInputError("pbmc68k_reduced is log-normalized, not counts", file=source,
                                field="preprocess.expect_counts", fix="set preprocess.expect_counts: false")


def resolve_run(cfg: dict, plan, source: str = "config") -> dict:
    """What this run builds, from the validated config and the start-up :class:`~cellgnn.preflight.Plan`:
    the split units of each mode, the held-out mode, the explained model and split, which optional
    stages run (celltype, explain, augment, edge-feature comparison and ablation, gat_activa) and why
    not; ``cell_types_from``: ``data``, ``celltype`` (the celltype stage's calls) or None.
    Notes are appended to ``plan.notes`` (summary.md repeats them)."""
    from .design import parse_unit

    modes = cfg["graph"]["split_modes"]
    models = cfg["train"]["models"]
    units = {m: [u for u in plan.units if parse_unit(u)[0] == m] for m in modes}
    held_out = next(m for m in HELD_OUT_ORDER if m in modes)
    has_ct = plan.cell_types is not None
    groups = list(cfg["edge_features"]["groups"])
    if not has_ct and "celltype_attention" in groups:
        if groups == ["celltype_attention"] and EDGE_FEATURE_MODELS & set(models):
            raise CellgnnInputError("the only edge-feature group, celltype_attention, needs cell types, and the data "
                                    "has none", file=source, field="edge_features.groups",
                                    fix="add other groups (donor_attention, curvature, node2vec) or set "
                                        "data.keys.cell_type")
        groups.remove("celltype_attention")
        plan.notes.append("edge features: celltype_attention left out (no cell types)")
    cfg["edge_features"]["groups"] = groups
    explain_model = cfg["explain"]["model"]
    if explain_model == "auto":
        explain_model = next((m for m in EXPLAINABLE if m in models), None)
    explain_run = explain_model is not None and cfg["explain"]["enabled"]
    if not cfg["explain"]["enabled"]:
        plan.notes.append("explanations left out (explain.enabled: false)")
    elif not explain_run:
        plan.notes.append(f"explanations left out: none of {list(EXPLAINABLE)} is trained (explain.model: auto)")
    gene_features = cfg["graph"]["node_features"] == "genes"
    if explain_run and not gene_features:
        explain_run = False
        plan.notes.append("explanations left out: the models' node features are the pretrained embedding, not genes "
                          "(graph.node_features: pretrain)")
    evaluation = cfg["evaluation"]["model"] in models
    baselines = cfg["evaluation"]["baselines"]
    if baselines is None:
        baselines = [m for m in models if m != cfg["evaluation"]["model"]]
    ablation = (groups if evaluation and cfg["evaluation"]["ablation"] and cfg["evaluation"]["model"] == "gat_ef"
                and len(groups) > 1 else [])
    aug = cfg["augment"]
    augment = aug["enabled"] and (aug["population_key"] != "cell_type" or has_ct)
    if not aug["enabled"]:
        plan.notes.append("augmentation left out (augment.enabled: false)")
    elif not augment:
        plan.notes.append("augmentation left out: its populations are cell types (augment.population_key) and the "
                          "data has none")
    augment_unit = units[aug["split"] or held_out][0]
    gm = aug["graph_model"]
    gat_activa_units = ([u for m in (gm["splits"] or modes) for u in units[m]]
                        if augment and gm["enabled"] and "gat" in models and gene_features else [])
    celltype = plan.cell_types == "celltype" or cfg["celltype"]["enabled"] is True
    return {"units": units, "held_out_mode": held_out, "evaluation": evaluation, "baselines": baselines,
            "celltype": celltype, "cell_types_from": plan.cell_types,
            "ablation_groups": ablation, "augment": augment, "augment_unit": augment_unit,
            "gat_activa_units": gat_activa_units,
            "explain": {"run": explain_run, "model": explain_model or "none", "split": cfg["explain"]["split"] or held_out}}
