"""Model registry.

``MODELS[name]`` is a :class:`ModelSpec`; ``build_model(name, in_dim, n_classes, edge_dim, **params)``
returns a ``torch.nn.Module`` with ``forward(x, edge_index, edge_attr=None) -> logits [N, C]``.
``logreg`` and the other reference models (``kind == "sklearn"``) are fitted by
:mod:`cellgnn.models.reference`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import CellgnnInputError
from .baselines import GAT, GCN, MLP
from .edge_models import GATEF, GCNEF, GATEdge
from .scanna import ScANNA


@dataclass(frozen=True)
class ModelSpec:
    """How to build and train one model.

    kind: ``torch`` or ``sklearn`` (a reference model of :mod:`cellgnn.models.reference`);
    graph: uses edges; edge_features: needs ``edge_attr``; deterministic: the fit ignores the
    seed (fitted once per training job, recorded under every seed). Every setting and its default
    is in the config schema (``train.hyperparameters.<name>``).
    """

    name: str
    builder: Callable[..., nn.Module] | None
    kind: str = "torch"
    graph: bool = True
    edge_features: bool = False
    deterministic: bool = False


MODELS: dict[str, ModelSpec] = {
    "logreg": ModelSpec("logreg", None, kind="sklearn", graph=False, deterministic=True),
    "logreg_cv": ModelSpec("logreg_cv", None, kind="sklearn", graph=False, deterministic=True),
    "pseudobulk": ModelSpec("pseudobulk", None, kind="sklearn", graph=False, deterministic=True),
    "composition": ModelSpec("composition", None, kind="sklearn", graph=False, deterministic=True),
    "harmony_knn": ModelSpec("harmony_knn", None, kind="sklearn", graph=False),
    "mlp": ModelSpec("mlp", MLP, graph=False),
    "gcn": ModelSpec("gcn", GCN),
    "gat": ModelSpec("gat", GAT),
    "gat_ef": ModelSpec("gat_ef", GATEF, edge_features=True),
    "gat_edge": ModelSpec("gat_edge", GATEdge, edge_features=True),
    "gcn_ef": ModelSpec("gcn_ef", GCNEF, edge_features=True),
    "scanna": ModelSpec("scanna", ScANNA, graph=False),
}


def register(spec: ModelSpec) -> None:
    """Add a model to the registry (used by model modules of later stages)."""
    MODELS[spec.name] = spec


def get_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise CellgnnInputError(f"unknown model '{name}'", field="train.models",
                                fix=f"use one of {sorted(MODELS)}")
    return MODELS[name]


def build_model(name: str, in_dim: int, n_classes: int, edge_dim: int = 0, **params) -> nn.Module:
    spec = get_spec(name)
    if spec.builder is None:
        raise CellgnnInputError(f"model '{name}' is not a torch module", field="train.models",
                                fix="fit it with cellgnn.train.train_model")
    if spec.edge_features:
        if edge_dim <= 0:
            raise CellgnnInputError(f"model '{name}' needs edge features but none were given",
                                    field="train.models", fix="enable the edge_features stage")
        return spec.builder(in_dim, n_classes, edge_dim=edge_dim, **params)
    return spec.builder(in_dim, n_classes, **params)
