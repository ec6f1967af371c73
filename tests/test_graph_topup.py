"""gat_activa: synthetic training cells joined into the training graph, never into val/test."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cellgnn.augment.activa import ActivaConfig
from cellgnn.augment.graph_topup import make_topup
from cellgnn.config import validate_config
from cellgnn.data.simulate import simulate
from cellgnn.errors import CellgnnInputError
from cellgnn.graph import add_synthetic_nodes, build_graph, save_graph, validate_graph
from cellgnn.preprocess import preprocess
from cellgnn.train import predictions_table, train_model

torch.set_num_threads(1)
SCHEMA = Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"


@pytest.fixture(scope="module")
def setup():
    cfg = {"dataset": "t", "preprocess": {"min_genes": 50, "n_pcs": 10}, "graph": {"k": 8, "n_pcs": 10},
           "train": {"max_epochs": 15, "patience": 5}}
    validate_config(cfg, SCHEMA)
    raw = simulate(n_cells=500, n_genes=400, n_donors=4, n_response_genes=8, seed=1)
    adata, _ = preprocess(raw, cfg["preprocess"], seed=0)
    graph = build_graph(adata, cfg["graph"], "cells", seed=0)
    return adata, graph, cfg


def _activa():
    return ActivaConfig(hidden=[32, 16, 8], latent=4, clf_hidden=[8, 8, 4], epochs=2, warmup_epochs=1,
                        batch_size=64, device="cpu")


def test_topup_fills_rare_training_classes(setup):
    adata, graph, _ = setup
    top = make_topup(adata, graph, _activa(), rare_fraction=0.5, max_per_class=40, accept_threshold=0.0,
                     progress=False)
    y = graph["y"].numpy()[graph["train_mask"].numpy()]
    sizes = np.bincount(y, minlength=len(graph["classes"]))
    level = int(0.5 * sizes.max())
    for c, name in enumerate(graph["classes"]):
        expect = min(40, level - sizes[c]) if 0 < sizes[c] < level else 0
        assert top["n_per_class"][name] == expect
    assert top["x"].shape == (sum(top["n_per_class"].values()), graph["x"].shape[1])
    assert top["x"].min() >= 0 and top["x"].max() <= 1  # the graph's own [0, 1] scaling


def test_synthetic_nodes_only_in_training_graph(setup):
    _, graph, _ = setup
    n, g = graph["x"].shape
    rng = np.random.default_rng(0)
    x_syn = rng.random((7, g)).astype(np.float32)
    aug = add_synthetic_nodes(graph, x_syn, np.full(7, 1), k=5)
    validate_graph(aug, "aug")
    syn = aug["synthetic_mask"].numpy()
    assert syn.sum() == 7 and syn[n:].all()
    assert aug["train_mask"].numpy()[syn].all() and not aug["val_mask"].numpy()[syn].any()
    assert not aug["test_mask"].numpy()[syn].any()
    ei = aug["edge_index"].numpy()
    touches = syn[ei[0]] | syn[ei[1]]
    other = np.where(syn[ei[0]], ei[1], ei[0])[touches]
    assert aug["train_mask"].numpy()[other].all()  # neighbours are training cells (or itself)
    assert (np.bincount(ei[1][syn[ei[1]]] - n) == 5 + 1).all()  # k in-edges + self-loop
    order = np.lexsort((ei[0], ei[1]))
    assert (order == np.arange(len(order))).all()  # still sorted by (target, source)
    np.testing.assert_array_equal(aug["edge_index"][:, ~torch.from_numpy(touches)], graph["edge_index"])


def test_gat_activa_trains_through_the_train_path(setup, tmp_path):
    """gat_activa is the train rule with synthetic training cells: the same three files per seed, its
    checkpoint reloads with the train stage's loader, and top-up cells of another graph are refused."""
    from cellgnn.train import graph_fingerprint, load_model, run_train

    adata, graph, cfg = setup
    save_graph(graph, tmp_path / "g.pt")
    top = make_topup(adata, graph, _activa(), max_per_class=20, accept_threshold=0.0, progress=False)
    torch.save({**top, "split_mode": "cells", "unit": "cells", "k": 5, "graph_fingerprint": graph_fingerprint(graph)},
               tmp_path / "top.pt")
    base = train_model(graph, "gat", cfg["train"], 0)
    predictions_table(graph, base.proba).to_csv(tmp_path / "gat.csv", index=False)
    out = SimpleNamespace(model=[str(tmp_path / "m.pt")], metrics=[str(tmp_path / "m.json")],
                          predictions=[str(tmp_path / "p.csv")])
    run_train(str(tmp_path / "g.pt"), "gat", [0], cfg["train"], "cpu", out, topup=str(tmp_path / "top.pt"),
                 compare_with=[str(tmp_path / "gat.csv")])
    m = json.loads(Path(out.metrics[0]).read_text())
    assert m["model"] == "gat_activa" and m["split"] == "cells"
    assert set(m["per_class_f1_test"]) == {"gat", "gat_activa"}
    assert set(m["per_class_f1_test"]["gat"]) == set(graph["classes"])
    assert sum(m["n_synthetic_train"].values()) == len(top["y"]) > 0
    import pandas as pd

    pred = pd.read_csv(out.predictions[0])
    assert len(pred) == graph["x"].shape[0] and not pred["cell_id"].str.startswith("synthetic").any()
    model, ckpt = load_model(out.model[0], graph)
    assert ckpt["record"] == "gat_activa" and ckpt["model"] == "gat"
    torch.save({**top, "split_mode": "cells", "k": 5, "graph_fingerprint": "another"}, tmp_path / "wrong.pt")
    with pytest.raises(CellgnnInputError, match="another graph"):
        run_train(str(tmp_path / "g.pt"), "gat", [0], cfg["train"], "cpu", out, topup=str(tmp_path / "wrong.pt"))
