import pytest
import torch
from edgefeat_fixtures import make_graph

from cellgnn.edge_features import compute_edge_features, load_edge_features
from cellgnn.errors import CellgnnInputError
from cellgnn.models import MODELS, build_model
from cellgnn.train import train_model

CFG = {"max_epochs": 4, "patience": 10, "hyperparameters": {}}
EF_CFG = {"heads": 2, "aux_epochs": 1, "groups": ["celltype_attention", "curvature", "node2vec"],
          "node2vec": {"dim": 4, "walk_length": 5, "walks_per_node": 1, "window": 2}}


@pytest.mark.parametrize("name", ["gat_ef", "gat_edge", "gcn_ef"])
def test_registered_and_need_edge_features(name):
    assert MODELS[name].edge_features
    assert build_model(name, 12, 2, edge_dim=3)(torch.rand(5, 12), torch.tensor([[0, 1], [1, 0]]),
                                                 torch.rand(2, 3)).shape == (5, 2)
    with pytest.raises(CellgnnInputError, match="needs edge features"):
        build_model(name, 12, 2)


def test_unknown_model_is_a_clear_error():
    with pytest.raises(CellgnnInputError, match="unknown model 'gat_eff'"):
        build_model("gat_eff", 12, 2)


@pytest.mark.parametrize("batching, mode", [("full", "transductive"), ("cluster", "inductive")])
def test_gat_ef_trains_full_and_cluster_batches(batching, mode):
    g = make_graph(n=60)
    g["graph_mode"] = mode
    if mode == "inductive":  # drop edges between splits, as the graph stage does
        split = g["train_mask"].long() + 2 * g["val_mask"].long()
        keep = split[g["edge_index"][0]] == split[g["edge_index"][1]]
        g["edge_index"], g["edge_weight"] = g["edge_index"][:, keep], g["edge_weight"][keep]
    ef = compute_edge_features(g, EF_CFG, seed=0)
    res = train_model(g, "gat_ef", {**CFG, "batching": batching, "num_parts": 4, "parts_per_batch": 2}, seed=0,
                      edge_attr=ef["edge_attr"])
    assert res.proba.shape == (60, 2) and len(res.history) == 4
    assert 0 <= res.metrics["macro_f1"] <= 1


def test_ablation_drops_one_group_and_checks_alignment(tmp_path):
    g = make_graph(n=40)
    ef = compute_edge_features(g, EF_CFG, seed=0)
    p = tmp_path / "ef.pt"
    torch.save(ef, p)
    assert load_edge_features(str(p), g)["edge_attr"].shape[1] == 4
    dropped = load_edge_features(str(p), g, drop_group="curvature")
    assert torch.equal(dropped["edge_attr"], ef["edge_attr"][:, [0, 1, 3]])
    assert dropped["columns"] == [ef["columns"][i] for i in (0, 1, 3)] and list(dropped["groups"]) == [
        grp for grp in ef["groups"] if grp != "curvature"]
    with pytest.raises(CellgnnInputError, match="cannot drop group"):
        load_edge_features(str(p), g, drop_group="donor_attention")
    torch.save(dict(ef, edge_attr=ef["edge_attr"][:-3]), p)
    with pytest.raises(CellgnnInputError, match="rows but the graph has"):
        load_edge_features(str(p), g)
