"""Layered self-distillation (train.self_distillation): heads on the hidden GAT layers in training,
the same model without them at inference."""
import pytest
import torch
from torch.nn import functional as F

from cellgnn.models import build_model
from cellgnn.models.distill import LayeredSelfDistillation, hidden_layers
from cellgnn.train import train_model

CFG = {"max_epochs": 8, "patience": 8, "self_distillation": True,
       "hyperparameters": {"gat": {"hidden": 8, "heads": 2}, "gat_edge": {"hidden": 8, "heads": 2},
                           "gat_ef": {"hidden": 8, "heads": 2}}}


def test_heads_sit_on_the_hidden_gat_layers():
    gat = build_model("gat", 20, 3, hidden=4, heads=2)
    assert [n for n, _ in hidden_layers(gat, 3)] == ["conv1"]  # conv2 already gives the logits
    ef = build_model("gat_ef", 20, 3, edge_dim=4, hidden=4, heads=2)
    wrapped = LayeredSelfDistillation(ef, 3)
    assert wrapped.layer_names == ["conv1", "conv2"]
    assert [h[1].in_features for h in wrapped.heads] == [8, 8]
    with pytest.raises(ValueError):
        LayeredSelfDistillation(build_model("mlp", 20, 3), 3)


def test_inference_is_the_model_without_its_heads(graphs):
    """Trained with the heads: the saved model has none, and the wrapper (heads present, eval mode), the
    returned model and a fresh GAT given the state dict minus the heads give identical logits."""
    g = graphs["cells"]
    res = train_model(g, "gat", CFG, seed=0)
    assert not any(k.startswith(("heads", "base")) for k in res.model.state_dict())
    wrapped = LayeredSelfDistillation(res.model, len(g["classes"])).eval()
    fresh = build_model("gat", g["x"].shape[1], len(g["classes"]), hidden=8, heads=2,
                        attn_dropout=0.4, residual=True)
    state = {k[len("base."):]: v for k, v in wrapped.state_dict().items() if k.startswith("base.")}
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.no_grad():
        a = wrapped(g["x"], g["edge_index"])
        b = res.model(g["x"], g["edge_index"])
        c = fresh(g["x"], g["edge_index"])
    assert torch.equal(a, b) and torch.equal(b, c)
    assert res.proba.shape == (g["x"].shape[0], len(g["classes"]))
    # and it is another model than training without the heads gives
    plain = train_model(g, "gat", dict(CFG, self_distillation=False), seed=0)
    assert not torch.equal(plain.model.conv1.lin.weight, res.model.conv1.lin.weight)


@pytest.mark.parametrize("name", ["gat", "gat_edge", "gat_ef"])
def test_heads_receive_gradients_and_move_the_layers(graphs, name):
    """One training step: every head gets a gradient, and the auxiliary loss reaches the first layer."""
    g = graphs["cells"]
    ea = torch.rand(g["edge_index"].shape[1], 3) if name != "gat" else None
    torch.manual_seed(0)
    base = build_model(name, g["x"].shape[1], len(g["classes"]), edge_dim=0 if ea is None else 3, hidden=4, heads=2)
    model = LayeredSelfDistillation(base, len(g["classes"])).train()
    out = model(g["x"], g["edge_index"], ea)
    aux = model.aux_loss(out, g["y"], g["train_mask"], torch.nn.CrossEntropyLoss())
    assert torch.isfinite(aux) and aux > 0
    aux.backward()
    for head in model.heads:
        assert head[1].weight.grad is not None and head[1].weight.grad.abs().sum() > 0
    conv1 = base.conv1
    weight = (getattr(conv1, "lin", None) or conv1.lin_src).weight
    assert weight.grad is not None and weight.grad.abs().sum() > 0
    assert int(model.steps) == 1 and model.history[-1, 0] > 0


def test_distillation_targets_are_the_deeper_heads():
    """With the heads equal to their teachers, the KL term vanishes: only the heads' cross-entropy is left."""
    base = build_model("gat_ef", 6, 3, edge_dim=2, hidden=4, heads=2)
    model = LayeredSelfDistillation(base, 3, weighting="fixed", weight=1.0)
    logits = torch.randn(5, 3)
    model._aux = [logits.clone(), logits.clone()]
    y = torch.tensor([0, 1, 2, 0, 1])
    ce = torch.nn.CrossEntropyLoss()
    loss = model.aux_loss(logits, y, None, ce)
    assert torch.allclose(loss, ce(logits, y))  # 2 * (0.5 * CE + 0.5 * 0)
    model._aux = [logits.clone(), torch.zeros(5, 3)]
    t = model.temperature
    kd = (F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(torch.zeros(5, 3), 1), reduction="batchmean",
                   log_target=True) + F.kl_div(F.log_softmax(torch.zeros(5, 3), 1),
                                               F.log_softmax(logits / t, 1), reduction="batchmean",
                                               log_target=True)) / 2 * t * t
    ce_part = (ce(logits, y) + ce(torch.zeros(5, 3), y)) / 2
    assert torch.allclose(model.aux_loss(logits, y, None, ce), ce_part + kd)
