import copy
from pathlib import Path

import pytest
import yaml

from cellgnn.config import validate_config
from cellgnn.errors import CellgnnInputError

ROOT = Path(__file__).resolve().parents[1]


def default():
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_default_config_is_valid_and_defaults_filled():
    cfg = validate_config({})
    assert cfg["dataset"] == "demo" and cfg["graph"]["k"] == 12 and cfg["data"]["keys"]["label"] == "label"
    assert cfg["graph"]["split_modes"] == ["cells", "donor_cv"] and cfg["explain"]["model"] == "auto"
    assert cfg["train"]["hyperparameters"]["gat"]["lr"] == 0.005  # every model's settings filled from the schema
    full = validate_config(default())
    assert full["train"]["models"] == ["logreg", "logreg_cv", "mlp", "gcn", "gat", "gat_ef", "scanna"]


def test_every_config_file_is_valid():
    for path in sorted((ROOT / "config").glob("*.yaml")):
        validate_config(yaml.safe_load(path.read_text()), source=str(path))


@pytest.mark.parametrize("mutate,field", [
    (lambda c: c.update(not_a_key=1), "(top level)"),
    (lambda c: c["graph"].update(kk=3), "graph"),
    (lambda c: c["graph"].update(k=0), "graph.k"),
    (lambda c: c["graph"].update(k="ten"), "graph.k"),
    (lambda c: c["train"].update(seeds=[]), "train.seeds"),
    (lambda c: c["graph"].update(fractions={"train": 0.5, "val": 0.3, "test": 0.3}), "graph.fractions"),
    (lambda c: c["train"].update(models=["gat", "nope"]), "train.models"),
    (lambda c: c.update(device="tpu"), "device"),
    (lambda c: c["data"].update(source="file"), "data.file.path"),
    (lambda c: c["graph"].update(split_modes=["donors"]), "augment.graph_model.splits"),
])
def test_bad_config_names_file_and_key(mutate, field):
    cfg = copy.deepcopy(default())
    mutate(cfg)
    with pytest.raises(CellgnnInputError) as e:
        validate_config(cfg, source="my.yaml")
    msg = str(e.value)
    assert "my.yaml" in msg and field in msg and "Fix:" in msg


def test_model_names_match_the_registry():
    from cellgnn.config import MODEL_NAMES
    from cellgnn.models import MODELS

    assert set(MODEL_NAMES) == {name for name in MODELS if not name.startswith("_")}  # tests register "_..." models


def test_checking_a_config_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, yaml; from cellgnn.config import validate_config, resolve_run; "
            "from cellgnn.preflight import preflight; "
            "cfg = validate_config(yaml.safe_load(open('config/config.yaml'))); "
            "resolve_run(cfg, preflight(cfg)); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"})


def test_workflow_edge_feature_models_match_the_registry():
    from cellgnn.config import EDGE_FEATURE_MODELS
    from cellgnn.models import MODELS

    assert EDGE_FEATURE_MODELS == {n for n, spec in MODELS.items() if spec.edge_features and not n.startswith("_")}
