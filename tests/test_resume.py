"""Interruption: a training process killed (SIGKILL) after its first checkpoint resumes on rerun
and ends with exactly the numbers of an uninterrupted run (CPU, same seed)."""
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from cellgnn.graph import save_graph
from cellgnn.train import resume_path, run_train, train_model
from interrupt import kill_when_written

ROOT = Path(__file__).resolve().parents[1]
CFG = {"max_epochs": 80, "patience": 25, "checkpoint_every": 5, "class_weights": True,
       "hyperparameters": {"gat": {"hidden": 16, "heads": 2}}}


def outputs(folder: Path) -> SimpleNamespace:
    """The train rule's outputs for one seed (lists: one entry per seed)."""
    return SimpleNamespace(model=[str(folder / "model.pt")], metrics=[str(folder / "metrics.json")],
                           predictions=[str(folder / "predictions.csv")])



CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {src!r})
from types import SimpleNamespace
from cellgnn.train import run_train
out = SimpleNamespace(model=[{model!r}], metrics=[{metrics!r}], predictions=[{pred!r}])
run_train({graph!r}, "gat", [0], {cfg!r}, "cpu", out)
"""


def test_killed_training_resumes_to_identical_metrics(graphs, tmp_path):
    graph_path = tmp_path / "cells.pt"
    save_graph(graphs["cells"], graph_path)

    # uninterrupted reference, same process settings (1 thread, CPU)
    ref = tmp_path / "ref"
    (ref_result,) = run_train(str(graph_path), "gat", [0], CFG, "cpu", outputs(ref))
    assert ref_result.resumed_from_epoch is None
    assert not resume_path(ref / "model.pt").exists()  # removed after success

    # a training process killed after its first checkpoint
    run = tmp_path / "run"
    out = outputs(run)
    code = CHILD.format(src=str(ROOT / "src"), model=out.model[0], metrics=out.metrics[0], pred=out.predictions[0],
                        graph=str(graph_path), cfg=CFG)
    ckpt = resume_path(out.model[0])
    kill_when_written(code, ckpt)
    assert ckpt.exists() and not Path(out.metrics[0]).exists() and not Path(out.model[0]).exists()
    killed_at = torch.load(ckpt, weights_only=False)["epoch"]
    assert 0 < killed_at < CFG["max_epochs"] - 1

    # rerun: resumes from the checkpoint and reaches the same numbers
    (resumed,) = run_train(str(graph_path), "gat", [0], CFG, "cpu", out)
    assert resumed.resumed_from_epoch is not None and resumed.resumed_from_epoch >= killed_at + 1
    assert not ckpt.exists()
    assert resumed.metrics == ref_result.metrics
    assert resumed.best_epoch == ref_result.best_epoch and resumed.history == ref_result.history
    np.testing.assert_array_equal(resumed.proba, ref_result.proba)
    pd.testing.assert_frame_equal(pd.read_csv(run / "predictions.csv"), pd.read_csv(ref / "predictions.csv"))
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_run = json.loads((run / "metrics.json").read_text())
    assert m_run["test"] == m_ref["test"]
    print(f"\nresumed after epoch {killed_at}: {m_run['test']}\nuninterrupted: {m_ref['test']}")


MULTI_CHILD = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {src!r})
from types import SimpleNamespace
from cellgnn.train import run_train
out = SimpleNamespace(model={model!r}, metrics={metrics!r}, predictions={pred!r})
run_train({graph!r}, ["mlp", "gat"], [0], {cfg!r}, "cpu", out)
"""


def test_killed_job_of_two_models_resumes_both(graphs, tmp_path):
    """A train job fits several models in turn: killed during the second, its rerun (Snakemake has
    deleted the first model's outputs as incomplete) continues both from their checkpoints."""
    graph_path = tmp_path / "cells.pt"
    save_graph(graphs["cells"], graph_path)
    ref = [outputs(tmp_path / "ref" / m) for m in ("mlp", "gat")]
    joined = lambda outs: SimpleNamespace(**{k: [getattr(o, k)[0] for o in outs]  # noqa: E731
                                              for k in ("model", "metrics", "predictions")})
    ref_results = run_train(str(graph_path), ["mlp", "gat"], [0], CFG, "cpu", joined(ref))
    assert [r.resumed_from_epoch for r in ref_results] == [None, None]

    out = joined([outputs(tmp_path / "run" / m) for m in ("mlp", "gat")])
    code = MULTI_CHILD.format(src=str(ROOT / "src"), model=out.model, metrics=out.metrics, pred=out.predictions,
                              graph=str(graph_path), cfg=CFG)
    second = resume_path(out.model[1])
    kill_when_written(code, second)
    assert resume_path(out.model[0]).exists(), "the finished model's checkpoint was removed before the job ended"
    for f in (*out.model, *out.metrics, *out.predictions):  # what Snakemake does with an incomplete job
        Path(f).unlink(missing_ok=True)

    resumed = run_train(str(graph_path), ["mlp", "gat"], [0], CFG, "cpu", out)
    assert all(r.resumed_from_epoch is not None for r in resumed)
    assert not resume_path(out.model[0]).exists() and not second.exists()
    for r, expected in zip(resumed, ref_results):
        assert r.metrics == expected.metrics and r.history == expected.history
        np.testing.assert_array_equal(r.proba, expected.proba)


def test_checkpoint_of_another_run_is_ignored(graphs, tmp_path):
    """A stale resume.pt (other seed/config) is not continued from: training starts afresh."""
    ck = tmp_path / "resume.pt"
    cfg = dict(CFG, max_epochs=12, checkpoint_every=5)
    train_model(graphs["cells"], "mlp", cfg, 1, resume=ck)
    assert ck.exists()
    fresh = train_model(graphs["cells"], "mlp", cfg, 0)
    other = train_model(graphs["cells"], "mlp", cfg, 0, resume=ck)
    assert other.resumed_from_epoch is None
    assert other.metrics == fresh.metrics


def test_resume_from_a_truncated_checkpoint_starts_afresh(graphs, tmp_path):
    ck = tmp_path / "resume.pt"
    ck.write_bytes(b"\x80\x02 not a checkpoint")
    res = train_model(graphs["cells"], "mlp", dict(CFG, max_epochs=6), 0, resume=ck)
    assert res.resumed_from_epoch is None and len(res.history) == 6


def test_aux_gat_pretraining_resumes_to_identical_attention(tmp_path, monkeypatch):
    """Edge-feature pretraining interrupted right after its first checkpoint continues to the same α."""
    import cellgnn.io
    from cellgnn.edge_features.attention import attention_features
    from edgefeat_fixtures import make_graph

    g = make_graph(n=80)
    kw = dict(heads=2, hidden=4, epochs=9, seed=3, name="celltype")
    target, train = g["cell_type"].numpy(), g["train_mask"].numpy()
    ref = attention_features(g, target, train, **kw)

    ck = tmp_path / "cells.celltype_resume.pt"
    real_save = cellgnn.io.torch_save

    def save_then_die(obj, path):
        real_save(obj, path)
        raise KeyboardInterrupt("killed after the first checkpoint")

    monkeypatch.setattr(cellgnn.io, "torch_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        attention_features(g, target, train, checkpoint=ck, checkpoint_every=4, **kw)
    monkeypatch.setattr(cellgnn.io, "torch_save", real_save)
    assert torch.load(ck, weights_only=False)["epoch"] == 3
    resumed = attention_features(g, target, train, checkpoint=ck, checkpoint_every=4, **kw)
    np.testing.assert_array_equal(resumed, ref)
    # a finished checkpoint of another target is not continued from
    other = attention_features(g, g["donor"].numpy(), train, checkpoint=ck, checkpoint_every=4, **kw)
    np.testing.assert_array_equal(other, attention_features(g, g["donor"].numpy(), train, **kw))


def test_edge_feature_stage_removes_its_resume_files(tmp_path):
    from cellgnn.edge_features import run_edge_features
    from edgefeat_fixtures import make_graph

    g = make_graph(n=60)
    gpath = tmp_path / "graph" / "cells.pt"
    gpath.parent.mkdir()
    torch.save(g, gpath)
    out = tmp_path / "edge_features" / "cells.pt"
    cfg = {"groups": ["celltype_attention", "curvature"], "heads": 2, "hidden": 4, "aux_epochs": 6,
           "checkpoint_every": 2}
    run_edge_features(str(gpath), str(out), cfg, seed=0, device="cpu")
    assert sorted(p.name for p in out.parent.iterdir()) == ["cells.pt"]
