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


# the models of cellgnn.models.MODELS, and those that read edge features, named here so that
# checking a config and parsing the workflow (which every Snakemake start does, also inside
# each cluster job) do not import torch
MODEL_NAMES = ("logreg", "mlp", "gcn", "gat", "gat_ef", "gat_edge", "gcn_ef", "scanna")
EDGE_FEATURE_MODELS = frozenset({"gat_ef", "gat_edge", "gcn_ef"})


def validate_config(cfg: dict, schema_path: str | Path = SCHEMA, source: str = "config") -> dict:
    """Fill defaults into ``cfg`` (in place) and validate it; return it."""
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
    missing = [s for s in cfg["augment"]["graph_model"]["splits"] if s not in cfg["graph"]["split_modes"]]
    if missing:
        raise CellgnnInputError(f"gat_activa split mode(s) {missing} are not among graph.split_modes "
                                f"{cfg['graph']['split_modes']}", file=source, field="augment.graph_model.splits",
                                fix="name split modes the graph stage builds, or [] for all of them")
    unknown = [m for m in cfg["train"]["models"] if m not in MODEL_NAMES]
    if unknown:
        raise CellgnnInputError(f"unknown model(s) {unknown}", file=source, field="train.models",
                                fix=f"use models from {sorted(MODEL_NAMES)}")
    if cfg["data"]["source"] == "pbmc68k" and cfg["preprocess"]["expect_counts"]:
        raise CellgnnInputError("pbmc68k_reduced is log-normalized, not counts", file=source,
                                field="preprocess.expect_counts", fix="set preprocess.expect_counts: false")
