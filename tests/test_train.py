import numpy as np
import pytest
import torch

from cellgnn.errors import CellgnnInputError
from cellgnn.metrics import majority_baseline
from cellgnn.models import MODELS, build_model
from cellgnn.train import load_model, predictions_table, train_model

CFG = dict(max_epochs=60, patience=15, hyperparameters={})


@pytest.mark.parametrize("name", ["logreg", "mlp", "gcn", "gat"])
def test_models_beat_majority_on_cell_split(graphs, name):
    g = graphs["cells"]
    r = train_model(g, name, CFG, seed=0)
    y = g["y"].numpy()
    base = majority_baseline(y[g["train_mask"].numpy()], y[g["test_mask"].numpy()], len(g["classes"]))
    assert r.metrics["balanced_accuracy"] > base["balanced_accuracy"]
    assert r.metrics["macro_f1"] > base["macro_f1"] + 0.05
    assert r.metrics["auroc"] > 0.6  # chance: 0.5
    assert r.proba.shape == (len(y), len(g["classes"]))
    np.testing.assert_allclose(r.proba.sum(1), 1, atol=1e-5)


def test_same_seed_same_numbers(graphs):
    g = graphs["donors"]
    a = train_model(g, "gat", dict(CFG, max_epochs=15), seed=3)
    b = train_model(g, "gat", dict(CFG, max_epochs=15), seed=3)
    assert a.metrics == b.metrics
    np.testing.assert_array_equal(a.proba, b.proba)


def test_inductive_training_never_sees_test_cells(graphs):
    """Perturbing test-cell features must not change the trained weights."""
    g = dict(graphs["donors"])
    a = train_model(g, "gat", dict(CFG, max_epochs=5), seed=0)
    x = g["x"].clone()
    x[g["test_mask"]] = torch.rand_like(x[g["test_mask"]])
    g2 = dict(g, x=x)
    b = train_model(g2, "gat", dict(CFG, max_epochs=5), seed=0)
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_checkpoint_roundtrip_and_mismatch(tmp_path, graphs):
    from cellgnn.io import torch_save
    from cellgnn.train import checkpoint

    g = graphs["cells"]
    r = train_model(g, "mlp", dict(CFG, max_epochs=5), seed=0)
    p = tmp_path / "model.pt"
    torch_save(checkpoint(r, "mlp", g, 0), p)
    model, ckpt = load_model(p, g)
    with torch.no_grad():
        out = torch.softmax(model(g["x"], g["edge_index"]), 1).numpy()
    np.testing.assert_allclose(out, r.proba, atol=1e-5)
    other = dict(g, genes=[f"X{i}" for i in range(len(g["genes"]))])
    with pytest.raises(CellgnnInputError, match="different genes"):
        load_model(p, other)


def test_unknown_model_is_a_clear_error(graphs):
    with pytest.raises(CellgnnInputError, match="unknown model"):
        train_model(graphs["cells"], "transformer9000", CFG, seed=0)


def test_model_needing_edge_features_refuses_none(graphs):
    from cellgnn.models import ModelSpec, register

    register(ModelSpec("_needs_edges", lambda i, c, edge_dim: None, edge_features=True))
    try:
        with pytest.raises(CellgnnInputError, match="needs edge features"):
            build_model("_needs_edges", 10, 2, edge_dim=0)
        with pytest.raises(CellgnnInputError, match="needs edge features"):
            train_model(graphs["cells"], "_needs_edges", CFG, seed=0)
    finally:
        MODELS.pop("_needs_edges")


def test_predictions_table(graphs):
    g = graphs["cells"]
    proba = np.eye(len(g["classes"]))[g["y"].numpy()]
    df = predictions_table(g, proba)
    assert (df["true"] == df["pred"]).all()
    assert set(df["split"]) == {"train", "val", "test"}
    assert [c for c in df.columns if c.startswith("p_")] == [f"p_{c}" for c in g["classes"]]


def test_training_refuses_a_graph_without_validation_cells(graphs):
    """The 30-epoch crash of a user's design (no validation loss, no best epoch) is refused up front."""
    g = dict(graphs["donors"])
    g["train_mask"] = g["train_mask"] | g["val_mask"]
    g["val_mask"] = torch.zeros_like(g["val_mask"])
    with pytest.raises(CellgnnInputError, match="no validation cells") as e:
        train_model(g, "gat", dict(CFG, max_epochs=3), seed=0)
    assert "Fix:" in str(e.value)


def test_training_refuses_a_non_finite_validation_loss(graphs):
    g = dict(graphs["donors"])
    x = g["x"].clone()
    x[g["val_mask"]] = float("inf")  # the validation block only: training itself stays finite
    with pytest.raises(CellgnnInputError, match="validation loss became nan") as e:
        train_model(dict(g, x=x), "mlp", dict(CFG, max_epochs=3), seed=0)
    assert "field 'train.hyperparameters.mlp.lr'" in str(e.value)
