"""The schema is the only place a default lives: every default a library signature or dataclass
still carries (for library callers) must equal the schema's, so they cannot drift apart."""
import dataclasses
import inspect

import pytest

from cellgnn.config import schema_defaults, settings

DEFAULTS = schema_defaults()


def signature_defaults(fn, skip=()) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.default is not inspect.Parameter.empty and k not in skip}


@pytest.mark.parametrize("name", sorted(DEFAULTS["train"]["hyperparameters"]))
def test_model_constructor_defaults_are_the_schema_defaults(name):
    from cellgnn.models import MODELS

    schema = DEFAULTS["train"]["hyperparameters"][name]
    spec = MODELS[name]
    if spec.builder is None:  # reference models: their fitters read the schema's settings only
        return
    own = signature_defaults(spec.builder.__init__, skip=("edge_dim",))
    assert set(own) <= set(schema), f"{name}: {sorted(set(own) - set(schema))} have no schema entry"
    assert {k: schema[k] for k in own} == own


def test_integrated_gradient_settings_default_to_the_schema():
    from cellgnn.explain.ig import IGSettings

    schema = DEFAULTS["explain"]["ig"]
    fields = {f.name: f.default for f in dataclasses.fields(IGSettings)}
    assert {k: fields[k] for k in ("n_steps", "max_steps", "tolerance", "batch_cells")} == {
        k: schema[k] for k in ("n_steps", "max_steps", "tolerance", "batch_cells")}
    assert IGSettings.from_params({}) == IGSettings(progress=True)


def test_simulator_defaults_are_the_schema_defaults():
    from cellgnn.data.simulate import simulate

    own = signature_defaults(simulate)
    schema = DEFAULTS["data"]["simulate"]
    assert set(own) == set(schema) and own == schema


def test_settings_overlay_nested_sections():
    ex = settings("explain", {"ig": {"n_steps": 4}, "top_k": 5})
    assert ex["ig"]["n_steps"] == 4 and ex["ig"]["baseline"] == DEFAULTS["explain"]["ig"]["baseline"]
    assert ex["top_k"] == 5 and ex["methods"] == DEFAULTS["explain"]["methods"]
    train = settings("train", {"hyperparameters": {"gat": {"lr": 0.1}}})
    assert train["hyperparameters"]["gat"]["lr"] == 0.1 and train["hyperparameters"]["gat"]["heads"] == 8
